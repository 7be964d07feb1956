"""REST API against a real Oba process: public routes, auth, entries, search, stream, bulk,
compare, errors, CORS, rate limiting, and LDAP ⇄ REST interplay."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import ldap
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from .rest_support import JWT_SECRET, RestServer, assert_error, quote_dn, running_rest_server

PEOPLE = f"ou=restpeople,{BASE_DN}"
ALICE = f"uid=alice,{PEOPLE}"
ALICE_PW = "alice-pw-1"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    with running_rest_server(Path(tmp_path_factory.mktemp("rest-api"))) as server:
        with server.client() as c:
            r = c.post("/entries", json={"dn": PEOPLE, "attributes": {
                "objectClass": ["organizationalUnit"], "ou": ["restpeople"]}})
            assert r.status_code == 201, r.text
            r = c.post("/entries", json={"dn": ALICE, "attributes": {
                "objectClass": ["inetOrgPerson"], "uid": ["alice"], "cn": ["Alice"],
                "sn": ["A"], "userPassword": [ALICE_PW]}})
            assert r.status_code == 201, r.text
        yield server


@pytest.fixture
def root(srv: RestServer) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


@pytest.fixture
def alice(srv: RestServer) -> Iterator[httpx.Client]:
    with srv.client((ALICE, ALICE_PW)) as c:
        yield c


@pytest.fixture
def anon(srv: RestServer) -> Iterator[httpx.Client]:
    with srv.client(None) as c:
        yield c


def person(dn_uid: str, pw: str = "pw") -> dict[str, object]:
    return {"dn": f"uid={dn_uid},{PEOPLE}", "attributes": {
        "objectClass": ["inetOrgPerson"], "uid": [dn_uid], "cn": [dn_uid], "sn": ["S"],
        "userPassword": [pw]}}


# ------------------------------------------------------------------ public

def test_health_is_public(anon: httpx.Client) -> None:
    r = anon.get("/health")
    assert r.status_code == 200
    data = r.json()
    assert data["status"] == "ok" and data["version"]
    for key in ("uptime", "uptimeSecs", "startTime", "connections", "requests"):
        assert key in data


def test_public_config(anon: httpx.Client) -> None:
    assert anon.get("/config/public").json() == {"baseDN": BASE_DN}


def test_bind_gives_a_working_token(anon: httpx.Client, srv: RestServer) -> None:
    r = anon.post("/auth/bind", json={"dn": ALICE, "password": ALICE_PW})
    assert r.status_code == 200
    data = r.json()
    assert data["success"] is True
    claims = jwt.decode(data["token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["dn"] == ALICE and claims["exp"] > claims["iat"]
    with httpx.Client(base_url=srv.base_url + "/api/v1",
                      headers={"Authorization": f"Bearer {data['token']}"}) as c:
        assert c.get(f"/entries/{quote_dn(ALICE)}").json()["dn"] == ALICE


def test_bind_bad_password_is_401(anon: httpx.Client) -> None:
    assert_error(anon.post("/auth/bind", json={"dn": ALICE, "password": "wrong"}), 401,
                 "invalid_credentials")
    assert_error(anon.post("/auth/bind", json={"dn": "not a dn", "password": "x"}), 401,
                 "invalid_credentials")


def test_bind_wrong_types_is_422(anon: httpx.Client) -> None:
    assert_error(anon.post("/auth/bind", json={"dn": 5, "password": ["x"]}), 422,
                 "invalid_request")
    assert_error(anon.post("/auth/bind", content=b"{not json",
                           headers={"Content-Type": "application/json"}), 422)


# ------------------------------------------------------------------ authentication

def test_missing_token_is_401(anon: httpx.Client) -> None:
    for path in ("/stats", "/activities", f"/entries/{quote_dn(BASE_DN)}", "/search"):
        r = anon.get(path)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_cluster_status_is_public_unless_cluster_status_auth(anon: httpx.Client,
                                                             root: httpx.Client) -> None:
    """The spec's `curl .../cluster/status` needs no credentials; rest.clusterStatusAuth
    (switched over PATCH /config/rest, read per request) makes status and leader ask for
    them, while health and ready stay public."""
    assert anon.get("/cluster/status").json() == {"enabled": False, "mode": "standalone"}
    assert_error(anon.get("/cluster/leader"), 400, "not_cluster_mode")
    r = root.patch("/config/rest", json={"clusterStatusAuth": True})
    assert r.status_code == 200, r.text
    try:
        for path in ("/cluster/status", "/cluster/leader"):
            r = anon.get(path)
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert root.get("/cluster/status").json() == {"enabled": False, "mode": "standalone"}
        assert_error(root.get("/cluster/leader"), 400, "not_cluster_mode")
        assert anon.get("/cluster/health").status_code == 200
        assert anon.get("/cluster/ready").status_code == 200
    finally:
        r = root.patch("/config/rest", json={"clusterStatusAuth": False})
        assert r.status_code == 200, r.text
    assert anon.get("/cluster/status").status_code == 200


def _bearer(srv: RestServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=srv.base_url + "/api/v1",
                        headers={"Authorization": f"Bearer {token}"})


def test_expired_token_is_401(srv: RestServer) -> None:
    now = int(time.time())
    token = jwt.encode({"dn": ROOT_DN, "iat": now - 100, "exp": now - 10}, JWT_SECRET,
                       algorithm="HS256")
    with _bearer(srv, token) as c:
        assert_error(c.get("/stats"), 401, "token_expired")


def test_tampered_token_is_401(srv: RestServer, anon: httpx.Client) -> None:
    token = anon.post("/auth/bind", json={"dn": ALICE, "password": ALICE_PW}).json()["token"]
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["dn"] = ROOT_DN
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with _bearer(srv, f"{head}.{forged}.{sig}") as c:
        assert_error(c.get("/config"), 401, "invalid_token")
    other = jwt.encode({"dn": ROOT_DN, "iat": int(time.time()), "exp": int(time.time()) + 60},
                       "another-secret-of-sufficient-length-000", algorithm="HS256")
    with _bearer(srv, other) as c:
        assert_error(c.get("/stats"), 401, "invalid_token")
    with _bearer(srv, "garbage") as c:
        assert_error(c.get("/stats"), 401, "invalid_token")


def test_basic_auth_bad_password_is_401(srv: RestServer) -> None:
    with srv.client((ALICE, "nope")) as c:
        assert_error(c.get("/stats"), 401, "invalid_credentials")
    with httpx.Client(base_url=srv.base_url + "/api/v1",
                      headers={"Authorization": "Basic !!!notbase64"}) as c:
        assert_error(c.get("/stats"), 401)


def test_stats_and_activities(alice: httpx.Client) -> None:
    stats = alice.get("/stats").json()
    assert stats["storage"]["entryCount"] >= 3
    assert set(stats["operations"]) >= {"binds", "searches", "adds", "modifies", "deletes",
                                        "compares"}
    recent = alice.get("/activities", params={"limit": 5}).json()
    assert recent["count"] == len(recent["activities"]) <= 5
    for item in recent["activities"]:  # audit records, newest first
        assert {"timestamp", "type", "user", "message", "source"} <= set(item)
    assert_error(alice.get("/activities", params={"limit": 1000}), 422)


# ------------------------------------------------------------------ entries

def test_entry_crud(root: httpx.Client) -> None:
    body = person("crud")
    dn = str(body["dn"])
    r = root.post("/entries", json=body)
    assert r.status_code == 201
    assert r.headers["location"] == f"/api/v1/entries/{quote_dn(dn)}"
    assert r.json()["attributes"]["uid"] == ["crud"]
    assert_error(root.post("/entries", json=body), 409, "entry_exists", 68)
    r = root.get(f"/entries/{quote_dn(dn)}", params={"attributes": "cn,sn"})
    assert r.json() == {"dn": dn, "attributes": {"cn": ["crud"], "sn": ["S"]}}
    for method in ("PUT", "PATCH"):
        r = root.request(method, f"/entries/{quote_dn(dn)}", json={"changes": [
            {"operation": "replace", "attribute": "sn", "values": [method]},
            {"operation": "add", "attribute": "mail", "values": [f"{method}@x.org"]}]})
        assert r.status_code == 200, r.text
        assert r.json()["attributes"]["sn"] == [method]
        root.patch(f"/entries/{quote_dn(dn)}", json={"changes": [
            {"operation": "delete", "attribute": "mail", "values": []}]})
    r = root.delete(f"/entries/{quote_dn(dn)}")
    assert r.status_code == 204 and r.content == b""
    assert_error(root.get(f"/entries/{quote_dn(dn)}"), 404, "not_found", 32)
    assert_error(root.delete(f"/entries/{quote_dn(dn)}"), 404, "not_found", 32)


def test_entry_bad_input(root: httpx.Client) -> None:
    assert_error(root.get("/entries/" + quote_dn("not a dn")), 400, "invalid_dn", 34)
    assert_error(root.post("/entries", json={"dn": "===", "attributes": {"cn": ["x"]}}), 400,
                 "invalid_dn", 34)
    r = root.post("/entries", json={"dn": f"cn=bad,{PEOPLE}", "attributes": {
        "objectClass": ["person"], "cn": ["bad"], "sn": ["b"], "noSuchAttr": ["x"]}})
    assert_error(r, 400, "undefined_attribute_type", 17)
    r = root.post("/entries", json={"dn": f"cn=bad,{PEOPLE}", "attributes": {
        "objectClass": ["person"], "cn": ["bad"]}})
    assert_error(r, 400, "object_class_violation", 65)
    assert_error(root.post("/entries", json={"dn": f"cn=x,{PEOPLE}", "attributes": {
        "cn": "not-a-list"}}), 422, "invalid_request")
    assert_error(root.post("/entries", json={"dn": f"cn=x,{PEOPLE}", "attributes": {},
                                             "extra": 1}), 422, "invalid_request")
    assert_error(root.put(f"/entries/{quote_dn(ALICE)}", json={"changes": [
        {"operation": "frobnicate", "attribute": "sn", "values": []}]}), 422)
    assert_error(root.put(f"/entries/{quote_dn(ALICE)}", json={"changes": [
        {"operation": "add", "attribute": "bogusAttr", "values": ["v"]}]}), 400,
        "undefined_attribute_type", 17)
    assert_error(root.delete(f"/entries/{quote_dn(PEOPLE)}"), 409, "not_allowed_on_non_leaf", 66)


def test_writes_obey_ldap_access_rules(alice: httpx.Client, anon: httpx.Client) -> None:
    assert_error(alice.post("/entries", json=person("byalice")), 403, "insufficient_access", 50)
    assert_error(alice.delete(f"/entries/{quote_dn(PEOPLE)}"), 403, "insufficient_access", 50)
    # userPassword is returned to the root DN only, not even to its owner
    r = alice.get(f"/entries/{quote_dn(ALICE)}")
    assert r.status_code == 200 and "userPassword" not in r.json()["attributes"]


def test_move(root: httpx.Client) -> None:
    root.post("/entries", json=person("mover"))
    old = f"uid=mover,{PEOPLE}"
    r = root.post(f"/entries/{quote_dn(old)}/move", json={"newRDN": "uid=moved",
                                                          "deleteOldRDN": True})
    assert r.status_code == 200, r.text
    new = f"uid=moved,{PEOPLE}"
    assert r.json()["dn"] == new and r.json()["attributes"]["uid"] == ["moved"]
    assert r.headers["location"] == f"/api/v1/entries/{quote_dn(new)}"
    assert_error(root.post(f"/entries/{quote_dn(new)}/move", json={"newRDN": "bad"}), 400,
                 "invalid_dn")
    assert_error(root.post(f"/entries/{quote_dn(old)}/move", json={"newRDN": "uid=x"}), 404)
    assert_error(root.post(f"/entries/{quote_dn(new)}/move", json={"deleteOldRDN": "maybe"}),
                 422)
    root.delete(f"/entries/{quote_dn(new)}")


def test_disable_enable_and_lock_status(root: httpx.Client, srv: RestServer) -> None:
    root.post("/entries", json=person("dis", "dis-pw"))
    dn = f"uid=dis,{PEOPLE}"
    conn = connect(srv.url, dn, "dis-pw")
    conn.unbind_s()
    assert root.post(f"/entries/{quote_dn(dn)}/disable").json() == {"success": True,
                                                                    "disabled": True}
    assert root.get(f"/entries/{quote_dn(dn)}").json()["attributes"]["obaDisabled"] == ["TRUE"]
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        connect(srv.url, dn, "dis-pw")
    with srv.client((dn, "dis-pw")) as c:
        assert_error(c.get("/stats"), 401)
    assert root.post(f"/entries/{quote_dn(dn)}/enable").json() == {"success": True,
                                                                   "disabled": False}
    assert "obaDisabled" not in root.get(f"/entries/{quote_dn(dn)}").json()["attributes"]
    connect(srv.url, dn, "dis-pw").unbind_s()
    assert root.get(f"/entries/{quote_dn(dn)}/lock-status").json() == {"dn": dn, "locked": False}
    assert root.post(f"/entries/{quote_dn(dn)}/unlock").json() == {"success": True,
                                                                   "locked": False}
    missing = quote_dn(f"uid=ghost,{PEOPLE}")
    for path in (f"/entries/{missing}/disable", f"/entries/{missing}/enable",
                 f"/entries/{missing}/unlock"):
        assert_error(root.post(path), 404, "not_found")
    assert_error(root.get(f"/entries/{missing}/lock-status"), 404, "not_found")


def test_disable_needs_rights(alice: httpx.Client, root: httpx.Client) -> None:
    assert_error(alice.post(f"/entries/{quote_dn(PEOPLE)}/disable"), 403)
    assert_error(alice.post(f"/entries/{quote_dn(ALICE)}/unlock"), 403)


# ------------------------------------------------------------------ search

def test_search_paging(root: httpx.Client) -> None:
    for i in range(5):
        root.post("/entries", json=person(f"page{i}"))
    params: dict[str, str | int] = {"baseDN": PEOPLE, "scope": "one", "filter": "(uid=page*)",
              "attributes": "uid",
              "limit": 2}
    first = root.get("/search", params=params).json()
    assert first["totalCount"] == 5 and first["hasMore"] is True and first["offset"] == 0
    assert [e["attributes"] for e in first["entries"]] == [{"uid": ["page0"]}, {"uid": ["page1"]}]
    last = root.get("/search", params={**params, "offset": 4}).json()
    assert len(last["entries"]) == 1 and last["hasMore"] is False
    base = root.get("/search", params={"baseDN": PEOPLE, "scope": "base"}).json()
    assert [e["dn"] for e in base["entries"]] == [PEOPLE]


def test_search_bad_input(root: httpx.Client) -> None:
    assert_error(root.get("/search", params={"filter": "(uid=broken"}), 400, "invalid_filter")
    assert_error(root.get("/search", params={"baseDN": "bogus"}), 400, "invalid_dn", 34)
    assert_error(root.get("/search", params={"baseDN": f"ou=none,{BASE_DN}"}), 404, "not_found")
    assert_error(root.get("/search", params={"scope": "everything"}), 422, "invalid_request")
    assert_error(root.get("/search", params={"limit": "many"}), 422, "invalid_request")
    assert_error(root.get("/search", params={"limit": 0}), 422)
    assert_error(root.get("/search/stream", params={"filter": "nope"}), 400, "invalid_filter")
    assert_error(root.get("/search/stream", params={"baseDN": f"ou=none,{BASE_DN}"}), 404)


def test_search_stream_ndjson(root: httpx.Client) -> None:
    r = root.get("/search/stream", params={"baseDN": PEOPLE, "filter": "(objectClass=*)"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[-1] == {"done": True, "count": len(lines) - 1}
    assert {e["dn"] for e in lines[:-1]} >= {PEOPLE, ALICE}


def test_search_stream_is_streamed(root: httpx.Client, srv: RestServer) -> None:
    """Many entries: the first line arrives long before the last one (no buffering)."""
    bulk_base = f"ou=streamed,{BASE_DN}"
    root.post("/entries", json={"dn": bulk_base, "attributes": {
        "objectClass": ["organizationalUnit"], "ou": ["streamed"]}})
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    total = 1500
    filler = b"x" * 400
    msgids = [conn.add(f"cn=s{i},{bulk_base}", [
        ("objectClass", [b"person"]), ("cn", [f"s{i}".encode()]), ("sn", [b"s"]),
        ("description", [filler])]) for i in range(total)]
    for msgid in msgids:
        conn.result(msgid)
    conn.unbind_s()
    with root.stream("GET", "/search/stream", params={"baseDN": bulk_base}) as r:
        assert r.status_code == 200
        assert "content-length" not in r.headers
        assert r.headers.get("transfer-encoding") == "chunked"
        started = time.monotonic()
        lines = r.iter_lines()
        first = json.loads(next(lines))
        t_first = time.monotonic() - started
        rest = [json.loads(line) for line in lines if line]
        t_all = time.monotonic() - started
    assert first["dn"] == bulk_base
    assert rest[-1] == {"done": True, "count": total + 1}
    assert t_first < t_all / 2, (t_first, t_all)


# ------------------------------------------------------------------ bulk, compare

def test_bulk(root: httpx.Client) -> None:
    ok_ops = [{"operation": "add", **person("bulk1")},
              {"operation": "modify", "dn": f"uid=bulk1,{PEOPLE}", "changes": [
                  {"operation": "replace", "attribute": "sn", "values": ["B"]}]},
              {"operation": "delete", "dn": f"uid=bulk1,{PEOPLE}"}]
    r = root.post("/bulk", json={"operations": ok_ops})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["success"] and data["succeeded"] == 3 and data["failed"] == 0
    assert [x["success"] for x in data["results"]] == [True, True, True]
    mixed = [{"operation": "add", **person("bulk2")},
             {"operation": "delete", "dn": f"uid=ghost,{PEOPLE}"},
             {"operation": "delete", "dn": f"uid=bulk2,{PEOPLE}"}]
    r = root.post("/bulk", json={"operations": mixed})
    assert r.status_code == 207
    res = r.json()["results"]
    assert res[1]["success"] is False and res[1]["resultCode"] == 32
    assert res[1]["error"] == "not_found"
    r = root.post("/bulk", json={"operations": mixed[1:2] * 2})
    assert r.status_code == 400 and r.json()["failed"] == 2
    r = root.post("/bulk", json={"stopOnError": True, "operations": [mixed[1], ok_ops[0]]})
    assert r.status_code == 400
    assert r.json()["totalCount"] == 2 and len(r.json()["results"]) == 1
    assert_error(root.get(f"/entries/{quote_dn(f'uid=bulk1,{PEOPLE}')}"), 404)
    assert_error(root.post("/bulk", json={"operations": []}), 422)
    assert_error(root.post("/bulk", json={"operations": [{"operation": "zap", "dn": "x"}]}), 422)


def test_compare(alice: httpx.Client) -> None:
    assert alice.post("/compare", json={"dn": ALICE, "attribute": "cn", "value": "ALICE"}
                      ).json() == {"match": True}
    assert alice.post("/compare", json={"dn": ALICE, "attribute": "sn", "value": "Z"}
                      ).json() == {"match": False}
    assert_error(alice.post("/compare", json={"dn": ALICE, "attribute": "nope", "value": "x"}),
                 400, "undefined_attribute_type", 17)
    assert_error(alice.post("/compare", json={"dn": "bad", "attribute": "cn", "value": "x"}),
                 400, "invalid_dn")
    assert_error(alice.post("/compare", json={"dn": ALICE, "attribute": "cn"}), 422)


# ------------------------------------------------------------------ LDAP interplay

def test_user_created_over_rest_binds_over_ldap(root: httpx.Client, srv: RestServer) -> None:
    root.post("/entries", json=person("restmade", "rest-made-pw"))
    conn = connect(srv.url, f"uid=restmade,{PEOPLE}", "rest-made-pw")
    assert conn.whoami_s() == f"dn:uid=restmade,{PEOPLE}"
    conn.unbind_s()


def test_user_created_over_ldap_binds_over_rest(anon: httpx.Client, srv: RestServer) -> None:
    dn = f"uid=ldapmade,{PEOPLE}"
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    conn.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [b"ldapmade"]),
                    ("cn", [b"L"]), ("sn", [b"M"]), ("userPassword", [b"ldap-made-pw"])])
    assert anon.post("/auth/bind", json={"dn": dn, "password": "ldap-made-pw"}).status_code == 200
    with srv.client((dn, "ldap-made-pw")) as c:
        assert c.get(f"/entries/{quote_dn(dn)}").status_code == 200
    # a change over LDAP is visible over REST at once
    conn.modify_s(dn, [(ldap.MOD_REPLACE, "sn", [b"Changed"])])
    with srv.client() as c:
        assert c.get(f"/entries/{quote_dn(dn)}").json()["attributes"]["sn"] == ["Changed"]
    conn.delete_s(dn)
    with srv.client() as c:
        assert_error(c.get(f"/entries/{quote_dn(dn)}"), 404)
    conn.unbind_s()


# ------------------------------------------------------------------ errors, CORS, rate limit

def test_unknown_route_and_method(root: httpx.Client, srv: RestServer) -> None:
    assert_error(root.get("/no/such/route"), 404, "not_found")
    assert_error(httpx.get(srv.base_url + "/elsewhere"), 404, "not_found")
    assert_error(root.delete("/health"), 405, "method_not_allowed")


def test_cors(srv: RestServer) -> None:
    url = srv.base_url + "/api/v1/entries"
    r = httpx.options(url, headers={"Origin": "https://admin.example.com",
                                    "Access-Control-Request-Method": "POST",
                                    "Access-Control-Request-Headers": "authorization"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://admin.example.com"
    assert "POST" in r.headers["access-control-allow-methods"]
    r = httpx.options(url, headers={"Origin": "https://evil.example.org",
                                    "Access-Control-Request-Method": "POST"})
    assert_error(r, 403, "cors_origin_not_allowed")
    r = httpx.get(srv.base_url + "/api/v1/health", headers={"Origin": "https://admin.example.com"})
    assert r.headers["access-control-allow-origin"] == "https://admin.example.com"
    r = httpx.get(srv.base_url + "/api/v1/health", headers={"Origin": "https://evil.example.org"})
    assert "access-control-allow-origin" not in r.headers


def test_rate_limit_per_forwarded_client(root: httpx.Client, srv: RestServer) -> None:
    """127.0.0.1 is a trusted proxy here, so X-Forwarded-For names the client."""
    r = root.patch("/config/rest", json={"rateLimit": 3})
    assert r.status_code == 200, r.text
    try:
        url = srv.base_url + "/api/v1/health"
        codes = [httpx.get(url, headers={"X-Forwarded-For": "10.1.1.1"}) for _ in range(8)]
        limited = [c for c in codes if c.status_code == 429]
        assert limited, [c.status_code for c in codes]
        assert int(limited[0].headers["retry-after"]) >= 1
        assert_error(limited[0], 429, "rate_limited")
        other = httpx.get(url, headers={"X-Forwarded-For": "10.1.1.2"})
        assert other.status_code == 200
    finally:
        deadline = time.monotonic() + 10
        while True:
            r = root.patch("/config/rest", json={"rateLimit": 100000},
                           headers={"X-Forwarded-For": "10.7.7.7"})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text


def test_openapi_and_docs(anon: httpx.Client, srv: RestServer) -> None:
    spec = httpx.get(srv.base_url + "/openapi.json").json()
    paths = spec["paths"]
    for path in ("/api/v1/health", "/api/v1/auth/bind", "/api/v1/entries/{dn}",
                 "/api/v1/search/stream", "/api/v1/acl/rules/{index}", "/api/v1/config/{section}",
                 "/api/v1/cluster/leader"):
        assert path in paths, path
    assert "ErrorBody" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    docs = httpx.get(srv.base_url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
