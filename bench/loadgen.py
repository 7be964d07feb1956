"""Closed-loop LDAP load generator: raw asyncio, hand-encoded BER, several worker processes.

Rules:
- No LDAP client library: the few request PDUs are BER-encoded here (definite lengths, as
  RFC 4511 asks) and responses are only framed and skimmed (message id, op tag, result code).
- ``clients`` connections are spread over ``processes`` worker processes (each with its own
  event loop, uvloop when installed); every connection keeps exactly one request outstanding.
- Phases: connect + per-connection setup bind (not measured) -> the parent's ``on_start``
  -> measured run until ``duration`` seconds or ``max_ops`` operations, whichever comes first
  -> the parent's ``on_end`` -> unbind and close. Every wait has a deadline.
- An operation counts as an error when its final result code is not success (0); searches
  also count returned entries so a broken search cannot pass for a fast one.

CLI: ``python bench/loadgen.py ldap://127.0.0.1:1389 search-eq --clients 16 --duration 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import queue
import random
import signal
import socket
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Event as EventType
from typing import Any, cast
from urllib.parse import urlparse

BASE_DN = "dc=example,dc=com"
USERS_DN = f"ou=users,{BASE_DN}"
ROOT_DN = f"cn=admin,{BASE_DN}"
ROOT_PASSWORD = "admin"
WORKLOADS = ("bind", "search-eq", "search-base", "search-sub", "modify", "add", "add-password")
SETUP_TIMEOUT = 30.0

# --- BER encoding ------------------------------------------------------------------------


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + _length(len(content)) + content


def ber_int(value: int, tag: int = 0x02) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)
    return tlv(tag, value.to_bytes(size, "big", signed=True))


def octets(value: str | bytes, tag: int = 0x04) -> bytes:
    return tlv(tag, value.encode() if isinstance(value, str) else value)


def message(message_id: int, op: bytes) -> bytes:
    return tlv(0x30, ber_int(message_id) + op)


def bind_op(dn: str, password: str) -> bytes:
    return tlv(0x60, ber_int(3) + octets(dn) + octets(password, 0x80))


def filter_eq(attr: str, value: str) -> bytes:
    return tlv(0xA3, octets(attr) + octets(value))


def filter_sub_any(attr: str, value: str) -> bytes:
    return tlv(0xA4, octets(attr) + tlv(0x30, octets(value, 0x81)))


def filter_present(attr: str) -> bytes:
    return octets(attr, 0x87)


def search_op(base: str, scope: int, filt: bytes, attrs: Sequence[str] = (),
              size_limit: int = 0) -> bytes:
    body = (octets(base) + ber_int(scope, 0x0A) + ber_int(0, 0x0A) + ber_int(size_limit)
            + ber_int(0) + b"\x01\x01\x00" + filt
            + tlv(0x30, b"".join(octets(a) for a in attrs)))
    return tlv(0x63, body)


def _attribute(name: str, values: Iterable[str]) -> bytes:
    return tlv(0x30, octets(name) + tlv(0x31, b"".join(octets(v) for v in values)))


def modify_replace_op(dn: str, attr: str, values: Sequence[str]) -> bytes:
    change = tlv(0x30, ber_int(2, 0x0A) + _attribute(attr, values))
    return tlv(0x66, octets(dn) + tlv(0x30, change))


def add_op(dn: str, attrs: Iterable[tuple[str, Sequence[str]]]) -> bytes:
    return tlv(0x68, octets(dn) + tlv(0x30, b"".join(_attribute(n, v) for n, v in attrs)))


UNBIND_OP = b"\x42\x00"
SEARCH_ENTRY, SEARCH_REF = 0x64, 0x73
FINAL_TAG = {0x60: 0x61, 0x63: 0x65, 0x66: 0x67, 0x68: 0x69}

# --- response framing --------------------------------------------------------------------


def _read_length(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(length, position after the length octets); length -1 when the buffer is short."""
    if pos >= len(buf):
        return -1, pos
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if pos + 1 + count > len(buf):
        return -1, pos
    return int.from_bytes(buf[pos + 1:pos + 1 + count], "big"), pos + 1 + count


def parse_pdu(buf: bytes | bytearray, pos: int) -> tuple[int, int, int, int] | None:
    """Frame one LDAPMessage at ``pos``: (end, message id, op tag, result code or -1)."""
    if len(buf) - pos < 2:
        return None
    length, body = _read_length(buf, pos + 1)
    if length < 0 or body + length > len(buf):
        return None
    end = body + length
    id_len = buf[body + 1]
    message_id = int.from_bytes(buf[body + 2:body + 2 + id_len], "big")
    op_pos = body + 2 + id_len
    op_tag = buf[op_pos]
    code = -1
    if op_tag not in (SEARCH_ENTRY, SEARCH_REF):
        _, inner = _read_length(buf, op_pos + 1)
        if buf[inner] == 0x0A:
            code = int.from_bytes(buf[inner + 2:inner + 2 + buf[inner + 1]], "big")
    return end, message_id, op_tag, code


