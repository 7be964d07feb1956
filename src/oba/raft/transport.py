"""TCP (optionally mutual-TLS) transport between the ``raftAddr``s of a cluster.

Rules for this module:
- A frame is a 4-byte big-endian length then one msgpack map (``use_bin_type=True`` out,
  ``raw=False, strict_map_key=False`` in, with size limits). Never pickle. A frame larger than
  ``MAX_FRAME`` or that does not decode to a map with a ``"k"`` kind closes its connection.
- Every connection opens with ``{"k": "hello", "id": <sender node id>}``.
- Kinds: ``m`` (a Raft message, ``types.to_wire``), ``req``/``resp`` (a request with an ``id``
  answered on the same connection: forwarded commands, read-index), ``snap``/``snapc``/``snape``
  (a snapshot stream on a connection of its own: metadata, 1 MiB chunks, end marker; the
  receiver writes a temp file and answers ``snapack``).
- One outbound connection per peer, reconnecting with backoff (reset once connected, cut short
  when that peer connects to us: it is back), fed by a bounded queue; when it is full the
  oldest Raft message is dropped (Raft tolerates loss), requests are kept. A request to a peer
  whose last connection attempt failed fails at once instead of waiting out the backoff.
- Mutual TLS when a certificate is configured: both sides present a certificate that must chain
  to the cluster CA (``CERT_REQUIRED`` both ways, TLS >= 1.2); a peer without one is refused.
  Host names are not checked: peers are addressed by IP and the CA is the cluster's own.
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
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack

log = logging.getLogger("oba.raft")

MAX_FRAME = 64 * 1024 * 1024
CHUNK = 1024 * 1024
QUEUE_LIMIT = 4096
_LEN = struct.Struct(">I")

Frame = dict[str, Any]
MessageHandler = Callable[[int, Frame], None]
RequestHandler = Callable[[int, Frame], Awaitable[Frame]]
SnapshotHandler = Callable[[int, Frame, Path], Awaitable[bool]]


class FrameError(ValueError):
    """A frame that is too large or not a msgpack map with a kind."""


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


def make_ssl_contexts(cert: str, key: str, ca: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for mutual TLS; ``ca`` empty means the system store."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(cafile=ca)
        else:
            ctx.load_default_certs()
        ctx.verify_mode = ssl.CERT_REQUIRED
    client.check_hostname = False
    client.verify_mode = ssl.CERT_REQUIRED
    return server, client


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
        backoff = 0.02
        while True:
            try:
                host, port = split_addr(self.addr)
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=self.t.client_ssl), timeout=2.0)
            except (TimeoutError, OSError, ssl.SSLError) as exc:
                self.down = True
                self._fail_pending(f"cannot connect to node {self.id}: {exc}")
                self.t.report_unreachable(self.id, lost=isinstance(exc, ConnectionRefusedError))
                await self._pause(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            self.connected = True
            self.down = False
            backoff = 0.02
            reader_task = asyncio.ensure_future(self._read(reader))
            try:
                writer.write(encode_frame({"k": "hello", "id": self.t.node_id}))
                await self._write_loop(writer, reader_task)
            except (OSError, ConnectionError, ssl.SSLError, FrameError) as exc:
                log.debug("connection to node %d lost: %s", self.id, exc)
            finally:
                self.connected = False
                reader_task.cancel()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
                self._fail_pending(f"connection to node {self.id} lost")
                self.t.report_unreachable(self.id, lost=True)
            await self._pause(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _pause(self, delay: float) -> None:
        """The reconnect back-off, cut short when the peer connects to us (it is back up)."""
        self.kick.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.kick.wait(), delay)

    async def _write_loop(self, writer: asyncio.StreamWriter, reader_task: asyncio.Task[None]
                          ) -> None:
        while not reader_task.done():
            if not self.queue:
                self.wakeup.clear()
                waiter = asyncio.ensure_future(self.wakeup.wait())
                await asyncio.wait({waiter, reader_task}, return_when=asyncio.FIRST_COMPLETED)
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
            await writer.drain()
        raise ConnectionError("peer closed the connection")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while True:
                frame = await read_frame(reader)
                if frame["k"] == "resp":
                    fut = self.pending.pop(int(frame.get("id", -1)), None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame.get("b") or {})
                elif frame["k"] == "m":
                    self.t.dispatch_message(self.id, frame)

    def _fail_pending(self, why: str) -> None:
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
    ) -> None:
        """``on_unreachable(peer)``: a send path to ``peer`` failed (any reason);
        ``on_lost(peer)``: an established connection broke or the peer refused one (its
        process is probably gone; a slow or timed-out connect does not count)."""
        self.node_id = node_id
        self.listen_addr = listen_addr
        self.server_ssl = server_ssl
        self.client_ssl = client_ssl
        self.snapshot_dir = Path(snapshot_dir)
        self._on_message = on_message
        self._on_request = on_request
        self._on_snapshot = on_snapshot
        self._on_unreachable = on_unreachable
        self._on_lost = on_lost
        self._peers = {pid: _Peer(self, pid, addr) for pid, addr in peers.items()
                       if pid != node_id}
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        self._inbound: set[asyncio.Task[None]] = set()
        self._answers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        host, port = split_addr(self.listen_addr)
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_server(self._serve, host, port, ssl=self.server_ssl,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        for peer in self._peers.values():
            peer.task = asyncio.ensure_future(peer.run())

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks += list(self._inbound)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
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
        peer = self._peers.get(peer_id)
        return peer is not None and peer.connected

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
            raise ConnectionError(f"unknown node {to}")
        if peer.down and not peer.connected:  # do not wait out the reconnect back-off
            raise ConnectionError(f"node {to} is unreachable")
        rid = next(self._ids)
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        peer.pending[rid] = fut
        peer.put({"k": "req", "id": rid, "b": body})
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            peer.pending.pop(rid, None)

    async def send_snapshot(self, to: int, meta: Frame, path: Path, timeout: float = 60.0
                            ) -> bool:
        """Stream a snapshot file to a peer on a connection of its own; True when installed."""
        peer = self._peers.get(to)
        if peer is None:
            return False
        host, port = split_addr(peer.addr)
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=self.client_ssl)
                writer.write(encode_frame({"k": "hello", "id": self.node_id}))
                writer.write(encode_frame({"k": "snap", "meta": meta}))
                with open(path, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        writer.write(encode_frame({"k": "snapc", "d": chunk}))
                        await writer.drain()
                writer.write(encode_frame({"k": "snape"}))
                await writer.drain()
                answer = await read_frame(reader)
                return answer.get("k") == "snapack" and bool(answer.get("ok"))
        except (OSError, TimeoutError, ssl.SSLError, FrameError,
                asyncio.IncompleteReadError) as exc:
            log.warning("sending a snapshot to node %d failed: %s", to, exc)
            return False
        finally:
            if writer is not None:
                writer.close()

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
        try:
            hello = await asyncio.wait_for(read_frame(reader), 5.0)
            if hello["k"] != "hello" or not isinstance(hello.get("id"), int):
                raise FrameError("the first frame must be a hello")
            frm = int(hello["id"])
            peer = self._peers.get(frm)
            if peer is not None and not peer.connected:
                peer.kick.set()  # it is up again: do not wait out our back-off to answer it
            await self._serve_frames(frm, reader, writer)
        except (TimeoutError, OSError, ConnectionError, ssl.SSLError,
                asyncio.IncompleteReadError, FrameError) as exc:
            log.debug("inbound raft connection closed: %s", exc)
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio would log a cancelled connection callback)
        finally:
            if task is not None:
                self._inbound.discard(task)
            writer.close()

    async def _serve_frames(self, frm: int, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        snap: tuple[Frame, Any, str] | None = None
        try:
            while True:
                frame = await read_frame(reader)
                kind = frame["k"]
                if kind == "m":
                    self.dispatch_message(frm, frame)
                elif kind == "req":
                    task = asyncio.ensure_future(self._answer(frm, frame, writer))
                    self._answers.add(task)
                    task.add_done_callback(self._answers.discard)
                elif kind == "snap":
                    fd, name = tempfile.mkstemp(prefix="recv-", dir=self.snapshot_dir)
                    snap = (frame.get("meta") or {}, os.fdopen(fd, "wb"), name)
                elif kind == "snapc" and snap is not None:
                    snap[1].write(bytes(frame["d"]))
                elif kind == "snape" and snap is not None:
                    meta, fh, name = snap
                    fh.flush()
                    os.fsync(fh.fileno())
                    fh.close()
                    snap = None
                    ok = False
                    try:
                        ok = await self._on_snapshot(frm, meta, Path(name))
                    finally:
                        with contextlib.suppress(OSError):
                            os.unlink(name)
                    writer.write(encode_frame({"k": "snapack", "ok": ok}))
                    await writer.drain()
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
        with contextlib.suppress(Exception):
            writer.write(encode_frame({"k": "resp", "id": frame.get("id"), "b": body}))
            await writer.drain()
