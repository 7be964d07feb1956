"""TCP (optionally mutual-TLS) transport between the ``raftAddr``s of a cluster.

Rules for this module:
- A frame is a 4-byte big-endian length then one msgpack map (``use_bin_type=True`` out,
  ``raw=False, strict_map_key=False`` in, with size limits). Never pickle. A frame larger than
  ``MAX_FRAME`` or that does not decode to a map with a ``"k"`` kind closes its connection.
- Every connection opens with ``{"k": "hello", "id": <sender>, "to": <receiver>, "ch": "raft"
  | "snap"}``; the receiver answers ``{"k": "welcome", "id": <receiver>}``. "Connected" means
  the peer ANSWERED, not that a TCP connect succeeded: a load balancer, a sidecar or Docker's
  userland proxy accepts a connection before (or without ever) reaching the peer.
- Kinds on a ``raft`` connection: ``m`` (a Raft message, ``types.to_wire``), ``req``/``resp``
  (a request with an ``id`` answered on the same connection: forwarded commands, admin),
  ``ping``/``pong`` (liveness). A ``snap`` connection carries one snapshot: ``snap``
  (metadata), ``snapc`` (1 MiB chunks), ``snape`` (end); the receiver writes a temp file,
  fsyncs it (saying ``snapwait`` meanwhile) and answers ``snapack``.
- Every wait on a peer is bounded (``LinkTiming``): connect and TLS handshake, the welcome,
  each drain, each read, close (connections are aborted, never closed gracefully: a graceful
  close waits for a peer that may never read again). The sender pings every
  ``ping_interval``; a connection on which nothing arrives for ``dead_after`` (pongs, answers,
  the welcome) is torn down, logged at warning level, and redialled; an inbound connection on
  which nothing arrives for ``dead_after`` is aborted.
- One outbound connection per peer, redialled with a back-off (reset once the peer answered,
  cut short when that peer connects to us: it is back), fed by a bounded queue; when it is full
  the oldest Raft message is dropped (Raft tolerates loss), requests are kept. A torn-down
  connection drops what was queued for it (stale by the time of the next one) and fails its
  pending requests (a queued request fails with ``NotSent``: it had no effect). A request to a
  peer whose last connection attempt failed fails at once.
- ``on_lost(peer)`` only when the peer's side went away (EOF, reset, refused): its process is
  probably gone. A silent peer (no progress) is ``on_unreachable`` only: it may just be slow.
- The network is injectable (``Network``): ``TcpNetwork`` in production, an in-memory one in
  the deterministic simulation (tests/unit/raftnet.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
import struct
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgpack

from oba.raft.tls import make_ssl_contexts

log = logging.getLogger("oba.raft")

__all__ = [
    "CHUNK",
    "MAX_FRAME",
    "Blocking",
    "Frame",
    "FrameError",
    "LinkTiming",
    "Network",
    "NotSent",
    "TcpNetwork",
    "Transport",
    "decode_body",
    "encode_frame",
    "make_ssl_contexts",
    "read_frame",
    "split_addr",
]

MAX_FRAME = 64 * 1024 * 1024
CHUNK = 1024 * 1024
QUEUE_LIMIT = 4096
WRITE_BUFFER_LIMIT = 8 * 1024 * 1024  # an inbound peer that stops reading our pongs/answers
_LEN = struct.Struct(">I")

Frame = dict[str, Any]
MessageHandler = Callable[[int, Frame], None]
RequestHandler = Callable[[int, Frame], Awaitable[Frame]]
SnapshotHandler = Callable[[int, Frame, Path], Awaitable[bool]]
ConnectionCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Blocking = Callable[..., Awaitable[Any]]  # run a blocking call off the loop (asyncio.to_thread)


class FrameError(ValueError):
    """A frame that is too large or not a msgpack map with a kind."""


class NotSent(ConnectionError):
    """A request that never left this node (the peer is unreachable): it had no effect."""


def encode_frame(frame: Frame) -> bytes:
    body: bytes = msgpack.packb(frame, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LEN.pack(len(body)) + body


def decode_body(body: bytes) -> Frame:
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False, max_bin_len=MAX_FRAME,
                              max_str_len=MAX_FRAME, max_array_len=1 << 20,
                              max_map_len=1 << 20)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"undecodable frame: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("k"), str):
        raise FrameError("a frame must be a map with a kind")
    return obj


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    head = await reader.readexactly(4)
    (size,) = _LEN.unpack(head)
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    return decode_body(await reader.readexactly(size))


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return (host.strip("[]") or "0.0.0.0"), int(port)


_PING = encode_frame({"k": "ping"})
_PONG = encode_frame({"k": "pong"})


@dataclass(frozen=True, slots=True)
class LinkTiming:
    """Bounds of every wait on a peer (seconds)."""

    ping_interval: float = 0.1
    dead_after: float = 0.4  # nothing received for this long: the connection is dead
    connect_timeout: float = 2.0  # TCP connect plus TLS handshake
    backoff_min: float = 0.02
    backoff_max: float = 0.5
    snapshot_idle: float = 5.0  # no progress on a snapshot stream for this long: give up

    @classmethod
    def for_raft(cls, heartbeat: float, election: float) -> LinkTiming:
        """``dead_after`` = 8 heartbeat intervals, at least two election timeouts (400 ms for
        the default 50/150 ms): several heartbeats lost in a row, not one slow scheduling."""
        dead = max(8 * heartbeat, 2 * election)
        return cls(ping_interval=dead / 4, dead_after=dead,
                   connect_timeout=max(2.0, dead), backoff_max=max(0.5, dead))


class ListeningServer(Protocol):
    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class Network(Protocol):
    """How a transport reaches its peers (TCP here, memory in the simulation)."""

    async def open_connection(self, host: str, port: int, ssl_ctx: ssl.SSLContext | None,
                              timeout: float
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...

    async def start_server(self, cb: ConnectionCallback, host: str, port: int,
                           ssl_ctx: ssl.SSLContext | None, timeout: float
                           ) -> tuple[ListeningServer, int]: ...


class TcpNetwork:
    async def open_connection(self, host: str, port: int, ssl_ctx: ssl.SSLContext | None,
                              timeout: float
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_ctx,
                                    ssl_handshake_timeout=timeout if ssl_ctx else None),
            timeout)

    async def start_server(self, cb: ConnectionCallback, host: str, port: int,
                           ssl_ctx: ssl.SSLContext | None, timeout: float
                           ) -> tuple[ListeningServer, int]:
        # (a handshake this side refuses is logged by the dialling side, which gets the
        # alert: asyncio and uvloop report server-side handshake failures only in debug mode)
        server = await asyncio.start_server(cb, host, port, reuse_address=True, ssl=ssl_ctx,
                                            ssl_handshake_timeout=timeout if ssl_ctx else None)
        return server, int(server.sockets[0].getsockname()[1])


class _Throttle:
    """One warning per key, then at most one every ``period`` seconds (with a count)."""

    def __init__(self, period: float = 30.0) -> None:
        self.period = period
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last, skipped = self._last.get(key, (-1e18, 0))
        if now - last < self.period:
            self._last[key] = (last, skipped + 1)
            return
        self._last[key] = (now, 0)
        if skipped:
            msg += f" ({skipped} more like it since the last report)"
        log.warning(msg, *args)

    def clear(self, key: str) -> None:
        self._last.pop(key, None)


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


class _Conn:
    """One outbound connection's liveness."""

    __slots__ = ("dead", "last_rx", "lost", "welcomed")

    def __init__(self, now: float) -> None:
        self.last_rx = now
        self.welcomed = False
        self.lost = False  # the peer's side went away (EOF/reset): its process is gone
        self.dead: str = ""  # why it was torn down (set once)


