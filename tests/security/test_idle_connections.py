"""Idle unauthenticated LDAP connections cannot hold every ``server.maxConnections`` slot.

Rules: each test runs a private Oba with small limits (stopped by PID); raw sockets speak BER so
the test controls exactly what each connection sends and when; waits poll under a deadline.
``server.anonymousIdleTimeout`` closes idle connections without an authenticated identity, but
only while at least half of ``maxConnections`` are open: pooled anonymous clients keep their
connections otherwise, and bound connections are never concerned.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import ldap
import pytest

from integration._ber import extended_request, integer, message, octets, split_messages, tlv
from integration._support import ROOT_DN, ROOT_PW, connect, wait_until
from integration.test_limits import LimitServer, read_notice
from integration.test_workers import served_by, worker_pid

WHOAMI = b"1.3.6.1.4.1.4203.1.11.3"
NOTICE_TAG = 0x78  # ExtendedResponse; the Notice of Disconnection has message id 0
UNAVAILABLE = 52


def ask(sock: socket.socket, msgid: int, op: bytes) -> int | None:
    """Send one request; its result code, or None if the server disconnected instead."""
    try:
        sock.sendall(message(msgid, op))
    except OSError:
        return None
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        got, data = split_messages(data + chunk)
        for r in got:
            if r.msgid == msgid:
                return r.result_code
            if r.msgid == 0 and r.op_tag == NOTICE_TAG:
                return None


def bind(dn: bytes, password: bytes) -> bytes:
    return tlv(0x60, integer(3) + octets(dn) + tlv(0x80, password))


def whoami() -> bytes:
    return extended_request(WHOAMI)


def raw(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def admin_works(url: str) -> bool:
    try:
        conn = connect(url, ROOT_DN, ROOT_PW)
    except ldap.LDAPError:
        return False
    try:
        return bool(conn.whoami_s() == f"dn:{ROOT_DN}")
    except ldap.LDAPError:
        return False
    finally:
        conn.unbind_s()


@pytest.mark.parametrize("limited", [
    f'  maxConnections: 10\n  anonymousIdleTimeout: "2s"\n  workers: {n}\n' for n in (1, 2)
], indirect=True, ids=["one-process", "two-listener-processes"])
def test_idle_anonymous_flood_does_not_lock_out_clients(limited: LimitServer) -> None:
    """Ten idle connections fill ``maxConnections: 10``: a client is refused at first, and
    gets in (and binds) once ``anonymousIdleTimeout`` has closed part of the flood, not only
    after ``readTimeout`` (30 s). Every listener process closes its share, down to half of
    ``maxConnections``."""
    assert limited.proc is not None
    workers = "workers: 2" in limited.server_extra
    pids = [limited.proc.pid, *([worker_pid(limited)] if workers else [])]
    flood: list[socket.socket] = []
    try:
        for _ in range(10):
            flood.append(raw(limited.port))
            time.sleep(0.05)  # the dispatcher spreads them by open connections
        time.sleep(0.3)
        before = served_by(limited.port, pids)
        assert sum(before.values()) == 10 and all(before.values()), before
        with raw(limited.port) as probe:
            assert read_notice(probe, 10) == (UNAVAILABLE, True), "the flood holds every slot"
        start = time.monotonic()
        wait_until(lambda: admin_works(limited.url), 15, "a client to get a slot again", 0.2)
        waited = time.monotonic() - start
        assert waited < 10, f"locked out for {waited:.1f}s"
        wait_until(lambda: sum(served_by(limited.port, pids).values()) <= 5, 10,
                   "the flood to shrink to half of maxConnections")
        after = served_by(limited.port, pids)
        assert all(after[pid] < before[pid] for pid in pids), (before, after)
        closed = [read_notice(sock, 0.2) for sock in flood]
        assert closed.count((UNAVAILABLE, True)) >= 5, closed
        assert time.monotonic() - start < 12
    finally:
        for sock in flood:
            sock.close()
    log = limited.log_tail(100_000)
    assert "closing idle anonymous connections after server.anonymousIdleTimeout" in log, log


@pytest.mark.parametrize("limited", [
    '  maxConnections: 8\n  anonymousIdleTimeout: "1s"\n  workers: 1\n'
], indirect=True, ids=["maxConnections-8"])
def test_only_idle_anonymous_connections_go_and_only_when_crowded(limited: LimitServer) -> None:
    """Below half of ``maxConnections`` idle anonymous connections stay (pooled anonymous
    clients); from half on, they are closed after ``anonymousIdleTimeout`` (never bound,
    bound anonymously, last bind failed alike), and bound connections stay."""
    never_bound = raw(limited.port)
    anonymous_bind = raw(limited.port)
    failed_bind = raw(limited.port)
    bound = []
    try:
        assert ask(never_bound, 1, whoami()) == 0
        assert ask(anonymous_bind, 1, bind(b"", b"")) == 0
        time.sleep(2.5)  # idle well past anonymousIdleTimeout, 2 of 8 slots in use
        assert ask(never_bound, 2, whoami()) == 0
        assert ask(anonymous_bind, 2, whoami()) == 0

        bound = [connect(limited.url, ROOT_DN, ROOT_PW) for _ in range(4)]
        assert ask(failed_bind, 1, bind(ROOT_DN.encode(), b"wrong")) == 49
        start = time.monotonic()  # 7 of 8 slots in use: crowded
        for sock in (never_bound, anonymous_bind, failed_bind):
            assert read_notice(sock, 10) == (UNAVAILABLE, True)
        assert time.monotonic() - start < 8
        time.sleep(1.5)  # the bound ones are idle past anonymousIdleTimeout too, still crowded
        for conn in bound:
            assert conn.whoami_s() == f"dn:{ROOT_DN}"
    finally:
        for sock in (never_bound, anonymous_bind, failed_bind):
            sock.close()
        for conn in bound:
            conn.unbind_s()


def test_config_key_default_environment_and_hot_reload(tmp_path: Path) -> None:
    from oba.config import ConfigError, ServerConfig, load_config
    from oba.rest.routes_admin import HOT_KEYS

    assert ServerConfig().anonymousIdleTimeout.total_seconds() == 5
    env = {"OBA_SERVER_ANONYMOUS_IDLE_TIMEOUT": "0"}
    assert load_config(None, env=env).server.anonymousIdleTimeout.total_seconds() == 0
    conf = tmp_path / "oba.yaml"
    conf.write_text("server:\n  anonymousIdleTimeout: soon\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(conf), env={})
    assert f"{conf}:2: server.anonymousIdleTimeout:" in str(err.value)
    assert "anonymousIdleTimeout" in HOT_KEYS["server"]  # pushed to the listener workers too
