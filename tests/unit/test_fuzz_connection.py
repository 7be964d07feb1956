"""Fuzzing of request handling: random and mutated PDUs fed to a real ``LDAPConnection``.

Rules:
- The connection runs on a real ``Node`` (temp LMDB store, local replicator, base entry) with a
  fake transport that records output; one event loop serves the whole module.
- Oracle for every input: no exception escapes ``data_received`` or any task, nothing is logged
  at ERROR (an internal error is a bug, not an answer), the output is a sequence of valid
  response PDUs, and the connection either answers every request needing an answer or closes
  with a Notice of Disconnection.
- ``make test`` runs a short budget; ``OBA_FUZZ_EXAMPLES=20000`` runs longer. Inputs that once
  failed live in ``fuzz_corpus/`` and are replayed on every run.
- Also here: the backpressure rules (outstanding-request cap, pause while the write buffer is
  high, idle and write timeouts), which need the same fake transport.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oba.app import NodeRuntime
from oba.config import Config
from oba.events import ChangeHub
from oba.operations import Operations
from oba.protocol.codec import LDAPDecoder, ProtocolError, encode_message
from oba.protocol.messages import (
    AbandonRequest,
    AddRequest,
    BindRequest,
    Control,
    ExtendedRequest,
    ExtendedResponse,
    LDAPMessage,
    Present,
    SearchRequest,
    SearchResultDone,
    SearchResultEntry,
    SearchResultReference,
    UnbindRequest,
)
from oba.server import connection as connection_module
from oba.server.connection import NOTICE_OF_DISCONNECTION, LDAPConnection

HERE = Path(__file__).parent
SEEDS = [p.read_bytes() for p in sorted((HERE / "fuzz_seeds").glob("*.ber"))]
CORPUS = sorted((HERE / "fuzz_corpus").glob("*.ber"))
EXAMPLES = int(os.environ.get("OBA_FUZZ_EXAMPLES", "600"))
BASE = "dc=example,dc=com"
RESPONSE_TYPES = (SearchResultEntry, SearchResultReference, SearchResultDone)
PSEARCH = "2.16.840.1.113730.3.4.3"


class FakeTransport:
    """Just enough of ``asyncio.Transport`` for a connection; records what is written."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.buffered = 0  # what get_write_buffer_size reports
        self.protocol: LDAPConnection | None = None

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.out += data

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self.protocol is not None
            self.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 4242)}.get(name, default)


def _name(task: asyncio.Task[Any]) -> str:
    return str(getattr(task.get_coro(), "__qualname__", ""))


class Harness:
    def __init__(self, tmp: Path, **server: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[str] = []
        self.loop.set_exception_handler(lambda _loop, ctx: self.errors.append(str(ctx)))
        config = Config.model_validate({
            "server": server,
            "directory": {"baseDN": BASE, "rootDN": f"cn=admin,{BASE}", "rootPassword": "secret"},
            "storage": {"dataDir": str(tmp), "mapSize": "256MiB"},
        })
        self.runtime = NodeRuntime(config)
        self.node = self.runtime.node
        self.ops = Operations(self.node)

        async def boot() -> None:
            self.node.events = ChangeHub(asyncio.get_running_loop())
            self.runtime.replicator.add_listener(self.node.events.publish)
            self.runtime.replicator.start()
            await self.runtime.bootstrap()

        self.loop.run_until_complete(boot())

    def connect(self, ops: Operations | None = None) -> tuple[LDAPConnection, FakeTransport]:
        conn = LDAPConnection(self.node, ops or self.ops)
        transport = FakeTransport(self.loop)
        transport.protocol = conn

        async def made() -> None:
            conn.connection_made(transport)  # type: ignore[arg-type]

        self.loop.run_until_complete(made())
        return conn, transport

    def settle(self, conn: LDAPConnection, timeout: float = 2.0) -> None:
        """Run the loop until the connection has nothing outstanding (or the deadline)."""

        async def wait() -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.005)
                busy = [t for t in conn.pending.values()
                        if not t.done() and "PersistentSearch" not in _name(t)]
                if not busy and not conn._upgrading:
                    return

        self.loop.run_until_complete(wait())

    def call(self, fn: Any, *args: Any) -> Any:
        """Call ``fn`` from inside the loop, as the transport would."""

        async def inside() -> Any:
            return fn(*args)

        return self.loop.run_until_complete(inside())

    def run_for(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def close(self) -> None:
        async def stop() -> None:
            await self.runtime.replicator.stop()

        self.loop.run_until_complete(stop())
        self.runtime.store.close()
        self.loop.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("fuzz-node"))
    yield h
    h.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def factory(**server: Any) -> Harness:
        made.append(Harness(tmp_path / f"n{len(made)}", **server))
        return made[-1]

    yield factory
    for h in made:
        h.close()


