"""ACL documents fail closed: an empty ACL file never opens the directory.

Rules: real Oba processes started with ``aclFile`` (RestServer: LDAP and REST on real sockets,
python-ldap and httpx clients). The good document hides ``ou=secret`` from everyone but the
members of ``cn=admins`` (alice), lets users change their own ``userPassword`` and everyone
read the rest; ``defaultPolicy: deny``. A "breach" is anything that document refuses:
anonymous replacing alice's ``userPassword``, bob adding himself to ``cn=admins``, anonymous
seeing the hidden subtree. Rewrites of the file are done the ordinary, non-atomic way (open
with truncation, then write), as an editor or ``cat good > acl.yaml`` does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ldap
import pytest

from integration._support import BASE_DN, ROOT_DN, ROOT_PW, connect, wait_until
from integration.rest_support import RestServer, assert_error

PEOPLE = f"ou=people,{BASE_DN}"
GROUPS = f"ou=groups,{BASE_DN}"
SECRET = f"ou=secret,{BASE_DN}"
ADMINS = f"cn=admins,{GROUPS}"
HIDDEN = f"cn=hidden,{SECRET}"
ALICE, BOB = f"uid=alice,{PEOPLE}", f"uid=bob,{PEOPLE}"
PW = {ALICE: "alice-Pass1", BOB: "bob-Pass1"}
POLL = 0.3  # oba.acl.runtime.POLL_INTERVAL

GOOD = f"""\
version: 1
defaultPolicy: deny
rules:
  - {{target: "{SECRET}", subject: "group:{ADMINS}", rights: [all]}}
  - {{target: "{SECRET}", subject: "*", rights: [all], deny: true}}
  - {{target: "*", subject: self, rights: [write], attributes: [userPassword]}}
  - {{target: "*", subject: "*", rights: [read, search, compare]}}
"""
EMPTY_DOCUMENTS = {"empty file": "", "comments only": "# the ACL\n# (rules below)\n",
                   "version only": "version: 1\n"}
REJECTED = "ACL file rejected"


def write_tree(url: str) -> None:
    root = connect(url, ROOT_DN, ROOT_PW)
    for name in ("people", "groups", "secret"):
        root.add_s(f"ou={name},{BASE_DN}", [("objectClass", [b"organizationalUnit"]),
                                            ("ou", [name.encode()])])
    for dn, pw in PW.items():
        uid = dn.split(",")[0][4:]
        root.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
                        ("cn", [uid.encode()]), ("sn", [b"S"]), ("userPassword", [pw.encode()])])
    root.add_s(ADMINS, [("objectClass", [b"groupOfNames"]), ("cn", [b"admins"]),
                        ("member", [ALICE.encode()])])
    root.add_s(HIDDEN, [("objectClass", [b"applicationProcess"]), ("cn", [b"hidden"])])
    root.unbind_s()


def rewrite(path: Path, text: str) -> None:
    """A non-atomic rewrite: truncate in place, then write (what ``cat x > acl.yaml`` does)."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)


class Prober:
    """Tries what the good document refuses, on long-lived connections; records breaches."""

    def __init__(self, srv: RestServer) -> None:
        self.srv = srv
        self.anon = connect(srv.url)
        self.bob = connect(srv.url, BOB, PW[BOB])
        self.breaches: list[str] = []
        self.rounds = 0

    def probe(self) -> list[str]:
        found: list[str] = []
        self.rounds += 1
        stolen = f"stolen-{self.rounds}"
        try:
            self.anon.modify_s(ALICE, [(ldap.MOD_REPLACE, "userPassword", [stolen.encode()])])
            found.append("anonymous replaced alice's userPassword")
            try:
                connect(self.srv.url, ALICE, stolen).unbind_s()
                found.append("anonymous bound as alice with the password it set")
            except ldap.INVALID_CREDENTIALS:
                pass
        except (ldap.STRONG_AUTH_REQUIRED, ldap.INSUFFICIENT_ACCESS):
            pass
        try:
            self.bob.modify_s(ADMINS, [(ldap.MOD_ADD, "member", [BOB.encode()])])
            found.append("bob added himself to cn=admins")
        except ldap.TYPE_OR_VALUE_EXISTS:
            found.append("bob is a member of cn=admins")
        except ldap.INSUFFICIENT_ACCESS:
            pass
        try:
            seen = self.anon.search_s(SECRET, ldap.SCOPE_SUBTREE)
            found.append(f"anonymous sees the hidden subtree: {[dn for dn, _ in seen]}")
        except ldap.NO_SUCH_OBJECT:
            pass
        self.breaches.extend(found)
        return found

    def close(self) -> None:
        for conn in (self.anon, self.bob):
            conn.unbind_s()


def rejections(srv: RestServer) -> int:
    return srv.log_path.read_text(errors="replace").count(REJECTED)


def wait_rejected(srv: RestServer, before: int, what: str) -> None:
    """Wait for one more "ACL file rejected" line in the log than ``before``."""
    wait_until(lambda: rejections(srv) > before, 10, what)


def anonymous_may_compare(srv: RestServer) -> bool:
    conn = connect(srv.url)
    try:
        return bool(conn.compare_s(ALICE, "cn", b"alice"))
    except ldap.INSUFFICIENT_ACCESS:
        return False
    finally:
        conn.unbind_s()


@pytest.fixture
def good_server(tmp_path: Path) -> Iterator[tuple[RestServer, Path]]:
    acl = tmp_path / "acl.yaml"
    acl.write_text(GOOD)
    srv = RestServer("oba", tmp_path / "srv", rest_extra=f'aclFile: "{acl}"\n')
    srv.start()
    try:
        write_tree(srv.url)
        yield srv, acl
    finally:
        srv.stop()


