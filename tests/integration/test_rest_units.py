"""REST pieces that need no server process: the generated reference page, client IPs, token
buckets, the error table, the ACL document, and the cluster routes with a stand-in cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from oba.acl.document import AclError, dump_acl, parse_acl, validate_acl
from oba.config import Config
from oba.directory.access import AccessPolicy
from oba.rest.app import create_app
from oba.rest.auth import issue_token
from oba.rest.docs import render_rest_reference
from oba.rest.errors import http_status_for
from oba.rest.middleware import TokenBuckets, client_ip
from oba.rest.state import RestState
from oba.schema import Schema

REPO = Path(__file__).resolve().parents[2]
ROOT = "cn=admin,dc=example,dc=com"


def test_committed_reference_matches_the_routes() -> None:
    committed = (REPO / "docs" / "rest-api.md").read_text(encoding="utf-8")
    assert committed == render_rest_reference(), "regenerate docs/rest-api.md"


def test_client_ip() -> None:
    assert client_ip("10.0.0.5", "1.2.3.4", []) == "10.0.0.5"
    assert client_ip("10.0.0.5", "1.2.3.4", ["127.0.0.1"]) == "10.0.0.5"  # untrusted peer
    assert client_ip("127.0.0.1", "1.2.3.4", ["127.0.0.0/8"]) == "1.2.3.4"
    assert client_ip("127.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.9", ["127.0.0.1", "10.0.0.0/8"]) \
        == "1.2.3.4"
    assert client_ip("127.0.0.1", None, ["127.0.0.1"]) == "127.0.0.1"


def test_token_buckets() -> None:
    b = TokenBuckets()
    assert [b.take("a", 2, now=100.0) for _ in range(2)] == [0.0, 0.0]
    assert b.take("a", 2, now=100.0) == pytest.approx(0.5)
    assert b.take("b", 2, now=100.0) == 0.0
    assert b.take("a", 2, now=100.6) == 0.0


def test_error_table() -> None:
    expected = {32: 404, 49: 401, 50: 403, 68: 409, 53: 422, 65: 400, 17: 400, 21: 400,
                19: 400, 20: 400, 16: 400, 34: 400, 66: 409, 3: 408, 4: 413, 51: 503, 52: 503,
                8: 401, 80: 500}
    assert {code: http_status_for(code)[0] for code in expected} == expected


def test_acl_document_round_trip_and_errors() -> None:
    text = (
        "version: 1\ndefaultPolicy: deny\nrules:\n"
        "  - {target: 'dc=example,dc=com', subject: self, rights: [write],"
        " attributes: [userPassword]}\n"
        "  - {target: '*', subject: 'cn=*,ou=svc,dc=example,dc=com', scope: one,"
        " rights: [read, search]}\n"
    )
    doc = parse_acl(text, Schema.default())
    assert doc.rules[0].scope == "subtree" and doc.rules[1].scope == "one"
    assert parse_acl(dump_acl(doc)) == doc
    with pytest.raises(AclError) as err:
        validate_acl({"version": 1, "rules": [
            {"target": "*", "subject": "x=y", "rights": ["read"]},
            {"target": "*", "subject": "*", "rights": ["read"], "attributes": ["nope"]}]},
            Schema.default())
    assert any("rules[0].subject" in e for e in err.value.errors)
    assert any("rules[1].attributes" in e for e in err.value.errors)
    with pytest.raises(AclError):
        validate_acl(["not", "a", "mapping"])


class FakeCluster:
    def __init__(self, leader: bool, ready: bool, has_leader: bool = True) -> None:
        self.leader_flag, self.ready_flag, self.has_leader = leader, ready, has_leader

    def cluster_status(self) -> dict[str, Any]:
        return {"nodeId": 2, "state": "leader" if self.leader_flag else "follower", "term": 3,
                "leaderId": 1 if self.has_leader else 0, "leaderAddr": "127.0.0.1:4445",
                "commitIndex": 10, "lastApplied": 10 if self.ready_flag else 7,
                "peers": [{"id": 1, "addr": "127.0.0.1:4445"}]}

    def is_leader(self) -> bool:
        return self.leader_flag

    def leader(self) -> tuple[int, str] | None:
        return (1, "127.0.0.1:4445") if self.has_leader else None

    def ready(self) -> bool:
        return self.ready_flag


def _app(cluster: FakeCluster, status_auth: bool = False) -> tuple[Any, dict[str, str]]:
    schema = Schema.default()
    config = Config()
    config.rest.clusterStatusAuth = status_auth
    node: Any = SimpleNamespace(
        config=config, schema=schema, root_dn=ROOT, root_ndn=schema.normalize_dn(ROOT),
        access=AccessPolicy(schema.normalize_dn(ROOT)), cluster=cluster, store=None)
    state = RestState(node=node, secret=b"k" * 32)
    token, _ = issue_token(state, ROOT)
    return create_app(state), {"Authorization": f"Bearer {token}"}


def _get(cluster: FakeCluster, path: str, authed: bool = False,
         status_auth: bool = False) -> httpx.Response:
    app, auth = _app(cluster, status_auth)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://oba") as client:
            return await client.get("/api/v1/cluster" + path, headers=auth if authed else {})

    return asyncio.run(run())


def test_cluster_routes_in_cluster_mode() -> None:
    up = FakeCluster(leader=True, ready=True)
    status = _get(up, "/status", authed=True).json()
    assert status["enabled"] is True and status["mode"] == "cluster" and status["term"] == 3
    health = _get(up, "/health")
    assert health.status_code == 200 and health.json()["isLeader"] is True
    ready = _get(up, "/ready")
    assert ready.status_code == 200 and ready.json()["caughtUp"] is True
    leader = _get(up, "/leader", authed=True).json()
    assert leader == {"leaderId": 1, "leaderAddr": "127.0.0.1:4445", "isLeader": True}
    # public by default (the spec's curl commands), authenticated with rest.clusterStatusAuth
    assert _get(up, "/leader").json() == leader
    assert _get(up, "/status").json() == status
    for path in ("/status", "/leader"):
        assert _get(up, path, status_auth=True).status_code == 401
        assert _get(up, path, authed=True, status_auth=True).status_code == 200
    assert _get(up, "/health", status_auth=True).status_code == 200

    follower = FakeCluster(leader=False, ready=False)
    health = _get(follower, "/health")
    assert health.status_code == 503 and health.json()["state"] == "follower"
    ready = _get(follower, "/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert ready.json()["caughtUp"] is False

    r = _get(FakeCluster(leader=False, ready=False, has_leader=False), "/leader", authed=True)
    assert r.status_code == 503 and r.json()["error"] == "no_leader"