# --------------------------------------------------------------------------- the oracle


def parse_requests(data: bytes) -> tuple[list[LDAPMessage], bool]:
    """What the server's own decoder sees: the messages before the first framing error, and
    whether such an error comes."""
    decoder = LDAPDecoder(10 * 1024 * 1024)
    decoder.feed(data)
    out: list[LDAPMessage] = []
    while True:
        try:
            msg = decoder.next_message()
        except ProtocolError:
            return out, True
        if msg is None:
            return out, False
        out.append(msg)


def run_input(h: Harness, data: bytes, cuts: list[int], caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    conn, transport = h.connect()
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    for piece in pieces:
        if transport.closed:
            break
        h.call(conn.data_received, piece)  # an exception escaping here fails the test
        h.run_for(0)
    h.settle(conn, 1.0)
    closed = transport.closed
    if not closed:
        h.call(conn.connection_lost, None)
    assert not h.errors, h.errors
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    # every byte written is a complete, valid response PDU
    responses, framing_error = parse_requests(bytes(transport.out))
    assert not framing_error, bytes(transport.out)[:200]
    decoder = LDAPDecoder(10**9)
    decoder.feed(bytes(transport.out))
    while decoder.next_message() is not None:
        pass
    assert decoder.buffered() == 0
    notices = [r for r in responses if r.message_id == 0 and isinstance(r.op, ExtendedResponse)
               and r.op.name == NOTICE_OF_DISCONNECTION]
    for notice in notices:
        assert isinstance(notice.op, ExtendedResponse)
        assert int(notice.op.result.code) != 80, "internal server error"
    answered = {r.message_id for r in responses}
    requests, bad_framing = parse_requests(data)
    if bad_framing and not closed:
        # everything before the bad PDU may still be pending behind a block; never silently
        # accepted: the connection must not have consumed the bad bytes without closing
        assert conn.decoder.buffered() > 0 or conn._reading_paused
    if closed or notices or any(isinstance(m.op, UnbindRequest) for m in requests):
        return  # an unbind or a disconnection drops the answers to what is still running
    abandoned = {m.op.message_id for m in requests if isinstance(m.op, AbandonRequest)}
    for msg in requests:
        if isinstance(msg.op, AbandonRequest) or msg.message_id in abandoned:
            continue
        if isinstance(msg.op, SearchRequest) and any(c.oid == PSEARCH for c in msg.controls):
            continue
        assert msg.message_id in answered, f"no answer to {msg} in {data!r} {cuts}"


# --------------------------------------------------------------------------- strategies


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=4))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0x81, 0x84, 0xFF, 0x30]))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "splice":
            data[pos:pos] = draw(st.sampled_from(SEEDS))
    return bytes(data)


inputs = st.one_of(mutated(), st.binary(max_size=300),
                   st.lists(st.sampled_from(SEEDS), max_size=6).map(b"".join))


@given(data=inputs, cut_seed=st.lists(st.integers(0, 10_000), max_size=3))
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
def test_fuzz_request_handling(harness: Harness, caplog: pytest.LogCaptureFixture,
                               data: bytes, cut_seed: list[int]) -> None:
    cuts = sorted({c % (len(data) + 1) for c in cut_seed})
    run_input(harness, data, cuts, caplog)


@pytest.mark.parametrize("path", CORPUS + sorted((HERE / "fuzz_seeds").glob("*.ber")),
                         ids=lambda p: p.name)
def test_corpus_replay(harness: Harness, caplog: pytest.LogCaptureFixture, path: Path) -> None:
    run_input(harness, path.read_bytes(), [], caplog)


# --------------------------------------------------------------------------- backpressure


def msg(mid: int, op: Any, controls: tuple[Control, ...] = ()) -> bytes:
    return encode_message(LDAPMessage(mid, op, controls))


