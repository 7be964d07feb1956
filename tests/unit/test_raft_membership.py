"""Durable membership and fast failover pieces of the Raft engine: snapshot meta with addresses
(wire and disk), the recorded membership in the log env, and ``leader_unreachable``."""

from __future__ import annotations

from pathlib import Path

from raftsim import Net

from oba.raft.log import RaftLog
from oba.raft.types import Message, MsgType, Role, SnapshotMeta, from_wire, to_wire


def test_snapshot_meta_carries_addresses_on_the_wire() -> None:
    snap = SnapshotMeta(7, 2, (1, 2, 4), ((1, "h1:1"), (2, "h2:2"), (4, "h4:4")))
    msg = Message(MsgType.SNAP, 4, 1, 3, snapshot=snap)
    assert from_wire(to_wire(msg)).snapshot == snap
    old = to_wire(Message(MsgType.SNAP, 4, 1, 3, snapshot=SnapshotMeta(7, 2, (1, 2))))
    assert from_wire(old).snapshot == SnapshotMeta(7, 2, (1, 2), ())


def test_log_keeps_membership_and_snapshot_addresses(tmp_path: Path) -> None:
    log = RaftLog(tmp_path / "log")
    try:
        assert log.membership() is None
        log.set_membership(12, {1: "a:1", 4: "d:4"})
        log.compact(0, 0, (1,))  # no-op: nothing stored at 0
        assert log.membership() == (12, {1: "a:1", 4: "d:4"})
    finally:
        log.close()
    log = RaftLog(tmp_path / "log")  # reopened: durable
    try:
        assert log.membership() == (12, {1: "a:1", 4: "d:4"})
        log.save(snapshot=SnapshotMeta(20, 3, (1, 4), ((1, "a:1"), (4, "d:4"))))
        snap = log.snapshot()
        assert snap is not None and snap.addrs == ((1, "a:1"), (4, "d:4"))
    finally:
        log.close()


def test_a_follower_that_lost_its_leader_campaigns_quickly_and_wins() -> None:
    for seed in range(5):
        net = Net(3, seed=seed)
        ld = net.elect(1)
        net.stabilize()
        assert net.cores[2].lead == ld.id
        net.isolate(1)  # the leader's process died: both followers see the connection drop
        for i in (2, 3):
            net.cores[i].leader_unreachable(1)
            assert net.cores[i].lead == 0
        f = net.cores[2]
        for _ in range(f.cfg.election_ticks // 2 + 1):  # well before a whole election timeout
            f.tick()
            net.stabilize()
            if f.role == Role.LEADER:
                break
        # node 3 heard the leader a moment ago, yet it votes: it knows the leader is gone
        assert f.role == Role.LEADER, seed


def test_leader_unreachable_ignores_other_peers_and_a_live_leader_restores_it() -> None:
    net = Net(3, seed=5)
    net.elect(1)
    net.stabilize()
    f = net.cores[3]
    f.leader_unreachable(2)  # not the leader: nothing changes
    assert f.lead == 1
    f.leader_unreachable(1)
    assert f.lead == 0
    net.tick(1, net.cores[1].cfg.heartbeat_ticks)  # the leader was alive after all
    net.stabilize()
    assert f.lead == 1 and net.cores[1].role == Role.LEADER
