"""RaftCore beyond the paper's basic rules: PreVote, CheckQuorum and the leader lease,
ReadIndex, InstallSnapshot and compaction, leadership transfer, membership changes, and the
Ready/advance contract with the runtime."""

from __future__ import annotations

import random

import pytest
from raftsim import Net

from oba.raft.core import RaftCore
from oba.raft.progress import ProgressState
from oba.raft.types import (
    ConfChange,
    CoreConfig,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    Role,
    SnapshotMeta,
    decode_conf_change,
    encode_conf_change,
    from_wire,
    to_wire,
)

# ---------------------------------------------------------------------------- PreVote


def test_prevote_partitioned_node_does_not_inflate_its_term() -> None:
    net = Net(3)
    ld = net.elect(1)
    term = ld.term
    net.isolate(3)
    for _ in range(100):
        net.cores[3].tick()
        net.stabilize()
    assert net.cores[3].term == term
    assert net.cores[3].role == Role.PRE_CANDIDATE
    net.heal()
    net.tick_all(3)
    assert ld.role == Role.LEADER and ld.term == term  # the rejoin did not disrupt
    assert net.cores[3].role == Role.FOLLOWER and net.cores[3].lead == 1


def test_without_prevote_a_rejoining_node_forces_a_new_term() -> None:
    net = Net(3, pre_vote=False, check_quorum=False)
    ld = net.elect(1)
    term = ld.term
    net.isolate(3)
    for _ in range(30):
        net.cores[3].tick()
        net.stabilize()
    assert net.cores[3].term > term + 1
    net.heal()
    net.tick_all(25)
    assert ld.term > term  # the old leader was deposed: what PreVote avoids


def test_prevote_is_not_granted_to_an_out_of_date_log() -> None:
    c = RaftCore(CoreConfig(2, (1, 2, 3)), HardState(2), [Entry(1, 1), Entry(2, 2)], None,
                 random.Random(0))
    c.step(Message(MsgType.PRE_VOTE, 2, 3, 3, log_term=1, index=9))
    rd = c.ready()
    assert rd.messages[0].type == MsgType.PRE_VOTE_RESP and rd.messages[0].reject
    assert c.term == 2 and rd.hard_state is None  # a pre-vote never changes durable state


# ---------------------------------------------------------------------------- CheckQuorum


def test_check_quorum_partitioned_leader_steps_down_within_an_election_timeout() -> None:
    net = Net(3, election_ticks=10)
    ld = net.elect(1)
    net.tick_all(3)
    net.isolate(1)
    ticks = 0
    while ld.role == Role.LEADER:
        ld.tick()
        net.stabilize()
        ticks += 1
        assert ticks <= 11
    assert ld.role == Role.FOLLOWER and ld.lead == 0


def test_check_quorum_leader_with_a_majority_stays() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.isolate(3)
    net.tick_all(60)
    assert ld.role == Role.LEADER


def test_leader_lease_followers_ignore_votes_while_the_leader_is_alive() -> None:
    net = Net(3, pre_vote=False)
    ld = net.elect(1)
    f = net.cores[2]
    f.step(Message(MsgType.VOTE, 2, 3, ld.term + 1, log_term=ld.last_term(),
                   index=ld.last_index()))
    assert f.term == ld.term and f.ready().messages == []


def test_a_prevote_ignored_under_the_lease_is_granted_once_the_leader_is_lost() -> None:
    """Follower 3 loses the leader's connection first and asks for a pre-vote; follower 2
    still holds the lease and ignores it. When 2 loses the leader too, it answers the
    waiting pre-vote at once instead of letting 3 wait out an election timeout."""
    net = Net(3)
    ld = net.elect(1)
    f2, f3 = net.cores[2], net.cores[3]
    pre = Message(MsgType.PRE_VOTE, 2, 3, ld.term + 1, log_term=ld.last_term(),
                  index=ld.last_index())
    f2.step(pre)
    assert f2.ready().messages == []  # ignored: the leader is alive as far as 2 knows
    f2.leader_unreachable(1)
    msgs = f2.ready().messages
    assert [(m.type, m.to, m.reject) for m in msgs] == [(MsgType.PRE_VOTE_RESP, 3, False)]
    assert f2.term == ld.term  # a pre-vote changes nothing durable
    del f3


