"""Event streams (SSE ``GET /api/v1/events`` and LDAP persistent search) tell nothing about
entries the caller may not read, follow the ACL in force, and end with their account.

Rules: one real Oba process (RestServer: LDAP and REST on real sockets) under an ACL file that
hides ``ou=secret`` from everyone but the root DN and lets authenticated users read the rest;
python-ldap for persistent searches and the root DN's writes, httpx for SSE (read on a thread of
its own, ``SseReader``). "Nothing was delivered" is shown with a marker: the root DN adds a
marker entry after the changes under test, and the streams deliver in applied order, so once
the marker has arrived anything before it would have too. Each test that ends a stream uses an
account of its own. Every wait has a deadline.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import ldap
import pytest
from ldap.controls.psearch import EntryChangeNotificationControl, PersistentSearchControl

from integration._support import BASE_DN, REPO, ROOT_DN, ROOT_PW, connect, wait_until
from integration.rest_support import Event, RestServer, quote_dn, sse_frames
from oba.rest.app import create_app

PUBLIC = f"ou=public,{BASE_DN}"
SECRET = f"ou=secret,{BASE_DN}"
SHIFTING = f"ou=shifting,{BASE_DN}"
PEOPLE = f"ou=people,{BASE_DN}"
ALICE = f"uid=alice,{PEOPLE}"
PW = "user-pw-1"
TIMEOUT = 20.0
ECN = {EntryChangeNotificationControl.controlType: EntryChangeNotificationControl}

ACL = f"""\
version: 1
defaultPolicy: deny
rules:
  - {{target: "{SECRET}", subject: "*", rights: [all], deny: true}}
  - {{target: "*", subject: authenticated, rights: [read, search, compare]}}
