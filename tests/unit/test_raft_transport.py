"""Raft transport on loopback: messages, requests, snapshot streams, bad frames, mutual TLS."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack
import pytest
import trustme

from oba.raft.transport import (
    MAX_FRAME,
    Frame,
    FrameError,
    Transport,
    decode_body,
    encode_frame,
    make_ssl_contexts,
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
    asyncio.run(coro)  # type: ignore[arg-type]


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
                assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed by b
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