class _Peer:
    """The outbound connection to one peer with its bounded queue and pending requests."""

    def __init__(self, transport: Transport, peer_id: int, addr: str) -> None:
        self.t = transport
        self.id = peer_id
        self.addr = addr
        self.queue: deque[Frame] = deque()
        self.wakeup = asyncio.Event()
        self.pending: dict[int, asyncio.Future[Frame]] = {}
        self.task: asyncio.Task[None] | None = None
        self.connected = False
        self.down = False  # the last connection attempt failed: requests fail fast
        self.kick = asyncio.Event()  # set: retry connecting now (the peer just called us)
        self.dropped = 0
        self.reconnects = 0  # connections torn down for lack of progress

    def put(self, frame: Frame) -> None:
        if len(self.queue) >= QUEUE_LIMIT:
            for i, old in enumerate(self.queue):
                if old.get("k") == "m":
                    del self.queue[i]
                    break
            else:
                self.queue.popleft()
            self.dropped += 1
        self.queue.append(frame)
        self.wakeup.set()

    async def run(self) -> None:
        backoff = self.t.timing.backoff_min
        while True:
            try:
                answered = await self._connect_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the redial loop die: the peer would be lost forever
                log.exception("raft connection to node %d failed unexpectedly", self.id)
                answered = False
            if answered:
                backoff = self.t.timing.backoff_min
            await self._pause(backoff)
            backoff = min(backoff * 2, self.t.timing.backoff_max)

    async def _connect_once(self) -> bool:
        """Dial, serve the connection until it dies; True when the peer answered on it."""
        t = self.t
        host, port = split_addr(self.addr)
        try:
            reader, writer = await t.network.open_connection(host, port, t.client_ssl,
                                                             t.timing.connect_timeout)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            self._gone(f"cannot connect to node {self.id} at {self.addr}: "
                       f"{exc or type(exc).__name__}",
                       lost=isinstance(exc, ConnectionRefusedError),
                       tls=isinstance(exc, ssl.SSLError))
            return False
        loop = asyncio.get_running_loop()
        conn = _Conn(loop.time())
        writer.write(encode_frame({"k": "hello", "id": t.node_id, "to": self.id, "ch": "raft"}))
        reader_task = asyncio.ensure_future(self._read(reader, conn))
        watchdog = asyncio.ensure_future(self._watch(writer, conn))
        why = ""
        try:
            await self._write_loop(writer, conn, reader_task, watchdog)
        except (OSError, ConnectionError, ssl.SSLError, FrameError) as exc:
            why = str(exc) or type(exc).__name__
            if not conn.dead and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                conn.lost = True  # a write found it closed before the reader saw the EOF
        finally:
            self.connected = False
            reader_task.cancel()
            watchdog.cancel()
            _abort(writer)
            self._drop_queue(messages=True)
        why = conn.dead or why or "closed"
        if conn.welcomed:
            log.info("raft connection to node %d lost: %s", self.id, why)
        self._gone(f"connection to node {self.id} at {self.addr} lost: {why}", lost=conn.lost,
                   quiet=not conn.dead)
        return conn.welcomed

    def _gone(self, why: str, lost: bool, tls: bool = False, quiet: bool = True) -> None:
        self.down = True
        self._fail_pending(why)
        if tls:
            self.t.throttle.warn(f"tls{self.id}", "raft TLS handshake with node %d failed: %s",
                                 self.id, why)
        elif not quiet:
            self.t.throttle.warn(f"stall{self.id}", "%s", why)
        else:
            log.debug("%s", why)
        self.t.report_unreachable(self.id, lost=lost)

    async def _pause(self, delay: float) -> None:
        """The reconnect back-off, cut short when the peer connects to us (it is back up)."""
        self.kick.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.kick.wait(), delay)

    async def _watch(self, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        """Ping; tear the connection down when nothing came back for ``dead_after``."""
        loop = asyncio.get_running_loop()
        timing = self.t.timing
        while True:
            due = loop.time() + timing.ping_interval
            await asyncio.sleep(timing.ping_interval)
            if loop.time() - due > timing.ping_interval / 2:
                # this process was stalled, not (necessarily) the peer: what it sent may be
                # waiting in our socket buffer; judge it after the readers have run
                writer.write(_PING)
                continue
            idle = loop.time() - conn.last_rx
            if idle > timing.dead_after:
                what = "answered nothing" if conn.welcomed else "never answered"
                conn.dead = (f"the peer {what} for {idle * 1000:.0f} ms "
                             f"(limit {timing.dead_after * 1000:.0f} ms): reconnecting")
                self.reconnects += 1
                _abort(writer)
                self.wakeup.set()
                return
            writer.write(_PING)

    async def _write_loop(self, writer: asyncio.StreamWriter, conn: _Conn,
                          reader_task: asyncio.Task[None], watchdog: asyncio.Task[None]
                          ) -> None:
        while not reader_task.done() and not watchdog.done():
            if not self.queue or not conn.welcomed:
                self.wakeup.clear()
                waiter = asyncio.ensure_future(self.wakeup.wait())
                await asyncio.wait({waiter, reader_task, watchdog},
                                   return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                continue
            out: list[bytes] = []
            while self.queue:
                frame = self.queue.popleft()
                try:
                    out.append(encode_frame(frame))
                except FrameError:
                    log.warning("dropping an oversized frame to node %d", self.id)
            writer.write(b"".join(out))  # everything queued in one write (one send call)
            # bounded by the watchdog: it aborts the connection when the peer stops answering
            await writer.drain()
        raise ConnectionError(conn.dead or "peer closed the connection")

    async def _read(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await read_frame(reader)
                conn.last_rx = loop.time()
                kind = frame["k"]
                if kind == "pong":
                    continue
                if kind == "welcome":
                    if frame.get("id") != self.id:
                        self.t.throttle.warn(
                            f"wrong{self.id}", "raft address %s of node %d is answered by "
                            "node %s: check cluster.peers", self.addr, self.id, frame.get("id"))
                        conn.dead = f"answered by node {frame.get('id')}, not {self.id}"
                        return
                    conn.welcomed = True
                    if not self.connected:
                        self.connected = True
                        self.down = False
                        self.t.throttle.clear(f"stall{self.id}")
                        self.t.throttle.clear(f"tls{self.id}")
                        log.info("raft connection to node %d at %s established", self.id,
                                 self.addr)
                    self.wakeup.set()
                elif kind == "resp":
                    fut = self.pending.pop(int(frame.get("id", -1)), None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame.get("b") or {})
                elif kind == "m":
                    self.t.dispatch_message(self.id, frame)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            conn.lost = not conn.dead  # EOF or reset from the peer's side
            log.debug("raft connection to node %d closed by the peer: %s", self.id, exc)
        except ssl.SSLError as exc:
            self.t.throttle.warn(f"tls{self.id}", "raft TLS with node %d failed: %s", self.id,
                                 exc)
        except (OSError, FrameError) as exc:
            log.debug("raft connection to node %d failed: %s", self.id, exc)

    def _drop_queue(self, messages: bool = False) -> None:
        """Fail the queued requests (never sent: ``NotSent``); with ``messages`` drop the
        queued Raft messages too (they were meant for a connection that died)."""
        keep: deque[Frame] = deque()
        for frame in self.queue:
            if frame.get("k") == "req":
                fut = self.pending.pop(int(frame["id"]), None)
                if fut is not None and not fut.done():
                    fut.set_exception(NotSent(f"node {self.id} is unreachable"))
            elif not messages:
                keep.append(frame)
        self.queue = keep

    def _fail_pending(self, why: str) -> None:
        self._drop_queue()
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(why))


class Transport:
    """Frames between this node and its peers; callbacks run on the event loop."""

    def __init__(
        self,
        node_id: int,
        listen_addr: str,
        peers: dict[int, str],
        *,
        on_message: MessageHandler,
        on_request: RequestHandler,
        on_snapshot: SnapshotHandler,
        snapshot_dir: str | Path,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        on_unreachable: Callable[[int], None] | None = None,
        on_lost: Callable[[int], None] | None = None,
        timing: LinkTiming | None = None,
        network: Network | None = None,
        run_blocking: Blocking | None = None,
    ) -> None:
        """``on_unreachable(peer)``: a send path to ``peer`` failed (any reason);
        ``on_lost(peer)``: an established connection broke or the peer refused one (its
        process is probably gone; a slow or silent peer does not count)."""
        self.node_id = node_id
        self.listen_addr = listen_addr
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.timing = timing or LinkTiming()
        self.network: Network = network or TcpNetwork()
        self._blocking: Blocking = run_blocking or asyncio.to_thread
        self.snapshot_dir = Path(snapshot_dir)
        self.throttle = _Throttle()
        self._on_message = on_message
        self._on_request = on_request
        self._on_snapshot = on_snapshot
        self._on_unreachable = on_unreachable
        self._on_lost = on_lost
        self._peers = {pid: _Peer(self, pid, addr) for pid, addr in peers.items()
                       if pid != node_id}
        self._server: ListeningServer | None = None
        self._ids = itertools.count(1)
        self._inbound: set[asyncio.Task[None]] = set()
        self._answers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        host, port = split_addr(self.listen_addr)
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        self._server, self.port = await self.network.start_server(
            self._serve, host, port, self.server_ssl, self.timing.connect_timeout)
        for peer in self._peers.values():
            peer.task = asyncio.ensure_future(peer.run())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks += [*self._inbound, *self._answers]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 1.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def add_peer(self, peer_id: int, addr: str) -> None:
        """Start talking to ``peer_id`` at ``addr`` (a known peer whose address changed is
        reconnected there)."""
        if peer_id == self.node_id:
            return
        old = self._peers.get(peer_id)
        if old is not None:
            if old.addr == addr:
                return
            self.remove_peer(peer_id)
        peer = self._peers[peer_id] = _Peer(self, peer_id, addr)
        if self._server is not None:
            peer.task = asyncio.ensure_future(peer.run())

    def remove_peer(self, peer_id: int) -> None:
        peer = self._peers.pop(peer_id, None)
        if peer is not None and peer.task is not None:
            peer.task.cancel()

    def connected(self, peer_id: int) -> bool:
        """The peer answered on our connection to it and has not gone silent since."""
        peer = self._peers.get(peer_id)
        return peer is not None and peer.connected

    def link_stats(self) -> dict[int, dict[str, Any]]:
        return {pid: {"addr": p.addr, "connected": p.connected, "queued": len(p.queue),
                      "dropped": p.dropped, "reconnects": p.reconnects}
                for pid, p in sorted(self._peers.items())}

    # ------------------------------------------------------------------ sending

    def send(self, to: int, frame: Frame) -> None:
        """Queue a one-way frame (a Raft message) to a peer; never blocks."""
        peer = self._peers.get(to)
        if peer is not None:
            peer.put(frame)

    async def request(self, to: int, body: Frame, timeout: float) -> Frame:
        """Send a request to a peer and wait for its answer (raises on loss or timeout)."""
        peer = self._peers.get(to)
        if peer is None:
            raise NotSent(f"unknown node {to}")
        if peer.down and not peer.connected:  # do not wait out the reconnect back-off
            raise NotSent(f"node {to} is unreachable")
        rid = next(self._ids)
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        peer.pending[rid] = fut
        peer.put({"k": "req", "id": rid, "b": body})
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            peer.pending.pop(rid, None)

    async def send_snapshot(self, to: int, meta: Frame, path: Path) -> bool:
        """Stream a snapshot file to a peer on a connection of its own; True when installed.
        Each step is bounded by ``snapshot_idle`` (progress, not total size)."""
        peer = self._peers.get(to)
        if peer is None:
            return False
        timing = self.timing
        host, port = split_addr(peer.addr)
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await self.network.open_connection(host, port, self.client_ssl,
                                                                timing.connect_timeout)
            writer.write(encode_frame({"k": "hello", "id": self.node_id, "to": to,
                                       "ch": "snap"}))
            welcome = await asyncio.wait_for(read_frame(reader), timing.snapshot_idle)
            if welcome.get("k") != "welcome" or welcome.get("id") != to:
                raise FrameError(f"unexpected answer {welcome.get('k')!r} to a snapshot")
            writer.write(encode_frame({"k": "snap", "meta": meta}))
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    writer.write(encode_frame({"k": "snapc", "d": chunk}))
                    await asyncio.wait_for(writer.drain(), timing.snapshot_idle)
            writer.write(encode_frame({"k": "snape"}))
            await asyncio.wait_for(writer.drain(), timing.snapshot_idle)
            while True:  # the receiver says "snapwait" while it fsyncs: progress, not size
                answer = await asyncio.wait_for(read_frame(reader), timing.snapshot_idle)
                if answer.get("k") != "snapwait":
                    return answer.get("k") == "snapack" and bool(answer.get("ok"))
        except (OSError, TimeoutError, ssl.SSLError, FrameError,
                asyncio.IncompleteReadError) as exc:
            log.warning("sending a snapshot to node %d failed: %s", to,
                        str(exc) or type(exc).__name__)
            return False
        finally:
            if writer is not None:
                _abort(writer)

    # ------------------------------------------------------------------ receiving

    def dispatch_message(self, frm: int, frame: Frame) -> None:
        try:
            self._on_message(frm, frame)
        except Exception:
            log.exception("bad Raft message from node %d", frm)

    def report_unreachable(self, peer_id: int, lost: bool = False) -> None:
        if self._on_unreachable is not None:
            self._on_unreachable(peer_id)
        if lost and self._on_lost is not None:
            self._on_lost(peer_id)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inbound.add(task)
        timing = self.timing
        peer_addr = writer.get_extra_info("peername")
        try:
            hello = await asyncio.wait_for(read_frame(reader), timing.connect_timeout)
            if hello["k"] != "hello" or not isinstance(hello.get("id"), int):
                raise FrameError("the first frame must be a hello")
            frm = int(hello["id"])
            to = hello.get("to")
            if isinstance(to, int) and to != self.node_id:
                self.throttle.warn(f"misaddressed{frm}", "node %d dialled this node (%d) as "
                                   "node %d: check its cluster.peers", frm, self.node_id, to)
                return
            writer.write(encode_frame({"k": "welcome", "id": self.node_id}))
            peer = self._peers.get(frm)
            if peer is not None and not peer.connected:
                peer.kick.set()  # it is up again: do not wait out our back-off to answer it
            await self._serve_frames(frm, reader, writer, hello.get("ch") == "snap")
        except (TimeoutError, OSError, ConnectionError, ssl.SSLError,
                asyncio.IncompleteReadError, FrameError) as exc:
            log.debug("inbound raft connection from %s closed: %s", peer_addr,
                      str(exc) or type(exc).__name__)
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio would log a cancelled connection callback)
        finally:
            if task is not None:
                self._inbound.discard(task)
            _abort(writer)

    async def _serve_frames(self, frm: int, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, snapshot: bool) -> None:
        timing = self.timing
        idle = timing.snapshot_idle if snapshot else timing.dead_after
        snap: tuple[Frame, Any, str] | None = None
        try:
            while True:
                frame = await asyncio.wait_for(read_frame(reader), idle)
                kind = frame["k"]
                if kind == "m":
                    self.dispatch_message(frm, frame)
                elif kind == "ping":
                    if writer.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
                        raise ConnectionError("the peer does not read its pongs")
                    writer.write(_PONG)
                elif kind == "req":
                    task = asyncio.ensure_future(self._answer(frm, frame, writer))
                    self._answers.add(task)
                    task.add_done_callback(self._answers.discard)
                elif kind == "snap" and snapshot:
                    fd, name = tempfile.mkstemp(prefix="recv-", dir=self.snapshot_dir)
                    snap = (frame.get("meta") or {}, os.fdopen(fd, "wb"), name)
                elif kind == "snapc" and snap is not None:
                    snap[1].write(bytes(frame["d"]))
                elif kind == "snape" and snap is not None:
                    meta, fh, name = snap
                    snap = None
                    ok = False
                    keepalive = asyncio.ensure_future(_snapwait(writer, idle / 4))
                    try:
                        await self._blocking(_fsync_close, fh)
                        ok = await self._on_snapshot(frm, meta, Path(name))
                    finally:
                        keepalive.cancel()
                        with contextlib.suppress(OSError):
                            os.unlink(name)  # kept under another name when accepted
                    writer.write(encode_frame({"k": "snapack", "ok": ok}))
                    await asyncio.wait_for(writer.drain(), idle)
                    return
                else:
                    raise FrameError(f"unexpected frame kind {kind!r}")
        finally:
            if snap is not None:
                snap[1].close()
                with contextlib.suppress(OSError):
                    os.unlink(snap[2])

    async def _answer(self, frm: int, frame: Frame, writer: asyncio.StreamWriter) -> None:
        try:
            body = await self._on_request(frm, frame.get("b") or {})
        except Exception as exc:
            log.exception("request from node %d failed", frm)
            body = {"error": f"internal error: {exc}"}
        if writer.is_closing():
            return
        try:
            writer.write(encode_frame({"k": "resp", "id": frame.get("id"), "b": body}))
            await asyncio.wait_for(writer.drain(), self.timing.dead_after)
        except (TimeoutError, OSError, ConnectionError, FrameError):
            _abort(writer)  # the caller stopped reading: its side redials


async def _snapwait(writer: asyncio.StreamWriter, every: float) -> None:
    """Tell a snapshot's sender, while the file is being made durable, that this side is
    alive (its wait for the answer is bounded by progress, not by the file's size)."""
    frame = encode_frame({"k": "snapwait"})
    while True:
        await asyncio.sleep(every)
        if writer.is_closing():
            return
        writer.write(frame)


def _fsync_close(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