"""

Note = tuple[str, int | None, str | None]  # (DN, ECN change type, ECN previous DN)


def ou(name: str) -> list[tuple[str, list[bytes]]]:
    return [("objectClass", [b"organizationalUnit"]), ("ou", [name.encode()])]


def thing(dn: str) -> list[tuple[str, list[bytes]]]:
    return [("objectClass", [b"applicationProcess"]), ("cn", [dn.split(",")[0][3:].encode()])]


def as_root(work: Callable[[ldap.ldapobject.LDAPObject], object], url: str) -> None:
    conn = connect(url, ROOT_DN, ROOT_PW)
    try:
        work(conn)
    finally:
        conn.unbind_s()


def make_user(srv: RestServer, uid: str) -> str:
    dn = f"uid={uid},{PEOPLE}"
    as_root(lambda c: c.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
                                   ("cn", [uid.encode()]), ("sn", [b"S"]),
                                   ("userPassword", [PW.encode()])]), srv.url)
    return dn


def marker(srv: RestServer, name: str) -> str:
    """Add a marker entry (visible to everyone) after the changes under test."""
    dn = f"cn={name},{PUBLIC}"
    as_root(lambda c: c.add_s(dn, thing(dn)), srv.url)
    return dn


def token(srv: RestServer, dn: str, pw: str = PW) -> str:
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as anon:
        resp = anon.post("/auth/bind", json={"dn": dn, "password": pw})
    assert resp.status_code == 200, resp.text
    value: str = resp.json()["token"]
    return value


def basic(dn: str, pw: str = PW) -> httpx.BasicAuth:
    return httpx.BasicAuth(dn, pw)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    work = Path(tmp_path_factory.mktemp("event-streams"))
    (work / "acl.yaml").write_text(ACL)
    server = RestServer("oba", work, rest_extra=f'aclFile: "{work / "acl.yaml"}"\n')
    server.start()
    try:
        def tree(conn: ldap.ldapobject.LDAPObject) -> None:
            for name in ("people", "public", "secret", "shifting"):
                conn.add_s(f"ou={name},{BASE_DN}", ou(name))

        as_root(tree, server.url)
        make_user(server, "alice")
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ stream readers

class SseReader:
    """``GET /api/v1/events`` read on a daemon thread; frames are collected as they come.
    The thread ends with the stream, at ``stop`` (on the next line: a heartbeat at most 15 s
    later) or when the server stops."""

    def __init__(self, srv: RestServer, auth: httpx.BasicAuth | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.events: list[Event] = []
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.status = 0
        self.error: BaseException | None = None
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        args=(srv.base_url, auth, headers or {}))
        self._thread.start()
        assert self.connected.wait(TIMEOUT), "the event stream did not open"
        assert self.status == 200, (self.status, self.error)

    def _run(self, base_url: str, auth: httpx.BasicAuth | None, headers: dict[str, str]) -> None:
        try:
            with httpx.Client(base_url=base_url + "/api/v1", auth=auth, headers=headers,
                              timeout=httpx.Timeout(30.0)) as client, \
                    client.stream("GET", "/events") as resp:
                self.status = resp.status_code
                if resp.status_code != 200:
                    return
                for frame in sse_frames(resp.iter_lines()):
                    if self._stop:
                        return
                    if frame == "connected":
                        self.connected.set()
                    elif isinstance(frame, dict):
                        with self._lock:
                            self.events.append(frame)
        except BaseException as exc:  # reported by ``wait``
            self.error = exc
        finally:
            self.ended.set()
            self.connected.set()

    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def wait(self, pred: Callable[[list[Event]], bool], what: str) -> list[Event]:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            got = self.snapshot()
            if pred(got):
                return got
            if self.ended.is_set():
                raise AssertionError(f"the stream ended before {what}: {got} {self.error!r}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.snapshot()}")

    def wait_for_change(self, dn: str) -> list[Event]:
        return self.wait(lambda evs: any(e.get("event") == "change" and e["data"]["dn"] == dn
                                         for e in evs), f"the change of {dn}")

    def wait_ended(self) -> list[Event]:
        assert self.ended.wait(TIMEOUT), f"the stream is still open: {self.snapshot()}"
        assert self.error is None, repr(self.error)
        return self.snapshot()

    def stop(self) -> None:
        self._stop = True


def changes(events: list[Event]) -> list[tuple[str, str, str | None]]:
    return [(e["data"]["type"], e["data"]["dn"], e["data"].get("previousDN"))
            for e in events if e.get("event") == "change"]


class PSearch:
    """A persistent search (changes only, with Entry Change Notifications) on its own
    connection, bound as ``who``."""

    def __init__(self, srv: RestServer, who: str, pw: str, base: str = BASE_DN) -> None:
        self.conn = connect(srv.url, who, pw)
        self.mid = self.start(base)

    def start(self, base: str = BASE_DN) -> int:
        ctl = PersistentSearchControl(criticality=True,
                                      changeTypes=["add", "delete", "modify", "modDN"],
                                      changesOnly=True, returnECs=True)
        mid: int = self.conn.search_ext(base, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["cn"],
                                        serverctrls=[ctl])
        # the search is registered once the server has answered a later request
        self.conn.whoami_s()
        return mid

    def until(self, dn: str, mid: int | None = None) -> list[Note]:
        """Notifications up to (and with) the one for ``dn``."""
        got: list[Note] = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                data = self.conn.result4(self.mid if mid is None else mid, all=0, timeout=0.5,
                                         add_ctrls=1, resp_ctrl_classes=ECN)[1]
            except ldap.TIMEOUT:
                continue
            for entry_dn, _, ctrls in data or []:
                ecn = next((c for c in ctrls
                            if isinstance(c, EntryChangeNotificationControl)), None)
                got.append((entry_dn, ecn.changeType if ecn else None,
                            ecn.previousDN if ecn else None))
                if entry_dn.lower() == dn.lower():
                    return got
        raise AssertionError(f"timed out waiting for {dn}: {got}")

    def ends_with(self, error: type[ldap.LDAPError], mid: int | None = None) -> None:
        """The search ends with ``error`` within the deadline (no entry before it)."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                data = self.conn.result4(self.mid if mid is None else mid, all=0, timeout=0.5,
                                         add_ctrls=1, resp_ctrl_classes=ECN)[1]
            except ldap.TIMEOUT:
                continue
            except error:
                return
            raise AssertionError(f"delivered after its account changed: {data}")
        raise AssertionError("the persistent search is still running")

    def close(self) -> None:
        self.conn.unbind_s()


# ------------------------------------------------------------------ 2. hidden entries

