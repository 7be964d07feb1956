"""The LDAP TCP listener: accepts connections and hands each to an ``LDAPConnection``.

Rules for this module: socket setup and connection bookkeeping only; protocol logic lives in
``connection.py``. ``tls`` (a ``ServerTLS``, set by ``oba.server.tls.start_ldaps``) enables
StartTLS on every listener; a listener started with ``implicit_tls`` is LDAPS (the handshake,
with the certificate current at that moment, precedes ``connection_made``). A listener worker
(``server.workers`` > 1) accepts on the writer's own listening sockets, inherited by file
descriptor: each new connection goes to whichever process accepts it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from oba.operations import Operations
from oba.server.connection import LDAPConnection
from oba.server.node import Node
from oba.server.tls import ServerTLS

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
        self.tls: ServerTLS | None = None
        # implicit_tls -> the listening socket's file descriptor (handed to listener workers)
        self.fds: dict[bool, int] = {}
        # a listener worker: implicit_tls -> the inherited listening socket to accept on
        self.inherited: dict[bool, int] = {}

    def _factory(self, implicit_tls: bool = False) -> LDAPConnection:
        return _TrackedConnection(self.node, self.ops, self.connections, self.tls, implicit_tls)

    async def start(self, address: str, implicit_tls: bool = False) -> tuple[str, int]:
        """Listen on ``address`` (a listener worker accepts on the socket it inherited for it
        instead: see ``inherited``)."""
        host, port = split_address(address)
        fd = self.inherited.get(implicit_tls)
        if implicit_tls and self.tls is None:
            raise ValueError("LDAPS needs a TLS context")
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if implicit_tls and self.tls is not None:
            timeout = self.node.config.server.readTimeout.total_seconds()
            extra = {"ssl": self.tls.listener_context(),
                     "ssl_handshake_timeout": timeout if timeout > 0 else None}
        if fd is not None:
            server = await loop.create_server(lambda: self._factory(implicit_tls),
                                              sock=socket.socket(fileno=fd), backlog=1024,
                                              **extra)
        else:
            server = await loop.create_server(lambda: self._factory(implicit_tls), host, port,
                                              reuse_address=True, backlog=1024, **extra)
        self.fds[implicit_tls] = server.sockets[0].fileno()
        self.servers.append(server)
        sock = server.sockets[0].getsockname()
        scheme = "ldaps" if implicit_tls else "ldap"
        log.info("LDAP listening on %s://%s:%d", scheme, sock[0], sock[1])
        return str(sock[0]), int(sock[1])

    async def stop(self, grace: float = 2.0) -> None:
        """Stop listening, close every connection, and give them ``grace`` seconds to flush
        their output; connections still open then (a client that never reads) are aborted,
        so a stop never hangs on a stalled peer."""
        loop = asyncio.get_running_loop()
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
        deadline = loop.time() + grace
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), grace)
        self.servers.clear()


class _TrackedConnection(LDAPConnection):
    def __init__(self, node: Node, ops: Operations, registry: set[LDAPConnection],
                 tls: ServerTLS | None, implicit_tls: bool) -> None:
        super().__init__(node, ops, tls=tls, implicit_tls=implicit_tls)
        self._registry = registry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._registry.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._registry.discard(self)