@pytest.mark.parametrize("name", list(EMPTY_DOCUMENTS))
def test_empty_document_refuses_the_start(tmp_path: Path, name: str) -> None:
    acl = tmp_path / "acl.yaml"
    acl.write_text(EMPTY_DOCUMENTS[name])
    srv = RestServer("oba", tmp_path / "srv", rest_extra=f'aclFile: "{acl}"\n')
    try:
        with pytest.raises(RuntimeError, match="could not start"):
            srv.start(timeout=20)
    finally:
        srv.stop()
    log = srv.log_path.read_text(errors="replace")
    assert "cannot start: aclFile:" in log and "no rules and no defaultPolicy" in log, log


def test_empty_document_on_hot_reload_keeps_the_rules_in_force(
        good_server: tuple[RestServer, Path]) -> None:
    """The reproduction: each empty form, by file watch, SIGHUP and REST reload."""
    srv, acl = good_server
    prober = Prober(srv)
    try:
        assert prober.probe() == []
        assert srv.proc is not None
        for name, text in EMPTY_DOCUMENTS.items():
            before = rejections(srv)
            rewrite(acl, text)
            wait_rejected(srv, before, f"the watcher to reject the {name}")
            time.sleep(3 * POLL)
            assert prober.probe() == [], name
            before = rejections(srv)
            os.kill(srv.proc.pid, signal.SIGHUP)
            wait_rejected(srv, before, f"SIGHUP to reject the {name}")
            assert prober.probe() == [], name
            with srv.client() as root:
                data = assert_error(root.post("/acl/reload"), 400, "invalid_acl")
                assert "previous rules stay in force" in data["message"]
                assert "no rules and no defaultPolicy" in data["message"]
                view = root.get("/acl").json()
                assert view["defaultPolicy"] == "deny" and len(view["rules"]) == 4
            assert prober.probe() == [], name
        lines = srv.log_path.read_text(errors="replace").splitlines()
        refused = [line for line in lines if REJECTED in line]
        assert refused and all("WARNING" in line for line in refused), refused
        assert not any("defaultPolicy allow" in line for line in lines)
        # a good file is still picked up by the watcher afterwards
        assert anonymous_may_compare(srv)
        rewrite(acl, GOOD.replace("read, search, compare", "read, search"))
        wait_until(lambda: not anonymous_may_compare(srv), 10, "the new file to be enforced")
        assert prober.probe() == []
    finally:
        prober.close()


def test_non_atomic_rewrite_opens_no_window(good_server: tuple[RestServer, Path]) -> None:
    """Probe continuously while the file is rewritten in place: truncated, left empty for
    longer than the poll interval, then written; and written in two parts whose first part
    alone (``defaultPolicy: allow`` before the rules, the last of which denies everything
    else) would open everything."""
    srv, acl = good_server
    prober = Prober(srv)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            while not stop.is_set():
                prober.probe()
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    # the same rules as GOOD: allow by default, but the last rule denies everything else
    head = "version: 1\ndefaultPolicy: allow\n"
    tail = GOOD.split("rules:\n", 1)[1] + '  - {target: "*", subject: "*", rights: [all], ' \
        "deny: true}\n"
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            rewrite(acl, "")  # `: > acl.yaml`
            time.sleep(2.5 * POLL)  # more than two polls see the empty file
            rewrite(acl, GOOD)  # `cat good > acl.yaml`
            time.sleep(2.5 * POLL)
        for i in range(6):
            with acl.open("w", encoding="utf-8") as fh:
                fh.write(head)
                fh.flush()
                time.sleep(POLL / 2)  # the first part alone is on disk for half a poll
                fh.write("rules:\n" + tail)
            time.sleep(2 * POLL + i * POLL / 6)  # shift the phase against the polls
    finally:
        stop.set()
        thread.join(30)
        prober.close()
    assert not failure, failure
    assert prober.rounds > 20, prober.rounds
    assert prober.breaches == [], prober.breaches[:5]
    assert rejections(srv) >= 1  # the empty file was seen and refused


def test_missing_default_policy_means_deny(tmp_path: Path) -> None:
    acl = tmp_path / "acl.yaml"
    acl.write_text(f'version: 1\nrules:\n  - {{target: "{PEOPLE}", subject: "*", '
                   f"rights: [read, search]}}\n")
    srv = RestServer("oba", tmp_path / "srv", rest_extra=f'aclFile: "{acl}"\n')
    srv.start()
    try:
        write_tree(srv.url)
        anon = connect(srv.url)
        assert {dn.lower() for dn, _ in anon.search_s(PEOPLE, ldap.SCOPE_ONELEVEL)} \
            == {ALICE.lower(), BOB.lower()}
        with pytest.raises(ldap.NO_SUCH_OBJECT):  # not covered by a rule: denied
            anon.search_s(SECRET, ldap.SCOPE_BASE)
        with pytest.raises(ldap.STRONG_AUTH_REQUIRED):
            anon.modify_s(ALICE, [(ldap.MOD_REPLACE, "userPassword", [b"stolen"])])
        with srv.client() as root:
            assert root.get("/acl").json()["defaultPolicy"] == "deny"
            # deleting the only rule would leave no rules and no explicit defaultPolicy
            data = assert_error(root.delete("/acl/rules/0"), 400, "invalid_acl")
            assert "no rules and no defaultPolicy" in data["message"]
            assert len(root.get("/acl").json()["rules"]) == 1
            # an explicit policy is a deliberate choice: accepted
            assert root.put("/acl/default", json={"policy": "deny"}).status_code == 200
            assert root.delete("/acl/rules/0").status_code == 200
        with pytest.raises(ldap.NO_SUCH_OBJECT):
            anon.search_s(PEOPLE, ldap.SCOPE_BASE)
        anon.unbind_s()
    finally:
        srv.stop()
