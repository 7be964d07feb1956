"""The Raft consensus core: a pure, deterministic state machine (after etcd-io/raft).

Rules for this module:
- No I/O, no clock, no threads. Time is ``tick()``; randomness comes only from the injected
  ``random.Random``. Everything the runtime must do comes out of ``ready()``: persist
  ``snapshot`` (discarding the whole log) then ``hard_state`` and ``entries`` (overwriting from
  ``entries[0].index``), THEN send ``messages``, apply ``committed`` in order, serve
  ``read_states``, and call ``advance(ready)``.
- The log is a list with an offset: entry ``i`` lives at ``log[i - offset - 1]``; ``offset`` and
  ``offset_term`` are the last compacted (snapshot) index and term. No per-message O(log) work.
- An entry is committed only by a majority of voters and only if it is from the current term;
  ``match`` of a follower only grows from that follower's durable acknowledgement.
- A commit index moved by an APP_RESP is told to followers at the next ``ready()``: APPs
  already queued for a follower carry it, the others get one empty APP (one message per
  follower per Ready instead of one per acknowledgement).
"""

from __future__ import annotations

import random
from dataclasses import replace

from oba.raft.progress import Progress, ProgressState
from oba.raft.types import (
    ConfChange,
    CoreConfig,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    Status,
    encode_conf_change,
)

_TRANSFER = b"transfer"  # vote context: a leadership transfer may break the leader lease


class _Read:
    __slots__ = ("acks", "frm", "index")

    def __init__(self, index: int, frm: int, me: int) -> None:
        self.index = index
        self.frm = frm
        self.acks = {me}


