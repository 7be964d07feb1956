"""Who sees the audit trail: /logs, /logs/export, /activities, /events and /logs/archives over a
real server (LDAP over python-ldap, REST over httpx) with an ACL file denying ``ou=secret``.

Rules: one server per module. Every attack is made by alice, an ordinary user the ACL denies
everything under ``ou=secret`` and the value of ``carLicense``; bob is the other user whose binds
she must not see. Records are waited for through the administrator's /logs (the records are
replicated asynchronously), never by sleeping. The archive test runs last: archiving moves every
record out of the active trail.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import ldap
import pytest

from integration._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from integration.rest_support import Event, assert_error, quote_dn, sse_frames
from integration.test_audit_support import AuditServer, wait_logs
from oba.audit.visibility import Viewer
from oba.operations import Identity, OpError

PEOPLE = f"ou=people,{BASE_DN}"
SECRET = f"ou=secret,{BASE_DN}"
DROPBOX = f"ou=dropbox,{BASE_DN}"
TOPSECRET = f"cn=topsecret,{SECRET}"
ALICE, BOB = f"uid=alice,{PEOPLE}", f"uid=bob,{PEOPLE}"
ALICE_PW, BOB_PW = "alice-pw-1", "bob-pw-1"
REPO = Path(__file__).resolve().parents[2]

ACL = f"""
version: 1
defaultPolicy: deny
rules:
  - {{target: "{SECRET}", subject: "*", rights: [all], deny: true}}
  - {{target: "{DROPBOX}", scope: one, subject: "uid=*,{PEOPLE}", rights: [add]}}
  - {{target: "{DROPBOX}", subject: "*", rights: [all], deny: true}}
  - {{target: "*", subject: self, rights: [write], attributes: [mail, carLicense]}}
  - {{target: "*", subject: "*", rights: [read, search, compare], attributes: [carLicense],
     deny: true}}
  - {{target: "*", subject: authenticated, rights: [read, search, compare]}}
"""



def person(uid: str, pw: str) -> list[tuple[str, list[bytes]]]:
    return [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
            ("cn", [uid.title().encode()]), ("sn", [b"S"]),
            ("mail", [f"{uid}@example.com".encode()]), ("userPassword", [pw.encode()])]


def device(cn: str) -> list[tuple[str, list[bytes]]]:
    return [("objectClass", [b"device"]), ("cn", [cn.encode()])]


def root_ldap(work: Callable[[ldap.ldapobject.LDAPObject], None], url: str) -> None:
    conn = connect(url, ROOT_DN, ROOT_PW)
    try:
        work(conn)
    finally:
        conn.unbind_s()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    work = Path(tmp_path_factory.mktemp("audit-visibility"))
    (work / "acl.yaml").write_text(ACL)
    server = AuditServer("oba", work, rest_extra=f'aclFile: "{work / "acl.yaml"}"\n',
                         store_yaml=f'    archiveDir: "{work / "archive"}"\n')
    server.start()
    try:
        def tree(conn: ldap.ldapobject.LDAPObject) -> None:
            for name in ("people", "secret", "dropbox"):
                conn.add_s(f"ou={name},{BASE_DN}", [("objectClass", [b"organizationalUnit"]),
                                                     ("ou", [name.encode()])])
            conn.add_s(ALICE, person("alice", ALICE_PW))
            conn.add_s(BOB, person("bob", BOB_PW))
            conn.add_s(TOPSECRET, device("topsecret"))

        root_ldap(tree, server.url)
        # bob's binds: one success, one failure
        connect(server.url, BOB, BOB_PW).unbind_s()
        with pytest.raises(ldap.INVALID_CREDENTIALS):
            connect(server.url, BOB, "wrong")
        connect(server.url, ALICE, ALICE_PW).unbind_s()
        with server.client() as root:
            wait_logs(root, {"search": "topsecret"}, lambda b: b["total_count"] >= 1)
            wait_logs(root, {"user": BOB}, lambda b: b["total_count"] >= 2)
            wait_logs(root, {"user": ALICE}, lambda b: b["total_count"] >= 1)
        yield server
    finally:
        server.stop()


@pytest.fixture
def root(srv: AuditServer) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


@pytest.fixture
def alice(srv: AuditServer) -> Iterator[httpx.Client]:
    with srv.client((ALICE, ALICE_PW)) as c:
        yield c


def only_alice(entries: list[dict[str, Any]]) -> None:
    """Every record is alice's own and names nothing under ou=secret."""
    for rec in entries:
        assert rec["user"].lower() == ALICE.lower(), rec
        assert "secret" not in json.dumps(rec).lower(), rec
        assert "dropbox" not in json.dumps(rec).lower(), rec


