"""Security state replicates (issue 6 in cluster mode): an ACL rule added over REST on one node
is enforced on every node, and an account locked by failed binds on one node stays locked on
the others, also after the leader is killed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ldap
import pytest
import yaml

from .support import BASE, Cluster, NodeProc, rest, wait_for

USER = f"uid=locky,{BASE}"
USER_PW = "Locky-pw-1"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, rest=True)
    for nd in c.nodes:  # lock after 3 failed binds
        cfg = yaml.safe_load(nd.config.read_text())
        cfg["security"] = {"rateLimit": {"enabled": True, "maxAttempts": 3,
                                         "lockoutDuration": "10m"}}
        nd.config.write_text(yaml.safe_dump(cfg))
    try:
        yield c
    finally:
        c.close()


def _bind(nd: NodeProc, dn: str, pw: str) -> bool:
    c = ldap.initialize(nd.url)
    c.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
    try:
        c.simple_bind_s(dn, pw)
        return True
    except ldap.INVALID_CREDENTIALS:
        return False
    finally:
        c.unbind_s()


def _anonymous_sees_base(nd: NodeProc) -> bool:
    c = ldap.initialize(nd.url)
    try:
        return bool(c.search_s(BASE, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"]))
    except ldap.NO_SUCH_OBJECT:
        return False
    finally:
        c.unbind_s()


def test_acl_rules_and_lockout_hold_on_every_node(cluster: Cluster) -> None:
    cluster.start()
    lead = cluster.wait_ready()
    follower_a, follower_b = cluster.followers()[:2]
    conn = lead.conn()
    conn.add_s(USER, [("objectClass", [b"inetOrgPerson"]), ("cn", [b"locky"]),
                      ("sn", [b"Locky"]), ("uid", [b"locky"]),
                      ("userPassword", [USER_PW.encode()])])
    conn.unbind_s()
    for nd in cluster.nodes:
        wait_for(lambda nd=nd: _bind(nd, USER, USER_PW), 10, f"the user on node {nd.id}")
        assert _anonymous_sees_base(nd)

    # an ACL rule added over REST on a follower is a replicated command: enforced everywhere
    code, body = rest(follower_a, "PUT", "/api/v1/acl/default", {"policy": "allow"})
    assert code == 200, body
    rule = {"target": "*", "subject": "anonymous", "rights": ["all"], "deny": True}
    code, body = rest(follower_a, "POST", "/api/v1/acl/rules", {"rule": rule, "index": 0})
    assert code == 201, body
    for nd in cluster.nodes:
        wait_for(lambda nd=nd: not _anonymous_sees_base(nd), 10, f"the rule on node {nd.id}")
        code, doc = rest(nd, "GET", "/api/v1/acl")
        assert code == 200 and doc["rules"][0]["subject"] == "anonymous", doc

    # three failed binds on follower A lock the account on every node
    for _ in range(3):
        assert not _bind(follower_a, USER, "wrong-password")
    for nd in cluster.nodes:
        wait_for(lambda nd=nd: not _bind(nd, USER, USER_PW), 10, f"the lock on node {nd.id}")
    code, status = rest(follower_b, "GET", f"/api/v1/entries/{USER}/lock-status")
    assert code == 200 and status["locked"] is True, status

    # the lock survives the loss of the leader
    lead.kill()
    survivors = [nd for nd in cluster.nodes if nd is not lead]
    cluster.wait_leader(10, among=survivors)
    for nd in survivors:
        assert not _bind(nd, USER, USER_PW)
        assert not _anonymous_sees_base(nd)
