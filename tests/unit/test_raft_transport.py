"""Raft transport on loopback: messages, requests, snapshot streams, bad frames, mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgpack
import pytest
import trustme
import uvloop

from oba.raft.transport import (
    MAX_FRAME,
    Frame,
    FrameError,
    LinkTiming,
    Transport,
    decode_body,
    encode_frame,
    make_ssl_contexts,
    read_frame,
)

pytestmark = pytest.mark.timeout(30)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[int, Frame]] = []
        self.snapshots: list[tuple[int, Frame, bytes]] = []

    def on_message(self, frm: int, frame: Frame) -> None:
        self.messages.append((frm, frame))

    async def on_request(self, frm: int, body: Frame) -> Frame:
        return {"echo": body.get("x"), "from": frm}

    async def on_snapshot(self, frm: int, meta: Frame, path: Path) -> bool:
        self.snapshots.append((frm, meta, path.read_bytes()))
        return True


def _pair(tmp_path: Path, ssl_for: Callable[[int], tuple[ssl.SSLContext | None,
                                                        ssl.SSLContext | None]] | None = None
          ) -> tuple[Transport, Transport, Inbox, Inbox]:
    import socket

    ports = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        ports.append(s.getsockname()[1])
        s.close()
    peers = {1: f"127.0.0.1:{ports[0]}", 2: f"127.0.0.1:{ports[1]}"}
    boxes = [Inbox(), Inbox()]
    ts = []
    for i, box in zip((1, 2), boxes, strict=True):
        server, client = ssl_for(i) if ssl_for else (None, None)
        ts.append(Transport(i, peers[i], peers, on_message=box.on_message,
                            on_request=box.on_request, on_snapshot=box.on_snapshot,
                            snapshot_dir=tmp_path / f"snap{i}", server_ssl=server,
                            client_ssl=client))
    return ts[0], ts[1], boxes[0], boxes[1]


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _run(coro: Awaitable[None]) -> None:
    """On uvloop, the loop every node runs (its TLS and stream behaviour differ in places)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)  # type: ignore[arg-type]


def test_frames_roundtrip_and_reject_garbage() -> None:
    frame = {"k": "m", "m": {"t": 1, "x": b"\x00\xff"}}
    raw = encode_frame(frame)
    assert struct.unpack(">I", raw[:4])[0] == len(raw) - 4
    assert decode_body(raw[4:]) == frame
    with pytest.raises(FrameError):
        decode_body(b"\xc1")
    with pytest.raises(FrameError):
        decode_body(msgpack.packb([1, 2]))