# ------------------------------------------------------------------ /logs, /logs/export

def test_logs_search_does_not_name_hidden_entries(root: httpx.Client,
                                                  alice: httpx.Client) -> None:
    # the attack of the report: alice lists the administrator's add under ou=secret
    resp = alice.get("/logs", params={"search": "secret"})
    assert resp.status_code == 200, resp.text
    assert "topsecret" not in resp.text.lower()
    assert resp.json()["total_count"] == 0
    # the administrator still sees it
    admin = root.get("/logs", params={"search": "secret"}).json()
    assert any(e["message"].lower() == f"add {TOPSECRET}: success".lower()
               for e in admin["entries"])


def test_other_users_binds_are_not_shown(alice: httpx.Client, srv: AuditServer) -> None:
    assert alice.get("/logs", params={"user": BOB}).json()["total_count"] == 0
    everything = alice.get("/logs", params={"limit": 1000}).json()
    assert everything["entries"], "alice sees her own binds"
    assert everything["total_count"] == len(everything["entries"])
    only_alice(everything["entries"])
    assert any(e["message"] == f"bind {ALICE}: success" for e in everything["entries"])
    assert "bob" not in json.dumps(everything).lower()
    # bob, in turn, sees his own binds, the failed one included
    with srv.client((BOB, BOB_PW)) as bob:
        his = bob.get("/logs", params={"user": BOB}).json()["entries"]
    assert any(e["message"] == f"bind {BOB}: invalid_credentials" for e in his)
    assert all(e["user"].lower() == BOB.lower() for e in his)


def test_export_follows_the_same_rule(alice: httpx.Client, root: httpx.Client) -> None:
    for fmt in ("json", "ndjson", "csv"):
        resp = alice.get("/logs/export", params={"format": fmt})
        assert resp.status_code == 200, resp.text
        text = resp.text.lower()
        assert "topsecret" not in text and "bob" not in text, (fmt, resp.text[:2000])
        assert ALICE.lower() in text, fmt
        if fmt == "csv":
            rows = list(csv.reader(io.StringIO(resp.text)))[1:]
            assert rows and all(r[4].lower() == ALICE.lower() for r in rows)
    admin = root.get("/logs/export", params={"format": "ndjson"}).text.lower()
    assert "topsecret" in admin and "bob" in admin


def test_activities_show_only_the_callers_records(alice: httpx.Client) -> None:
    resp = alice.get("/activities", params={"limit": 100})
    assert resp.status_code == 200, resp.text
    acts = resp.json()["activities"]
    assert acts
    assert all(a["user"].lower() == ALICE.lower() for a in acts), acts
    assert "secret" not in resp.text.lower() and "bob" not in resp.text.lower()


def test_own_records_name_only_readable_attributes(alice: httpx.Client,
                                                   root: httpx.Client) -> None:
    resp = alice.patch(f"/entries/{quote_dn(ALICE)}", json={"changes": [
        {"operation": "replace", "attribute": "mail", "values": ["alice@new.example.com"]},
        {"operation": "replace", "attribute": "carLicense", "values": ["XYZ-123"]}]})
    assert resp.status_code == 200, resp.text
    rid = resp.headers["x-request-id"]
    admin = wait_logs(root, {"request_id": rid, "search": "modify"},
                      lambda b: b["total_count"] >= 1)["entries"][0]
    assert admin["fields"]["attributes"] == ["carLicense", "mail"]
    mine = alice.get("/logs", params={"request_id": rid, "search": "modify"}).json()["entries"]
    assert len(mine) == 1 and mine[0]["fields"]["attributes"] == ["mail"]
    # nor can a text search find a record by a hidden attribute's name
    assert alice.get("/logs", params={"search": "carlicense"}).json()["total_count"] == 0
    assert "carlicense" not in alice.get("/logs/export").text.lower()


def test_own_writes_to_entries_the_user_may_not_read_are_not_shown(
        srv: AuditServer, alice: httpx.Client, root: httpx.Client) -> None:
    """A drop box: alice may add under ou=dropbox but not read there; her own add names an
    entry she may not read, so it is not shown to her."""
    conn = connect(srv.url, ALICE, ALICE_PW)
    try:
        conn.add_s(f"cn=dropped,{DROPBOX}", device("dropped"))
    finally:
        conn.unbind_s()
    wait_logs(root, {"user": ALICE, "search": "cn=dropped"}, lambda b: b["total_count"] >= 1)
    assert alice.get("/logs", params={"search": "dropped"}).json()["total_count"] == 0