class RaftCore:
    def __init__(
        self,
        config: CoreConfig,
        state: HardState,
        entries: list[Entry],
        snapshot: SnapshotMeta | None,
        rng: random.Random,
        applied: int | None = None,
    ) -> None:
        """``entries``: the persisted log after the snapshot; ``applied``: what the state
        machine already holds (default: the snapshot index). Voters come from ``config``."""
        self.cfg = config
        self.id = config.node_id
        self.voters: tuple[int, ...] = tuple(sorted(config.voters))
        self.rng = rng
        self.offset = snapshot.index if snapshot else 0
        self.offset_term = snapshot.term if snapshot else 0
        self.snapshot: SnapshotMeta | None = snapshot
        self.log: list[Entry] = list(entries)
        for k, e in enumerate(self.log):
            if e.index != self.offset + 1 + k:
                raise ValueError(f"log not contiguous at {e.index}")
        self.term = state.term
        self.vote = state.vote
        # the state machine applies only committed entries, so what it holds is committed
        # (the durable commit index may lag: a commit-only change is written lazily)
        self.commit = min(max(state.commit, self.offset, applied or 0), self.last_index())
        self.applied = self.offset if applied is None else max(min(applied, self.commit), 0)
        self.stable = self.last_index()
        self._prev_hs = state
        self._pending_snapshot: SnapshotMeta | None = None
        self.role = Role.FOLLOWER
        self.lead = 0
        self._role_changed = False
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self._ticks = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self._reset_randomized_timeout()
        self.votes: dict[int, bool] = {}
        self.prs: dict[int, Progress] = {}
        self.pending_conf_index = 0
        self.lead_transferee = 0
        self.reads: dict[bytes, _Read] = {}
        self._reads_waiting: list[tuple[bytes, int]] = []  # before a commit in this term
        self._commit_bcast = False  # the commit index moved: tell followers in ready()
        self._ignored_prevotes: dict[int, Message] = {}  # pre-votes the leader lease ignored

    # ----------------------------------------------------------------- log helpers
    def last_index(self) -> int:
        return self.offset + len(self.log)

    def last_term(self) -> int:
        return self.log[-1].term if self.log else self.offset_term

    def term_at(self, index: int) -> int | None:
        """The term of entry ``index``; None when compacted away or beyond the log."""
        if index == self.offset:
            return self.offset_term
        if index < self.offset or index > self.offset + len(self.log):
            return None
        return self.log[index - self.offset - 1].term

    def _slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries lo..hi inclusive (all inside the log)."""
        return self.log[lo - self.offset - 1 : hi - self.offset]

    def _quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def _find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term`` (as far as the log knows)."""
        while index > self.offset:
            t = self.term_at(index)
            if t is None or t <= term:
                break
            index -= 1
        return index

    # ----------------------------------------------------------------- public API
    def tick(self) -> None:
        self._ticks += 1
        if self.role == Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout and self._promotable():
            self.election_elapsed = 0
            self._campaign(pre=self.cfg.pre_vote)

    def propose(self, data: bytes) -> int | None:
        if self.role != Role.LEADER or self.lead_transferee:
            return None
        return self._append(EntryType.NORMAL, data)

    def propose_many(self, datas: list[bytes]) -> list[int] | None:
        """Leader: append several NORMAL entries, replicated in as few messages as possible."""
        if self.role != Role.LEADER or self.lead_transferee:
            return None
        first = self.last_index() + 1
        t = self.term
        self.log.extend(Entry(first + k, t, EntryType.NORMAL, d) for k, d in enumerate(datas))
        if datas:
            self._replicate_new()
        return list(range(first, first + len(datas)))

    def propose_conf_change(self, cc: ConfChange) -> int | None:
        """Leader: append a CONF_CHANGE entry; None if not leader or one is still pending."""
        if self.role != Role.LEADER or self.lead_transferee:
            return None
        if self.pending_conf_index > self.applied:
            return None
        if cc.op == "remove" and cc.node_id not in self.voters:
            return None
        if cc.op == "add" and cc.node_id in self.voters:
            return None
        if cc.op not in ("add", "remove"):
            return None
        index = self._append(EntryType.CONF_CHANGE, encode_conf_change(cc))
        self.pending_conf_index = index
        return index

    def read_index(self, ctx: bytes, forward: bool = False) -> bool:
        """Leader: start a ReadIndex round for ``ctx`` (a ReadState follows in a Ready).
        With ``forward=True`` a follower that knows the leader asks it instead."""
        if self.role != Role.LEADER:
            if forward and self.role == Role.FOLLOWER and self.lead:
                self._send(Message(MsgType.READ_INDEX, self.lead, self.id, self.term,
                                   context=ctx))
                return True
            return False
        self._handle_read_request(ctx, self.id)
        return True

    def transfer_leadership(self, to: int) -> bool:
        if self.role != Role.LEADER or to == self.id or to not in self.voters:
            return False
        if self.lead_transferee == to:
            return True
        self.lead_transferee = to
        self.election_elapsed = 0
        pr = self.prs[to]
        if pr.match == self.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, to, self.id, self.term))
        else:
            self._send_append(to)
        return True

    def leader_unreachable(self, peer: int) -> None:
        """Runtime: the connection to our leader ``peer`` broke (its process probably died).
        Forget it (so this node no longer protects its lease against pre-votes) and campaign
        after a short random delay (1..T/4 ticks) instead of a whole election timeout; two
        followers that start together are sorted out in the pre-vote (the lower one steps
        back). Safety does not depend on it: a live leader's next heartbeat restores all."""
        if self.role != Role.FOLLOWER or not peer or peer != self.lead:
            return
        self.lead = 0
        left = 1 + self.rng.randrange(max(1, self.cfg.election_ticks // 4))
        self.election_elapsed = max(self.election_elapsed, self.randomized_timeout - left)
        # a peer that noticed first already asked for a pre-vote, which the lease ignored:
        # answer it now, or its campaign waits out a whole election timeout
        ignored, self._ignored_prevotes = self._ignored_prevotes, {}
        for m in ignored.values():
            self.step(m)

    @property
    def pending_snapshot(self) -> SnapshotMeta | None:
        """A received snapshot that a Ready hands (or handed) to the runtime to install."""
        return self._pending_snapshot

    def has_ready(self) -> bool:
        return bool(
            self.msgs
            or self.read_states
            or self._pending_snapshot is not None
            or self.stable < self.last_index()
            or self._committed_start() <= self.commit
            or self._hard_state() != self._prev_hs
            or self._role_changed
            or self._commit_bcast
        )

    def ready(self) -> Ready:
        if self._commit_bcast:
            self._bcast_commit()
        rd = Ready()
        hs = self._hard_state()
        if hs != self._prev_hs:
            rd.hard_state = hs
        if self.stable < self.last_index():
            rd.entries = self.log[self.stable - self.offset :]
        rd.snapshot = self._pending_snapshot
        start = self._committed_start()
        if start <= self.commit:
            rd.committed = self._slice(start, self.commit)
        rd.messages, self.msgs = self.msgs, []
        rd.read_states, self.read_states = self.read_states, []
        rd.role_changed, self._role_changed = self._role_changed, False
        return rd

    def advance(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            if self._pending_snapshot == rd.snapshot:
                self._pending_snapshot = None
            self.stable = max(self.stable, rd.snapshot.index)
            self.applied = max(self.applied, rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            if self.term_at(last.index) == last.term:
                self.stable = max(self.stable, last.index)
        if rd.committed:
            self.applied = max(self.applied, rd.committed[-1].index)

    def compact(self, index: int, term: int, conf: tuple[int, ...],
                addrs: tuple[tuple[int, str], ...] = ()) -> None:
        """The runtime took a snapshot of its state at ``index`` (<= applied): drop the log
        prefix up to it; later lagging followers get this snapshot."""
        if index <= self.offset:
            return
        if index > self.applied or index > self.stable:
            raise ValueError(f"compact {index} beyond applied {self.applied}/{self.stable}")
        if self.term_at(index) != term:
            raise ValueError(f"compact {index}: term {term} != {self.term_at(index)}")
        del self.log[: index - self.offset]
        self.offset = index
        self.offset_term = term
        self.snapshot = SnapshotMeta(index, term, tuple(conf), tuple(addrs))
        # SNAP messages not yet handed out must name the snapshot the runtime now holds
        for k, m in enumerate(self.msgs):
            if m.type == MsgType.SNAP:
                self.msgs[k] = replace(m, snapshot=self.snapshot)
                pr = self.prs.get(m.to)
                if pr is not None and pr.state == ProgressState.SNAPSHOT:
                    pr.pending_snapshot = index

    def apply_conf_change(self, cc: ConfChange) -> None:
        if cc.op == "add":
            if cc.node_id not in self.voters:
                self.voters = tuple(sorted((*self.voters, cc.node_id)))
                if self.role == Role.LEADER:
                    self.prs[cc.node_id] = Progress(
                        self.last_index() + 1, self.cfg.max_inflight, self._ticks)
        elif cc.op == "remove":
            if cc.node_id in self.voters:
                self.voters = tuple(v for v in self.voters if v != cc.node_id)
                self.prs.pop(cc.node_id, None)
                if cc.node_id == self.lead_transferee:
                    self.lead_transferee = 0
        if self.id not in self.voters and self.role != Role.FOLLOWER:
            self._become_follower(self.term, 0)
        elif self.role == Role.LEADER and self._maybe_commit():
            self._bcast_append()

    def status(self) -> Status:
        prs = {p: (pr.match, pr.next) for p, pr in self.prs.items() if p != self.id}
        return Status(self.id, self.role, self.term, self.lead, self.commit, self.applied,
                      self.last_index(), self.voters, prs)

    # ----------------------------------------------------------------- step
    def step(self, m: Message) -> None:
        if m.type in (MsgType.SNAP_STATUS, MsgType.UNREACHABLE):
            if self.role == Role.LEADER:
                self._step_local(m)
            return
        if m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                force = m.context == _TRANSFER
                in_lease = (self.cfg.check_quorum and self.lead != 0
                            and self.election_elapsed < self.cfg.election_ticks)
                if in_lease and not force:
                    if m.type == MsgType.PRE_VOTE:  # answered if the leader turns out dead
                        self._ignored_prevotes[m.frm] = m
                    return  # a leader is alive: ignore the disruptive (pre)vote
            if m.type == MsgType.PRE_VOTE:
                pass  # never change term on a pre-vote
            elif m.type == MsgType.PRE_VOTE_RESP and not m.reject:
                pass  # a granted pre-vote carries the term we would campaign at
            elif m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, 0)
        elif m.term < self.term:
            if m.type in (MsgType.APP, MsgType.HEARTBEAT) and (
                    self.cfg.check_quorum or self.cfg.pre_vote):
                # tell the stale leader our term so it steps down
                self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term))
            elif m.type == MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, m.frm, self.id, self.term,
                                   reject=True))
            return

        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == MsgType.PRE_VOTE
        resp = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        can_vote = (self.vote == m.frm or (self.vote == 0 and self.lead == 0)
                    or (pre and m.term > self.term))
        up_to_date = (m.log_term > self.last_term()
                      or (m.log_term == self.last_term() and m.index >= self.last_index()))
        if can_vote and up_to_date:
            self._send(Message(resp, m.frm, self.id, m.term))
            if not pre:
                self.election_elapsed = 0
                self.vote = m.frm
            elif self.role == Role.PRE_CANDIDATE and (
                    m.log_term, m.index, m.frm) > (self.last_term(), self.last_index(), self.id):
                # two followers that lost the leader at the same moment would both win their
                # pre-votes and split the real vote (another election timeout): the one with
                # the older log, or the lower id, steps back and lets the other one run
                self._become_follower(self.term, 0)
        else:
            self._send(Message(resp, m.frm, self.id, self.term, reject=True))

    # ----------------------------------------------------------------- follower side
    def _step_follower(self, m: Message) -> None:
        if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self._ignored_prevotes.clear()  # the leader is alive: they stay ignored
        if m.type == MsgType.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif m.type == MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif m.type == MsgType.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif m.type == MsgType.TIMEOUT_NOW:
            if self._promotable():
                self._campaign(pre=False, transfer=True)
        elif m.type == MsgType.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        elif m.type == MsgType.READ_INDEX and self.lead:
            self._send(Message(MsgType.READ_INDEX, self.lead, m.frm, self.term,
                               context=m.context))

    def _step_candidate(self, m: Message) -> None:
        if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
            return
        want = MsgType.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if m.type != want:
            return
        self.votes.setdefault(m.frm, not m.reject)
        granted = sum(1 for v in self.votes.values() if v)
        rejected = len(self.votes) - granted
        if granted >= self._quorum():
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre=False)
            else:
                self._become_leader()
        elif len(self.voters) - rejected < self._quorum():
            self._become_follower(self.term, 0)

    def _handle_append(self, m: Message) -> None:
        if m.index < self.commit:
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=self.commit))
            return
        if self.term_at(m.index) != m.log_term:
            hint = self._find_conflict_by_term(min(m.index, self.last_index()), m.log_term)
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=m.index,
                               reject=True, reject_hint=hint,
                               log_term=self.term_at(hint) or 0))
            return
        last_new = m.index + len(m.entries)
        ents = m.entries
        conflict = 0
        for e in ents:
            if e.index <= self.offset:
                continue
            if self.term_at(e.index) != e.term:
                conflict = e.index
                break
        if conflict:
            if conflict <= self.commit:
                raise AssertionError(f"conflict {conflict} below commit {self.commit}")
            self._truncate_and_append(list(ents[conflict - ents[0].index :]))
        self._commit_to(min(m.commit, last_new))
        self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=last_new))

    def _truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after != self.last_index() + 1:
            del self.log[after - self.offset - 1 :]
            self.stable = min(self.stable, after - 1)
        self.log.extend(ents)

    def _handle_heartbeat(self, m: Message) -> None:
        self._commit_to(m.commit)
        self._send(Message(MsgType.HEARTBEAT_RESP, m.frm, self.id, self.term,
                           context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        if snap.index <= self.commit:
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=self.commit))
            return
        if self.term_at(snap.index) == snap.term:
            self._commit_to(snap.index)
            self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=self.commit))
            return
        self.log = []
        self.offset = snap.index
        self.offset_term = snap.term
        self.snapshot = snap
        self._pending_snapshot = snap
        self.stable = snap.index
        self.commit = snap.index
        self.voters = tuple(sorted(snap.voters))
        self._send(Message(MsgType.APP_RESP, m.frm, self.id, self.term, index=snap.index))

    def _commit_to(self, index: int) -> None:
        index = min(index, self.last_index())
        if index > self.commit:
            self.commit = index

    # ----------------------------------------------------------------- leader side
    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.cfg.check_quorum:
            horizon = self._ticks - self.cfg.election_ticks
            active = sum(1 for v in self.voters
                         if v == self.id or (v in self.prs and self.prs[v].last_heard > horizon))
            if active < self._quorum():
                self._become_follower(self.term, 0)
                return
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            self.lead_transferee = 0  # a transfer that did not finish in time is abandoned
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            ctx = next(reversed(self.reads)) if self.reads else b""
            self._bcast_heartbeat(ctx)

    def _step_local(self, m: Message) -> None:
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if m.type == MsgType.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = True  # wait for the next heartbeat response before retrying
        elif m.type == MsgType.UNREACHABLE and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def _step_leader(self, m: Message) -> None:
        if m.type == MsgType.READ_INDEX:
            self._handle_read_request(m.context, m.frm)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        pr.last_heard = self._ticks
        if m.type == MsgType.APP_RESP:
            self._handle_append_resp(m, pr)
        elif m.type == MsgType.HEARTBEAT_RESP:
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.paused() and pr.inflight:
                pr.inflight.popleft()
            if pr.match < self.last_index() or pr.state == ProgressState.PROBE:
                self._send_append(m.frm)
            if m.context and m.context in self.reads:
                self._ack_read(m.context, m.frm)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            probe = m.reject_hint
            if m.log_term > 0:
                probe = self._find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease(m.index, probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.paused()
        if not pr.maybe_update(m.index):
            if pr.state == ProgressState.PROBE and pr.match == m.index:
                pr.become_replicate()  # a probe confirmed a follower that is up to date
                self._send_append(m.frm, empty=False)
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            self._commit_bcast = True  # told in ready(), riding on the APPs queued by then
        elif was_paused:
            self._send_append(m.frm)
        while pr.state == ProgressState.REPLICATE and self._send_append(m.frm, empty=False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.last_index():
            self._send(Message(MsgType.TIMEOUT_NOW, m.frm, self.id, self.term))

    def _maybe_commit(self) -> bool:
        matches = sorted(
            (self.last_index() if v == self.id else (self.prs[v].match if v in self.prs else 0)
             for v in self.voters),
            reverse=True)
        if not matches:
            return False
        index = matches[self._quorum() - 1]
        if index > self.commit and self.term_at(index) == self.term:
            self.commit = index
            self._on_commit_in_term()
            return True
        return False

    def _append(self, etype: EntryType, data: bytes) -> int:
        index = self.last_index() + 1
        self.log.append(Entry(index, self.term, etype, data))
        self._replicate_new()
        return index

    def _replicate_new(self) -> None:
        if self._maybe_commit():  # a one-voter cluster commits at once
            self._bcast_append()
        else:
            self._bcast_append(empty=False)

    def _send_append(self, to: int, empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.paused():
            return False
        prev = pr.next - 1
        prev_term = self.term_at(prev)
        last = self.last_index()
        if prev_term is None and prev <= self.offset:
            snap = self.snapshot
            if snap is None:
                return False
            pr.become_snapshot(snap.index)
            self._send(Message(MsgType.SNAP, to, self.id, self.term, snapshot=snap))
            return True
        if prev_term is None:  # next beyond our log (stale progress): restart probing
            pr.next = last + 1
            prev = last
            prev_term = self.last_term()
        hi = min(last, prev + self.cfg.max_entries_per_msg)
        ents = tuple(self._slice(prev + 1, hi)) if hi > prev else ()
        if not ents and not empty:
            return False
        self._send(Message(MsgType.APP, to, self.id, self.term, log_term=prev_term, index=prev,
                           entries=ents, commit=self.commit))
        pr.sent(hi, len(ents))
        return True

    def _bcast_commit(self) -> None:
        """Tell every follower the new commit index: APPs already queued for it carry the
        current one (a follower commits at most up to the entries it matched), the others get
        an empty APP."""
        self._commit_bcast = False
        if self.role != Role.LEADER:
            return
        queued: set[int] = set()
        for k, m in enumerate(self.msgs):
            if m.type == MsgType.APP and m.term == self.term:
                queued.add(m.to)
                if m.commit < self.commit:
                    self.msgs[k] = replace(m, commit=self.commit)
        for p in self.prs:
            if p != self.id and p not in queued:
                self._send_append(p)

    def _bcast_append(self, empty: bool = True) -> None:
        for p in self.prs:
            if p != self.id:
                self._send_append(p, empty)

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        for p, pr in self.prs.items():
            if p != self.id:
                self._send(Message(MsgType.HEARTBEAT, p, self.id, self.term,
                                   commit=min(pr.match, self.commit), context=ctx))

    # ----------------------------------------------------------------- ReadIndex
    def _handle_read_request(self, ctx: bytes, frm: int) -> None:
        if self.term_at(self.commit) != self.term:
            self._reads_waiting.append((ctx, frm))
            return
        if len(self.voters) == 1:
            self._release_read(ctx, _Read(self.commit, frm, self.id))
            return
        if ctx in self.reads:
            return
        self.reads[ctx] = _Read(self.commit, frm, self.id)
        self._bcast_heartbeat(ctx)

    def _on_commit_in_term(self) -> None:
        if self._reads_waiting:
            waiting, self._reads_waiting = self._reads_waiting, []
            for ctx, frm in waiting:
                self._handle_read_request(ctx, frm)

    def _ack_read(self, ctx: bytes, frm: int) -> None:
        rd = self.reads[ctx]
        rd.acks.add(frm)
        if sum(1 for v in self.voters if v in rd.acks) < self._quorum():
            return
        while self.reads:  # everything queued up to ctx was confirmed by this round
            k = next(iter(self.reads))
            r = self.reads.pop(k)
            self._release_read(k, r)
            if k == ctx:
                break

    def _release_read(self, ctx: bytes, r: _Read) -> None:
        if r.frm == self.id:
            self.read_states.append(ReadState(r.index, ctx))
        else:
            self._send(Message(MsgType.READ_INDEX_RESP, r.frm, self.id, self.term,
                               index=r.index, context=ctx))

    # ----------------------------------------------------------------- role changes
    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def _committed_start(self) -> int:
        base = self.applied
        if self._pending_snapshot is not None:
            base = max(base, self._pending_snapshot.index)
        return base + 1

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _reset_randomized_timeout(self) -> None:
        t = self.cfg.election_ticks
        self.randomized_timeout = t + self.rng.randrange(t)

    def _promotable(self) -> bool:
        if self.id not in self.voters or self._pending_snapshot is not None:
            return False
        if self.commit > self.applied:  # an unapplied conf change would change the quorum
            start = max(self.applied + 1, self.offset + 1)
            if any(e.type == EntryType.CONF_CHANGE for e in self._slice(start, self.commit)):
                return False
        return True

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = 0
        self.lead = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.prs = {}
        self.lead_transferee = 0
        self.reads = {}
        self._reads_waiting = []
        self._ignored_prevotes = {}

    def _set_role(self, role: Role) -> None:
        if role != self.role:
            self._role_changed = True
        self.role = role

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self._set_role(Role.FOLLOWER)

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self._reset(self.term)
            self._set_role(Role.PRE_CANDIDATE)
            term, mtype = self.term + 1, MsgType.PRE_VOTE
        else:
            self._reset(self.term + 1)
            self.vote = self.id
            self._set_role(Role.CANDIDATE)
            term, mtype = self.term, MsgType.VOTE
        self.votes[self.id] = True
        if len(self.voters) == 1 or self._quorum() == 1:
            if pre:
                self._campaign(pre=False)
            else:
                self._become_leader()
            return
        ctx = _TRANSFER if transfer else b""
        for v in self.voters:
            if v != self.id:
                self._send(Message(mtype, v, self.id, term, log_term=self.last_term(),
                                   index=self.last_index(), context=ctx))

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self._set_role(Role.LEADER)
        nxt = self.last_index() + 1
        for v in (*self.voters, self.id):
            self.prs[v] = Progress(nxt, self.cfg.max_inflight, self._ticks)
        self.prs[self.id].match = self.last_index()
        self._append(EntryType.NORMAL, b"")
        # no membership change before this term's no-op is applied (single-server change rule)
        self.pending_conf_index = self.last_index()