# --- workloads -----------------------------------------------------------------------------


class Workload:
    """Builds the next request op of one workload; ``setup`` is the bind done before timing."""

    def __init__(self, name: str, users: int, tag: str) -> None:
        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
        self.name = name
        self.users = users
        self.tag = tag
        self.setup: tuple[str, str] | None = None
        self._ops: list[bytes] = []
        self._seq = 0
        ids = range(1, users + 1)
        if name == "bind":
            self._ops = [bind_op(f"uid=user{n},{USERS_DN}", f"password{n}") for n in ids]
        elif name == "search-eq":
            self._ops = [search_op(BASE_DN, 2, filter_eq("uid", f"user{n}"), ("cn", "mail"))
                         for n in ids]
        elif name == "search-base":
            self._ops = [search_op(f"uid=user{n},{USERS_DN}", 0, filter_present("objectClass"))
                         for n in ids]
        elif name == "search-sub":
            self._ops = [search_op(BASE_DN, 2, filter_sub_any("cn", "son"), ("cn", "mail"))]
        else:
            self.setup = (ROOT_DN, ROOT_PASSWORD)

    def next_op(self, rng: random.Random) -> bytes:
        self._seq += 1
        if self._ops:
            return self._ops[rng.randrange(len(self._ops))]
        if self.name == "modify":
            dn = f"uid=user{rng.randint(1, self.users)},{USERS_DN}"
            return modify_replace_op(dn, "description", (f"bench {self.tag} {self._seq}",))
        uid = f"add-{self.tag}-{self._seq}"
        attrs: list[tuple[str, Sequence[str]]] = [
            ("objectClass", ("top", "person", "organizationalPerson", "inetOrgPerson")),
            ("uid", (uid,)), ("cn", ("Added Entry",)), ("sn", ("Entry",)),
        ]
        if self.name == "add-password":  # in cleartext: the server hashes it as it stores it
            attrs.append(("userPassword", (f"secret-{uid}",)))
        return add_op(f"uid={uid},{USERS_DN}", attrs)


# --- connections ---------------------------------------------------------------------------


class _Runner:
    """Per-process shared state of the measured phase."""

    def __init__(self, workload: Workload, budget: int, seed: int) -> None:
        self.workload = workload
        self.budget = budget
        self.issued = 0
        self.deadline = math.inf
        self.rng = random.Random(seed)
        self.latencies = array("d")
        self.errors = 0
        self.first_error = -1
        self.entries = 0
        self.active = 0
        self.all_done: asyncio.Future[None] | None = None

    def may_issue(self) -> bool:
        if self.issued >= self.budget or time.perf_counter() >= self.deadline:
            return False
        self.issued += 1
        return True


class _Conn(asyncio.Protocol):
    def __init__(self, runner: _Runner) -> None:
        self.runner = runner
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.message_id = 0
        self.expect = 0
        self.sent_at = 0.0
        self.entries = 0
        self.looping = False
        self.waiter: asyncio.Future[tuple[int, int]] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        err = ConnectionError(f"server closed the connection ({exc})")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(err)
        if self.looping:
            self.looping = False
            self._finish_loop(err)

    def send(self, op: bytes) -> None:
        assert self.transport is not None
        self.message_id = self.message_id + 1 if self.message_id < 0x7FFFFFFF else 1
        self.expect = FINAL_TAG[op[0]]
        self.entries = 0
        self.sent_at = time.perf_counter()
        self.transport.write(message(self.message_id, op))

    def request(self, op: bytes) -> asyncio.Future[tuple[int, int]]:
        """Send one request outside the measured loop; resolves to (result code, entries)."""
        self.waiter = asyncio.get_running_loop().create_future()
        self.send(op)
        return self.waiter

    def start_loop(self) -> None:
        self.looping = True
        self.runner.active += 1
        if self.runner.may_issue():
            self.send(self.runner.workload.next_op(self.runner.rng))
        else:
            self.looping = False
            self._finish_loop(None)

    def _finish_loop(self, exc: Exception | None) -> None:
        runner = self.runner
        runner.active -= 1
        done = runner.all_done
        if done is not None and not done.done():
            if exc is not None:
                done.set_exception(exc)
            elif runner.active == 0:
                done.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while True:
            framed = parse_pdu(buf, pos)
            if framed is None:
                break
            pos, message_id, op_tag, code = framed
            if message_id != self.message_id:
                continue
            if op_tag == SEARCH_ENTRY:
                self.entries += 1
            elif op_tag == self.expect:
                self._completed(code)
        if pos:
            del buf[:pos]

    def _completed(self, code: int) -> None:
        if not self.looping:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((code, self.entries))
            return
        runner = self.runner
        runner.latencies.append(time.perf_counter() - self.sent_at)
        runner.entries += self.entries
        if code != 0:
            runner.errors += 1
            if runner.first_error < 0:
                runner.first_error = code
        if runner.may_issue():
            self.send(runner.workload.next_op(runner.rng))
        else:
            self.looping = False
            self._finish_loop(None)