def test_a_prevote_ignored_under_the_lease_stays_ignored_while_the_leader_lives() -> None:
    net = Net(3)
    ld = net.elect(1)
    f2 = net.cores[2]
    f2.step(Message(MsgType.PRE_VOTE, 2, 3, ld.term + 1, log_term=ld.last_term(),
                    index=ld.last_index()))
    f2.step(Message(MsgType.HEARTBEAT, 2, 1, ld.term, commit=ld.commit))
    f2.ready()
    f2.leader_unreachable(1)  # a later connection drop no longer answers the old request
    assert all(m.type != MsgType.PRE_VOTE_RESP for m in f2.ready().messages)


def test_of_two_simultaneous_pre_candidates_the_lower_id_steps_back() -> None:
    """Both followers lost the leader at the same moment: both would win their pre-votes and
    split the vote. The one with the lower id (same log) steps back on the other's request."""
    net = Net(3)
    ld = net.elect(1)
    net.isolate(1)
    f2, f3 = net.cores[2], net.cores[3]
    for f in (f2, f3):
        f.leader_unreachable(1)
        while f.role != Role.PRE_CANDIDATE:
            f.tick()
    out2, out3 = f2.ready().messages, f3.ready().messages
    req3 = next(m for m in out3 if m.to == 2 and m.type == MsgType.PRE_VOTE)
    req2 = next(m for m in out2 if m.to == 3 and m.type == MsgType.PRE_VOTE)
    f2.step(req3)
    f3.step(req2)
    assert f2.role == Role.FOLLOWER and f3.role == Role.PRE_CANDIDATE
    net.stabilize()
    assert f3.role == Role.LEADER and f2.lead == 3 and f3.term == ld.term + 1


# ---------------------------------------------------------------------------- ReadIndex


def test_read_index_on_leader_needs_a_quorum_heartbeat_round() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.stabilize()
    ld.propose(b"w")
    net.stabilize()
    net.isolate(1)
    assert ld.read_index(b"r1")
    net.stabilize()
    assert net.read_states[1] == []  # no quorum, no answer
    net.heal()
    ld.tick()  # the next heartbeat carries the pending context
    net.stabilize()
    assert net.read_states[1] == [(ld.commit, b"r1")]


def test_read_index_concurrent_reads_each_get_a_read_state() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.stabilize()
    net.cut(1, 2)
    net.cut(1, 3)
    for k in range(3):
        assert ld.read_index(b"r%d" % k)
    net.heal()
    ld.tick()
    net.stabilize()
    assert sorted(ctx for _, ctx in net.read_states[1]) == [b"r0", b"r1", b"r2"]


def test_read_index_waits_for_a_commit_in_the_leaders_term() -> None:
    net = Net(3)
    ld = net.cores[1]
    while ld.role != Role.LEADER:
        ld.tick()
        net.stabilize(allow=lambda m: m.type != MsgType.APP)
    assert ld.term_at(ld.commit) != ld.term
    assert ld.read_index(b"early")
    net.stabilize()
    assert net.read_states[1] == []
    net.deliver(net.held)
    net.held = []
    net.stabilize()
    ld.tick()
    net.stabilize()
    assert net.read_states[1] == [(1, b"early")]


def test_read_index_single_node_is_immediate_and_followers_refuse_by_default() -> None:
    net = Net(1)
    ld = net.elect(1)
    net.stabilize()
    assert ld.read_index(b"x")
    net.stabilize()
    assert net.read_states[1] == [(1, b"x")]
    net3 = Net(3)
    net3.elect(1)
    net3.stabilize()
    assert net3.cores[2].read_index(b"y") is False


def test_read_index_forwarded_from_a_follower() -> None:
    net = Net(3)
    ld = net.elect(1)
    ld.propose(b"w")
    net.stabilize()
    assert net.cores[2].read_index(b"f1", forward=True)
    net.stabilize()
    ld.tick()
    net.stabilize()
    assert net.read_states[2] == [(ld.commit, b"f1")]
    assert any(m.type == MsgType.READ_INDEX_RESP and m.to == 2 for m in net.sent)


# ---------------------------------------------------------------------------- snapshots


def _compact_leader(net: Net, ld: RaftCore) -> None:
    idx = ld.applied
    term = ld.term_at(idx)
    assert term is not None
    net.storage[ld.id].compact(idx, (b"",) * idx, ld.voters)
    ld.compact(idx, term, ld.voters)


