"""A deterministic simulation of a Raft cluster built from ``oba.raft.core.RaftCore``.

Rules: everything is driven by one seeded ``random.Random`` (same seed, same run). Time is a
step counter (one core tick per step). Each node has a simulated durable storage and follows the
runtime contract: a Ready is taken, made durable after a random fsync delay (snapshot, hard
state, entries), and only THEN its messages are sent and its committed entries applied; a crash
loses the Ready in flight and the state machine, and the node restarts from what is durable.
The network drops, delays, reorders, duplicates and partitions messages. Safety properties are
checked as the run goes (``Violation`` is raised with the seed in its message).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from oba.raft.core import RaftCore
from oba.raft.types import (
    ConfChange,
    CoreConfig,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    Ready,
    Role,
    SnapshotMeta,
    decode_conf_change,
)


class Violation(AssertionError):
    pass


@dataclass
class Storage:
    """What survives a crash."""

    hs: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    snap_data: tuple[bytes, ...] = ()  # the state machine (applied commands) at snapshot.index
    lazy_commit: bool = False  # a commit-only hard state change is not written (as RaftNode)

    def persist(self, rd: Ready, snap_data: tuple[bytes, ...] | None) -> None:
        if rd.snapshot is not None:
            assert snap_data is not None and len(snap_data) == rd.snapshot.index
            self.snapshot = rd.snapshot
            self.snap_data = snap_data
            self.entries = []
        if rd.hard_state is not None:
            hs = rd.hard_state
            if self.lazy_commit and not rd.entries and rd.snapshot is None and (
                    hs.term, hs.vote) == (self.hs.term, self.hs.vote):
                # like RaftNode: a Ready that only moves the commit index writes nothing
                hs = replace(hs, commit=self.hs.commit)
            self.hs = hs
        if rd.entries:
            first = rd.entries[0].index
            base = self.snapshot.index if self.snapshot else 0
            assert base < first <= base + len(self.entries) + 1, (first, base, len(self.entries))
            del self.entries[first - base - 1 :]
            self.entries.extend(rd.entries)

    def compact(self, index: int, data: tuple[bytes, ...], voters: tuple[int, ...]) -> int:
        base = self.snapshot.index if self.snapshot else 0
        term = self.entries[index - base - 1].term
        self.entries = self.entries[index - base :]
        self.snapshot = SnapshotMeta(index, term, voters)
        self.snap_data = data
        return term


@dataclass
class SimNode:
    id: int
    storage: Storage = field(default_factory=Storage)
    core: RaftCore | None = None
    sm: list[bytes] = field(default_factory=list)  # applied commands, index = position + 1
    inflight: Ready | None = None
    fsync_at: int = 0
    incoming_snaps: dict[tuple[int, int], tuple[bytes, ...]] = field(default_factory=dict)
    incarnation: int = 0
    proposals: dict[int, bytes] = field(default_factory=dict)  # index -> data (this life)
    reads: dict[bytes, int] = field(default_factory=dict)  # ctx -> min index allowed


@dataclass
class Envelope:
    at: int
    seq: int
    msg: Message
    snap_data: tuple[bytes, ...] | None = None


class Sim:
    def __init__(self, seed: int, n: int = 3) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        r = self.rng
        self.n = n
        self.ids = tuple(range(1, n + 1))
        self.election_ticks = 10
        self.cfgs = {
            i: CoreConfig(node_id=i, voters=self.ids, election_ticks=self.election_ticks,
                          heartbeat_ticks=r.choice((1, 2, 3)), pre_vote=r.random() < 0.8,
                          check_quorum=r.random() < 0.8, max_entries_per_msg=r.choice((1, 3, 64)),
                          max_inflight=r.choice((1, 4, 64)))
            for i in self.ids
        }
        # the same pre_vote/check_quorum on every node (mixed settings are not a deployment)
        first = self.cfgs[1]
        self.cfgs = {i: CoreConfig(i, self.ids, self.election_ticks, c.heartbeat_ticks,
                                   first.pre_vote, first.check_quorum, c.max_entries_per_msg,
                                   c.max_inflight) for i, c in self.cfgs.items()}
        self.nodes = {i: SimNode(i, Storage(lazy_commit=True)) for i in self.ids}
        self.now = 0
        self.seq = 0
        self.queue: list[tuple[int, int, Envelope]] = []  # a heap by (delivery step, seq)
        self.groups: dict[int, int] = {}  # node -> partition group (absent: all connected)
        self.drop = r.choice((0.0, 0.02, 0.1, 0.25))
        self.dup = r.choice((0.0, 0.02, 0.1))
        self.max_delay = r.choice((1, 2, 4))
        self.max_fsync = r.choice((0, 1, 2))
        self.snap_every = r.choice((3, 8, 30, 10**9))
        self.crash_p = r.choice((0.005, 0.01, 0.03))  # per step
        # membership changes only with CheckQuorum: without the lease a removed node that never
        # learnt of its removal keeps disrupting the cluster (Raft thesis, section 4.2.3)
        self.conf_p = 0.01 if first.check_quorum and r.random() < 0.5 else 0.0
        self.restart_p = r.choice((0.03, 0.1))
        self.chaos = True
        self.send_before_persist = False
        # history for the safety checks
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.chosen: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) applied anywhere
        self.acked: set[bytes] = set()
        self.counter = 0
        self.stats = {"elections": 0, "snap_sent": 0, "crashes": 0, "acked": 0, "reads": 0,
                      "conf_changes": 0}
        for i in self.ids:
            self._start(i)

    # ------------------------------------------------------------------ plumbing
    def fail(self, what: str) -> Violation:
        return Violation(f"seed={self.seed} step={self.now}: {what}")

    def _start(self, i: int) -> None:
        nd = self.nodes[i]
        st = nd.storage
        nd.incarnation += 1
        voters = st.snapshot.voters if st.snapshot else self.ids  # then re-applied conf changes
        nd.core = RaftCore(replace(self.cfgs[i], voters=voters), st.hs, list(st.entries),
                           st.snapshot, random.Random(self.rng.random()))
        nd.sm = list(st.snap_data)
        nd.inflight = None
        nd.proposals = {}
        nd.reads = {}
        nd.incoming_snaps = {}

    def crash(self, i: int) -> None:
        nd = self.nodes[i]
        nd.core = None
        nd.inflight = None
        nd.sm = []
        self.stats["crashes"] += 1

    def live(self) -> list[int]:
        return [i for i in self.ids if self.nodes[i].core is not None]

    def connected(self, a: int, b: int) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def send(self, m: Message) -> None:
        snap = None
        if m.type == MsgType.SNAP:
            st = self.nodes[m.frm].storage
            assert m.snapshot is not None and st.snapshot == m.snapshot, (m.snapshot, st.snapshot)
            snap = st.snap_data
            self.stats["snap_sent"] += 1
        copies = 1
        if self.chaos:
            x = self.rng.random()
            if x < self.drop:
                copies = 0
            elif x < self.drop + self.dup:
                copies = 2
        if m.type == MsgType.SNAP and copies == 0:
            self._local(m.frm, Message(MsgType.SNAP_STATUS, m.frm, m.to, 0, reject=True))
        for _ in range(copies):
            self.seq += 1
            delay = self.rng.randint(1, self.max_delay) if self.chaos else 1
            env = Envelope(self.now + delay, self.seq, m, snap)
            heapq.heappush(self.queue, (env.at, env.seq, env))

    def _local(self, to: int, m: Message) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.now + 1, self.seq, Envelope(self.now + 1, self.seq, m)))

    def deliver_due(self) -> None:
        q = self.queue
        if not q or q[0][0] > self.now:
            return
        due: list[Envelope] = []
        while q and q[0][0] <= self.now:
            due.append(heapq.heappop(q)[2])
        self.rng.shuffle(due)
        for env in due:
            m = env.msg
            nd = self.nodes[m.to]
            if nd.core is None or (m.term != 0 and not self.connected(m.frm, m.to)):
                if m.type == MsgType.SNAP:
                    self._local(m.frm, Message(MsgType.SNAP_STATUS, m.frm, m.to, 0, reject=True))
                elif m.type == MsgType.APP and self.rng.random() < 0.3:
                    self._local(m.frm, Message(MsgType.UNREACHABLE, m.frm, m.to, 0))
                continue
            if m.type == MsgType.SNAP:
                assert m.snapshot is not None and env.snap_data is not None
                nd.incoming_snaps[(m.snapshot.index, m.snapshot.term)] = env.snap_data
                self._local(m.frm, Message(MsgType.SNAP_STATUS, m.frm, m.to, 0))
            nd.core.step(m)

    # ------------------------------------------------------------------ the runtime loop
    def process(self, i: int) -> None:
        nd = self.nodes[i]
        core = nd.core
        if core is None:
            return
        if nd.inflight is None and core.has_ready():
            nd.inflight = core.ready()
            nd.fsync_at = self.now + self.rng.randint(0, self.max_fsync)
            if self.send_before_persist:  # a deliberately broken runtime, for the meta-test
                for m in nd.inflight.messages:
                    self.send(m)
                nd.inflight.messages = []
        if nd.inflight is None or nd.fsync_at > self.now:
            return
        rd, nd.inflight = nd.inflight, None
        snap_data = None
        if rd.snapshot is not None:
            snap_data = nd.incoming_snaps[(rd.snapshot.index, rd.snapshot.term)]
        nd.storage.persist(rd, snap_data)  # durable from here on
        for m in rd.messages:
            self.send(m)
        if snap_data is not None:
            nd.sm = list(snap_data)
        for e in rd.committed:
            self.apply(nd, e)
        for rs in rd.read_states:
            self.check_read(nd, rs.index, rs.context)
        core.advance(rd)
        if core.applied != len(nd.sm):
            raise self.fail(f"node {i} core.applied {core.applied} != sm {len(nd.sm)}")
        self.maybe_snapshot(nd)

    def apply(self, nd: SimNode, e: Entry) -> None:
        if e.index != len(nd.sm) + 1:
            raise self.fail(f"node {nd.id} applies {e.index} after {len(nd.sm)}")
        got = self.chosen.setdefault(e.index, (e.term, e.data))
        if got != (e.term, e.data):
            raise self.fail(f"state machine safety: node {nd.id} index {e.index} "
                            f"{(e.term, e.data)} != {got}")
        nd.sm.append(e.data)
        if e.type == EntryType.CONF_CHANGE:
            assert nd.core is not None
            nd.core.apply_conf_change(decode_conf_change(e.data))
            self.stats["conf_changes"] += 1
        if nd.proposals.get(e.index) == e.data and e.data:
            self.acked.add(e.data)
            self.stats["acked"] += 1

    def check_read(self, nd: SimNode, index: int, ctx: bytes) -> None:
        want = nd.reads.pop(ctx, None)
        if want is None:
            return
        if index < want:
            raise self.fail(f"stale read index {index} < {want} on node {nd.id}")
        self.stats["reads"] += 1

    def maybe_snapshot(self, nd: SimNode) -> None:
        core = nd.core
        assert core is not None
        if core.applied - core.offset >= self.snap_every and self.rng.random() < 0.5:
            idx = core.applied
            term = nd.storage.compact(idx, tuple(nd.sm[:idx]), core.voters)
            core.compact(idx, term, core.voters)

    # ------------------------------------------------------------------ checks
    def check_leaders(self) -> None:
        for i in self.live():
            core = self.nodes[i].core
            assert core is not None
            if core.role != Role.LEADER:
                continue
            prev = self.leaders.setdefault(core.term, i)
            if prev != i:
                raise self.fail(f"election safety: {prev} and {i} both lead term {core.term}")
            if prev == i and getattr(core, "_sim_checked", 0) != core.term:
                core._sim_checked = core.term  # type: ignore[attr-defined]
                self.stats["elections"] += 1
                for idx, (t, _) in self.chosen.items():  # leader completeness
                    if t < core.term and idx > core.offset and core.term_at(idx) != t:
                        raise self.fail(f"leader completeness: leader {i} term {core.term} "
                                        f"lacks committed {idx}@{t}")

    def check_log_matching(self) -> None:
        cores = [c for c in (self.nodes[i].core for i in self.live()) if c is not None]
        for a in cores:
            for b in cores:
                if a.id >= b.id:
                    continue
                lo = max(a.offset, b.offset) + 1
                hi = min(a.last_index(), b.last_index())
                same = False
                for idx in range(hi, lo - 1, -1):  # from the last common index with equal terms
                    if not same and a.term_at(idx) == b.term_at(idx):
                        same = True
                    if same and a.log[idx - a.offset - 1] != b.log[idx - b.offset - 1]:
                        raise self.fail(f"log matching: nodes {a.id},{b.id} differ at {idx}")

    # ------------------------------------------------------------------ the run
    def random_event(self) -> None:
        r = self.rng
        live = self.live()
        x = r.random()
        if x < 0.3:
            leaders = [i for i in live if self.nodes[i].core.role == Role.LEADER]  # type: ignore[union-attr]
            if leaders:
                i = r.choice(leaders)
                core = self.nodes[i].core
                assert core is not None
                datas = []
                for _ in range(r.choice((1, 1, 1, 3))):
                    self.counter += 1
                    datas.append(b"c%d" % self.counter)
                idxs = core.propose_many(datas) if len(datas) > 1 else [core.propose(datas[0])]
                for idx, data in zip(idxs or (), datas, strict=False):
                    if idx is not None:
                        self.nodes[i].proposals[idx] = data
        elif x < 0.33 and live:
            i = r.choice(live)
            core = self.nodes[i].core
            assert core is not None
            ctx = b"r%d" % self.counter
            self.counter += 1
            want = max(self.chosen, default=0)
            if core.read_index(ctx, forward=r.random() < 0.5):
                self.nodes[i].reads[ctx] = want
        elif x < 0.33 + self.crash_p and live:
            self.crash(r.choice(live))
        elif 0.4 <= x < 0.4 + self.restart_p:
            dead = [i for i in self.ids if i not in live]
            if dead:
                self._start(r.choice(dead))
        elif 0.6 <= x < 0.61:
            self.partition()
        elif 0.61 <= x < 0.63:
            self.groups = {}
        elif 0.63 <= x < 0.633 and live:
            i = r.choice(live)
            core = self.nodes[i].core
            assert core is not None
            core.transfer_leadership(r.choice(self.ids))
        elif 0.7 <= x < 0.7 + self.conf_p:
            self.change_membership()

    def change_membership(self) -> None:
        leaders = [c for c in (self.nodes[i].core for i in self.live())
                   if c is not None and c.role == Role.LEADER]
        if not leaders:
            return
        ld = self.rng.choice(leaders)
        outside = [i for i in self.ids if i not in ld.voters]
        if outside and (len(ld.voters) < 3 or self.rng.random() < 0.5):
            ld.propose_conf_change(ConfChange("add", self.rng.choice(outside)))
        elif len(ld.voters) >= 3:
            ld.propose_conf_change(ConfChange("remove", self.rng.choice(ld.voters)))

    def partition(self) -> None:
        r = self.rng
        kind = r.random()
        ids = list(self.ids)
        r.shuffle(ids)
        if kind < 0.4:  # isolate the leader (or someone)
            leaders = [i for i in self.live() if self.nodes[i].core.role == Role.LEADER]  # type: ignore[union-attr]
            lone = leaders[0] if leaders else ids[0]
            self.groups = {lone: 1}
        else:  # majority / minority split
            k = r.randint(1, (self.n - 1) // 2)
            self.groups = {i: 1 for i in ids[:k]}

    def step(self) -> None:
        self.now += 1
        self.deliver_due()
        for i in self.live():
            self.nodes[i].core.tick()  # type: ignore[union-attr]
        if self.chaos:
            self.random_event()
        for i in self.live():
            self.process(i)
        self.check_leaders()

    def final_voters(self) -> tuple[int, ...]:
        leaders = [c for c in (self.nodes[i].core for i in self.ids)
                   if c is not None and c.role == Role.LEADER]
        return leaders[0].voters if len(leaders) == 1 else ()

    def converged(self) -> bool:
        cores = [self.nodes[i].core for i in self.ids]
        if any(c is None for c in cores):
            return False
        leaders = [c for c in cores if c is not None and c.role == Role.LEADER]
        if len(leaders) != 1:
            return False
        ld = leaders[0]
        if ld.term_at(ld.commit) != ld.term or ld.pending_conf_index > ld.applied:
            return False
        return all(c is not None and c.applied == ld.last_index() and c.term == ld.term
                   and self.nodes[c.id].inflight is None and c.voters == ld.voters
                   for c in cores if c is not None and c.id in ld.voters)

    def run(self, chaos_steps: int = 120, heal_steps: int = 400) -> None:
        for _ in range(chaos_steps):
            self.step()
        self.check_log_matching()
        # heal: everyone up, network perfect, no more faults
        self.chaos = False
        self.groups = {}
        for i in self.ids:
            if self.nodes[i].core is None:
                self._start(i)
        for _ in range(heal_steps):
            self.step()
            if self.converged():
                break
        else:
            st = {i: self.nodes[i].core.status() for i in self.ids}  # type: ignore[union-attr]
            raise self.fail(f"no convergence after heal: {st}")
        self.check_log_matching()
        voters = self.final_voters()
        for i in voters:
            have = set(self.nodes[i].sm)
            missing = self.acked - have
            if missing:
                raise self.fail(f"acknowledged commands lost on node {i}: {sorted(missing)[:5]}")
        ref = self.nodes[voters[0]].sm
        for i in voters:
            if self.nodes[i].sm != ref:
                raise self.fail(f"state machines differ after heal on node {i}")


class Net:
    """A synchronous, lossless network for unit tests: ``stabilize()`` runs every node's Ready
    cycle (persist, send, apply, advance) and delivers messages until the cluster is quiet.
    ``cut``/``isolate`` drop traffic; ``dropped`` collects what was dropped."""

    def __init__(self, n: int = 3, seed: int = 0, **cfg: object) -> None:
        self.ids = tuple(range(1, n + 1))
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.storage = {i: Storage() for i in self.ids}
        self.cores: dict[int, RaftCore] = {}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.read_states: dict[int, list[tuple[int, bytes]]] = {i: [] for i in self.ids}
        self.sent: list[Message] = []
        self.dropped: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()
        self.held: list[Message] = []
        for i in self.ids:
            self.start(i)

    def config(self, i: int) -> CoreConfig:
        return CoreConfig(i, self.ids, **self.cfg)  # type: ignore[arg-type]

    def start(self, i: int) -> RaftCore:
        st = self.storage[i]
        self.cores[i] = RaftCore(self.config(i), st.hs, list(st.entries), st.snapshot,
                                 random.Random(self.rng.random()))
        return self.cores[i]

    def cut(self, a: int, b: int) -> None:
        self.blocked |= {(a, b), (b, a)}

    def isolate(self, a: int) -> None:
        for b in self.ids:
            if b != a:
                self.cut(a, b)

    def heal(self) -> None:
        self.blocked.clear()

    def process(self, i: int) -> list[Message]:
        core = self.cores[i]
        out: list[Message] = []
        while core.has_ready():
            rd = core.ready()
            snap = None if rd.snapshot is None else (b"",) * rd.snapshot.index
            self.storage[i].persist(rd, snap)
            out.extend(rd.messages)
            self.applied[i].extend(rd.committed)
            self.read_states[i].extend((r.index, r.context) for r in rd.read_states)
            core.advance(rd)
        return out

    def deliver(self, msgs: list[Message]) -> None:
        for m in msgs:
            self.sent.append(m)
            if (m.frm, m.to) in self.blocked or m.to not in self.cores:
                self.dropped.append(m)
                continue
            self.cores[m.to].step(m)
            if m.type == MsgType.SNAP:
                self.cores[m.frm].step(Message(MsgType.SNAP_STATUS, m.frm, m.to, 0))

    def stabilize(self, limit: int = 1000,
                  allow: Callable[[Message], bool] | None = None) -> None:
        """Deliver until quiet; messages ``allow`` refuses are kept in ``held``."""
        for _ in range(limit):
            msgs: list[Message] = []
            for i in self.ids:
                if i in self.cores:
                    msgs.extend(self.process(i))
            if allow is not None:
                self.held.extend(m for m in msgs if not allow(m))
                msgs = [m for m in msgs if allow(m)]
            if not msgs:
                return
            self.deliver(msgs)
        raise AssertionError("network did not settle")

    def tick(self, i: int, n: int = 1) -> None:
        for _ in range(n):
            self.cores[i].tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for i in self.ids:
                if i in self.cores:
                    self.cores[i].tick()
            self.stabilize()

    def elect(self, i: int) -> RaftCore:
        """Make ``i`` leader by letting its election timer fire first."""
        core = self.cores[i]
        for _ in range(3 * core.cfg.election_ticks):
            core.tick()
            self.stabilize()
            if core.role == Role.LEADER:
                return core
        raise AssertionError(f"node {i} did not become leader")

    def leader(self) -> RaftCore | None:
        ls = [c for c in self.cores.values() if c.role == Role.LEADER]
        return ls[0] if len(ls) == 1 else None