def parse_url(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme != "ldap" or not parsed.hostname:
        raise ValueError(f"expected ldap://host:port, got {url!r}")
    return parsed.hostname, parsed.port or 389


async def open_connection(host: str, port: int, runner: _Runner) -> _Conn:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(lambda: _Conn(runner), host, port), SETUP_TIMEOUT)
    return proto


async def close_connection(conn: _Conn) -> None:
    if conn.transport is None or conn.transport.is_closing():
        return
    with contextlib.suppress(Exception):
        conn.transport.write(message(conn.message_id + 1, UNBIND_OP))
        conn.transport.close()
        await asyncio.wait_for(conn.lost, 2.0)


# --- worker processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    url: str
    workload: str
    users: int
    connections: int
    duration: float
    budget: int
    seed: int
    tag: str


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _worker(spec: WorkerSpec, out: Any, go: EventType, release: EventType) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it kills us by PID
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    conns: list[_Conn] = []
    try:
        workload = Workload(spec.workload, spec.users, spec.tag)
        runner = _Runner(workload, spec.budget, spec.seed)
        host, port = parse_url(spec.url)

        async def setup() -> None:
            for _ in range(spec.connections):
                conns.append(await open_connection(host, port, runner))
            if workload.setup is not None:
                codes = await asyncio.wait_for(asyncio.gather(
                    *(c.request(bind_op(*workload.setup)) for c in conns)), SETUP_TIMEOUT)
                bad = [code for code, _ in codes if code != 0]
                if bad:
                    raise RuntimeError(f"setup bind as {workload.setup[0]} failed: code {bad[0]}")

        loop.run_until_complete(setup())
        out.put(("ready", os.getpid()))
        if not go.wait(SETUP_TIMEOUT * 4):
            raise RuntimeError("parent never started the run")

        async def measure() -> float:
            runner.all_done = loop.create_future()
            start = time.perf_counter()
            runner.deadline = start + spec.duration
            for conn in conns:
                conn.start_loop()
            await asyncio.wait_for(runner.all_done, spec.duration + SETUP_TIMEOUT)
            return time.perf_counter() - start

        elapsed = loop.run_until_complete(measure())
        out.put(("result", {
            "elapsed": elapsed, "latencies": runner.latencies.tobytes(),
            "errors": runner.errors, "first_error": runner.first_error,
            "entries": runner.entries,
        }))
        release.wait(SETUP_TIMEOUT)
    except BaseException as exc:  # reported to the parent, which raises LoadError
        out.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        loop.run_until_complete(asyncio.gather(*(close_connection(c) for c in conns)))
        loop.close()


class LoadError(RuntimeError):
    """A worker could not connect, set up, or finish its run."""


@dataclass(frozen=True)
class LoadResult:
    workload: str
    clients: int
    ops: int
    errors: int
    first_error: int
    elapsed: float
    ops_per_sec: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    entries_per_op: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def merge_results(workload: str, clients: int, parts: Sequence[dict[str, Any]]) -> LoadResult:
    latencies = array("d")
    for part in parts:
        latencies.frombytes(part["latencies"])
    ordered = sorted(latencies)
    ops = len(ordered)
    elapsed = max((p["elapsed"] for p in parts), default=0.0)
    first_errors = [p["first_error"] for p in parts if p["first_error"] >= 0]
    return LoadResult(
        workload=workload, clients=clients, ops=ops,
        errors=sum(p["errors"] for p in parts),
        first_error=first_errors[0] if first_errors else -1,
        elapsed=elapsed,
        ops_per_sec=ops / elapsed if elapsed > 0 else 0.0,
        p50_ms=_percentile(ordered, 0.50) * 1000,
        p99_ms=_percentile(ordered, 0.99) * 1000,
        mean_ms=(sum(ordered) / ops * 1000) if ops else math.nan,
        entries_per_op=sum(p["entries"] for p in parts) / ops if ops else 0.0,
    )