def test_install_snapshot_to_a_follower_behind_the_compacted_log() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.isolate(3)
    for k in range(10):
        ld.propose(b"%d" % k)
    net.stabilize()
    _compact_leader(net, ld)
    assert ld.offset == 11 and ld.log == []
    ld.propose(b"after")
    net.stabilize()
    net.heal()
    net.tick_all(3)
    snaps = [m for m in net.sent if m.type == MsgType.SNAP and m.to == 3]
    assert len(snaps) == 1 and snaps[0].snapshot == SnapshotMeta(11, ld.term, (1, 2, 3))
    f = net.cores[3]
    assert net.storage[3].snapshot == SnapshotMeta(11, ld.term, (1, 2, 3))
    assert f.offset == 11 and f.commit == 12 and f.applied == 12
    assert [e.data for e in net.storage[3].entries] == [b"after"]
    assert ld.prs[3].match == 12


def test_snapshot_that_matches_the_follower_log_only_fast_forwards_commit() -> None:
    c = RaftCore(CoreConfig(2, (1, 2, 3)), HardState(1, 1, 1),
                 [Entry(1, 1), Entry(2, 1), Entry(3, 1)], None, random.Random(0))
    c.step(Message(MsgType.SNAP, 2, 1, 1, snapshot=SnapshotMeta(2, 1, (1, 2, 3))))
    rd = c.ready()
    assert rd.snapshot is None and c.commit == 2 and c.last_index() == 3
    assert rd.messages[0].type == MsgType.APP_RESP and rd.messages[0].index == 2


def test_snapshot_rejected_status_is_retried() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.isolate(3)
    for k in range(5):
        ld.propose(b"%d" % k)
    net.stabilize()
    _compact_leader(net, ld)
    net.heal()
    ld.tick()
    net.stabilize(allow=lambda m: m.type != MsgType.SNAP)  # the SNAP itself is lost
    assert [m.type for m in net.held] == [MsgType.SNAP]
    assert ld.prs[3].state == ProgressState.SNAPSHOT  # waiting for the runtime's report
    ld.step(Message(MsgType.SNAP_STATUS, 1, 3, 0, reject=True))
    assert ld.prs[3].state == ProgressState.PROBE
    net.tick_all(3)
    assert net.cores[3].commit == ld.commit


def test_compact_refuses_unapplied_entries() -> None:
    net = Net(1)
    ld = net.elect(1)
    ld.propose(b"x")
    with pytest.raises(ValueError):
        ld.compact(2, ld.term, (1,))


# ---------------------------------------------------------------------------- transfer


def test_leadership_transfer_to_an_up_to_date_follower() -> None:
    net = Net(3)
    ld = net.elect(1)
    ld.propose(b"x")
    net.stabilize()
    assert ld.transfer_leadership(3)
    net.stabilize()
    assert net.cores[3].role == Role.LEADER and net.cores[3].term == ld.term
    assert ld.role == Role.FOLLOWER and ld.lead == 3


def test_leadership_transfer_to_a_lagging_follower_catches_it_up_first() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.isolate(3)
    for k in range(5):
        ld.propose(b"%d" % k)
    net.stabilize()
    net.heal()
    assert ld.transfer_leadership(3)
    assert ld.propose(b"blocked") is None  # proposals wait during a transfer
    net.stabilize()
    assert net.cores[3].role == Role.LEADER
    assert net.cores[3].last_index() == 7  # the old no-op + 5 + its own no-op


def test_transfer_is_refused_by_non_leaders_and_for_unknown_nodes() -> None:
    net = Net(3)
    ld = net.elect(1)
    assert not net.cores[2].transfer_leadership(3)
    assert not ld.transfer_leadership(9)
    assert not ld.transfer_leadership(1)


# ---------------------------------------------------------------------------- membership


def test_conf_change_add_then_remove_one_at_a_time() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.stabilize()
    idx = ld.propose_conf_change(ConfChange("add", 4, "127.0.0.1:4448"))
    assert idx is not None
    assert ld.propose_conf_change(ConfChange("remove", 2)) is None  # one pending at a time
    net.stabilize()
    for i in net.ids:
        for e in net.applied[i]:
            if e.type == EntryType.CONF_CHANGE:
                net.cores[i].apply_conf_change(decode_conf_change(e.data))
    assert ld.voters == (1, 2, 3, 4) and 4 in ld.prs
    assert ld.propose_conf_change(ConfChange("remove", 2)) is not None


