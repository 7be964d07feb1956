"""``server.workers``: several listener processes on one port, one writer.

Rules: a real Oba with ``server.workers: 2`` (the writer plus one worker process) and its REST
API; connections are spread by the kernel, so each test opens enough connections to reach both
processes and checks where they landed from ``/proc`` (socket inodes of each PID against the
established connections to the LDAP port). Everything is waited for with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ldap
import ldap.modlist
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, wait_until
from .rest_support import RestServer
from .test_limits import read_notice, whoami

CONNECTIONS = 24


@dataclass
class WorkersServer(RestServer):
    server_extra: str = ""

    def command(self) -> list[str]:
        cmd = super().command()
        text = self.config_path.read_text(encoding="utf-8")
        self.config_path.write_text(
            text.replace("server:\n", "server:\n  workers: 2\n" + self.server_extra, 1),
            encoding="utf-8")
        return cmd


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def worker_pid(srv: RestServer, exclude: tuple[int, ...] = ()) -> int:
    """The listener worker's PID once it serves (its "serving" line is in the log), not one
    of ``exclude`` (killed ones not reaped yet)."""
    assert srv.proc is not None
    main = srv.proc.pid
    found: list[int] = []

    def serving() -> bool:
        kids = children(main)
        text = srv.log_path.read_text(errors="replace")
        ready = [k for k in kids if f"(pid {k}) serving" in text and k not in exclude]
        found[:] = ready
        return bool(ready)

    wait_until(serving, 30, "the listener worker to serve")
    return found[0]


def _inodes(pid: int) -> set[str]:
    out: set[str] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def served_by(port: int, pids: list[int]) -> dict[int, int]:
    """Established server-side connections on ``port`` per PID."""
    inodes: list[str] = []
    with open("/proc/net/tcp", encoding="ascii") as fh:
        next(fh)
        for line in fh:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "01" and int(local.split(":")[1], 16) == port:
                inodes.append(inode)
    owned = {pid: _inodes(pid) for pid in pids}
    return {pid: sum(1 for i in inodes if i in owned[pid]) for pid in pids}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkersServer]:
    srv = WorkersServer("oba", tmp_path_factory.mktemp("workers"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def spread(server: WorkersServer) -> Iterator[list[ldap.ldapobject.LDAPObject]]:
    """``CONNECTIONS`` bound admin connections, at least one on each process."""
    assert server.proc is not None
    pids = [server.proc.pid, worker_pid(server)]
    conns: list[ldap.ldapobject.LDAPObject] = []
    deadline = time.monotonic() + 30
    while True:
        conn = connect(server.url, ROOT_DN, ROOT_PW)
        conn.whoami_s()
        conns.append(conn)
        counts = served_by(server.port, pids)
        if len(conns) >= CONNECTIONS and all(counts.values()):
            break
        assert time.monotonic() < deadline, f"connections never reached both processes: {counts}"
    try:
        yield conns
    finally:
        for conn in conns:
            conn.unbind_s()


def test_both_processes_accept_on_the_one_port(server: WorkersServer,
                                               spread: list[ldap.ldapobject.LDAPObject]) -> None:
    assert server.proc is not None
    worker = worker_pid(server)
    counts = served_by(server.port, [server.proc.pid, worker])
    assert counts[server.proc.pid] >= 1 and counts[worker] >= 1
    # a second server on the same port is refused (no SO_REUSEPORT sharing)
    with pytest.raises(OSError):
        with socket.create_server(("127.0.0.1", server.port)):
            pass


def test_a_write_on_any_connection_is_read_on_every_other(
        spread: list[ldap.ldapobject.LDAPObject]) -> None:
    for i, conn in enumerate(spread):
        dn = f"cn=worker-rw-{i},{BASE_DN}"
        conn.add_s(dn, ldap.modlist.addModlist({"objectClass": [b"person"],
                                                "cn": [f"worker-rw-{i}".encode()],
                                                "sn": [b"rw"]}))
        for other in spread:
            assert other.search_s(dn, ldap.SCOPE_BASE, "(sn=rw)", ["cn"])[0][0] == dn
        conn.modify_s(dn, [(ldap.MOD_REPLACE, "sn", [b"rw2"])])
        for other in spread:
            assert other.compare_s(dn, "sn", b"rw2")
        conn.delete_s(dn)


def test_persistent_search_on_every_process_sees_changes_made_on_others(
        server: WorkersServer, spread: list[ldap.ldapobject.LDAPObject]) -> None:
    from ldap.controls.psearch import PersistentSearchControl

    seen: dict[int, set[str]] = {}
    stop = threading.Event()
    threads: list[threading.Thread] = []
    watchers = [connect(server.url, ROOT_DN, ROOT_PW) for _ in range(8)]
    ready = threading.Barrier(len(watchers) + 1, timeout=30)

    def watch(k: int, conn: ldap.ldapobject.LDAPObject) -> None:
        seen[k] = set()
        mid = conn.search_ext(BASE_DN, ldap.SCOPE_SUBTREE, "(cn=worker-ps-*)", ["cn"],
                              serverctrls=[PersistentSearchControl(changesOnly=True)])
        ready.wait()
        while not stop.is_set():
            try:
                _, data, _, _ = conn.result3(mid, all=0, timeout=0.2)
            except ldap.TIMEOUT:
                continue
            for dn, _attrs in data or []:
                seen[k].add(dn.lower())

    counts = served_by(server.port, [server.proc.pid if server.proc else 0,
                                     worker_pid(server)])
    for k, conn in enumerate(watchers):
        t = threading.Thread(target=watch, args=(k, conn), daemon=True)
        t.start()
        threads.append(t)
    ready.wait()
    # the subscription reaches the writer asynchronously: keep writing until every watcher
    # (on either process) has seen a change made through a connection of the other kind
    added: list[str] = []
    try:
        def everyone_saw() -> bool:
            dn = f"cn=worker-ps-{len(added)},{BASE_DN}"
            spread[len(added) % len(spread)].add_s(dn, [("objectClass", [b"person"]),
                                                         ("cn", [dn[3:].split(",")[0].encode()]),
                                                         ("sn", [b"ps"])])
            added.append(dn)
            return all(seen.get(k) for k in range(len(watchers)))

        wait_until(everyone_saw, 30, f"every persistent search to see a change ({counts})",
                   interval=0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for conn in watchers:
            conn.unbind_s()
        for dn in added:
            spread[0].delete_s(dn)


def visible(conn: ldap.ldapobject.LDAPObject) -> bool:
    try:
        return bool(conn.search_s(BASE_DN, ldap.SCOPE_BASE))
    except ldap.NO_SUCH_OBJECT:
        return False


def test_an_acl_change_is_in_force_on_every_process_when_rest_answers(
        server: WorkersServer) -> None:
    assert server.proc is not None
    pids = [server.proc.pid, worker_pid(server)]
    anon: list[ldap.ldapobject.LDAPObject] = []
    while not all(served_by(server.port, pids).values()) or len(anon) < 12:
        conn = connect(server.url)
        conn.search_s(BASE_DN, ldap.SCOPE_BASE)
        anon.append(conn)
        assert len(anon) < 200, "anonymous connections never reached both processes"
    with server.client() as api:
        try:
            resp = api.put("/acl/default", json={"policy": "deny"})
            assert resp.status_code == 200, resp.text
            for conn in anon:  # no wait: the change is in force once REST answered
                assert not visible(conn)
        finally:
            resp = api.put("/acl/default", json={"policy": "allow"})
            assert resp.status_code == 200, resp.text
        for conn in anon:
            assert visible(conn)
            conn.unbind_s()


def test_binds_on_a_worker_are_audited(server: WorkersServer,
                                       spread: list[ldap.ldapobject.LDAPObject]) -> None:
    with server.client() as api:
        def audited() -> bool:
            resp = api.get("/logs", params={"limit": 500, "source": "ldap"})
            users = [e for e in resp.json()["entries"] if e["message"].startswith("bind ")]
            return len(users) >= len(spread)

        wait_until(audited, 20, "every bind of the spread connections in the audit log")


def test_a_killed_worker_is_replaced_and_the_port_keeps_serving(server: WorkersServer) -> None:
    assert server.proc is not None
    old = worker_pid(server)
    os.kill(old, signal.SIGKILL)
    failures = 0
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = connect(server.url, ROOT_DN, ROOT_PW)
            conn.whoami_s()
            conn.unbind_s()
        except ldap.LDAPError:
            failures += 1
        kids = children(server.proc.pid)
        text = server.log_path.read_text(errors="replace")
        if any(k != old and f"(pid {k}) serving" in text for k in kids):
            break
        assert time.monotonic() < deadline, "the killed worker was not replaced"
    assert failures == 0


def _log_times(srv: WorkersServer, needle: str) -> list[float]:
    """Times (seconds of the day) of the writer's log lines containing ``needle``."""
    out: list[float] = []
    for line in srv.log_path.read_text(errors="replace").splitlines():
        if needle in line:
            clock = line.split()[1]  # HH:MM:SS,mmm
            h, m, rest = clock.split(":")
            out.append(int(h) * 3600 + int(m) * 60 + float(rest.replace(",", ".")))
    return out