def test_messages_requests_and_snapshots(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, _, box_b = _pair(tmp_path)
        await a.start()
        await b.start()
        try:
            a.send(2, {"k": "m", "m": {"hello": 1}})
            await _until(lambda: bool(box_b.messages))
            assert box_b.messages[0] == (1, {"k": "m", "m": {"hello": 1}})
            assert await b.request(1, {"x": "ping"}, 5.0) == {"echo": "ping", "from": 2}
            data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
            src = tmp_path / "snapfile"
            src.write_bytes(data)
            assert await a.send_snapshot(2, {"t": 9}, src)
            assert box_b.snapshots == [(1, {"t": 9}, data)]
        finally:
            await a.stop()
            await b.stop()

    _run(main())


def test_oversized_or_malformed_frame_closes_the_connection(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, _, box_b = _pair(tmp_path)
        await b.start()
        try:
            host, port = b.listen_addr.split(":")
            for bad in (struct.pack(">I", MAX_FRAME + 1),
                        struct.pack(">I", 1) + b"\xc1",
                        encode_frame({"k": "hello", "id": 1}) + encode_frame({"k": "zzz"})):
                reader, writer = await asyncio.open_connection(host, int(port))
                if not bad.startswith(encode_frame({"k": "hello", "id": 1})):
                    writer.write(encode_frame({"k": "hello", "id": 1}))
                writer.write(bad)
                await writer.drain()
                # b answers the hello with its welcome at most, then closes the connection
                welcome = encode_frame({"k": "welcome", "id": 2})
                with contextlib.suppress(ConnectionResetError):
                    assert await asyncio.wait_for(reader.read(), 5.0) in (b"", welcome)
                writer.close()
            assert box_b.messages == []
        finally:
            await b.stop()
        del a

    _run(main())


def test_mutual_tls_refuses_a_certificate_from_another_ca(tmp_path: Path) -> None:
    ca, other = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def contexts(node: int, issuer: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        cert = issuer.issue_cert("127.0.0.1")
        cert_file, key_file = tmp_path / f"{node}.crt", tmp_path / f"{node}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        return make_ssl_contexts(str(cert_file), str(key_file), str(ca_file))

    good = {1: contexts(1, ca), 2: contexts(2, ca)}

    async def main(bad: bool) -> None:
        ctx = dict(good)
        if bad:
            ctx[1] = contexts(1, other)
        a, b, _, box_b = _pair(tmp_path, lambda i: ctx[i])
        await a.start()
        await b.start()
        try:
            a.send(2, {"k": "m", "m": {"n": 1}})
            if bad:
                await asyncio.sleep(0.5)
                assert box_b.messages == []
                assert not b.connected(1)
            else:
                await _until(lambda: bool(box_b.messages))
        finally:
            await a.stop()
            await b.stop()

    _run(main(bad=False))
    _run(main(bad=True))


# ---------------------------------------------------------------------- liveness of a link

FAST = LinkTiming(ping_interval=0.05, dead_after=0.2, connect_timeout=1.0, backoff_max=0.2)


class _Forwarder:
    """A middlebox on loopback: accepts at once, then connects onward to ``target``; ``hold``
    stops forwarding both ways on every connection (bytes stay in the kernel), and new
    connections are accepted but not connected onward until ``release``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.held = asyncio.Event()
        self.released = asyncio.Event()
        self.released.set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.accepted = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        await self.released.wait()
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    await self.released.wait()
                    dst.write(data)
                    await dst.drain()
            await self.released.wait()  # a held path holds the close too
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _via(tmp_path: Path, peers_a: dict[int, str], peers_b: dict[int, str],
         lost: list[int] | None = None) -> tuple[Transport, Transport, Inbox, Inbox]:
    boxes = [Inbox(), Inbox()]
    a = Transport(1, peers_a[1], peers_a, on_message=boxes[0].on_message,
                  on_request=boxes[0].on_request, on_snapshot=boxes[0].on_snapshot,
                  snapshot_dir=tmp_path / "s1", timing=FAST,
                  on_lost=None if lost is None else lost.append)
    b = Transport(2, peers_b[2], peers_b, on_message=boxes[1].on_message,
                  on_request=boxes[1].on_request, on_snapshot=boxes[1].on_snapshot,
                  snapshot_dir=tmp_path / "s2", timing=FAST)
    return a, b, boxes[0], boxes[1]


@contextlib.asynccontextmanager
async def _behind_box(tmp_path: Path, hold: bool = False, lost: list[int] | None = None
                      ) -> AsyncIterator[tuple[Transport, Transport, Inbox, _Forwarder]]:
    """Node 1 reaches node 2 through a ``_Forwarder`` (node 2 reaches node 1 directly); both
    started, stopped on exit."""
    pa, pb = _free_port(), _free_port()
    box = _Forwarder(pb)
    await box.start()
    if hold:
        box.hold()
    a, b, _, box_b = _via(tmp_path, {1: f"127.0.0.1:{pa}", 2: f"127.0.0.1:{box.port}"},
                          {1: f"127.0.0.1:{pa}", 2: f"127.0.0.1:{pb}"}, lost)
    await a.start()
    await b.start()
    try:
        yield a, b, box_b, box
    finally:
        await a.stop()
        await b.stop()
        box.close()


def test_a_middlebox_that_accepts_but_never_connects_is_not_a_connection(tmp_path: Path
                                                                         ) -> None:
    """The proxy accepts at once; the peer behind it never answers: not connected, the dial
    is torn down after dead_after and retried, a request fails as never sent; once the
    middlebox connects onward, the link comes up and messages flow."""

    async def main() -> None:
        async with _behind_box(tmp_path, hold=True) as (a, _, box_b, box):
            # torn down and redialled, not stuck on the first dial; never "connected"
            await _until(lambda: box.accepted >= 3, 10.0)
            assert not a.connected(2)
            with pytest.raises(ConnectionError):
                await a.request(2, {"x": 1}, 2.0)
            box.release()
            a.send(2, {"k": "m", "m": {"n": 1}})
            await _until(lambda: a.connected(2), 3.0)
            await _until(lambda: any(f == {"k": "m", "m": {"n": 1}}
                                     for _, f in box_b.messages), 3.0)
            assert await a.request(2, {"x": "after"}, 2.0) == {"echo": "after", "from": 1}

    _run(main())


def test_a_link_that_stops_moving_is_torn_down_and_redialled(tmp_path: Path) -> None:
    """An established link whose middlebox starts holding every byte (a route that drops
    packets, a frozen peer): within a few ping intervals the sender no longer calls it
    connected, does not report the peer as gone (it may be slow), and when the path heals
    a new connection carries messages again."""

    async def main() -> None:
        lost: list[int] = []
        async with _behind_box(tmp_path, lost=lost) as (a, _, box_b, box):
            await _until(lambda: a.connected(2), 3.0)
            lost.clear()  # (b may have started after a's first dial: that one was refused)
            box.hold()
            t0 = asyncio.get_running_loop().time()
            await _until(lambda: not a.connected(2), 3.0)
            took = asyncio.get_running_loop().time() - t0
            assert took < FAST.dead_after + 4 * FAST.ping_interval + 0.5
            assert lost == []  # silence is not death
            pending = asyncio.ensure_future(a.request(2, {"x": "held"}, 5.0))
            await asyncio.sleep(0.5)
            assert not a.connected(2)
            box.release()
            await _until(lambda: a.connected(2), 3.0)
            with contextlib.suppress(ConnectionError):
                await pending  # failed with the dead connection, or answered after the heal
            a.send(2, {"k": "m", "m": {"n": 2}})
            await _until(lambda: any(f == {"k": "m", "m": {"n": 2}}
                                     for _, f in box_b.messages), 3.0)
            assert a.link_stats()[2]["reconnects"] >= 1

    _run(main())


def test_a_peer_that_goes_away_behind_a_middlebox_is_reported_lost(tmp_path: Path) -> None:
    """When the peer process dies the middlebox closes our side: that is ``on_lost`` (a
    follower then campaigns at once instead of waiting out an election timeout)."""

    async def main() -> None:
        lost: list[int] = []
        async with _behind_box(tmp_path, lost=lost) as (a, b, _, _):
            await _until(lambda: a.connected(2), 3.0)
            await b.stop()
            await _until(lambda: 2 in lost, 3.0)
            await _until(lambda: not a.connected(2), 3.0)

    _run(main())


def test_an_idle_inbound_connection_is_closed(tmp_path: Path) -> None:
    async def main() -> None:
        a, b, _, _ = _pair(tmp_path)
        b.timing = FAST
        await b.start()
        try:
            host, port = b.listen_addr.split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(encode_frame({"k": "hello", "id": 1, "to": 2, "ch": "raft"}))
            assert (await read_frame(reader)) == {"k": "welcome", "id": 2}
            t0 = asyncio.get_running_loop().time()
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), 3.0) == b""
            assert asyncio.get_running_loop().time() - t0 < 1.0
            writer.close()
        finally:
            await b.stop()
        del a

    _run(main())
