"""Tests of the chaos link proxy (tests/chaos/proxy.py) with real loopback sockets.

Every test drives a real ``python -m tests.chaos.proxy`` process through ``ProxyProcess`` and
a threaded echo server as the target. Holds are checked in the direction that can fail: data
must NOT arrive while a link is held and must arrive, complete and in order, after the heal.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .proxy import HIGH_WATER, ProxyError, ProxyProcess

pytestmark = pytest.mark.timeout(60)

LINK = "1->2"


def wait_for(cond: Callable[[], object], timeout: float, what: str, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class EchoServer:
    """Threaded echo target on 127.0.0.1: counts what it receives, can push and die."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.received = 0
        self.ended = 0  # connections whose peer closed or reset them
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            with self._lock:
                self.conns.append(conn)
                self.accepted += 1
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                with self._lock:
                    self.received += len(data)
                conn.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self.ended += 1
            conn.close()

    def push(self, index: int, data: bytes) -> None:
        """Send ``data`` to the client of connection ``index`` without being asked."""
        self.conns[index].sendall(data)

    def close(self) -> None:
        """Die: stop listening, close every connection."""
        self._stop.set()
        self.listener.close()
        for conn in list(self.conns):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self._threads:
            thread.join(timeout=2)


class Clients:
    """Client sockets of a test, all closed at teardown."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []

    def connect(self, port: int, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.socks.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


@pytest.fixture
def proxy() -> Iterator[ProxyProcess]:
    proc = ProxyProcess()
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clients() -> Iterator[Clients]:
    c = Clients()
    try:
        yield c
    finally:
        c.close()


def expect_reset(clients: Clients, port: int) -> None:
    """Connect and read: the proxy must reset the connection. The reset may come before the
    connecting thread is scheduled again, so ``connect`` itself may report it."""
    with pytest.raises(ConnectionResetError):
        sock = clients.connect(port)
        sock.recv(1)


def link_stats(proxy: ProxyProcess) -> dict[str, int | str]:
    stats: dict[str, int | str] = proxy.stats()[LINK]
    return stats


def test_pass_forwards_both_ways(proxy: ProxyProcess, echo: EchoServer, clients: Clients) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    c = clients.connect(port)
    c.sendall(b"hello")
    assert recv_exact(c, 5) == b"hello"
    echo.push(0, b"unasked")  # target -> client on its own
    assert recv_exact(c, 7) == b"unasked"

    payload = random.Random(1).randbytes(4 << 20)  # well above the high-water marks
    sender = threading.Thread(target=c.sendall, args=(payload,))
    sender.start()
    assert recv_exact(c, len(payload)) == payload
    sender.join(5)

    st = link_stats(proxy)
    assert st["mode"] == "pass"
    assert st["accepted"] == 1 and st["open"] == 1 and st["reset"] == 0
    assert st["bytes_to_target"] == 5 + len(payload)
    assert st["bytes_to_client"] == 5 + 7 + len(payload)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/PID/status")
def test_pass_flow_control_bounds_proxy_memory(proxy: ProxyProcess, clients: Clients) -> None:
    # A target that accepts but does not read: the sender must end up blocked, the proxy must
    # not soak the stream up in its own memory.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        port = proxy.add(LINK, f"127.0.0.1:{listener.getsockname()[1]}")
        c = clients.connect(port, timeout=20)
        target, _ = listener.accept()
    with target:
        target.settimeout(5)
        rss_before = rss_bytes(proxy.pid)
        chunk_size, max_chunks = 1 << 16, 4096  # at most 256 MB
        sent = [0]
        sent_hash = hashlib.sha256()
        stop = threading.Event()

        def send() -> None:
            for i in range(max_chunks):
                if stop.is_set():
                    return
                chunk = i.to_bytes(4, "big") * (chunk_size // 4)
                c.sendall(chunk)
                sent_hash.update(chunk)
                sent[0] += 1

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(1.5)
        grown = rss_bytes(proxy.pid) - rss_before
        held = link_stats(proxy)["held_bytes"]
        stop.set()
        blocked = sender.is_alive()

        got_hash = hashlib.sha256()
        got = 0
        while sender.is_alive() or got < sent[0] * chunk_size:
            data = target.recv(1 << 20)
            assert data, "EOF from the proxy"
            got_hash.update(data)
            got += len(data)
        sender.join(5)
    assert blocked, "the sender was never blocked: the proxy read everything"
    assert grown < 32 << 20, f"proxy RSS grew by {grown} bytes"
    assert isinstance(held, int) and held <= HIGH_WATER + (1 << 18)
    assert got == sent[0] * chunk_size and got_hash.digest() == sent_hash.digest()


def test_unreachable_target_resets_the_client(proxy: ProxyProcess, clients: Clients) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    expect_reset(clients, port)  # accepted at once although the target is down, then reset
    assert time.monotonic() - t0 < 2.5
    wait_for(lambda: link_stats(proxy)["open"] == 0, 2, "the pair to be forgotten")
    st = link_stats(proxy)
    assert st["accepted"] == 1 and st["reset"] == 1 and st["connect_failures"] == 1


def test_silent_target_resets_the_client_after_the_connect_bound(
    proxy: ProxyProcess, clients: Clients
) -> None:
    # A listener whose accept queue is full drops SYNs: the onward connect hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers: list[socket.socket] = []
        try:
            for _ in range(8):
                filler = socket.socket()
                fillers.append(filler)
                filler.settimeout(0.3)
                try:
                    filler.connect(listener.getsockname())
                except TimeoutError:
                    break
            else:
                pytest.skip("this kernel never drops SYNs on a full accept queue")
            port = proxy.add(LINK, f"127.0.0.1:{listener.getsockname()[1]}")
            c = clients.connect(port)
            t0 = time.monotonic()
            with pytest.raises(ConnectionResetError):
                c.recv(1)
            assert 1.5 < time.monotonic() - t0 < 4.0  # the proxy's bound is 2 s

            d = clients.connect(port)  # connecting onward, then the link switches to reset
            wait_for(lambda: link_stats(proxy)["pending"] == 1, 1, "a pending connection")
            proxy.mode([LINK], "reset")
            with pytest.raises(ConnectionResetError):
                d.recv(1)
            wait_for(lambda: link_stats(proxy)["open"] == 0, 2, "the pairs to be forgotten")
            st = link_stats(proxy)
            assert st["reset"] == 2 and st["connect_failures"] == 1
        finally:
            for filler in fillers:
                filler.close()


def test_target_death_half_closes_then_closes_the_client(
    proxy: ProxyProcess, echo: EchoServer, clients: Clients
) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    c = clients.connect(port, timeout=2)
    c.sendall(b"ping")
    assert recv_exact(c, 4) == b"ping"

    echo.close()  # the target process dies
    assert c.recv(1) == b""  # EOF: the proxy half-closed the client side
    t_eof = time.monotonic()
    c.sendall(b"x")  # the proxy still reads (and drops) what the client sends...
    time.sleep(0.1)
    c.sendall(b"y")  # ...so this does not fail as it would on a fully closed peer

    closed_after: float | None = None
    while time.monotonic() - t_eof < 3:
        try:
            c.sendall(b"z")
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - t_eof
            break
        time.sleep(0.02)
    assert closed_after is not None, "the proxy never closed the client side"
    assert 0.2 <= closed_after < 2.0
    wait_for(lambda: link_stats(proxy)["open"] == 0, 2, "the pair to be forgotten")


def test_client_close_closes_the_target_side(
    proxy: ProxyProcess, echo: EchoServer, clients: Clients
) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    c = clients.connect(port)
    c.sendall(b"ping")
    assert recv_exact(c, 4) == b"ping"
    c.close()
    wait_for(lambda: echo.ended == 1, 1, "the target to see the close")
    # Both sides ended: the proxy closes at once, not after its half-close grace period.
    wait_for(lambda: link_stats(proxy)["open"] == 0, 0.4, "the pair to be closed")


def test_blackhole_holds_both_ways_and_heal_delivers_everything_in_order(
    proxy: ProxyProcess, echo: EchoServer, clients: Clients
) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    c = clients.connect(port)
    c.sendall(b"warm")
    assert recv_exact(c, 4) == b"warm"

    proxy.mode([LINK], "blackhole")
    rng = random.Random(2)
    pushed = rng.randbytes(32 << 10)  # target -> client during the hold
    payload = rng.randbytes(1 << 20)  # client -> target during the hold
    echo.push(0, pushed)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            c.sendall(payload)
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.5)
    assert echo.received == 4, "client bytes reached the target during the hold"
    c.settimeout(0.2)
    with pytest.raises(TimeoutError):
        c.recv(1)  # target bytes did not reach the client either
    c.settimeout(5)
    st = link_stats(proxy)
    assert st["mode"] == "blackhole" and st["open"] == 1 and st["reset"] == 0
    assert st["bytes_to_target"] == 4 and st["bytes_to_client"] == 4
    assert isinstance(st["held_bytes"], int) and st["held_bytes"] < len(payload)

    proxy.mode([LINK], "pass")  # heal
    assert recv_exact(c, len(pushed) + len(payload)) == pushed + payload
    sender.join(5)
    assert not sender.is_alive() and not errors
    assert echo.received == 4 + len(payload)
    st = link_stats(proxy)
    assert st["accepted"] == 1 and st["reset"] == 0


def test_blackhole_accepts_new_connections_and_connects_them_after_heal(
    proxy: ProxyProcess, echo: EchoServer, clients: Clients
) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    proxy.mode([LINK], "blackhole")
    c = clients.connect(port)
    c.sendall(b"ping")
    wait_for(lambda: link_stats(proxy)["accepted"] == 1, 2, "the proxy to accept")
    time.sleep(0.3)
    st = link_stats(proxy)
    assert st["open"] == 1 and st["pending"] == 1
    assert echo.accepted == 0, "connected onward during the hold"
    c.settimeout(0.2)
    with pytest.raises(TimeoutError):
        c.recv(1)
    c.settimeout(5)

    proxy.mode([LINK], "pass")
    assert recv_exact(c, 4) == b"ping"
    assert echo.accepted == 1
    assert link_stats(proxy)["pending"] == 0


def test_heal_with_the_target_down_resets_pending_connections(
    proxy: ProxyProcess, echo: EchoServer, clients: Clients
) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    proxy.mode([LINK], "blackhole")
    c = clients.connect(port)
    wait_for(lambda: link_stats(proxy)["accepted"] == 1, 2, "the proxy to accept")
    echo.close()
    proxy.mode([LINK], "pass")
    with pytest.raises(ConnectionResetError):
        c.recv(1)
    assert link_stats(proxy)["connect_failures"] == 1


def test_reset_mode_resets_existing_and_new_connections(
    proxy: ProxyProcess, echo: EchoServer, clients: Clients
) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    c = clients.connect(port)
    c.sendall(b"ping")
    assert recv_exact(c, 4) == b"ping"

    proxy.mode([LINK], "reset")
    with pytest.raises(ConnectionResetError):
        c.recv(1)
    wait_for(lambda: echo.ended == 1, 2, "the target side to be closed too")
    expect_reset(clients, port)  # a new connection: accepted, then reset
    wait_for(lambda: link_stats(proxy)["open"] == 0, 2, "the pairs to be forgotten")
    st = link_stats(proxy)
    assert st["accepted"] == 2 and st["reset"] == 2
    assert echo.accepted == 1, "a connection made in reset mode was connected onward"

    proxy.mode([LINK], "pass")
    e = clients.connect(port)
    e.sendall(b"back")
    assert recv_exact(e, 4) == b"back"


def test_delay_mode_delays_each_direction(
    proxy: ProxyProcess, echo: EchoServer, clients: Clients
) -> None:
    delay = 0.15
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    c = clients.connect(port)
    c.sendall(b"warm")
    assert recv_exact(c, 4) == b"warm"

    proxy.mode([LINK], "delay", delay_ms=int(delay * 1000))
    t0 = time.monotonic()
    c.sendall(b"x")
    wait_for(lambda: echo.received == 5, 2, "the byte to reach the target", every=0.002)
    one_way = time.monotonic() - t0
    assert recv_exact(c, 1) == b"x"
    round_trip = time.monotonic() - t0
    assert one_way >= delay * 0.95
    assert round_trip >= 2 * delay * 0.95

    t0 = time.monotonic()
    echo.push(0, b"y")
    assert recv_exact(c, 1) == b"y"
    assert time.monotonic() - t0 >= delay * 0.95

    chunks = [bytes([i]) * 1000 for i in range(20)]
    for chunk in chunks:  # order kept while every chunk waits
        c.sendall(chunk)
        time.sleep(0.005)
    assert recv_exact(c, 20_000) == b"".join(chunks)
    assert link_stats(proxy)["delay_ms"] == 150


def test_mode_switches_under_load_lose_and_reorder_nothing(
    proxy: ProxyProcess, echo: EchoServer, clients: Clients
) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    c = clients.connect(port, timeout=10)
    payload = random.Random(3).randbytes(4 << 20)
    got = bytearray()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            for i in range(0, len(payload), 16_384):  # paced: the load outlasts the switches
                c.sendall(payload[i : i + 16_384])
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    def receive() -> None:
        try:
            got.extend(recv_exact(c, len(payload)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send), threading.Thread(target=receive)]
    for t in threads:
        t.start()
    rng = random.Random(4)
    for _ in range(12):  # holds start while delayed chunks wait, and while bytes flow
        for mode in ("delay", "blackhole", rng.choice(["pass", "delay", "blackhole"])):
            proxy.mode([LINK], mode, delay_ms=rng.choice([1, 5, 30]))
            time.sleep(rng.uniform(0.01, 0.04))
    proxy.mode([LINK], "pass")
    for t in threads:
        t.join(20)
    assert not errors
    assert bytes(got) == payload
    assert link_stats(proxy)["reset"] == 0


def test_control_errors_are_answered(
    proxy: ProxyProcess, echo: EchoServer, clients: Clients
) -> None:
    port = proxy.add(LINK, f"127.0.0.1:{echo.port}")
    cases = [
        ("this is not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"cmd": "fly"}', "unknown cmd"),
        ('{"link": "x"}', "unknown cmd"),
        ('{"cmd": "add", "link": "1->2", "target": "127.0.0.1:1"}', "exists already"),
        ('{"cmd": "add", "link": "x", "target": "nowhere"}', "HOST:PORT"),
        ('{"cmd": "add", "link": "x", "target": "127.0.0.1:0"}', "HOST:PORT"),
        ('{"cmd": "add", "link": "x"}', "missing field 'target'"),
        ('{"cmd": "add", "link": "", "target": "127.0.0.1:1"}', "empty"),
        ('{"cmd": "add", "link": "x", "target": "127.0.0.1:1", "listen": "7"}', "type int"),
        ('{"cmd": "add", "link": "x", "target": "127.0.0.1:1", "listen": 70000}', "range"),
        (f'{{"cmd": "add", "link": "x", "target": "127.0.0.1:1", "listen": {port}}}',
         "cannot listen"),
        ('{"cmd": "mode", "links": ["9->9"], "mode": "pass"}', "unknown links"),
        ('{"cmd": "mode", "links": ["1->2"], "mode": "fly"}', "unknown mode"),
        ('{"cmd": "mode", "links": "1->2", "mode": "pass"}', "type list"),
        ('{"cmd": "mode", "links": ["1->2"]}', "missing field 'mode'"),
        ('{"cmd": "mode", "links": ["1->2"], "mode": "delay", "delay_ms": -1}', "delay_ms"),
    ]
    for line, error in cases:
        answer = proxy.request_raw(line)
        assert answer["ok"] is False, line
        assert error in answer["error"], (line, answer)
        assert "Traceback" not in answer["error"]
    with pytest.raises(ProxyError, match="unknown links"):
        proxy.mode([LINK, "9->9"], "blackhole")  # refused as a whole...
    st = proxy.stats()
    assert list(st) == [LINK]
    assert st[LINK]["mode"] == "pass"  # ...so nothing was applied
    c = clients.connect(port)
    c.sendall(b"still")
    assert recv_exact(c, 5) == b"still"


def test_quit_eof_and_a_dead_proxy(echo: EchoServer) -> None:
    proc = ProxyProcess()
    proc.start()
    try:
        port = proc.add(LINK, f"127.0.0.1:{echo.port}")
        assert proc.request({"cmd": "quit"}) == {"ok": True, "id": 2}
        assert proc.proc is not None and proc.proc.wait(5) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with pytest.raises(ProxyError, match="exit code 0"):
            proc.stats()
    finally:
        proc.close()

    proc = ProxyProcess()
    proc.start()
    try:
        proc.stats()
        assert proc.proc is not None and proc.proc.stdin is not None
        proc.proc.stdin.close()  # EOF on stdin
        assert proc.proc.wait(5) == 0
    finally:
        proc.close()

    proc = ProxyProcess()
    proc.start()
    try:
        proc.stats()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.proc is not None
        proc.proc.wait(5)
        t0 = time.monotonic()
        with pytest.raises(ProxyError, match="pid"):
            proc.stats()
        assert time.monotonic() - t0 < 2
    finally:
        proc.close()
