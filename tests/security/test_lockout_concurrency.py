"""Failed binds are counted atomically (security issue, item 9): a burst of wrong binds sent at
once on separate connections locks the account, whether the connections land on one listener
process, on several (``server.workers``) or on the nodes of a cluster; the lock ends after
``lockoutDuration``.

Rules: real servers (python-ldap over TCP); every connection of a burst is opened (and its
first request answered) before a barrier releases all the binds at once. Passwords are stored
as {SSHA} here: the tests are about counting, not about Argon2's cost. Waits poll under a
deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap
import pytest
import yaml

from integration._support import BASE_DN, ROOT_DN, ROOT_PW, connect, wait_until
from integration.rest_support import RestServer, quote_dn
from integration.test_workers import served_by, worker_pid

BURST = 50
MAX_ATTEMPTS = 5
PW = "Right-pass-1"


def security(duration: str) -> str:
    return ("security:\n"
            '  passwordHash: "{SSHA}"\n'
            "  rateLimit:\n"
            "    enabled: true\n"
            f"    maxAttempts: {MAX_ATTEMPTS}\n"
            f'    lockoutDuration: "{duration}"\n')


@dataclass
class Server(RestServer):
    """A RestServer with ``server.workers`` set (1: a single listener process)."""

    workers: int = 1

    def command(self) -> list[str]:
        cmd = super().command()
        text = self.config_path.read_text(encoding="utf-8")
        self.config_path.write_text(
            text.replace("server:\n", f"server:\n  workers: {self.workers}\n", 1),
            encoding="utf-8")
        return cmd


def make_user(url: str, uid: str) -> str:
    dn = f"uid={uid},{BASE_DN}"
    conn = connect(url, ROOT_DN, ROOT_PW)
    try:
        conn.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
                        ("cn", [b"U"]), ("sn", [b"U"]), ("userPassword", [PW.encode()])])
    finally:
        conn.unbind_s()
    return dn


def open_conns(urls: list[str], n: int) -> list[Any]:
    """``n`` connections, round robin over ``urls``, each already answered once."""
    conns = []
    for i in range(n):
        conn = ldap.initialize(urls[i % len(urls)])
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 10.0)
        conn.set_option(ldap.OPT_TIMEOUT, 60.0)
        conn.whoami_s()  # the TCP connection is up (and handed to its listener process)
        conns.append(conn)
    return conns


def burst(conns: list[Any], dn: str, password: str) -> list[str]:
    """One bind per connection, all released at once; each outcome as "ok", "49" or the
    exception."""
    gate = threading.Barrier(len(conns), timeout=30)
    out: list[str] = [""] * len(conns)

    def one(i: int, conn: Any) -> None:
        gate.wait()
        try:
            conn.simple_bind_s(dn, password)
            out[i] = "ok"
        except ldap.INVALID_CREDENTIALS:
            out[i] = "49"
        except ldap.LDAPError as exc:
            out[i] = repr(exc)

    threads = [threading.Thread(target=one, args=(i, c), daemon=True)
               for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for conn in conns:
        try:
            conn.unbind_s()
        except ldap.LDAPError:
            pass
    return out


def bind_ok(url: str, dn: str, password: str) -> bool:
    try:
        connect(url, dn, password).unbind_s()
    except ldap.INVALID_CREDENTIALS:
        return False
    return True


def lock_state(url: str, dn: str) -> dict[str, list[bytes]]:
    conn = connect(url, ROOT_DN, ROOT_PW)
    try:
        [(_, attrs)] = conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)",
                                     ["pwdFailureTime", "pwdAccountLockedTime"])
    finally:
        conn.unbind_s()
    return attrs


def assert_locked_by(url: str, dn: str, outcomes: list[str]) -> dict[str, list[bytes]]:
    assert outcomes.count("49") == len(outcomes), outcomes
    # the failures are written by the node after it answered: wait for the lock, not a time
    try:
        wait_until(lambda: bool(lock_state(url, dn).get("pwdAccountLockedTime")), 10,
                   f"the lock on {dn}")
    except TimeoutError:
        pass
    attrs = lock_state(url, dn)
    failures = len(attrs.get("pwdFailureTime", []))
    assert attrs.get("pwdAccountLockedTime") and failures >= MAX_ATTEMPTS, (
        f"{len(outcomes)} wrong binds at once: {failures} failures recorded, "
        f"locked: {bool(attrs.get('pwdAccountLockedTime'))}")
    assert not bind_ok(url, dn, PW), "the right password opened a locked account"
    return attrs


def test_the_write_path_counts_failures_one_after_the_other(tmp_path: Path) -> None:
    """The commands themselves, applied in turn (what every node does, in log order)."""
    from oba.directory.apply import ApplyContext, apply, auth_epoch
    from oba.directory.commands import AddCommand, Command, bind_failure, bind_success
    from oba.schema import Schema
    from oba.storage import Store

    def run(cmd: Command) -> Any:
        with store.write() as txn:
            return apply(txn, cmd, ctx)

    def entry() -> Any:
        with store.read() as txn:
            found = txn.get_by_ndn(ctx.schema.normalize_dn(dn))
            assert found is not None
            return found.attrs, auth_epoch(txn, found.id)

    base = "dc=example,dc=com"
    store = Store(tmp_path / "db", Schema.default(), map_size=1 << 24)
    ctx = ApplyContext(Schema.default(), (base,))
    dn = f"uid=u,{base}"
    t0, window, when = 1_700_000_000.0, 60.0, "20231114221320Z"
    try:
        for add in (AddCommand(base, (("objectClass", (b"domain",)), ("dc", (b"example",))),
                               "r0", ROOT_DN, when, "00000000-0000-4000-8000-000000000001"),
                    AddCommand(dn, (("objectClass", (b"inetOrgPerson",)), ("uid", (b"u",)),
                                    ("cn", (b"U",)), ("sn", (b"U",)),
                                    ("userPassword", (b"{SSHA}x",))),
                               "r1", ROOT_DN, when, "00000000-0000-4000-8000-000000000002")):
            assert run(add).code == 0
        for i in range(MAX_ATTEMPTS):
            result = run(bind_failure(dn, t0 + i, MAX_ATTEMPTS, window, f"f{i}", "x", when))
            assert result.code == 0, result
            assert (result.message == "locked") == (i == MAX_ATTEMPTS - 1), (i, result)
        attrs, epoch = entry()
        assert len(attrs["pwdFailureTime"]) == MAX_ATTEMPTS and attrs["pwdAccountLockedTime"]
        assert epoch == 1, "a lock moves the credential epoch"
        # a failure on a locked account changes nothing (the lock is not extended)
        assert run(bind_failure(dn, t0 + 30, MAX_ATTEMPTS, window, "f9", "x", when)
                   ).message == "locked"
        assert entry() == (attrs, epoch)
        # a success while locked is refused; after the lock it clears everything
        assert run(bind_success(dn, t0 + 31, window, "s1", "x", when)).code == 49
        assert entry() == (attrs, epoch)
        assert run(bind_success(dn, t0 + 4 + window, window, "s2", "x", when)).code == 0
        attrs, epoch = entry()
        assert "pwdFailureTime" not in attrs and "pwdAccountLockedTime" not in attrs
        assert epoch == 1, "an unlock revokes nothing (the lock did)"
    finally:
        store.close()


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server("oba", Path(tmp_path_factory.mktemp("lock-single")),
                 rest_extra=security("1h"), workers=1)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_concurrent_wrong_binds_lock_the_account(single: Server) -> None:
    dn = make_user(single.url, "burst-single")
    outcomes = burst(open_conns([single.url], BURST), dn, "wrong")
    assert_locked_by(single.url, dn, outcomes)
    with single.client() as root:
        status = root.get(f"/entries/{quote_dn(dn)}/lock-status").json()
        assert status["locked"] is True, status


def test_concurrent_wrong_binds_across_worker_processes(tmp_path: Path) -> None:
    srv = Server("oba", tmp_path, rest_extra=security("1h"), workers=2)
    srv.start()
    try:
        dn = make_user(srv.url, "burst-workers")
        assert srv.proc is not None
        pids = [srv.proc.pid, worker_pid(srv)]
        conns = open_conns([srv.url], BURST)
        spread = served_by(srv.port, pids)
        assert all(spread.values()), f"the burst did not reach both processes: {spread}"
        outcomes = burst(conns, dn, "wrong")
        assert_locked_by(srv.url, dn, outcomes)
    finally:
        srv.stop()


def test_lock_expires_after_the_duration_and_a_new_burst_locks_again(tmp_path: Path) -> None:
    duration = 3.0
    srv = Server("oba", tmp_path, rest_extra=security(f"{int(duration)}s"), workers=1)
    srv.start()
    try:
        dn = make_user(srv.url, "burst-expiry")
        outcomes = burst(open_conns([srv.url], BURST), dn, "wrong")
        assert_locked_by(srv.url, dn, outcomes)
        # the lock (whole seconds) ends at most ``duration`` after it began
        wait_until(lambda: bind_ok(srv.url, dn, PW), duration + 5, "the lock to expire",
                   interval=0.25)
        assert lock_state(srv.url, dn) == {}, "a successful bind clears failures and lock"
        # failures older than the duration no longer count
        for _ in range(MAX_ATTEMPTS - 1):
            assert not bind_ok(srv.url, dn, "wrong")
        time.sleep(duration + 0.5)
        assert not bind_ok(srv.url, dn, "wrong")
        wait_until(lambda: len(lock_state(srv.url, dn).get("pwdFailureTime", [])) == 1, 10,
                   "the old failures to be dropped")
        assert bind_ok(srv.url, dn, PW)
        # and a new burst locks again
        outcomes = burst(open_conns([srv.url], BURST), dn, "wrong")
        assert_locked_by(srv.url, dn, outcomes)
    finally:
        srv.stop()


def test_concurrent_wrong_binds_across_cluster_nodes(tmp_path: Path) -> None:
    from cluster.support import ADMIN, PASSWORD, Cluster

    c = Cluster(tmp_path)
    for nd in c.nodes:
        cfg = yaml.safe_load(nd.config.read_text())
        cfg["server"]["workers"] = 1  # three nodes share this machine's cores
        cfg["security"] = {"passwordHash": "{SSHA}", "rateLimit": {
            "enabled": True, "maxAttempts": MAX_ATTEMPTS, "lockoutDuration": "1h"}}
        nd.config.write_text(yaml.safe_dump(cfg))
    try:
        c.start()
        lead = c.wait_ready(30)
        dn = f"uid=burst-cluster,{BASE_DN}"
        conn = lead.conn()
        conn.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [b"burst-cluster"]),
                        ("cn", [b"U"]), ("sn", [b"U"]), ("userPassword", [PW.encode()])])
        conn.unbind_s()
        urls = [nd.url for nd in c.nodes]
        for url in urls:
            wait_until(lambda url=url: bind_ok(url, dn, PW), 10, f"the user on {url}")
        outcomes = burst(open_conns(urls, BURST), dn, "wrong")
        assert outcomes.count("49") == BURST, outcomes
        for nd in c.nodes:
            def locked(url: str = nd.url) -> bool:
                admin = connect(url, ADMIN, PASSWORD)
                try:
                    [(_, attrs)] = admin.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)",
                                                  ["pwdFailureTime", "pwdAccountLockedTime"])
                finally:
                    admin.unbind_s()
                return (bool(attrs.get("pwdAccountLockedTime"))
                        and len(attrs.get("pwdFailureTime", [])) >= MAX_ATTEMPTS)

            wait_until(locked, 15, f"the lock on node {nd.id}")
            assert not bind_ok(nd.url, dn, PW), f"node {nd.id} let the right password in"
    finally:
        c.close()
