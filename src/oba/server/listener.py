"""The LDAP TCP listener: accepts connections and hands each to an ``LDAPConnection``.

Rules for this module: socket setup and connection bookkeeping only; protocol logic lives in
``connection.py``.
"""

from __future__ import annotations

import asyncio
import logging

from oba.operations import Operations
from oba.server.connection import LDAPConnection
from oba.server.node import Node

log = logging.getLogger("oba.ldap")


def split_address(address: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``"127.0.0.1:1389"`` / ``":389"`` / ``"[::1]:389"`` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep:
        raise ValueError(f"address {address!r} must be HOST:PORT")
    host = host.strip("[]") or default_host
    return host, int(port)


class LDAPListener:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.ops = Operations(node)
        self.servers: list[asyncio.base_events.Server] = []
        self.connections: set[LDAPConnection] = set()

    def _factory(self) -> LDAPConnection:
        conn = _TrackedConnection(self.node, self.ops, self.connections)
        return conn

    async def start(self, address: str) -> tuple[str, int]:
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._factory, host, port, reuse_address=True,
                                          backlog=1024)
        self.servers.append(server)
        sock = server.sockets[0].getsockname()
        log.info("LDAP listening on ldap://%s:%d", sock[0], sock[1])
        return str(sock[0]), int(sock[1])

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()


class _TrackedConnection(LDAPConnection):
    def __init__(self, node: Node, ops: Operations, registry: set[LDAPConnection]) -> None:
        super().__init__(node, ops)
        self._registry = registry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._registry.discard(self)