def test_logs_stats_are_for_the_administrator(alice: httpx.Client, root: httpx.Client) -> None:
    assert_error(alice.get("/logs/stats"), 403, "forbidden")
    assert root.get("/logs/stats").json()["total_entries"] > 0


# ------------------------------------------------------------------ /events

def collect(srv: AuditServer, auth: tuple[str, str], until: Callable[[list[Event]], bool],
            action: Callable[[], None], timeout: float = 20.0) -> list[Event]:
    """Read /events as ``auth`` until ``until(events)``; run ``action`` once connected."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    failures: list[BaseException] = []

    def act() -> None:
        try:
            action()
        except BaseException as exc:  # reported by the reader
            failures.append(exc)

    with srv.client(auth) as client, client.stream(
            "GET", "/events", timeout=httpx.Timeout(timeout)) as resp:
        assert resp.status_code == 200, resp.read()
        for frame in sse_frames(resp.iter_lines()):
            if frame == "connected":
                threading.Thread(target=act, daemon=True).start()
            elif isinstance(frame, dict):
                events.append(frame)
                if until(events):
                    return events
            if failures:
                raise failures[0]
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"stream ended or timed out; got {events}")


def _own_modify(events: list[Event]) -> bool:
    return any(e.get("event") == "audit" and e["data"].get("fields", {}).get("dn") == ALICE
               and e["data"]["fields"].get("operation") == "modify" for e in events)


def test_event_stream_audit_records_follow_the_rule(srv: AuditServer,
                                                    root: httpx.Client) -> None:
    hidden = f"cn=topsecret2,{SECRET}"

    def action() -> None:
        # the administrator's add under ou=secret and bob's binds come first ...
        root_ldap(lambda c: c.add_s(hidden, device("topsecret2")), srv.url)
        connect(srv.url, BOB, BOB_PW).unbind_s()
        wait_logs(root, {"search": "topsecret2"}, lambda b: b["total_count"] >= 1)
        wait_logs(root, {"user": BOB, "source": "ldap"}, lambda b: b["total_count"] >= 3)
        # ... then alice's own change, the last event she waits for
        with srv.client((ALICE, ALICE_PW)) as c:
            resp = c.patch(f"/entries/{quote_dn(ALICE)}", json={"changes": [
                {"operation": "replace", "attribute": "carLicense", "values": ["ABC"]},
                {"operation": "replace", "attribute": "mail", "values": ["a@x.example"]}]})
            assert resp.status_code == 200, resp.text

    got = collect(srv, (ALICE, ALICE_PW), _own_modify, action)
    audit = [e["data"] for e in got if e.get("event") == "audit"]
    text = json.dumps(got).lower()
    assert "topsecret2" not in text, got  # neither its change event nor its audit record
    assert "bob" not in text, got
    assert all(r["user"].lower() == ALICE.lower() for r in audit), audit
    mod = next(r for r in audit if r["fields"].get("operation") == "modify")
    assert mod["fields"]["attributes"] == ["mail"]
    assert any(e.get("event") == "change" and e["data"]["dn"] == ALICE for e in got)


def test_event_stream_shows_the_administrator_everything(srv: AuditServer) -> None:
    hidden = f"cn=topsecret3,{SECRET}"

    def seen(events: list[Event]) -> bool:
        kinds = {e.get("event") for e in events if "topsecret3" in json.dumps(e)}
        return {"audit", "change"} <= kinds

    got = collect(srv, (ROOT_DN, ROOT_PW), seen,
                  lambda: root_ldap(lambda c: c.add_s(hidden, device("topsecret3")), srv.url))
    rec = next(e["data"] for e in got if e.get("event") == "audit"
               and "topsecret3" in json.dumps(e))
    assert rec["user"] == ROOT_DN and rec["fields"]["attributes"] == ["cn", "objectClass"]


# ------------------------------------------------------------------ admin routes

def _documented_admin_gets() -> list[str]:
    """GET routes the REST reference marks *admin*, without path parameters."""
    text = (REPO / "docs" / "rest-api.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| GET \| `/api/v1(/[^`{]*)` \| admin \|", text, re.M)
    assert "/logs/archives" in rows
    return rows


def test_every_documented_admin_route_refuses_a_user(alice: httpx.Client) -> None:
    for path in _documented_admin_gets():
        assert_error(alice.get(path), 403, "forbidden")


def test_archives_are_admin_only_and_name_no_server_path(alice: httpx.Client,
                                                         root: httpx.Client,
                                                         srv: AuditServer) -> None:
    archive_dir = srv.workdir / "archive"
    made = root.post("/logs/archive")
    assert made.status_code == 200, made.text
    assert made.json()["archive"] is not None
    assert str(srv.workdir) not in made.text
    resp = alice.get("/logs/archives")
    assert_error(resp, 403, "forbidden")
    assert str(archive_dir) not in resp.text
    listed = root.get("/logs/archives")
    assert listed.status_code == 200, listed.text
    archives = listed.json()["archives"]
    assert archives and all("path" not in a for a in archives)
    assert str(srv.workdir) not in listed.text
    assert {a["name"] for a in archives} == {p.name for p in archive_dir.iterdir()}


# ------------------------------------------------------------------ the rule itself (no server)

class _Access:
    """ACL stand-in: nothing under ou=secret is readable, nor modifiersName anywhere."""

    def is_root(self, ndn: str) -> bool:
        return ndn == "cn=admin,dc=x"

    def decide(self, who: str, ndn: str, right: str, attr: str | None = None) -> Any:
        hidden = ndn == "ou=secret,dc=x" or ndn.endswith(",ou=secret,dc=x")
        return SimpleNamespace(allowed=not hidden and attr != "modifiersName")


def _viewer(dn: str) -> Viewer:
    def normalize(value: str) -> str:
        if "=" not in value:
            raise OpError(34)
        return ",".join(part.strip().lower() for part in value.split(","))

    ops: Any = SimpleNamespace(normalize_dn=normalize, node=SimpleNamespace(access=_Access()))
    return Viewer(ops, Identity(dn, normalize(dn), "rest"))


def test_renames_are_shown_only_when_every_dn_they_name_is_readable() -> None:
    me = _viewer("uid=a,dc=x")

    def rename(**fields: str) -> dict[str, Any]:
        return {"user": "UID=a, dc=x", "message": "moddn", "fields": {
            "dn": "cn=e,ou=pub,dc=x", "operation": "moddn", **fields}}

    assert me.record(rename(newRDN="cn=f")) is not None
    assert me.record(rename(newRDN="cn=f", newSuperior="ou=secret,dc=x")) is None
    assert me.record(rename(newRDN="cn=f", newSuperior="not a dn")) is None
    assert me.record({**rename(newRDN="cn=f"), "user": "uid=b,dc=x"}) is None
    assert me.record({"user": "", "message": "raft", "fields": {}}) is None
    admin = _viewer("cn=admin,dc=x")
    rec = rename(newRDN="cn=f", newSuperior="ou=secret,dc=x")
    assert admin.record(rec) is rec


def test_change_events_hide_hidden_names_and_actors() -> None:
    me = _viewer("uid=a,dc=x")
    ev = {"index": 1, "type": "moddn", "dn": "cn=e,ou=pub,dc=x", "actor": "uid=b,dc=x",
          "previousDN": "cn=e,ou=secret,dc=x"}
    # moved out of ou=secret into view: an add, the old name stays hidden
    assert me.change(ev) == {"index": 1, "type": "add", "dn": "cn=e,ou=pub,dc=x", "actor": ""}
    # moved into ou=secret, out of view: a delete of the old name, the new one stays hidden
    out = {**ev, "dn": "cn=e,ou=secret,dc=x", "previousDN": "cn=e,ou=pub,dc=x"}
    assert me.change(out) == {"index": 1, "type": "delete", "dn": "cn=e,ou=pub,dc=x",
                              "actor": ""}
    both = {**ev, "dn": "cn=f,ou=secret,dc=x", "previousDN": "cn=e,ou=secret,dc=x"}
    assert me.change(both) is None
    del ev["previousDN"]
    assert me.change(ev) == {**ev, "actor": ""}  # modifiersName is not readable here
    assert me.change({**ev, "actor": "uid=a,dc=x"}) == {**ev, "actor": "uid=a,dc=x"}
    assert me.change({**ev, "dn": "cn=e,ou=secret,dc=x"}) is None
    assert _viewer("cn=admin,dc=x").change(ev) == ev