def responses_of(transport: FakeTransport) -> list[LDAPMessage]:
    return parse_requests(bytes(transport.out))[0]


class GatedOps(Operations):
    """Adds wait for a gate: outstanding requests pile up."""

    gate: asyncio.Event

    async def add(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate.wait()


def test_outstanding_request_cap_pauses_reading(harness: Harness) -> None:
    ops = GatedOps(harness.node)
    ops.gate = asyncio.Event()
    conn, transport = harness.connect(ops)
    cap = connection_module.MAX_PENDING
    adds = b"".join(msg(i + 1, AddRequest(f"cn=g{i},{BASE}", (("cn", (b"x",)),)))
                    for i in range(cap + 50))
    harness.call(conn.data_received, adds)
    harness.run_for(0.05)
    assert len(conn.pending) == cap
    assert not transport.reading  # the rest waits in the decoder and the socket
    assert conn.decoder.buffered() > 0
    harness.loop.call_soon(ops.gate.set)
    harness.settle(conn)
    assert {r.message_id for r in responses_of(transport)} == set(range(1, cap + 51))
    assert transport.reading
    harness.call(conn.close)
    harness.run_for(0)


def test_write_pressure_pauses_request_reading(harness: Harness) -> None:
    conn, transport = harness.connect()
    harness.call(conn.pause_writing)
    search = SearchRequest(BASE, 0, 0, 0, 0, False, Present("objectClass"), ("1.1",))
    harness.call(conn.data_received, msg(1, search) + msg(2, search))
    assert transport.out == b"" and not transport.reading
    harness.call(conn.resume_writing)
    harness.settle(conn)
    assert [r.message_id for r in responses_of(transport)] == [1, 1, 2, 2]
    assert transport.reading
    harness.call(conn.close)
    harness.run_for(0)


def test_write_timeout_aborts_a_stuck_client(fresh: Any) -> None:
    h = fresh(writeTimeout="200ms")
    conn, transport = h.connect()
    transport.buffered = 100_000  # the client reads nothing
    h.call(conn.pause_writing)
    deadline = h.loop.time() + 5
    while not transport.aborted and h.loop.time() < deadline:
        h.run_for(0.05)
    assert transport.aborted and conn.closed


def test_write_timeout_spares_a_slow_but_steady_reader(fresh: Any) -> None:
    h = fresh(writeTimeout="300ms")
    conn, transport = h.connect()
    transport.buffered = 100_000
    h.call(conn.pause_writing)
    for _ in range(12):  # 1.2 s: four write timeouts, but the client drains a little each time
        h.run_for(0.1)
        transport.buffered -= 1000
    assert not transport.aborted
    transport.buffered = 0
    h.call(conn.resume_writing)
    h.call(conn.close)
    h.run_for(0)


def test_idle_timeout_sends_a_notice(fresh: Any) -> None:
    h = fresh(readTimeout="200ms")
    _, transport = h.connect()
    deadline = h.loop.time() + 5
    while not transport.closed and h.loop.time() < deadline:
        h.run_for(0.05)
    [notice] = responses_of(transport)
    assert isinstance(notice.op, ExtendedResponse)
    assert notice.op.name == NOTICE_OF_DISCONNECTION and int(notice.op.result.code) == 52


def test_starttls_without_tls_is_unsupported(harness: Harness) -> None:
    conn, transport = harness.connect()
    harness.call(conn.data_received, msg(1, ExtendedRequest("1.3.6.1.4.1.1466.20037")))
    harness.settle(conn)
    [resp] = responses_of(transport)
    assert isinstance(resp.op, ExtendedResponse) and int(resp.op.result.code) == 2
    harness.call(conn.close)
    harness.run_for(0)


def test_require_tls_refuses_a_plaintext_password(fresh: Any) -> None:
    h = fresh()
    h.node.config.security.requireTLS = True
    conn, transport = h.connect()
    h.call(conn.data_received, msg(1, BindRequest(3, f"cn=admin,{BASE}", b"secret"))
           + msg(2, BindRequest(3, "", b"")))
    h.settle(conn)
    codes = {r.message_id: int(r.op.result.code)  # type: ignore[union-attr]
             for r in responses_of(transport)}
    assert codes == {1: 13, 2: 0}
    h.call(conn.close)
    h.run_for(0)
