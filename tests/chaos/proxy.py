"""Link proxy of the chaos harness: one process, any number of DIRECTED links A->B.

Node A's configured address for peer B is a link's listen port (127.0.0.1 only); the link
forwards every accepted connection to B's real Raft port. The harness switches each link's
mode while the cluster runs, through JSON lines on stdin; every command is answered by exactly
one JSON line on stdout. Run from the project root::

    python -m tests.chaos.proxy

Commands (an optional ``"id"`` in a command is echoed in its answer)::

    {"cmd": "add", "link": "1->2", "listen": 0, "target": "127.0.0.1:7001"}
        -> {"ok": true, "port": 41234}
    {"cmd": "mode", "links": ["1->2", "2->1"], "mode": "blackhole", "delay_ms": 0}
        -> {"ok": true}
    {"cmd": "stats"}
        -> {"ok": true, "links": {"1->2": {"mode": ..., "open": ..., ...}}}
    {"cmd": "quit"}
        -> {"ok": true}, then every socket is closed and the process exits 0 (so does EOF)
    anything wrong -> {"ok": false, "error": "..."}

Modes (what a TCP load balancer / sidecar / Docker's userland proxy would do):

pass
    A connection is accepted at once and only then connected onward (bounded by
    ``CONNECT_TIMEOUT``); a refused / failed / timed-out onward connect RESETS the client
    (SO_LINGER 0). EOF or an error on one side half-closes the other side once everything read
    before it is written; the pair is closed ``CLOSE_GRACE`` later, or at once when the other
    side ends too. Flow control: a side stops being read while the other side's write buffer
    is above ``HIGH_WATER`` (or while ``HIGH_WATER`` bytes wait in the pipe), so a fast sender
    cannot make the proxy buffer unbounded memory.
blackhole
    "Hold": nothing moves in either direction on any connection of the link. Both sockets stop
    being read (the kernel buffers fill up, the senders eventually block) and whatever was read
    but not yet forwarded is kept, EOFs included. New connections are accepted at once but not
    connected onward. Nothing is closed or reset (a pending close waits for the heal). Back to
    pass / delay: held bytes flow again in order, pending connections connect onward.
    (Bytes already handed to a transport's write buffer before the switch still reach the
    kernel: like packets already in flight.)
reset
    Every existing connection of the link is reset (RST on both sides), every new one right
    after it is accepted.
delay
    Like pass, every chunk is forwarded ``delay_ms`` after it was read, order kept in each
    direction.

``ProxyProcess`` at the bottom is the typed client the tests and the harness use.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any, Final, Literal, cast

MODES: Final = ("pass", "blackhole", "reset", "delay")
CONNECT_TIMEOUT: Final = 2.0  # onward connect bound, seconds
CLOSE_GRACE: Final = 0.5  # after a half-close, the pair is closed this long after
CLOSE_FORCE: Final = 2.0  # a graceful close still flushing after this long is aborted
HIGH_WATER: Final = 256 * 1024  # bytes: transport write buffers and pipe queues
LOW_WATER: Final = 64 * 1024
MAX_DELAY_MS: Final = 600_000
MAX_LINE: Final = 1 << 20

log = logging.getLogger("chaos.proxy")

ConnState = Literal["pending", "connecting", "open", "closing", "closed"]


class CommandError(Exception):
    """A command the proxy refuses; answered as ``{"ok": false, "error": str(exc)}``."""


def _limit_buffers(transport: asyncio.Transport) -> None:
    transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)


def _rst(transport: asyncio.Transport) -> None:
    """Close with SO_LINGER 0: the peer sees ECONNRESET, whatever was buffered is dropped."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class Pipe:
    """One direction of a connection pair: reads ``src``, queues, writes ``dst``."""

    def __init__(self, conn: Conn, to_target: bool) -> None:
        self.conn = conn
        self.to_target = to_target
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.queue: deque[tuple[float, bytes]] = deque()  # (time read, chunk)
        self.queued = 0
        self.dst_paused = False  # dst's write buffer is above the high-water mark
        self.dst_dead = False  # dst is gone: what src still sends is read and dropped
        self.src_eof = False  # src sends nothing more (EOF or gone)
        self.finished = False  # src ended and everything it sent was written (or dropped)
        self.timer: asyncio.TimerHandle | None = None

    def feed(self, data: bytes) -> None:
        if self.dst_dead or self.finished or self.conn.state in ("closing", "closed"):
            return
        self.queue.append((self.conn.loop.time(), data))
        self.queued += len(data)
        self.pump()

    def eof(self) -> None:
        if not self.src_eof:
            self.src_eof = True
            self.pump()

    def kill_dst(self) -> None:
        self.dst_dead = True
        self.queue.clear()
        self.queued = 0
        self.pump()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pump(self) -> None:
        """Write every due chunk (unless held), then propagate EOF, then adjust reading."""
        self.cancel_timer()
        conn = self.conn
        if self.finished or conn.state in ("closing", "closed"):
            return
        if conn.link.held or (self.dst is None and not self.dst_dead):
            self.update_reading()
            return
        delay = conn.link.delay
        now = conn.loop.time()
        while self.queue:
            stamp, data = self.queue[0]
            if stamp + delay > now:
                self.timer = conn.loop.call_at(stamp + delay, self.pump)
                break
            self.queue.popleft()
            self.queued -= len(data)
            if self.dst is not None and not self.dst_dead:
                self.dst.write(data)
                conn.link.count(self.to_target, len(data))
        if not self.queue and self.src_eof:
            self.finished = True
            if self.dst is not None and not self.dst_dead:
                with contextlib.suppress(OSError, RuntimeError):
                    self.dst.write_eof()
            conn.direction_finished()
            return
        self.update_reading()

    def update_reading(self) -> None:
        src = self.src
        if src is None or self.src_eof or src.is_closing():
            return
        conn = self.conn
        want = (
            conn.state == "open"
            and not conn.link.held
            and (self.dst_dead or (not self.dst_paused and self.queued < HIGH_WATER))
        )
        if want and not src.is_reading():
            src.resume_reading()
        elif not want and src.is_reading():
            src.pause_reading()


