"""REST admin routes (ACL document, configuration) and cluster routes against a real Oba."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from ._support import BASE_DN
from .rest_support import RestServer, assert_error, running_rest_server

USER = f"uid=bob,{BASE_DN}"
USER_PW = "bob-pw-1"
RULE = {"target": f"ou=people,{BASE_DN}", "subject": "authenticated", "scope": "subtree",
        "rights": ["read", "search"], "attributes": ["cn", "mail"], "deny": False}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    with running_rest_server(Path(tmp_path_factory.mktemp("rest-admin"))) as server:
        with server.client() as c:
            r = c.post("/entries", json={"dn": USER, "attributes": {
                "objectClass": ["inetOrgPerson"], "uid": ["bob"], "cn": ["Bob"], "sn": ["B"],
                "userPassword": [USER_PW]}})
            assert r.status_code == 201, r.text
        yield server


@pytest.fixture
def root(srv: RestServer) -> Iterator[httpx.Client]:
    with srv.client() as c:
        yield c


@pytest.fixture
def bob(srv: RestServer) -> Iterator[httpx.Client]:
    with srv.client((USER, USER_PW)) as c:
        yield c


ADMIN_ROUTES = [
    ("GET", "/acl"), ("GET", "/acl/rules"), ("GET", "/acl/rules/0"), ("POST", "/acl/rules"),
    ("PUT", "/acl/rules/0"), ("DELETE", "/acl/rules/0"), ("PUT", "/acl/default"),
    ("POST", "/acl/reload"), ("POST", "/acl/save"), ("POST", "/acl/validate"),
    ("GET", "/config"), ("GET", "/config/server"), ("PATCH", "/config/logging"),
    ("POST", "/config/reload"), ("POST", "/config/save"), ("POST", "/config/validate"),
]


def test_non_admin_is_403_and_anonymous_401(bob: httpx.Client, srv: RestServer) -> None:
    with srv.client(None) as anon:
        for method, path in ADMIN_ROUTES:
            assert_error(bob.request(method, path, json={}), 403, "forbidden")
            assert_error(anon.request(method, path, json={}), 401, "unauthorized")


def test_acl_rules_lifecycle(root: httpx.Client) -> None:
    acl = root.get("/acl").json()
    assert acl["defaultPolicy"] in ("allow", "deny")
    assert acl["stats"]["filePath"] is None
    r = root.post("/acl/rules", json={"rule": RULE})
    assert r.status_code == 201 and r.json()["rule"]["rights"] == ["read", "search"]
    r = root.post("/acl/rules", json={"rule": {**RULE, "subject": "anonymous", "deny": True},
                                      "index": 0})
    assert r.status_code == 201
    rules = root.get("/acl/rules").json()
    assert rules["count"] == 2 and rules["rules"][0]["subject"] == "anonymous"
    assert root.get("/acl/rules/1").json()["subject"] == "authenticated"
    r = root.put("/acl/rules/1", json={**RULE, "subject": f"cn=*,ou=services,{BASE_DN}"})
    assert r.status_code == 200 and r.json()["rule"]["subject"].startswith("cn=*")
    assert root.delete("/acl/rules/0").status_code == 200
    assert root.get("/acl").json()["stats"]["ruleCount"] == 1
    assert root.put("/acl/default", json={"policy": "deny"}).json()["policy"] == "deny"
    assert root.get("/acl").json()["defaultPolicy"] == "deny"
    root.delete("/acl/rules/0")


def test_acl_bad_input(root: httpx.Client) -> None:
    assert_error(root.get("/acl/rules/99"), 404, "rule_not_found")
    assert_error(root.get("/acl/rules/abc"), 422)
    assert_error(root.delete("/acl/rules/5"), 404, "rule_not_found")
    bad = {**RULE, "rights": ["fly"]}
    assert_error(root.post("/acl/rules", json={"rule": bad}), 400, "invalid_rule")
    assert_error(root.post("/acl/rules", json={"rule": {**RULE, "target": "not a dn"}}), 400,
                 "invalid_rule")
    assert_error(root.post("/acl/rules", json={"rule": {**RULE, "scope": "galaxy"}}), 400)
    assert_error(root.post("/acl/rules", json={"rule": {**RULE, "attributes": ["noSuchAttr"]}}),
                 400, "invalid_rule")
    assert_error(root.post("/acl/rules", json={"rule": RULE, "index": 7}), 400, "invalid_index")
    assert_error(root.put("/acl/default", json={"policy": "maybe"}), 422)
    assert_error(root.post("/acl/reload"), 409, "no_acl_file")
    assert_error(root.post("/acl/save"), 409, "no_acl_file")


def test_acl_validate(root: httpx.Client) -> None:
    ok = root.post("/acl/validate", json={"version": 1, "defaultPolicy": "deny",
                                          "rules": [RULE]}).json()
    assert ok["valid"] is True
    bad = root.post("/acl/validate", json={
        "version": 0, "defaultPolicy": "sometimes",
        "rules": [{**RULE, "rights": []}, {**RULE, "subject": "cn=,,="},
                  {**RULE, "target": "cn=*,dc=example,dc=com"}]}).json()
    assert bad["valid"] is False
    text = "\n".join(bad["errors"])
    for fragment in ("version", "defaultPolicy", "rules[0].rights", "rules[1].subject",
                     "rules[2].target"):
        assert fragment in text, (fragment, text)


def test_config_get_masks_secrets(root: httpx.Client) -> None:
    cfg = root.get("/config").json()
    assert cfg["directory"]["baseDN"] == BASE_DN
    assert cfg["directory"]["rootPassword"] == "********"
    assert cfg["rest"]["jwtSecret"] == "********"
    assert root.get("/config/rest").json()["jwtSecret"] == "********"
    assert root.get("/config/storage").json()["dataDir"]
    assert_error(root.get("/config/nosuch"), 404, "unknown_section")


def test_config_patch(root: httpx.Client) -> None:
    r = root.patch("/config/logging", json={"level": "debug"})
    assert r.status_code == 200, r.text
    assert r.json()["config"]["level"] == "debug" and r.json()["section"] == "logging"
    assert root.get("/config/logging").json()["level"] == "debug"
    root.patch("/config/logging", json={"level": "info"})
    r = root.patch("/config/server", json={"readTimeout": "45s", "maxConnections": 500})
    assert r.json()["config"]["readTimeout"] == "45s"
    data = assert_error(root.patch("/config/server", json={"address": ":1389"}), 400,
                        "not_hot_reloadable")
    assert "server.address" in data["message"]
    data = assert_error(root.patch("/config/rest", json={"jwtSecret": "x"}), 400,
                        "not_hot_reloadable")
    assert "rest.jwtSecret" in data["message"]
    assert_error(root.patch("/config/logging", json={"colour": "red"}), 400, "unknown_key")
    data = assert_error(root.patch("/config/logging", json={"level": "loud"}), 400,
                        "invalid_config")
    assert "logging.level" in data["message"]
    assert_error(root.patch("/config/server", json={"maxConnections": -1}), 400, "invalid_config")
    assert_error(root.patch("/config/rest", json={"tokenTTL": "soon"}), 400, "invalid_config")
    assert_error(root.patch("/config/logging", json={}), 400)
    assert_error(root.patch("/config/logging", json=["level"]), 422)
    assert_error(root.patch("/config/nosuch", json={"a": 1}), 404, "unknown_section")


def test_config_validate(root: httpx.Client) -> None:
    good = {"directory": {"baseDN": BASE_DN, "rootDN": f"cn=admin,{BASE_DN}",
                          "rootPassword": "x"}, "storage": {"dataDir": "/tmp/x"}}
    assert root.post("/config/validate", json=good).json()["valid"] is True
    bad = root.post("/config/validate", json={"server": {"address": "nowhere",
                                                         "maxConnections": "lots"},
                                              "bogus": {}}).json()
    assert bad["valid"] is False
    text = "\n".join(bad["errors"])
    assert "server.address" in text and "server.maxConnections" in text and "bogus" in text
    semantic = root.post("/config/validate", json={"directory": {"rootDN": "cn=a"}}).json()
    assert semantic["valid"] is False
    assert any("baseDN" in e for e in semantic["errors"])


def test_config_save_and_reload(root: httpx.Client, srv: RestServer) -> None:
    root.patch("/config/server", json={"writeTimeout": "42s"})
    r = root.post("/config/save")
    assert r.status_code == 200, r.text
    assert Path(r.json()["filePath"]) == srv.config_path
    saved = yaml.safe_load(srv.config_path.read_text())
    assert saved["server"]["writeTimeout"] == "42s"
    assert saved["directory"]["rootPassword"] == "secret"
    saved["logging"]["format"] = "json"
    saved["server"]["maxConnections"] = 77
    saved["storage"]["mapSize"] = 123456789
    srv.config_path.write_text(yaml.safe_dump(saved))
    r = root.post("/config/reload")
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data["applied"]) == {"logging.format", "server.maxConnections"}
    assert data["restartRequired"] == ["storage.mapSize"]
    assert root.get("/config/server").json()["maxConnections"] == 77
    root.patch("/config/logging", json={"format": "text"})
    saved["server"]["maxConnections"] = "many"
    srv.config_path.write_text(yaml.safe_dump(saved))
    data = assert_error(root.post("/config/reload"), 400, "invalid_config")
    assert "server.maxConnections" in data["message"]


def test_cluster_routes_standalone(root: httpx.Client, srv: RestServer) -> None:
    assert root.get("/cluster/status").json() == {"enabled": False, "mode": "standalone"}
    with srv.client(None) as anon:
        r = anon.get("/cluster/health")
        assert r.status_code == 200 and r.json() == {"status": "ok", "mode": "standalone"}
        r = anon.get("/cluster/ready")
        assert r.status_code == 200 and r.json()["ready"] is True
    assert_error(root.get("/cluster/leader"), 400, "not_cluster_mode")
