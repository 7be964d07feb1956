"""Run-time membership and leadership changes on real processes: add a 4th node (it catches up
from a snapshot), remove one (the cluster keeps working with 3, the removed node reports
"removed" and never campaigns), durable membership across a restart, leadership transfer, and
the cluster events in the node logs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap
import pytest

from .support import ADMIN, PASSWORD, PYTHON, Cluster, NodeProc, add_person, rest, wait_for
from .support import uids as _uids

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, snapshot_interval=20, rest=True)
    try:
        yield c
    finally:
        c.close()


def uids(nd: NodeProc) -> set[str]:
    """The uids under the base (empty while the node has not got the base entry yet)."""
    try:
        return _uids(nd)
    except ldap.LDAPError:
        return set()


def _state(nd: NodeProc) -> str:
    st = nd.status()
    return str(st["state"]) if st else ""


def _peer_ids(nd: NodeProc) -> list[int]:
    st = nd.status()
    return [p["id"] for p in st["peers"]] if st else []


def test_add_then_remove_a_member_durably(cluster: Cluster) -> None:
    cluster.start()
    lead = cluster.wait_ready()
    for i in range(30):  # > snapshotInterval: the leader compacts, the newcomer needs a snapshot
        add_person(lead, f"u{i}")
    wait_for(lambda: "snapshot taken" in lead.server_log(), 10, "a snapshot on the leader")
    n4 = cluster.new_node(4)
    n4.start()
    wait_for(n4.status, 20, "node 4 up")
    follower = next(nd for nd in cluster.nodes[:3] if nd is not lead)
    code, body = rest(follower, "POST", "/api/v1/cluster/members",  # forwarded to the leader
                      {"id": 4, "addr": n4.raft_addr})
    assert code == 200, body
    assert [p["id"] for p in body["peers"]] == [1, 2, 3, 4]
    expected = {f"u{i}" for i in range(30)}
    wait_for(lambda: uids(n4) == expected, 20, "node 4 caught up")
    assert "snapshot installed" in n4.server_log()
    for nd in cluster.nodes:
        wait_for(lambda nd=nd: _peer_ids(nd) == [1, 2, 3, 4], 10, f"4 peers on node {nd.id}")
    code, body = rest(lead, "POST", "/api/v1/cluster/members", {"id": 4, "addr": n4.raft_addr})
    assert code == 409 and body["error"] == "membership_refused"
    # the leader's status shows each follower's replication progress (whichever node leads:
    # on 2 shared cores the newcomer, busy installing snapshots, can take over the lead)
    def progress() -> list[dict[str, Any]] | None:
        now = cluster.leader()
        st = now.status() if now is not None else None
        if now is None or st is None:
            return None
        others = [p for p in st["peers"] if p["id"] != now.id]
        # status.json is refreshed periodically: wait until it shows the caught-up matches
        caught_up = len(others) == 3 and all(
            "state" in p and p["matchIndex"] > 30 for p in others)
        return others if caught_up else None

    followers = wait_for(progress, 10, "every follower's progress on the leader")
    assert all(p["state"] in ("replicate", "probe") and p["lag"] >= 0 for p in followers)

    # remove a follower: 3 members remain and keep committing writes
    gone = next(nd for nd in cluster.nodes if nd is not lead and nd.id != 4)
    out = subprocess.run(  # the CLI, through node 4's REST port
        [PYTHON, "-m", "oba", "cluster", "remove", "--id", str(gone.id), "--url", n4.rest_url,
         "--dn", ADMIN, "--password", PASSWORD], capture_output=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["op"] == "remove" and gone.id not in [p["id"] for p in body["peers"]]
    wait_for(lambda: _state(gone) == "removed", 10, "the removed node reports it")
    rest_of = [nd for nd in cluster.nodes if nd is not gone]
    add_person(n4, "after-remove")
    for nd in rest_of:
        wait_for(lambda nd=nd: "after-remove" in uids(nd), 10, f"write on node {nd.id}")
    assert "after-remove" not in uids(gone)
    assert _state(gone) == "removed"

    # a restarted member uses the committed membership, not its config peers
    other = next(nd for nd in rest_of if nd is not lead and nd is not n4)
    other.kill()
    other.start()
    wait_for(lambda: _state(other) == "follower", 20, "restarted member rejoins")
    assert sorted(_peer_ids(other)) == sorted(nd.id for nd in rest_of)
    # so does the removed node: it stays out and never campaigns
    gone.kill()
    gone.start()
    wait_for(lambda: _state(gone) == "removed", 20, "removed node restarted")
    assert gone.id not in _peer_ids(gone)
    lead_now = cluster.wait_leader(10, among=rest_of)
    assert lead_now is not gone
    for nd in cluster.nodes:
        log = nd.server_log()
        if nd is n4:  # the newcomer learns of its own addition from the log or a snapshot
            assert "membership change applied: add node 4" in log or "snapshot installed" in log
        elif nd is not gone:
            assert "membership change applied: add node 4" in log
        assert "leader changed" in log


def test_transfer_leadership_and_remove_the_leader(cluster: Cluster) -> None:
    cluster.start()
    cluster.wait_ready()
    for _ in range(3):  # (should leadership move by itself meanwhile, the target may lead)
        lead = cluster.wait_leader()
        target = next(nd for nd in cluster.nodes if nd is not lead)
        code, body = rest(lead, "POST", "/api/v1/cluster/transfer-leadership",
                          {"to": target.id})
        assert code == 200, body
        assert body["leaderId"] == target.id
        if body["previousLeaderId"] != target.id:
            break
    wait_for(lambda: _state(target) == "leader", 5, "target leads")
    add_person(target, "after-transfer")
    assert "leadership transfer from node" in "".join(nd.server_log() for nd in cluster.nodes)
    # without "to" the most up-to-date follower gets it (asked through a follower)
    code, body = rest(lead, "POST", "/api/v1/cluster/transfer-leadership", {})
    assert code == 200, body
    assert body["leaderId"] != target.id
    new = cluster.node(body["leaderId"])
    wait_for(lambda: _state(new) == "leader", 5, "new leader")
    code, body = rest(new, "POST", "/api/v1/cluster/transfer-leadership", {"to": 99})
    assert code == 409, body
    # removing the leader itself: it hands over first, then the new leader removes it
    code, body = rest(new, "DELETE", f"/api/v1/cluster/members/{new.id}")
    assert code == 200, body
    wait_for(lambda: _state(new) == "removed", 10, "old leader removed")
    rest_of = [nd for nd in cluster.nodes if nd is not new]
    nxt = cluster.wait_leader(10, among=rest_of)
    add_person(nxt, "after-leader-removed")
    for nd in rest_of:
        wait_for(lambda nd=nd: "after-leader-removed" in uids(nd), 10, f"write on {nd.id}")
    for nd in cluster.nodes:
        log = nd.server_log()
        assert "term changed" in log and "leader changed" in log
    assert "removed from the cluster" in new.server_log()
