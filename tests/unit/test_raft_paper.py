"""Raft core tests named after the sections of the Raft paper (Ongaro & Ousterhout, 2014) whose
rule they check. Each drives ``RaftCore`` through the lossless test network in ``raftsim``."""

from __future__ import annotations

import random

from raftsim import Net, Storage

from oba.raft.core import RaftCore
from oba.raft.types import (
    CoreConfig,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    Role,
)


def _restart_with(net: Net, logs: dict[int, tuple[int, list[Entry], int]]) -> None:
    """Give nodes a durable (term, log, commit) and restart them."""
    for i, (term, entries, commit) in logs.items():
        net.storage[i] = Storage(HardState(term, 0, commit), list(entries))
        net.start(i)


def _core(node: int = 1, voters: tuple[int, ...] = (1, 2, 3), term: int = 0,
          entries: list[Entry] | None = None, **cfg: object) -> RaftCore:
    config = CoreConfig(node, voters, **cfg)  # type: ignore[arg-type]
    return RaftCore(config, HardState(term), entries or [], None, random.Random(1))


def test_5_1_higher_term_makes_leader_step_down() -> None:
    net = Net(3)
    ld = net.elect(1)
    old = ld.term
    ld.step(Message(MsgType.APP, 1, 2, old + 5))
    assert ld.role == Role.FOLLOWER
    assert ld.term == old + 5
    assert ld.lead == 2


def test_5_1_stale_term_message_is_answered_with_current_term() -> None:
    c = _core(term=5)
    c.step(Message(MsgType.APP, 1, 2, 3, entries=(Entry(1, 3),)))
    rd = c.ready()
    assert c.last_index() == 0
    assert [(m.type, m.to, m.term) for m in rd.messages] == [(MsgType.APP_RESP, 2, 5)]


def test_5_2_leader_election_single_node_becomes_leader() -> None:
    c = _core(voters=(1,))
    for _ in range(20):
        c.tick()
    assert c.role == Role.LEADER
    assert c.term == 1
    rd = c.ready()
    assert rd.role_changed
    assert rd.hard_state == HardState(1, 1, 1)  # vote for self, no-op committed
    assert [e.index for e in rd.committed] == [1]


def test_5_2_leader_election_three_nodes_exactly_one_leader() -> None:
    net = Net(3, seed=7)
    net.tick_all(25)
    leaders = [c for c in net.cores.values() if c.role == Role.LEADER]
    assert len(leaders) == 1
    ld = leaders[0]
    assert all(c.lead == ld.id and c.term == ld.term for c in net.cores.values())


def test_5_2_election_timeout_is_randomised_in_t_2t() -> None:
    seen = set()
    for seed in range(40):
        c = RaftCore(CoreConfig(1, (1, 2, 3), election_ticks=10), HardState(), [], None,
                     random.Random(seed))
        ticks = 0
        while c.role == Role.FOLLOWER:
            c.tick()
            ticks += 1
        assert 10 <= ticks < 20
        seen.add(ticks)
    assert len(seen) > 3


def test_5_2_leader_sends_heartbeats_every_heartbeat_ticks() -> None:
    net = Net(3, heartbeat_ticks=2)
    ld = net.elect(1)
    net.sent.clear()
    for _ in range(4):
        ld.tick()
        net.stabilize()
    beats = [m for m in net.sent if m.type == MsgType.HEARTBEAT]
    assert sorted(m.to for m in beats) == [2, 2, 3, 3]


def test_5_2_a_node_votes_at_most_once_per_term() -> None:
    c = _core(node=3, pre_vote=False, check_quorum=False)
    c.step(Message(MsgType.VOTE, 3, 1, 1))
    c.step(Message(MsgType.VOTE, 3, 2, 1))
    c.step(Message(MsgType.VOTE, 3, 1, 1))  # a retransmission is granted again
    rd = c.ready()
    assert [(m.to, m.reject) for m in rd.messages] == [(1, False), (2, True), (1, False)]
    assert rd.hard_state == HardState(1, 1, 0)


def test_5_2_candidate_returns_to_follower_on_append_of_same_term() -> None:
    c = _core(pre_vote=False)
    for _ in range(20):
        c.tick()
    assert c.role == Role.CANDIDATE
    c.step(Message(MsgType.APP, 1, 2, c.term, commit=0))
    assert c.role == Role.FOLLOWER and c.lead == 2


def test_5_3_log_replication_commits_and_applies_everywhere() -> None:
    net = Net(3)
    ld = net.elect(1)
    idx = [ld.propose(b"x%d" % k) for k in range(5)]
    net.stabilize()
    net.tick_all(1)  # the heartbeat carries the final commit index to followers
    assert idx == [2, 3, 4, 5, 6]
    for i in net.ids:
        assert [e.data for e in net.applied[i]] == [b"", b"x0", b"x1", b"x2", b"x3", b"x4"]
        assert [e.index for e in net.storage[i].entries] == [1, 2, 3, 4, 5, 6]
        assert net.storage[i].hs.commit == 6


def test_5_3_follower_conflicting_entries_are_overwritten() -> None:
    net = Net(3)
    base = [Entry(1, 1)]
    _restart_with(net, {
        1: (3, [*base, Entry(2, 3, data=b"a")], 1),
        2: (3, [*base, Entry(2, 3, data=b"a")], 1),
        3: (2, [*base, Entry(2, 2, data=b"old"), Entry(3, 2, data=b"old2")], 1),
    })
    ld = net.elect(1)
    net.stabilize()
    net.tick_all(1)
    log3 = net.storage[3].entries
    assert log3 == ld.log
    assert [e.data for e in net.applied[3]][-2:] == [b"a", b""]