def test_a_worker_that_keeps_dying_is_restarted_later_each_time(tmp_path: Path) -> None:
    srv = WorkersServer("oba", tmp_path / "backoff")
    srv.start()
    try:
        killed: tuple[int, ...] = ()
        for _ in range(2):  # each replacement dies within seconds of its start
            victim = worker_pid(srv, killed)
            seen = len(_log_times(srv, "went away"))
            os.kill(victim, signal.SIGKILL)
            killed += (victim,)

            def died(before: int = seen) -> bool:
                return len(_log_times(srv, "went away")) > before

            wait_until(died, 10, "the writer to see its worker die")
        worker_pid(srv, killed)  # the third one serves
        deaths = _log_times(srv, "went away")
        starts = _log_times(srv, "listener worker 1 started")
        assert len(deaths) == 2 and len(starts) == 3
        assert starts[1] - deaths[0] >= 1.0  # the first restart waits RESTART_DELAY
        assert starts[2] - deaths[1] >= 2.0  # the next one, after a short life, twice that
    finally:
        srv.stop()


def test_workers_stop_with_the_writer_and_free_the_port(tmp_path: Path) -> None:
    srv = WorkersServer("oba", tmp_path / "kill")
    srv.start()
    assert srv.proc is not None
    worker = worker_pid(srv)
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)

    def gone() -> bool:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{worker}/stat", encoding="ascii") as fh:
            return fh.read().split()[2] == "Z"

    wait_until(gone, 10, "the worker to exit after its writer was killed")
    srv.proc = None
    srv.start()  # same port, same data: nothing left behind holds them
    assert srv.proc is not None
    graceful = worker_pid(srv)
    assert srv.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(graceful, 0)


def test_max_connections_counts_every_process(tmp_path: Path) -> None:
    srv = WorkersServer("oba", tmp_path / "limit", server_extra="  maxConnections: 3\n")
    srv.start()
    try:
        worker_pid(srv)
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(3)]
        try:
            for i, sock in enumerate(held):
                assert whoami(sock, i + 1) == 0
            for _ in range(6):  # whichever process takes it, the fourth is one too many
                with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as extra:
                    assert read_notice(extra, 10) == (52, True)
            held.pop().close()

            def accepted() -> bool:
                with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as again:
                    return whoami(again, 1) == 0

            wait_until(accepted, 10, "a slot to free up")
        finally:
            for sock in held:
                sock.close()
    finally:
        srv.stop()