def test_changes_name_only_entries_the_caller_may_read(srv: RestServer) -> None:
    for name in ("m1", "h1"):
        as_root(lambda c, n=name: c.add_s(f"cn={n},{SECRET}", thing(f"cn={n},{SECRET}")), srv.url)
    for name in ("m2", "m3"):
        as_root(lambda c, n=name: c.add_s(f"cn={n},{PUBLIC}", thing(f"cn={n},{PUBLIC}")), srv.url)
    sse = SseReader(srv, basic(ALICE))
    ps = PSearch(srv, ALICE, PW)
    try:
        def work(c: ldap.ldapobject.LDAPObject) -> None:
            c.delete_s(f"cn=h1,{SECRET}")  # a hidden entry deleted
            c.rename_s(f"cn=m1,{SECRET}", "cn=m1", newsuperior=PUBLIC)  # into view
            c.rename_s(f"cn=m2,{PUBLIC}", "cn=m2", newsuperior=SECRET)  # out of view
            c.rename_s(f"cn=m3,{PUBLIC}", "cn=m3b")  # seen from both sides

        as_root(work, srv.url)
        mark = marker(srv, "mark-moves")
        got = sse.wait_for_change(mark)
        assert "secret" not in json.dumps(got).lower(), got
        assert changes(got) == [
            ("add", f"cn=m1,{PUBLIC}", None),  # its old (hidden) DN is not named
            ("delete", f"cn=m2,{PUBLIC}", None),  # its new (hidden) DN is not named
            ("moddn", f"cn=m3b,{PUBLIC}", f"cn=m3,{PUBLIC}"),
            ("add", mark, None),
        ]
        notes = ps.until(mark)
        assert notes == [
            (f"cn=m1,{PUBLIC}", 1, None),  # an add: the entry came into view
            (f"cn=m3b,{PUBLIC}", 8, f"cn=m3,{PUBLIC}"),
            (mark, 1, None),
        ]
    finally:
        sse.stop()
        ps.close()


def test_the_administrator_sees_every_change(srv: RestServer) -> None:
    as_root(lambda c: c.add_s(f"cn=m4,{SECRET}", thing(f"cn=m4,{SECRET}")), srv.url)
    sse = SseReader(srv, basic(ROOT_DN, ROOT_PW))
    ps = PSearch(srv, ROOT_DN, ROOT_PW)
    try:
        as_root(lambda c: c.rename_s(f"cn=m4,{SECRET}", "cn=m4", newsuperior=PUBLIC), srv.url)
        as_root(lambda c: c.delete_s(f"cn=m4,{PUBLIC}"), srv.url)
        mark = marker(srv, "mark-admin")
        assert changes(sse.wait_for_change(mark)) == [
            ("moddn", f"cn=m4,{PUBLIC}", f"cn=m4,{SECRET}"), ("delete", f"cn=m4,{PUBLIC}", None),
            ("add", mark, None)]
        assert ps.until(mark) == [(f"cn=m4,{PUBLIC}", 8, f"cn=m4,{SECRET}"),
                                  (f"cn=m4,{PUBLIC}", 2, None), (mark, 1, None)]
    finally:
        sse.stop()
        ps.close()


# ------------------------------------------------------------------ 3. ACL changes

def test_streams_follow_an_acl_change(srv: RestServer) -> None:
    target = f"cn=s,{SHIFTING}"
    sse = SseReader(srv, basic(ALICE))
    ps = PSearch(srv, ALICE, PW)
    try:
        with srv.client() as root, srv.client((ALICE, PW)) as alice:
            as_root(lambda c: c.add_s(target, thing(target)), srv.url)
            sse.wait_for_change(target)
            assert ps.until(target) == [(target, 1, None)]
            # the root DN hides ou=shifting: the open streams say nothing more about it
            rule = {"target": SHIFTING, "subject": "*", "rights": ["all"], "deny": True}
            resp = root.post("/acl/rules", json={"index": 0, "rule": rule})
            assert resp.status_code == 201, resp.text
            wait_until(lambda: alice.get(f"/entries/{quote_dn(target)}").status_code == 404,
                       TIMEOUT, "the new rule to hold")
            as_root(lambda c: c.modify_s(target, [(ldap.MOD_REPLACE, "description", [b"1"])]),
                    srv.url)
            as_root(lambda c: c.rename_s(target, "cn=s2"), srv.url)
            mark = marker(srv, "mark-acl-1")
            got = sse.wait_for_change(mark)
            assert [c for c in changes(got) if "shifting" in c[1]] == [
                ("add", target, None)], got
            assert ps.until(mark) == [(mark, 1, None)]
            # and the rule removed, they do again
            assert root.delete("/acl/rules/0").status_code == 200
            moved = f"cn=s2,{SHIFTING}"
            wait_until(lambda: alice.get(f"/entries/{quote_dn(moved)}").status_code == 200,
                       TIMEOUT, "the rule to be gone")
            as_root(lambda c: c.modify_s(moved, [(ldap.MOD_REPLACE, "description", [b"2"])]),
                    srv.url)
            got = sse.wait_for_change(moved)
            assert changes(got)[-1] == ("modify", moved, None)
            assert ps.until(moved) == [(moved, 4, None)]
    finally:
        sse.stop()
        ps.close()


# ------------------------------------------------------------------ 3. streams end

