"""The LDAP TCP listener: accepts connections and hands each to an ``LDAPConnection``.

Rules for this module: socket setup and connection bookkeeping only; protocol logic lives in
``connection.py``. ``tls`` (a ``ServerTLS``, set by ``oba.server.tls.start_ldaps``) enables
StartTLS on every listener; a listener started with ``implicit_tls`` is LDAPS (the handshake,
with the certificate current at that moment, precedes ``connection_made``). With
``server.workers`` > 1 the writer accepts every connection and its ``Dispatcher`` hands it (by
file descriptor) to the least busy listener process, or keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Any, Protocol

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


class Dispatcher(Protocol):
    """Where the writer's accepted connections go when ``server.workers`` > 1."""

    def choose(self, burst: list[int]) -> int: ...

    def hand_over(self, slot: int, conn: socket.socket, implicit_tls: bool) -> bool: ...


ACCEPT_BURST = 64  # connections accepted per readiness callback


class LDAPListener:
    """Three ways to get connections: listen (one process), listen and dispatch (the writer
    of ``server.workers``: ``dispatcher`` set before ``start``), or receive (a listener
    worker: ``receive_only``; its connections come from ``serve_socket``)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.ops = Operations(node)
        self.servers: list[asyncio.base_events.Server] = []
        self.connections: set[LDAPConnection] = set()
        self.tls: ServerTLS | None = None
        self.dispatcher: Dispatcher | None = None
        self.receive_only = False
        self._sockets: list[socket.socket] = []  # dispatch mode's listening sockets
        self._extra: dict[bool, dict[str, Any]] = {}  # implicit_tls -> create_server's ssl args
        self._tasks: set[asyncio.Task[None]] = set()

    def _factory(self, implicit_tls: bool = False) -> LDAPConnection:
        return _TrackedConnection(self.node, self.ops, self.connections, self.tls, implicit_tls)

    async def start(self, address: str, implicit_tls: bool = False) -> tuple[str, int]:
        """Listen on ``address`` (a worker only takes note that it serves this kind)."""
        host, port = split_address(address)
        if implicit_tls and self.tls is None:
            raise ValueError("LDAPS needs a TLS context")
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if implicit_tls and self.tls is not None:
            timeout = self.node.config.server.readTimeout.total_seconds()
            extra = {"ssl": self.tls.listener_context(),
                     "ssl_handshake_timeout": timeout if timeout > 0 else None}
        self._extra[implicit_tls] = extra
        if self.receive_only:
            return host, port
        if self.dispatcher is not None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=1024)
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._accept, sock, implicit_tls)
            self._sockets.append(sock)
            name = sock.getsockname()
        else:
            server = await loop.create_server(lambda: self._factory(implicit_tls), host, port,
                                              reuse_address=True, backlog=1024, **extra)
            self.servers.append(server)
            name = server.sockets[0].getsockname()
        scheme = "ldaps" if implicit_tls else "ldap"
        log.info("LDAP listening on %s://%s:%d", scheme, name[0], name[1])
        return str(name[0]), int(name[1])

    def _accept(self, sock: socket.socket, implicit_tls: bool) -> None:
        """Dispatch mode: accept what is waiting and give each connection to the process the
        dispatcher chooses (this one is slot 0)."""
        dispatcher = self.dispatcher
        assert dispatcher is not None
        burst: list[int] = []
        for _ in range(ACCEPT_BURST):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again at the next readiness
                log.warning("accept failed: %s", exc)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            slot = dispatcher.choose(burst)
            burst.append(slot)
            if slot and dispatcher.hand_over(slot, conn, implicit_tls):
                continue  # the dispatcher owns ``conn`` now
            self.serve_socket(conn, implicit_tls)

    def serve_socket(self, conn: socket.socket, implicit_tls: bool) -> None:
        """Serve an accepted connection here (LDAPS: after its TLS handshake)."""
        task = asyncio.ensure_future(self._serve(conn, implicit_tls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket, implicit_tls: bool) -> None:
        loop = asyncio.get_running_loop()
        extra = self._extra.get(implicit_tls)
        if extra is None:  # this kind is not served (LDAPS without a certificate)
            conn.close()
            return
        try:
            await loop.connect_accepted_socket(lambda: self._factory(implicit_tls), conn,
                                               **extra)
        except (OSError, ssl.SSLError, TimeoutError) as exc:  # e.g. a failed TLS handshake
            log.debug("connection dropped before it was served: %s", exc)
            conn.close()

    async def stop(self, grace: float = 2.0) -> None:
        """Stop listening, close every connection, and give them ``grace`` seconds to flush
        their output; connections still open then (a client that never reads) are aborted,
        so a stop never hangs on a stalled peer."""
        loop = asyncio.get_running_loop()
        for server in self.servers:
            server.close()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        for task in list(self._tasks):
            task.cancel()
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
