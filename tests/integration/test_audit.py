"""The replicated audit trail over a real server: records, filters, paging, export, admin rights,
retention with archives.

Rules: one server per module (plus one with small retention limits); every wait polls /logs
under a deadline.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import ldap
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, wait_until
from .rest_support import assert_error
from .test_audit_support import USER_DN, USER_PW, AuditServer, ensure_user, wait_logs


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    server = AuditServer("oba", tmp_path_factory.mktemp("audit"))
    server.start()
    try:
        ensure_user(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture
def root(srv: AuditServer) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


def test_ldap_binds_and_writes_are_recorded(srv: AuditServer, root: httpx.Client) -> None:
    conn = connect(srv.url, USER_DN, USER_PW)
    conn.unbind_s()
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        connect(srv.url, USER_DN, "wrong-password")
    admin = connect(srv.url, ROOT_DN, ROOT_PW)
    dn = f"cn=audited-ldap,{BASE_DN}"
    admin.add_s(dn, [("objectClass", [b"device"]), ("cn", [b"audited-ldap"])])
    with pytest.raises(ldap.ALREADY_EXISTS):
        admin.add_s(dn, [("objectClass", [b"device"]), ("cn", [b"audited-ldap"])])
    admin.unbind_s()

    body = wait_logs(root, {"user": USER_DN, "source": "ldap"},
                     lambda b: {e["level"] for e in b["entries"]} >= {"info", "warn"})
    ok = [e for e in body["entries"] if e["fields"].get("resultCode") == 0]
    bad = [e for e in body["entries"] if e["fields"].get("resultCode") == 49]
    assert ok and bad, body
    assert "success" in ok[0]["message"] and ok[0]["nodeId"] == 0
    assert "password" not in json.dumps(body).lower().replace("wrong-password", "")

    writes = wait_logs(root, {"search": "audited-ldap", "user": ROOT_DN},
                       lambda b: b["total_count"] >= 2)["entries"]
    codes = sorted(e["fields"]["resultCode"] for e in writes)
    assert codes == [0, 68], writes
    assert all(e["fields"]["operation"] == "add" and e["source"] == "ldap" for e in writes)
    assert all(e["fields"]["dn"] == dn for e in writes)
    success = next(e for e in writes if e["fields"]["resultCode"] == 0)
    assert success["fields"]["attributes"] == ["cn", "objectClass"]
    assert success["requestId"]


def test_rest_writes_are_recorded(srv: AuditServer, root: httpx.Client) -> None:
    dn = f"cn=audited-rest,{BASE_DN}"
    resp = root.post("/entries", json={"dn": dn, "attributes": {
        "objectClass": ["device"], "cn": ["audited-rest"]}})
    assert resp.status_code == 201, resp.text
    body = wait_logs(root, {"source": "rest", "search": "audited-rest"},
                     lambda b: b["total_count"] >= 1)
    rec = body["entries"][0]
    assert rec["user"] == ROOT_DN and rec["fields"]["dn"] == dn
    assert rec["fields"]["resultCode"] == 0 and rec["level"] == "info"


def test_filters_and_paging(srv: AuditServer, root: httpx.Client) -> None:
    before = root.get("/logs", params={"user": USER_DN}).json()["total_count"]
    for _ in range(6):
        connect(srv.url, USER_DN, USER_PW).unbind_s()
    wait_logs(root, {"user": USER_DN}, lambda b: b["total_count"] >= before + 6)
    # (every REST request made with Basic credentials adds a bind record: filter those out)
    mine = {"user": USER_DN}
    full = root.get("/logs", params={**mine, "limit": 1000}).json()
    ids = [e["id"] for e in full["entries"]]
    assert ids == sorted(ids, reverse=True) and full["total_count"] == len(ids)
    p1 = root.get("/logs", params={**mine, "limit": 3}).json()
    p2 = root.get("/logs", params={**mine, "limit": 3, "offset": 3}).json()
    assert [e["id"] for e in p1["entries"] + p2["entries"]] == ids[:6]
    assert p1["has_more"] and p1["limit"] == 3 and p2["offset"] == 3
    warns = root.get("/logs", params={"level": "warn"}).json()
    assert warns["entries"] and all(e["level"] == "warn" for e in warns["entries"])
    first = full["entries"][-1]["timestamp"]
    assert root.get("/logs", params={"end_time": "2000-01-01T00:00:00Z"}).json()[
        "total_count"] == 0
    last = full["entries"][0]["timestamp"]
    ranged = root.get("/logs", params={"start_time": first, "end_time": last,
                                       "limit": 1000}).json()
    assert set(ids) <= {e["id"] for e in ranged["entries"]}
    assert all(first <= e["timestamp"] <= last for e in ranged["entries"])
    writes = root.get("/logs", params={"user": ROOT_DN, "search": "operation"}).json()
    rid = next(e for e in writes["entries"] if e["requestId"])["requestId"]
    by_rid = root.get("/logs", params={"request_id": rid}).json()
    assert by_rid["total_count"] >= 1 and all(e["requestId"] == rid for e in by_rid["entries"])
    assert_error(root.get("/logs", params={"start_time": "yesterday"}), 400, "invalid_time")
    assert_error(root.get("/logs", params={"limit": 1001}), 422)
    stats = root.get("/logs/stats").json()
    assert stats["enabled"] and stats["total_entries"] >= full["total_count"]
    assert stats["by_level"]["info"] >= 1 and stats["writer_ready"]
    acts = root.get("/activities", params={"limit": 5})
    assert acts.status_code == 200


def test_export_formats(srv: AuditServer, root: httpx.Client) -> None:
    params = {"user": USER_DN}
    before = root.get("/logs", params=params).json()["total_count"]
    connect(srv.url, USER_DN, USER_PW).unbind_s()  # a record of its own: no order dependence
    # records are written in batches: wait for this bind's, so none lands between exports
    wait_logs(root, params, lambda b: b["total_count"] >= before + 1)
    total = root.get("/logs", params=params).json()["total_count"]
    r = root.get("/logs/export", params={**params, "format": "json"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    data = r.json()
    assert isinstance(data, list) and len(data) >= total
    assert all(e["user"] == USER_DN for e in data)
    r = root.get("/logs/export", params={**params, "format": "ndjson"})
    lines = [json.loads(x) for x in r.text.splitlines() if x]
    assert [e["id"] for e in lines] == [e["id"] for e in data]
    r = root.get("/logs/export", params={**params, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["id", "timestamp", "level", "source", "user", "request_id", "node_id",
                       "message"]
    assert [int(row[0]) for row in rows[1:]] == [e["id"] for e in data]
    assert all(row[4] == USER_DN for row in rows[1:])
    assert_error(root.get("/logs/export", params={"format": "xml"}), 422)


def test_clear_needs_admin(srv: AuditServer, root: httpx.Client) -> None:
    with srv.client((USER_DN, USER_PW)) as user:
        assert user.get("/logs").status_code == 200
        assert_error(user.delete("/logs"), 403, "forbidden")
        assert_error(user.post("/logs/archive"), 403, "forbidden")
    with httpx.Client(base_url=srv.base_url + "/api/v1") as anon:
        assert_error(anon.get("/logs"), 401)
    before = root.get("/logs/stats").json()["total_entries"]
    assert before > 3
    resp = root.delete("/logs")
    assert resp.status_code == 200, resp.text
    after = wait_logs(root, {}, lambda b: b["total_count"] < before)
    assert all(e["id"] > 0 for e in after["entries"])
    assert any(e["message"] == "audit log cleared" for e in wait_logs(
        root, {"search": "audit log cleared"}, lambda b: b["total_count"] >= 1)["entries"])


def test_retention_archives_and_trims(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    server = AuditServer("oba", tmp_path / "srv", store_yaml=(
        "    maxEntries: 10\n"
        f'    archiveDir: "{archive}"\n'
        "    compress: true\n"))
    server.start()
    try:
        ensure_user(server.url)
        for _ in range(30):
            connect(server.url, USER_DN, USER_PW).unbind_s()
        with server.client() as root:
            wait_logs(root, {}, lambda b: b["total_count"] <= 10 and any(
                e["user"] == USER_DN for e in b["entries"]), what="retention")

            def archived() -> int:
                body = root.get("/logs/archives").json()
                return sum(a["count"] for a in body["archives"])

            wait_until(lambda: archived() >= 20, 15, "archived records")

            def archived_ids() -> list[int]:
                files = sorted(archive.glob("*.jsonl.gz"))
                return [json.loads(line)["id"] for f in files
                        for line in gzip.decompress(f.read_bytes()).decode().splitlines()]

            def settled() -> bool:
                """A retention pass writes its archive before its deletion commits: wait
                until the active records start after the archived ones."""
                ids = archived_ids()
                active = root.get("/logs", params={"limit": 1000}).json()["entries"]
                return bool(ids) and min(e["id"] for e in active) > max(ids)

            wait_until(settled, 15, "active records to start after the archived ones")
            ids = archived_ids()
            assert len(ids) == len(set(ids))
            info = root.get("/logs/archives").json()["archives"][0]
            assert info["compressed"] and info["start_time"] and info["size"] > 0
            now = root.post("/logs/archive")
            assert now.status_code == 200 and now.json()["success"], now.text
            assert now.json()["archive"] is not None
    finally:
        server.stop()
