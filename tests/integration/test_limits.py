"""Resource limits over real sockets: maxConnections, idle timeout, slow readers.

Rules: each test runs a private Oba with small limits (stopped by PID); raw sockets speak BER
from ``_ber`` so the test controls exactly what is read and when; waits poll with a deadline.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap
import pytest

from ._ber import extended_request, message, octets, present, search_request, split_messages, tlv
from ._support import BASE_DN, ROOT_DN, ROOT_PW, LdapServer, connect, wait_until

WHOAMI = b"1.3.6.1.4.1.4203.1.11.3"
NOTICE_TAG = 0x78  # ExtendedResponse; the Notice of Disconnection has message id 0


@dataclass
class LimitServer(LdapServer):
    server_extra: str = ""

    def command(self) -> list[str]:
        cmd = super().command()
        conf = self.workdir / "oba.yaml"
        conf.write_text(conf.read_text().replace("server:\n", "server:\n" + self.server_extra, 1))
        return cmd


@pytest.fixture
def limited(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LimitServer]:
    srv = LimitServer("oba", tmp_path / "srv", server_extra=request.param)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def whoami(sock: socket.socket, msgid: int) -> int | None:
    """Send Who am I? and return its result code (None if the server closed instead)."""
    sock.sendall(message(msgid, extended_request(WHOAMI)))
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        got, data = split_messages(data + chunk)
        for r in got:
            if r.msgid == msgid:
                return r.result_code
            if r.msgid == 0 and r.op_tag == NOTICE_TAG:
                return None


def read_notice(sock: socket.socket, timeout: float) -> tuple[int | None, bool]:
    """Read until EOF: the Notice of Disconnection's result code (if any), and whether EOF came."""
    sock.settimeout(timeout)
    data = b""
    code: int | None = None
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return code, False
    except ConnectionResetError:
        pass
    got, _ = split_messages(data)
    for r in got:
        if r.msgid == 0 and r.op_tag == NOTICE_TAG:
            code = r.result_code
    return code, True


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("limited", ["  maxConnections: 3\n"], indirect=True)
def test_max_connections(limited: LimitServer) -> None:
    held = [socket.create_connection(("127.0.0.1", limited.port), timeout=10) for _ in range(3)]
    try:
        for i, sock in enumerate(held):
            assert whoami(sock, i + 1) == 0
        with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as extra:
            code, closed = read_notice(extra, 10)
        assert (code, closed) == (52, True)
        held.pop().close()

        def accepted() -> bool:
            with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as again:
                return whoami(again, 1) == 0

        wait_until(accepted, 10, "a slot to free up")
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("limited", ['  readTimeout: "1s"\n'], indirect=True)
def test_idle_timeout(limited: LimitServer) -> None:
    with (socket.create_connection(("127.0.0.1", limited.port), timeout=10) as idle,
          socket.create_connection(("127.0.0.1", limited.port), timeout=10) as busy):
        assert whoami(idle, 1) == 0
        start = time.monotonic()
        msgid = 1
        while time.monotonic() - start < 2.5:  # a client that keeps talking is never idle
            assert whoami(busy, msgid) == 0
            msgid += 1
            time.sleep(0.3)
        code, closed = read_notice(idle, 10)
        assert (code, closed) == (52, True)
        assert time.monotonic() - start < 10
        assert whoami(busy, msgid) == 0


@pytest.mark.parametrize("limited", ['  writeTimeout: "2s"\n'], indirect=True)
def test_slow_reader_is_bounded_and_disconnected(limited: LimitServer) -> None:
    admin = connect(limited.url, ROOT_DN, ROOT_PW)
    big = "cn=big," + BASE_DN
    admin.add_s(big, [("objectClass", [b"person"]), ("cn", [b"big"]), ("sn", [b"big"]),
                      ("description", [b"x" * 200_000])])
    assert limited.proc is not None
    before = rss_kib(limited.proc.pid)
    one = message(7, search_request(big.encode(), 0, present(b"objectClass"), (b"*",)))
    requests = one * 500  # 500 x 200 kB of results: far more than any buffer
    sent = 0
    slow = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
    try:
        slow.settimeout(2.0)
        try:  # the server stops reading once its output is stuck: sending blocks
            while sent < len(requests):
                sent += slow.send(requests[sent:sent + 65536])
        except TimeoutError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        # other clients are served meanwhile
        other = connect(limited.url, ROOT_DN, ROOT_PW)
        assert other.whoami_s() == f"dn:{ROOT_DN}"
        res = other.search_s(big, ldap.SCOPE_BASE, "(objectClass=*)", ["cn"])
        assert res[0][1]["cn"] == [b"big"]
        wait_until(lambda: "read none of" in limited.log_tail(100_000), 20,
                   "the slow reader to be disconnected")
        grown = rss_kib(limited.proc.pid) - before
        assert grown < 50_000, f"server grew by {grown} KiB"
        # what reaches the client is bounded: the server dropped the connection
        received = 0
        slow.settimeout(5)
        try:
            while chunk := slow.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        assert received < 20 * 200_000, received
        assert other.whoami_s() == f"dn:{ROOT_DN}"
        other.unbind_s()
    finally:
        slow.close()
        admin.delete_s(big)
        admin.unbind_s()


@pytest.mark.parametrize("limited", [""], indirect=True)
def test_pipelined_requests_beyond_the_pending_cap(limited: LimitServer) -> None:
    """300 writes sent at once (more than the per-connection cap of 128): all are answered."""
    admin_bind = tlv(0x60, b"\x02\x01\x03" + octets(ROOT_DN.encode()) + tlv(0x80, ROOT_PW.encode()))
    payload = b""
    for i in range(300):
        dn = f"cn=p{i},{BASE_DN}".encode()
        attrs = tlv(0x30, tlv(0x30, octets(b"objectClass") + tlv(0x31, octets(b"person")))
                    + tlv(0x30, octets(b"cn") + tlv(0x31, octets(f"p{i}".encode())))
                    + tlv(0x30, octets(b"sn") + tlv(0x31, octets(b"x"))))
        payload += message(i + 2, tlv(0x68, octets(dn) + attrs))
    with socket.create_connection(("127.0.0.1", limited.port), timeout=30) as sock:
        sock.sendall(message(1, admin_bind))  # a bind must complete before what follows
        data = b""
        codes: dict[int, int | None] = {}
        while 1 not in codes:
            got, data = split_messages(data + sock.recv(65536))
            codes.update((r.msgid, r.result_code) for r in got)
        sock.sendall(payload)
        while len(codes) < 301:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(codes)} responses"
            got, data = split_messages(data + chunk)
            codes.update((r.msgid, r.result_code) for r in got)
    assert set(codes.values()) == {0}