def test_5_3_fast_backoff_skips_a_whole_conflicting_term() -> None:
    net = Net(3, pre_vote=False)
    base = [Entry(k, 1) for k in range(1, 4)]
    _restart_with(net, {
        1: (6, base + [Entry(k, 5) for k in range(4, 8)], 3),
        2: (6, base + [Entry(k, 5) for k in range(4, 8)], 3),
        3: (4, base + [Entry(k, 4) for k in range(4, 60)], 3),
    })
    net.elect(1)
    net.stabilize()
    rejects = [m for m in net.sent if m.type == MsgType.APP_RESP and m.reject and m.frm == 3]
    assert len(rejects) <= 2  # not one round trip per conflicting entry
    assert net.storage[3].entries == net.cores[1].log


def test_5_3_propose_many_replicates_a_batch_in_one_message() -> None:
    net = Net(3)
    ld = net.elect(1)
    net.stabilize()
    net.sent.clear()
    assert ld.propose_many([b"a", b"b", b"c"]) == [2, 3, 4]
    net.stabilize()
    apps = [m for m in net.sent if m.type == MsgType.APP and m.entries]
    assert sorted(m.to for m in apps) == [2, 3] and all(len(m.entries) == 3 for m in apps)
    assert ld.commit == 4
    assert net.cores[2].propose_many([b"x"]) is None


def test_5_3_batches_respect_max_entries_per_msg() -> None:
    net = Net(3, max_entries_per_msg=3)
    ld = net.elect(1)
    net.cut(1, 3)
    for k in range(10):
        ld.propose(b"%d" % k)
    net.stabilize()
    net.heal()
    net.tick_all(2)
    apps = [m for m in net.sent if m.type == MsgType.APP]
    assert apps and max(len(m.entries) for m in apps) == 3
    assert net.storage[3].entries == ld.log


def test_5_4_1_election_restriction_rejects_an_out_of_date_candidate() -> None:
    c = _core(node=2, term=2, entries=[Entry(1, 1), Entry(2, 2)], pre_vote=False)
    c.step(Message(MsgType.VOTE, 2, 1, 3, log_term=1, index=5))  # longer but older log
    c.step(Message(MsgType.VOTE, 2, 3, 3, log_term=2, index=1))  # same term, shorter log
    rd = c.ready()
    assert [(m.frm, m.to, m.reject) for m in rd.messages] == [(2, 1, True), (2, 3, True)]
    c.step(Message(MsgType.VOTE, 2, 3, 3, log_term=2, index=2))
    assert c.ready().messages[0].reject is False


def test_5_4_1_a_node_missing_committed_entries_cannot_be_elected() -> None:
    net = Net(3, pre_vote=False, check_quorum=False)  # no lease: only the log decides
    ld = net.elect(1)
    net.isolate(3)
    ld.propose(b"committed")
    net.stabilize()
    assert ld.commit == 2
    net.heal()
    net.isolate(1)  # the old leader leaves; node 3 lacks entry 2 and node 2 has it
    for _ in range(60):
        net.cores[3].tick()
        net.stabilize()
    assert net.cores[3].role != Role.LEADER
    assert net.elect(2).term_at(2) is not None


def test_5_4_2_commit_only_current_term_figure_8() -> None:
    net = Net(5, pre_vote=False, check_quorum=False)
    one = [Entry(1, 1)]
    _restart_with(net, {
        1: (3, [*one, Entry(2, 2, data=b"t2")], 1),
        2: (3, [*one, Entry(2, 2, data=b"t2")], 1),
        3: (3, list(one), 1),
        4: (3, list(one), 1),
        5: (3, [*one, Entry(2, 3, data=b"t3")], 1),
    })
    net.isolate(5)
    ld = net.cores[1]

    def no_app(m: Message) -> bool:
        return m.type != MsgType.APP

    while ld.role != Role.LEADER:
        ld.tick()
        net.stabilize(allow=no_app)
    assert ld.term == 4 and ld.last_index() == 3  # its no-op 3@4 is not replicated yet
    for f in (3, 4):  # replicate only the old-term entry 2@2 to a majority {1, 3, 4}
        net.cores[f].step(Message(MsgType.APP, f, 1, 4, log_term=1, index=1,
                                  entries=(Entry(2, 2, data=b"t2"),)))
    net.stabilize(allow=no_app)
    assert ld.prs[3].match == 2 and ld.prs[4].match == 2
    assert ld.commit == 1  # a majority stores 2@2 but it is not from term 4
    held, net.held = net.held, []
    net.deliver(held)
    net.stabilize()
    assert ld.commit == 3  # committing 3@4 commits 2@2 indirectly


def test_5_4_2_leader_appends_a_noop_on_election() -> None:
    net = Net(3)
    ld = net.elect(2)
    assert ld.log[-1] == Entry(1, ld.term, EntryType.NORMAL, b"")
    net.stabilize()
    assert ld.commit == 1


def test_5_5_follower_crash_and_restart_catches_up_from_durable_log() -> None:
    net = Net(3)
    ld = net.elect(1)
    ld.propose(b"a")
    net.stabilize()
    del net.cores[3]  # crash
    ld.propose(b"b")
    net.stabilize()
    net.start(3)
    net.tick_all(2)
    assert [e.data for e in net.storage[3].entries] == [b"", b"a", b"b"]
    assert net.cores[3].commit == 3
