"""A 3-node cluster of real processes: election, replication through a follower, failover,
rejoin with catch-up (log and snapshot)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import (
    BASE,
    Cluster,
    add_person,
    has_entry,
    serving,
    uids,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, snapshot_interval=50)
    try:
        yield c
    finally:
        c.close()


def test_elects_a_leader_within_one_second_and_replicates(cluster: Cluster) -> None:
    t0 = time.monotonic()
    cluster.start()
    # processes take a moment to import and start (the event loop is busy importing the REST
    # and TLS modules for a while after the Raft port is bound): measure from the moment every
    # node answers LDAP, i.e. its loop is free to take part in an election
    wait_for(lambda: all(nd.status() and serving(nd) for nd in cluster.nodes), 30,
             "all nodes up")
    up = time.monotonic()
    lead = cluster.wait_leader(5)
    elected = time.monotonic() - up
    assert elected < 1.0, f"election took {elected:.2f}s after start-up ({up - t0:.1f}s)"
    cluster.wait_ready()
    follower = next(nd for nd in cluster.nodes if nd is not lead)
    add_person(follower, "alice")
    assert has_entry(follower, f"uid=alice,{BASE}")  # read-your-write on the follower
    for nd in cluster.nodes:
        wait_for(lambda nd=nd: "alice" in uids(nd), 5, f"alice on node {nd.id}")
    statuses = [nd.status() for nd in cluster.nodes]
    assert all(s is not None for s in statuses)
    for st in statuses:
        assert st is not None
        assert {"enabled", "mode", "nodeId", "state", "term", "leaderId", "leaderAddr",
                "commitIndex", "lastApplied", "peers"} <= set(st)
        assert st["leaderId"] == lead.id
        assert [{"id": p["id"], "addr": p["addr"]} for p in st["peers"]] == [
            {"id": nd.id, "addr": f"127.0.0.1:{nd.raft_port}"} for nd in cluster.nodes]


def test_failover_rejoin_and_snapshot_catch_up(cluster: Cluster) -> None:
    cluster.start()
    lead = cluster.wait_ready()
    add_person(lead, "before")
    lead.kill()
    t0 = time.monotonic()
    survivors = [nd for nd in cluster.nodes if nd is not lead]
    new = cluster.wait_leader(5, among=survivors)
    add_person(survivors[0], "after")
    failover = time.monotonic() - t0
    assert failover < 3.0
    assert new is not lead
    # > snapshotInterval (50) writes while the old leader is down: it must catch up from a
    # snapshot because the leader compacted its log
    for i in range(120):
        add_person(new, f"bulk{i}")
    wait_for(lambda: "snapshot taken" in (new.dir / "server.log").read_text(), 5,
             "a snapshot on the leader")
    lead.start()
    wait_for(lambda: (st := lead.status()) is not None and st["state"] == "follower"
             and st["leaderId"] == new.id, 20, "old leader rejoins as follower")
    expected = {"before", "after", *(f"bulk{i}" for i in range(120))}
    wait_for(lambda: uids(lead) == expected, 20, "old leader caught up")
    assert "snapshot installed" in (lead.dir / "server.log").read_text()
    for nd in cluster.nodes:
        assert uids(nd) == expected