def test_sse_ends_when_the_account_is_disabled_then_deleted(srv: RestServer) -> None:
    # the reproduction: the account is disabled and then deleted while its stream is open
    dn = make_user(srv, "dana")
    sse = SseReader(srv, basic(dn))
    before = marker(srv, "mark-dana-before")
    sse.wait_for_change(before)
    with srv.client() as root:
        assert root.post(f"/entries/{quote_dn(dn)}/disable").status_code == 200
        got = sse.wait_ended()
        assert got[-1]["event"] == "end", got
        assert "bind again" in got[-1]["data"]["reason"]
        assert root.delete(f"/entries/{quote_dn(dn)}").status_code == 204
    marker(srv, "mark-dana-after")
    assert sse.snapshot() == got  # nothing after the end
    with srv.client((dn, PW)) as dana:
        assert dana.get(f"/entries/{quote_dn(PUBLIC)}").status_code == 401


def test_sse_with_a_token_ends_when_the_password_changes(srv: RestServer) -> None:
    dn = make_user(srv, "erin")
    tok = token(srv, dn)
    sse = SseReader(srv, headers=bearer(tok))
    sse.wait_for_change(marker(srv, "mark-erin"))
    as_root(lambda c: c.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [b"new-pw-2"])]),
            srv.url)
    got = sse.wait_ended()
    assert got[-1]["event"] == "end", got
    with httpx.Client(base_url=srv.base_url + "/api/v1", headers=bearer(tok), timeout=30) as c:
        assert c.get(f"/entries/{quote_dn(PUBLIC)}").status_code == 401


def test_sse_with_a_token_ends_when_the_entry_is_deleted_and_made_again(
        srv: RestServer) -> None:
    dn = make_user(srv, "fred")
    sse = SseReader(srv, headers=bearer(token(srv, dn)))
    sse.wait_for_change(marker(srv, "mark-fred"))
    as_root(lambda c: c.delete_s(dn), srv.url)
    make_user(srv, "fred")  # another entry at the same DN, same password
    got = sse.wait_ended()
    assert got[-1]["event"] == "end", got
    assert f"uid=fred,{PEOPLE}" not in [c[1] for c in changes(got)]  # not its own re-creation


def test_sse_ends_when_the_account_is_locked(srv: RestServer) -> None:
    dn = make_user(srv, "gail")
    sse = SseReader(srv, basic(dn))
    sse.wait_for_change(marker(srv, "mark-gail"))
    stamp = time.strftime("%Y%m%d%H%M%SZ", time.gmtime()).encode()
    as_root(lambda c: c.modify_s(dn, [(ldap.MOD_REPLACE, "pwdAccountLockedTime", [stamp])]),
            srv.url)
    assert sse.wait_ended()[-1]["event"] == "end"


def test_persistent_search_ends_when_the_account_is_disabled(srv: RestServer) -> None:
    dn = make_user(srv, "gina")
    ps = PSearch(srv, dn, PW)
    try:
        mark = marker(srv, "mark-gina")
        assert ps.until(mark) == [(mark, 1, None)]
        with srv.client() as root:
            assert root.post(f"/entries/{quote_dn(dn)}/disable").status_code == 200
        ps.ends_with(ldap.STRONG_AUTH_REQUIRED)
        # a new one on the same (stale) bind is refused at once
        mid = ps.start()
        ps.ends_with(ldap.STRONG_AUTH_REQUIRED, mid)
    finally:
        ps.close()


def test_persistent_search_ends_when_the_account_is_deleted(srv: RestServer) -> None:
    dn = make_user(srv, "hank")
    ps = PSearch(srv, dn, PW)
    try:
        mark = marker(srv, "mark-hank")
        assert ps.until(mark) == [(mark, 1, None)]
        as_root(lambda c: c.delete_s(dn), srv.url)
        ps.ends_with(ldap.STRONG_AUTH_REQUIRED)
    finally:
        ps.close()


# ------------------------------------------------------------------ 6. documented

def test_events_is_in_the_openapi_document_and_the_reference(srv: RestServer) -> None:
    spec = httpx.get(srv.base_url + "/openapi.json", timeout=30).json()
    op = spec["paths"]["/api/v1/events"]["get"]
    assert op == create_app(None).openapi()["paths"]["/api/v1/events"]["get"]
    assert op.get("security"), "the route needs a login and must say so"
    assert "text/event-stream" in op["responses"]["200"]["content"]
    for kind in ("event: change", "event: audit", "event: reset", "event: end", "previousDN",
                 "Last-Event-ID"):
        assert kind in op["description"], kind
    reference = (REPO / "docs" / "rest-api.md").read_text(encoding="utf-8")
    assert "| GET | `/api/v1/events` | auth | — | 200 SSE |" in reference
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as anon:
        assert anon.get("/events").status_code == 401
