"""Restarts on the same data dir: SIGTERM/SIGINT stop cleanly, kill -9 loses no acknowledged add.

Rules: every test starts its own private server(s) through ``make_server`` (stopped by PID at
teardown). The kill -9 test is Oba's durability promise; it also runs against slapd (back-mdb
syncs each commit), which keeps the test itself honest.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import ldap

from ._support import BASE_DN, ROOT_DN, ROOT_PW, LdapServer, connect, wait_until

MAX_ADDS = 3000
MAX_SECONDS = 20.0
ACKED_BEFORE_KILL = 60


def _add(conn: ldap.ldapobject.LDAPObject, dn: str, cn: str) -> None:
    conn.add_s(dn, [("objectClass", [b"person"]), ("cn", [cn.encode()]), ("sn", [b"durable"])])


def _present(conn: ldap.ldapobject.LDAPObject) -> set[str]:
    found = conn.search_s(BASE_DN, ldap.SCOPE_ONELEVEL, "(sn=durable)", ["1.1"])
    return {dn.lower() for dn, _ in found}


class Writer(threading.Thread):
    """Adds entries one at a time, recording each DN the server acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.acked: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = connect(self.url, ROOT_DN, ROOT_PW)
        deadline = time.monotonic() + MAX_SECONDS
        try:
            for i in range(MAX_ADDS):
                if time.monotonic() > deadline:
                    break
                dn = f"cn=d{i},{BASE_DN}"
                _add(conn, dn, f"d{i}")
                self.acked.append(dn.lower())
        except ldap.SERVER_DOWN:
            pass
        except BaseException as exc:  # reported by the test thread
            self.error = exc


def test_kill9_loses_no_acknowledged_add(make_server: Callable[[], LdapServer]) -> None:
    srv = make_server()
    srv.start()
    writer = Writer(srv.url)
    writer.start()
    wait_until(
        lambda: len(writer.acked) >= ACKED_BEFORE_KILL or not writer.is_alive(),
        MAX_SECONDS,
        f"{ACKED_BEFORE_KILL} acknowledged adds",
    )
    assert writer.is_alive(), f"writer stopped early: {writer.error!r}"
    srv.stop(signal.SIGKILL)
    writer.join(15)
    assert not writer.is_alive() and writer.error is None, repr(writer.error)
    acked = set(writer.acked)
    assert len(acked) >= ACKED_BEFORE_KILL

    srv.start()
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    present = _present(conn)
    conn.unbind_s()
    lost = acked - present
    assert not lost, f"{len(lost)} acknowledged adds lost after kill -9, e.g. {sorted(lost)[:3]}"
    assert len(present) <= len(acked) + 1  # at most the one add in flight at the kill


def test_sigterm_then_restart_keeps_data(make_server: Callable[[], LdapServer]) -> None:
    srv = make_server()
    srv.start()
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    dn = f"cn=persist,{BASE_DN}"
    _add(conn, dn, "persist")
    conn.modify_s(dn, [(ldap.MOD_ADD, "description", ["überlebt".encode()])])
    conn.unbind_s()
    assert srv.stop(signal.SIGTERM) == 0

    srv.start()
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    [(got, raw)] = conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["description", "+"])
    attrs = {k.lower(): v for k, v in raw.items()}
    assert got == dn
    assert attrs["description"] == ["überlebt".encode()]
    assert attrs["creatorsname"] == [ROOT_DN.encode()]
    [(base, _)] = conn.search_s(BASE_DN, ldap.SCOPE_BASE, "(o=example)", ["1.1"])
    assert base == BASE_DN
    conn.unbind_s()


def test_sigint_stops_cleanly(make_server: Callable[[], LdapServer]) -> None:
    srv = make_server()
    srv.start()
    conn = connect(srv.url)
    assert conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
    conn.unbind_s()
    assert srv.stop(signal.SIGINT) == 0