class Conn:
    """An accepted client connection and (once connected onward) its target connection."""

    def __init__(self, link: Link, client: asyncio.Transport) -> None:
        self.link = link
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.target: asyncio.Transport | None = None
        self.state: ConnState = "pending"
        self.c2s = Pipe(self, to_target=True)
        self.s2c = Pipe(self, to_target=False)
        self.c2s.src = client
        self.s2c.dst = client
        self.client_lost = False
        self.target_lost = False
        self.connect_task: asyncio.Task[None] | None = None
        self.grace: asyncio.TimerHandle | None = None
        self.force: asyncio.TimerHandle | None = None
        self.close_deferred = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Right after accept: nothing is read from the client until the target is connected."""
        _limit_buffers(self.client)
        self.client.pause_reading()
        self.apply_mode()

    def apply_mode(self) -> None:
        mode = self.link.mode
        if self.state == "closed":
            return
        if mode == "reset":
            self.reset()
            return
        if self.state == "closing":
            return
        if mode == "blackhole":
            self.c2s.pump()
            self.s2c.pump()
            return
        if self.state == "pending":
            self.state = "connecting"
            self.connect_task = self.loop.create_task(self._connect())
        self.c2s.pump()
        self.s2c.pump()
        if self.close_deferred and self.state == "open":
            self.close_deferred = False
            self._start_grace()

    async def _connect(self) -> None:
        link = self.link
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: TargetSide(self), link.target_host, link.target_port
                ),
                CONNECT_TIMEOUT,
            )
        except Exception as exc:  # refused, unreachable, timed out: the client is reset
            if self.state not in ("closing", "closed"):
                link.connect_failures += 1
                log.debug("link %s: onward connect failed (%r): reset", link.name, exc)
                self.reset()

    def target_connected(self, transport: asyncio.Transport) -> bool:
        if self.state != "connecting":
            _rst(transport)
            return False
        self.target = transport
        self.state = "open"
        _limit_buffers(transport)
        self.c2s.dst = transport
        self.s2c.src = transport
        self.c2s.pump()
        self.s2c.pump()
        return True

    def client_gone(self) -> None:
        self.client_lost = True
        if self.state in ("pending", "connecting"):
            self.state = "closed"
        self.c2s.eof()
        self.s2c.kill_dst()
        self._maybe_finalize()

    def target_gone(self) -> None:
        self.target_lost = True
        self.s2c.eof()
        self.c2s.kill_dst()
        self._maybe_finalize()

    def direction_finished(self) -> None:
        if self.c2s.finished and self.s2c.finished:
            self.close_now()
        elif self.grace is None:
            self._start_grace()

    def _start_grace(self) -> None:
        if self.grace is not None:
            self.grace.cancel()
        self.grace = self.loop.call_later(CLOSE_GRACE + self.link.delay, self.close_now)

    def close_now(self) -> None:
        if self.state in ("closing", "closed"):
            return
        if self.link.held:  # a blackholed route delivers no FIN either: close after the heal
            self.close_deferred = True
            return
        self.state = "closing"
        self._cancel_timers()
        for transport, lost in ((self.client, self.client_lost), (self.target, self.target_lost)):
            if transport is not None and not lost:
                transport.close()
        self.force = self.loop.call_later(CLOSE_FORCE, self._abort_all)
        self._maybe_finalize()

    def _abort_all(self) -> None:
        for transport, lost in ((self.client, self.client_lost), (self.target, self.target_lost)):
            if transport is not None and not lost:
                transport.abort()

    def reset(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        self.link.resets += 1
        self._cancel_timers()
        if self.connect_task is not None:
            self.connect_task.cancel()
        for transport, lost in ((self.client, self.client_lost), (self.target, self.target_lost)):
            if transport is not None and not lost:
                _rst(transport)
        self._maybe_finalize()

    def shutdown(self) -> None:
        """Proxy exit: drop everything at once."""
        self.state = "closed"
        self._cancel_timers()
        if self.connect_task is not None:
            self.connect_task.cancel()
        self._abort_all()

    def _cancel_timers(self) -> None:
        for handle in (self.grace, self.force):
            if handle is not None:
                handle.cancel()
        self.grace = None
        self.c2s.cancel_timer()
        self.s2c.cancel_timer()

    def _maybe_finalize(self) -> None:
        if self.client_lost and (self.target is None or self.target_lost):
            self.state = "closed"
            self._cancel_timers()
            if self.force is not None:
                self.force.cancel()
            if self.connect_task is not None:
                self.connect_task.cancel()
            self.link.conns.discard(self)


class ClientSide(asyncio.Protocol):
    def __init__(self, link: Link) -> None:
        self.link = link
        self.conn: Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        conn = Conn(self.link, cast(asyncio.Transport, transport))
        self.conn = conn
        self.link.accepted += 1
        self.link.conns.add(conn)
        conn.start()

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.c2s.feed(data)

    def eof_received(self) -> bool:
        if self.conn is not None:
            self.conn.c2s.eof()
        return True  # keep the transport: the other direction may still have bytes to write

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.client_gone()

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.s2c.dst_paused = True
            self.conn.s2c.update_reading()

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.s2c.dst_paused = False
            self.conn.s2c.update_reading()


class TargetSide(asyncio.Protocol):
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.active = False  # False: the pair was closed while connecting; ignore everything

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.active = self.conn.target_connected(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        if self.active:
            self.conn.s2c.feed(data)

    def eof_received(self) -> bool:
        if self.active:
            self.conn.s2c.eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.active:
            self.active = False
            self.conn.target_gone()

    def pause_writing(self) -> None:
        if self.active:
            self.conn.c2s.dst_paused = True
            self.conn.c2s.update_reading()

    def resume_writing(self) -> None:
        if self.active:
            self.conn.c2s.dst_paused = False
            self.conn.c2s.update_reading()


class Link:
    def __init__(self, name: str, target_host: str, target_port: int) -> None:
        self.name = name
        self.target_host = target_host
        self.target_port = target_port
        self.listen_port = 0
        self.mode = "pass"
        self.delay_ms = 0
        self.server: asyncio.Server | None = None
        self.conns: set[Conn] = set()
        self.accepted = 0
        self.resets = 0
        self.connect_failures = 0
        self.bytes_to_target = 0
        self.bytes_to_client = 0

    @property
    def held(self) -> bool:
        return self.mode == "blackhole"

    @property
    def delay(self) -> float:
        return self.delay_ms / 1000.0 if self.mode == "delay" else 0.0

    def count(self, to_target: bool, n: int) -> None:
        if to_target:
            self.bytes_to_target += n
        else:
            self.bytes_to_client += n

    def set_mode(self, mode: str, delay_ms: int) -> None:
        old = self.mode if self.mode != "delay" else f"delay {self.delay_ms} ms"
        self.mode = mode
        self.delay_ms = delay_ms
        new = mode if mode != "delay" else f"delay {delay_ms} ms"
        log.info("link %s: %s -> %s (%d connections)", self.name, old, new, len(self.conns))
        for conn in list(self.conns):
            conn.apply_mode()

    def stats(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "delay_ms": self.delay_ms,
            "listen": self.listen_port,
            "target": f"{self.target_host}:{self.target_port}",
            "open": len(self.conns),
            "pending": sum(1 for c in self.conns if c.state in ("pending", "connecting")),
            "held_bytes": sum(c.c2s.queued + c.s2c.queued for c in self.conns),
            "accepted": self.accepted,
            "reset": self.resets,
            "connect_failures": self.connect_failures,
            "bytes_to_target": self.bytes_to_target,
            "bytes_to_client": self.bytes_to_client,
        }

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            conn.shutdown()


# -- control -----------------------------------------------------------------------------------


def _field(req: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    if name not in req:
        if default is None:
            raise CommandError(f"missing field {name!r}")
        return default
    value = req[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CommandError(f"field {name!r} must be of type {kind.__name__}, not {value!r}")
    return value


def _parse_target(target: str) -> tuple[str, int]:
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise CommandError(f"target must be HOST:PORT, not {target!r}")
    return host.strip("[]"), int(port_text)


class Proxy:
    def __init__(self) -> None:
        self.links: dict[str, Link] = {}

    async def handle(self, req: Any) -> dict[str, Any]:
        if not isinstance(req, dict):
            raise CommandError("a command is a JSON object")
        cmd = req.get("cmd")
        if cmd == "add":
            return await self._add(req)
        if cmd == "mode":
            return self._mode(req)
        if cmd == "stats":
            return {"ok": True, "links": {n: link.stats() for n, link in self.links.items()}}
        if cmd == "quit":
            return {"ok": True}
        raise CommandError(f"unknown cmd {cmd!r} (add, mode, stats, quit)")

    async def _add(self, req: dict[str, Any]) -> dict[str, Any]:
        name = _field(req, "link", str)
        if not name:
            raise CommandError("link name is empty")
        if name in self.links:
            raise CommandError(f"link {name!r} exists already")
        host, port = _parse_target(_field(req, "target", str))
        listen = _field(req, "listen", int, 0)
        if not 0 <= listen < 65536:
            raise CommandError(f"listen port out of range: {listen}")
        link = Link(name, host, port)
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: ClientSide(link), "127.0.0.1", listen, reuse_address=True
            )
        except OSError as exc:
            raise CommandError(f"cannot listen on 127.0.0.1:{listen}: {exc}") from exc
        link.server = server
        link.listen_port = int(server.sockets[0].getsockname()[1])
        self.links[name] = link
        log.info("link %s: 127.0.0.1:%d -> %s:%d", name, link.listen_port, host, port)
        return {"ok": True, "port": link.listen_port}

    def _mode(self, req: dict[str, Any]) -> dict[str, Any]:
        names = _field(req, "links", list)
        mode = _field(req, "mode", str)
        delay_ms = _field(req, "delay_ms", int, 0)
        if mode not in MODES:
            raise CommandError(f"unknown mode {mode!r} ({', '.join(MODES)})")
        if not 0 <= delay_ms <= MAX_DELAY_MS:
            raise CommandError(f"delay_ms must be within 0..{MAX_DELAY_MS}, not {delay_ms}")
        unknown = [n for n in names if not isinstance(n, str) or n not in self.links]
        if unknown:
            raise CommandError(f"unknown links {unknown!r}")
        for name in names:  # all checked first: a command applies entirely or not at all
            self.links[name].set_mode(mode, delay_ms)
        return {"ok": True}

    def shutdown(self) -> None:
        for link in self.links.values():
            link.shutdown()


def _answer(resp: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(resp) + "\n")
    sys.stdout.flush()


async def serve() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    stdin, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    proxy = Proxy()
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                _answer({"ok": False, "error": f"command line longer than {MAX_LINE} bytes"})
                continue
            if not line:
                log.info("stdin closed: exiting")
                return 0
            if not line.strip():
                continue
            req: Any = None
            try:
                req = json.loads(line)
                resp = await proxy.handle(req)
            except json.JSONDecodeError as exc:
                resp = {"ok": False, "error": f"not JSON: {exc}"}
            except CommandError as exc:
                resp = {"ok": False, "error": str(exc)}
            except Exception as exc:
                log.exception("command %r failed", line)
                resp = {"ok": False, "error": f"internal error: {exc!r}"}
            if isinstance(req, dict) and "id" in req:
                resp["id"] = req["id"]
            _answer(resp)
            if isinstance(req, dict) and req.get("cmd") == "quit" and resp["ok"]:
                log.info("quit")
                return 0
    finally:
        stdin.close()
        proxy.shutdown()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run


def main() -> int:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s chaos-proxy %(message)s"
    )
    log.setLevel(logging.INFO)
    try:
        return asyncio.run(serve())
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


# -- client ------------------------------------------------------------------------------------


class ProxyError(RuntimeError):
    """The proxy process is gone, did not answer in time, or refused a command."""


class ProxyProcess:
    """The proxy as a child process, driven over its stdin/stdout; every call is bounded.

    Thread-safe (one command at a time). ``close`` quits, waits with a bound, then kills the
    process by its PID.
    """

    def __init__(
        self,
        python: str = sys.executable,
        cwd: Path | None = None,
        *,
        timeout: float = 5.0,
        stderr: Path | None = None,
    ) -> None:
        self.python = python
        self.cwd = cwd if cwd is not None else Path(__file__).resolve().parents[2]
        self.timeout = timeout
        self.stderr_path = stderr
        self.proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stdout_eof = False
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._reader: threading.Thread | None = None
        self._stderr_file: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        return self._require().pid

    def __enter__(self) -> ProxyProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.proc is not None:
            raise ProxyError("proxy already started")
        if self.stderr_path is not None:
            self._stderr_file = self.stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [self.python, "-m", "tests.chaos.proxy"],
            cwd=self.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
        )
        stdout = self.proc.stdout
        assert stdout is not None
        self._reader = threading.Thread(
            target=self._read_stdout, args=(stdout,), name="chaos-proxy-stdout", daemon=True
        )
        self._reader.start()

    def _read_stdout(self, stdout: IO[bytes]) -> None:
        try:
            for raw in iter(stdout.readline, b""):
                self._lines.put(raw)
        except (OSError, ValueError):
            pass
        finally:
            self._lines.put(None)

    def _require(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise ProxyError("proxy not started")
        return self.proc

    def _gone(self, what: str) -> ProxyError:
        proc = self._require()
        code: int | None
        try:
            code = proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        status = f"exit code {code}" if code is not None else "still running"
        return ProxyError(f"chaos proxy (pid {proc.pid}) {what} ({status})")

    def request(self, cmd: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one command, return its answer as is (``ok`` true or false)."""
        ident = next(self._ids)
        return self._exchange(json.dumps({**cmd, "id": ident}), ident, timeout)

    def request_raw(self, line: str, timeout: float | None = None) -> dict[str, Any]:
        """Send one line as is (for tests of malformed commands); return the next answer."""
        return self._exchange(line, None, timeout)

    def _exchange(self, line: str, ident: int | None, timeout: float | None) -> dict[str, Any]:
        bound = self.timeout if timeout is None else timeout
        with self._lock:
            proc = self._require()
            if self._stdout_eof or proc.poll() is not None:
                raise self._gone("has exited")
            stdin = proc.stdin
            assert stdin is not None
            try:
                stdin.write(line.encode() + b"\n")
                stdin.flush()
            except (OSError, ValueError) as exc:
                raise self._gone(f"cannot be written to: {exc}") from exc
            deadline = time.monotonic() + bound
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProxyError(
                        f"chaos proxy (pid {proc.pid}) did not answer {line[:200]!r} "
                        f"within {bound}s"
                    )
                try:
                    raw = self._lines.get(timeout=remaining)
                except queue.Empty:
                    continue
                if raw is None:
                    self._stdout_eof = True
                    raise self._gone(f"exited before answering {line[:200]!r}")
                try:
                    answer = json.loads(raw)
                except ValueError as exc:
                    raise ProxyError(f"chaos proxy wrote a non-JSON line: {raw!r}") from exc
                if not isinstance(answer, dict):
                    raise ProxyError(f"chaos proxy wrote a non-object answer: {raw!r}")
                if ident is not None and answer.get("id", ident) != ident:
                    continue  # the late answer to an earlier command that timed out
                return answer

    def _call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        answer = self.request(cmd)
        if answer.get("ok") is not True:
            raise ProxyError(f"chaos proxy refused {cmd!r}: {answer.get('error')}")
        return answer

    def add(self, link: str, target: str, listen: int = 0) -> int:
        """Add link ``link`` listening on 127.0.0.1:``listen`` (0: any); returns the port."""
        answer = self._call({"cmd": "add", "link": link, "listen": listen, "target": target})
        return int(answer["port"])

    def mode(self, links: list[str], mode: str, delay_ms: int = 0) -> None:
        self._call({"cmd": "mode", "links": links, "mode": mode, "delay_ms": delay_ms})

    def stats(self) -> dict[str, Any]:
        """Per link: mode, delay_ms, listen, target, open, pending, held_bytes, accepted,
        reset, connect_failures, bytes_to_target, bytes_to_client."""
        links: dict[str, Any] = self._call({"cmd": "stats"})["links"]
        return links

    def close(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None and not self._stdout_eof:
            with contextlib.suppress(ProxyError):
                self.request({"cmd": "quit"}, timeout=2.0)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5.0)
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None


if __name__ == "__main__":
    sys.exit(main())