def run_load(url: str, workload: str, clients: int, *, processes: int = 2,
             duration: float = 10.0, max_ops: int = 5_000_000, users: int = 10_000,
             seed: int = 1, on_start: Callable[[], None] | None = None,
             on_end: Callable[[], None] | None = None) -> LoadResult:
    """Run one workload with ``clients`` closed-loop connections; merged result."""
    Workload(workload, 0, "check")  # validate the name before forking
    parse_url(url)
    procs_n = max(1, min(processes, clients))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    go, release = ctx.Event(), ctx.Event()
    tag = f"{os.getpid()}x{time.time_ns() % 10**9}"
    procs = []
    finished = False
    for i in range(procs_n):
        spec = WorkerSpec(url, workload, users, clients // procs_n + (i < clients % procs_n),
                          duration, math.ceil(max_ops / procs_n), seed * 1000 + i, f"{tag}w{i}")
        procs.append(ctx.Process(target=_worker, args=(spec, out, go, release), daemon=True))
    try:
        for proc in procs:
            proc.start()

        def collect(kind: str, timeout: float) -> list[Any]:
            got: list[Any] = []
            deadline = time.monotonic() + timeout
            while len(got) < procs_n:
                try:
                    item_kind, payload = out.get(timeout=max(0.05, deadline - time.monotonic()))
                except queue.Empty:
                    raise LoadError(f"{workload}: workers timed out waiting for {kind}") from None
                if item_kind == "error":
                    raise LoadError(f"{workload} against {url}: {payload}")
                got.append(payload)
            return got

        collect("ready", SETUP_TIMEOUT * 2)
        if on_start is not None:
            on_start()
        go.set()
        parts = collect("result", duration + SETUP_TIMEOUT * 2)
        if on_end is not None:
            on_end()
        release.set()
        finished = True
        return merge_results(workload, clients, parts)
    finally:
        go.set()
        release.set()
        for proc in procs:
            proc.join(5.0 if finished else 0.5)
            if proc.is_alive() and proc.pid is not None:
                proc.kill()
                proc.join(2.0)


# --- bulk loading over LDAP (for servers without an offline importer) ----------------------


async def _load(url: str, ops: list[bytes], connections: int) -> tuple[int, list[str]]:
    host, port = parse_url(url)
    runner = _Runner(Workload("add", 0, "load"), 0, 0)
    conns = [await open_connection(host, port, runner) for _ in range(connections)]
    errors: list[str] = []
    try:
        codes = await asyncio.gather(*(c.request(bind_op(ROOT_DN, ROOT_PASSWORD)) for c in conns))
        if any(code != 0 for code, _ in codes):
            raise LoadError(f"bind as {ROOT_DN} failed: {codes}")
        added = 0
        head, rest = ops[:3], iter(ops[3:])
        for op in head:  # base and the two OUs, in order; the base may already exist (68)
            code, _ = await asyncio.wait_for(conns[0].request(op), SETUP_TIMEOUT)
            if code not in (0, 68):
                errors.append(f"add #{added}: result code {code}")
            added += 1

        async def pump(conn: _Conn) -> int:
            count = 0
            for op in rest:
                code, _ = await asyncio.wait_for(conn.request(op), SETUP_TIMEOUT)
                if code != 0 and len(errors) < 10:
                    errors.append(f"add: result code {code}")
                count += 1
            return count

        added += sum(await asyncio.gather(*(pump(c) for c in conns)))
        return added, errors
    finally:
        await asyncio.gather(*(close_connection(c) for c in conns))


def load_entries(url: str, entries: Iterable[tuple[str, Sequence[tuple[str, Sequence[str]]]]],
                 connections: int = 16) -> int:
    """Add entries (parents first; the first three sequentially) as the root DN over LDAP."""
    ops = [add_op(dn, attrs) for dn, attrs in entries]
    loop = _new_loop()
    try:
        added, errors = loop.run_until_complete(_load(url, ops, connections))
    finally:
        loop.close()
    if errors:
        raise LoadError(f"loading {url}: adds failed, first: {errors[:3]}")
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Closed-loop LDAP load generator")
    parser.add_argument("url")
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-ops", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args(argv)
    try:
        result = run_load(args.url, args.workload, args.clients, processes=args.processes,
                          duration=args.duration, max_ops=args.max_ops, users=args.users)
    except (LoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, value in result.as_dict().items():
        print(f"{key:>15}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