def test_conf_change_removing_the_leader_makes_it_step_down() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.stabilize()
    ld.propose_conf_change(ConfChange("remove", 1))
    net.stabilize()
    ld.apply_conf_change(ConfChange("remove", 1))
    assert ld.role == Role.FOLLOWER and ld.voters == (2, 3)


def test_conf_change_encoding_round_trips() -> None:
    cc = ConfChange("add", 7, "10.0.0.7:4445")
    assert decode_conf_change(encode_conf_change(cc)) == cc
    with pytest.raises(ValueError):
        decode_conf_change(b'{"op":"zap","id":1}')


# ---------------------------------------------------------------------------- Ready contract


def test_ready_vote_response_travels_with_the_hard_state_that_records_it() -> None:
    c = RaftCore(CoreConfig(3, (1, 2, 3), pre_vote=False), HardState(), [], None,
                 random.Random(0))
    assert not c.has_ready()
    c.step(Message(MsgType.VOTE, 3, 1, 1))
    rd = c.ready()
    assert rd.hard_state == HardState(1, 1, 0)
    assert [m.type for m in rd.messages] == [MsgType.VOTE_RESP]
    c.advance(rd)
    assert not c.has_ready()


def test_ready_reports_truncation_point_and_advance_marks_stable() -> None:
    c = RaftCore(CoreConfig(2, (1, 2, 3)), HardState(1, 0, 0),
                 [Entry(1, 1), Entry(2, 1), Entry(3, 1)], None, random.Random(0))
    c.step(Message(MsgType.APP, 2, 1, 2, log_term=1, index=1,
                   entries=(Entry(2, 2, data=b"n"),), commit=1))
    rd = c.ready()
    assert rd.entries == [Entry(2, 2, data=b"n")]
    assert [e.index for e in rd.committed] == [1]
    assert rd.hard_state == HardState(2, 0, 1)
    c.advance(rd)
    assert c.stable == 2 and c.applied == 1 and not c.has_ready()


def test_restart_with_applied_index_skips_already_applied_entries() -> None:
    c = RaftCore(CoreConfig(1, (1, 2, 3)), HardState(1, 0, 3),
                 [Entry(1, 1), Entry(2, 1), Entry(3, 1)], None, random.Random(0), applied=2)
    assert [e.index for e in c.ready().committed] == [3]


def test_status_reports_progress_on_the_leader() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.stabilize()
    st = ld.status()
    assert st.role == Role.LEADER and st.leader == 1 and st.commit == 1
    assert st.progress[2] == (1, 2) and st.progress[3] == (1, 2)
    assert net.cores[2].status().progress == {}


def test_messages_round_trip_through_the_wire_format() -> None:
    m = Message(MsgType.APP, 2, 1, 5, log_term=4, index=9,
                entries=(Entry(10, 5, EntryType.CONF_CHANGE, b"\x00x"),), commit=8,
                reject=True, reject_hint=3, snapshot=SnapshotMeta(7, 4, (1, 2, 3)),
                context=b"ctx")
    assert from_wire(to_wire(m)) == m


# ---------------------------------------------------------------------------- flow control


def test_flow_control_caps_unacknowledged_appends_at_max_inflight() -> None:
    net = Net(3, max_inflight=2, max_entries_per_msg=1)
    ld = net.elect(1)
    net.stabilize()
    assert ld.prs[3].state == ProgressState.REPLICATE
    net.sent.clear()
    net.cut(1, 3)
    for k in range(6):
        ld.propose(b"%d" % k)
    net.stabilize()
    to3 = [m for m in net.sent if m.type == MsgType.APP and m.to == 3]
    assert len(to3) == 2  # the window is full: no more until acks come back
    net.heal()
    net.tick_all(3)
    assert net.storage[3].entries == ld.log


def test_unreachable_peer_falls_back_to_probing() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.stabilize()
    assert ld.prs[2].state == ProgressState.REPLICATE
    ld.step(Message(MsgType.UNREACHABLE, 1, 2, 0))
    assert ld.prs[2].state == ProgressState.PROBE
    net.tick_all(2)
    assert ld.prs[2].state == ProgressState.REPLICATE
