"""The Raft runtime: drives ``RaftCore`` with a real clock, the durable log and the transport.

Rules for this module:
- Only the event loop touches the core. One task (``_run``) turns each ``Ready`` into I/O in the
  etcd order: install a received snapshot, persist snapshot meta + hard state + entries in ONE
  fsynced LMDB transaction (in a worker thread, never on the loop), THEN send the messages,
  hand the committed entries to the state machine (in order), serve read states, ``advance``.
  Everything that queued up while a Ready was being persisted goes into the next one (batching).
- Batching: ``propose`` only queues; ``_run`` hands every queued proposal to the core in one
  ``propose_many`` (one APP per follower for the lot). A proposal that timed out while queued
  is dropped, never appended.
- Two shortcuts that keep the rules above: committed entries BELOW the Ready's new entries are
  already in the durable log, so they go to the state machine before the fsync (apply overlaps
  it; CONF_CHANGE entries keep the normal order); a Ready whose only change is the commit index
  writes nothing (commitIndex need not be durable: a restarted node learns it from the leader,
  and the store skips what it already applied); the newer hard state rides on the next write
  and is written at ``stop``.
- Failover: when the Raft connection to the leader breaks (its process died), a follower
  campaigns after 1..T/4 ticks (``RaftCore.leader_unreachable``) instead of a full election
  timeout; a hung leader (no broken connection) is still detected by the timeout.
- Clock: one tick every ``heartbeatTimeout / HEARTBEAT_TICKS`` (10 ms for the default 50 ms);
  the election timeout is ``electionTimeout / tick`` ticks (15 for 150 ms), randomised by the
  core in [T, 2T), so 150 ms and 50 ms from the config are honoured to within one tick.
- Proposals resolve when their entry is applied locally (with the ApplyResult), fail with
  ``ProposalDropped`` when another entry is applied at their index, ``TimeoutError`` after the
  caller's bound, ``NotLeader`` at once on a follower.
- ``read_barrier`` (leader only): concurrent callers share one ReadIndex round, then wait for
  ``applied >= read index``.
- Snapshots: the state machine takes them (``SnapshotStore.create`` in its writer thread) and
  reports ``on_snapshot_taken``; the log prefix is then compacted. The core's SNAP messages are
  answered by streaming the snapshot file; a received one is installed before its Ready is
  persisted (store first, log after: a crash in between re-applies nothing, see replicator).
- Log lines (logger ``oba.raft``): ``entry committed index=… term=…``, leader changes,
  elections (role changes), snapshots.
- Membership (voters + Raft addresses) is durable: snapshot meta carries it, every applied
  CONF_CHANGE is recorded in the log env (``RaftLog.set_membership``), and on start the newest
  of the two (plus CONF_CHANGE entries already applied) wins over ``cluster.peers``. A node that
  is not a voter of its own membership is ``removed``: it never campaigns. The leader tells a
  node it removed (request ``{"op": "removed"}``) before dropping its connection.
- Events (leader/term/membership changes, snapshots taken/installed, removal) go to the log and
  to ``on_event(level, message, fields)`` when set (the runtime feeds the audit trail).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from oba.raft.core import RaftCore
from oba.raft.log import RaftLog
from oba.raft.snapshot import SnapshotStore
from oba.raft.transport import Blocking, Frame, LinkTiming, Network, Transport
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
    Status,
    decode_conf_change,
    from_wire,
    to_wire,
)

log = logging.getLogger("oba.raft")

HEARTBEAT_TICKS = 5


class NotLeader(Exception):
    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(Exception):
    """Another entry was committed at the proposal's index (leadership changed)."""


class StateMachine(Protocol):
    def applied_index(self) -> int: ...

    def apply_entries(self, entries: list[Entry]) -> None:
        """Queue committed entries; results come back through ``RaftNode.on_applied``."""

    async def install_snapshot(self, meta: SnapshotMeta, data_file: Path) -> None: ...


RequestHandler = Callable[[int, Frame], Awaitable[Frame]]
EventHook = Callable[[str, str, dict[str, Any]], None]


def _apply_members(members: dict[int, str], cc: ConfChange) -> dict[int, str]:
    out = dict(members)
    if cc.op == "add":
        out[cc.node_id] = cc.addr or out.get(cc.node_id, "")
    else:
        out.pop(cc.node_id, None)
    return out


class _Queued:
    """A proposal waiting for the next batch: its data, its future, its index once appended."""

    __slots__ = ("data", "fut", "index")

    def __init__(self, data: bytes, fut: asyncio.Future[Any]) -> None:
        self.data = data
        self.fut = fut
        self.index = 0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: int
    raft_addr: str
    peers: dict[int, str]  # every member, this node included
    data_dir: Path
    election_timeout: float = 0.150
    heartbeat_timeout: float = 0.050
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None
    network: Network | None = None  # None: TCP (the simulation passes its own)
    # runs blocking I/O (log fsyncs, snapshot copies) off the loop; None: asyncio.to_thread
    # (the deterministic simulation runs it inline, after a simulated delay)
    run_blocking: Blocking | None = None

    @property
    def link_timing(self) -> LinkTiming:
        return LinkTiming.for_raft(self.heartbeat_timeout, self.election_timeout)

    @property
    def tick(self) -> float:
        return self.heartbeat_timeout / HEARTBEAT_TICKS

    @property
    def election_ticks(self) -> int:
        return max(HEARTBEAT_TICKS + 1, round(self.election_timeout / self.tick))


class RaftNode:
    def __init__(self, cfg: NodeConfig, sm: StateMachine, rng: random.Random | None = None
                 ) -> None:
        self.cfg = cfg
        self.id = cfg.node_id
        self.sm = sm
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = RaftLog(cfg.data_dir / "log")
        self.snapshots = SnapshotStore(cfg.data_dir / "snapshots")
        self.applied = sm.applied_index()
        self._reconcile_snapshot(self.applied)
        hs, entries, snap = self.log.load()
        self.snapshots.protect = snap.index if snap is not None else 0
        m_index, members = self._load_membership(snap, entries, self.applied)
        voters = tuple(sorted(members))
        core_cfg = CoreConfig(node_id=cfg.node_id, voters=voters,
                              election_ticks=cfg.election_ticks, heartbeat_ticks=HEARTBEAT_TICKS)
        self.core = RaftCore(core_cfg, hs, entries, snap, rng or random.Random(),
                             applied=self.applied)
        self.peers = dict(members)
        self._history: list[tuple[int, dict[int, str]]] = [(m_index, dict(members))]
        self.on_event: EventHook | None = None
        self._term = hs.term
        self._durable_hs = hs  # the hard state last written to the log
        self._pending_hs: HardState | None = None  # a newer one that only moved the commit
        self._blocking: Blocking = cfg.run_blocking or asyncio.to_thread
        self.transport = Transport(
            cfg.node_id, cfg.raft_addr, self.peers,
            on_message=self._on_message, on_request=self._on_request,
            on_snapshot=self._on_snapshot, snapshot_dir=self.snapshots.incoming,
            server_ssl=cfg.server_ssl, client_ssl=cfg.client_ssl,
            on_unreachable=self._on_unreachable, on_lost=self._on_lost,
            timing=cfg.link_timing, network=cfg.network, run_blocking=self._blocking)
        self.request_handlers: dict[str, RequestHandler] = {"removed": self._serve_removed}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._side: set[asyncio.Task[None]] = set()
        self._proposals: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._propose_queue: list[_Queued] = []  # proposals not yet handed to the core
        self._apply_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._read_queue: list[asyncio.Future[int]] = []
        self._reads: dict[bytes, list[asyncio.Future[int]]] = {}
        self._read_ids = itertools.count(1)
        self._received: dict[int, Path] = {}
        self._snap_names = itertools.count(1)
        self._compact: SnapshotMeta | None = None
        self._leader = 0
        self._leader_changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed: BaseException | None = None
        # called once when the Raft loop dies: a node that no longer replicates must not go
        # on serving (the runtime stops the process so that a supervisor restarts it)
        self.on_fatal: Callable[[BaseException], None] | None = None

    def _reconcile_snapshot(self, applied: int) -> None:
        """Bring the log up to the newest local snapshot the state machine already holds.

        Two crash windows leave the log behind the snapshot store: after this node took a
        snapshot and before the log was compacted to it, and after a received snapshot was
        installed into the state machine and before its meta reached the log. In the second
        the log still holds an old, never committed suffix at the snapshot's index; trusting
        it would leave the node rejecting every append there."""
        latest = self.snapshots.latest()
        logged = self.log.snapshot()
        if latest is None:
            return
        meta = latest[0]
        if (logged is not None and meta.index <= logged.index) or meta.index > applied:
            return  # nothing newer, or the state machine does not hold it: the leader resends
        entry = self.log.entry(meta.index)
        if entry is not None and entry.term == meta.term:
            self.log.compact(meta.index, meta.term, meta.voters, meta.addrs)
            how = "log compacted to it"
        else:
            self.log.save(snapshot=meta)  # the suffix is not the committed history: drop it
            how = "log replaced by it"
        log.info("snapshot index=%d term=%d is newer than the log: %s", meta.index, meta.term,
                 how)

    def _load_membership(self, snap: SnapshotMeta | None, entries: list[Entry], applied: int
                         ) -> tuple[int, dict[int, str]]:
        """The committed membership this node had applied: the newest of the snapshot meta and
        the recorded one, then the CONF_CHANGE entries up to ``applied``; else cluster.peers."""
        index, members = 0, dict(self.cfg.peers)
        if snap is not None:
            addrs = dict(snap.addrs)
            index = snap.index
            members = {v: addrs.get(v) or self.cfg.peers.get(v, "") for v in snap.voters}
        rec = self.log.membership()
        if rec is not None and rec[0] > index:
            index, members = rec
        for e in entries:
            if e.type == EntryType.CONF_CHANGE and index < e.index <= applied:
                members = _apply_members(members, decode_conf_change(e.data))
                index = e.index
        if index and members != dict(self.cfg.peers):
            log.info("using the committed membership %s (index %d), not cluster.peers",
                     sorted(members), index)
        return index, self._local_view(members)

    def _local_view(self, members: dict[int, str]) -> dict[int, str]:
        """``members`` with this node's own ``cluster.peers`` address for every peer listed
        there: each node dials a peer where ITS configuration says (a sidecar, a NAT, a proxy
        per link); the replicated address serves peers added later."""
        return {pid: self.cfg.peers.get(pid) or addr for pid, addr in members.items()}

    def membership_at(self, index: int) -> dict[int, str]:
        """Voters and addresses in force after applying entry ``index`` (safe from threads)."""
        hist = self._history
        for at, members in reversed(hist):
            if at <= index:
                return dict(members)
        return dict(hist[0][1])

    @property
    def removed(self) -> bool:
        return self.id not in self.core.voters

    def _event(self, level: str, message: str, **fields: Any) -> None:
        hook = self.on_event
        if hook is not None:
            try:
                hook(level, message, fields)
            except Exception:  # an event sink must never break the Raft loop
                log.exception("raft event hook failed")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.transport.start()
        self._tasks = [asyncio.ensure_future(self._ticker()), asyncio.ensure_future(self._run())]
        log.info("raft node %d listening on %s (peers %s, tick %.0f ms, election %d ticks)",
                 self.id, self.cfg.raft_addr, self.peers, self.cfg.tick * 1000,
                 self.cfg.election_ticks)

    async def stop(self) -> None:
        for task in [*self._tasks, *self._side]:
            task.cancel()
        for task in [*self._tasks, *self._side]:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        await self.transport.stop()
        self._fail_all(NotLeader(0))
        if self._pending_hs is not None:
            self.log.set_hard_state(self._pending_hs)
            self._pending_hs = None
        self.log.close()

    # ------------------------------------------------------------------ queries

    def status(self) -> Status:
        return self.core.status()

    def is_leader(self) -> bool:
        return self.core.role == Role.LEADER

    def leader_id(self) -> int:
        return self.core.lead

    async def wait_leader_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._leader_changed.wait(), timeout)

    # ------------------------------------------------------------------ client API

    async def propose(self, data: bytes, timeout: float) -> tuple[int, Any]:
        """Append ``data`` (leader only) and wait until it is applied: (index, result)."""
        core = self.core
        if core.role != Role.LEADER or core.lead_transferee:
            raise NotLeader(core.lead)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queued = _Queued(data, fut)
        self._propose_queue.append(queued)
        self._wake.set()
        try:
            result = await asyncio.wait_for(fut, timeout)
            return queued.index, result  # the index is known only once the batch went in
        finally:
            if not queued.index:  # still queued (timed out or cancelled): never append it
                with contextlib.suppress(ValueError):
                    self._propose_queue.remove(queued)
            current = self._proposals.get(queued.index)
            if current is not None and current[1] is fut:
                del self._proposals[queued.index]

    def _flush_proposals(self) -> None:
        """Append every queued proposal in one batch (one APP message per follower)."""
        if not self._propose_queue:
            return
        batch, self._propose_queue = self._propose_queue, []
        batch = [q for q in batch if not q.fut.done()]
        if not batch:
            return
        indexes = self.core.propose_many([q.data for q in batch])
        if indexes is None:
            err = NotLeader(self.core.lead)
            for q in batch:
                q.fut.set_exception(err)
            return
        term = self.core.term
        for q, index in zip(batch, indexes, strict=True):
            q.index = index
            self._proposals[index] = (term, q.fut)

    async def propose_conf_change(self, cc: ConfChange, timeout: float) -> int:
        """Leader: append a membership change and wait until it is applied; its index.
        ValueError when refused (already/not a member, another change still pending)."""
        if not self.is_leader():
            raise NotLeader(self.core.lead)
        index = self.core.propose_conf_change(cc)
        if index is None:
            if self.core.lead_transferee:
                raise NotLeader(0)
            raise ValueError("membership change refused: the node is already (or not) a "
                             "member, or another change is still in progress")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals[index] = (self.core.term, fut)
        self._wake.set()
        try:
            await asyncio.wait_for(fut, timeout)
            return index
        finally:
            current = self._proposals.get(index)
            if current is not None and current[1] is fut:
                del self._proposals[index]

    def best_transferee(self) -> int:
        """Leader: the voter (not this node) with the highest match index, connected first."""
        cands = [v for v in self.core.voters if v != self.id]
        if not cands:
            return 0
        prs = self.core.prs

        def key(v: int) -> tuple[bool, int]:
            pr = prs.get(v)
            return self.transport.connected(v), pr.match if pr is not None else -1

        return max(cands, key=key)

    async def transfer_leadership(self, to: int, timeout: float) -> int:
        """Leader: hand leadership to ``to`` (0: the most up-to-date follower) with
        TIMEOUT_NOW; returns the new leader's id once known. TimeoutError after ``timeout``."""
        if not self.is_leader():
            raise NotLeader(self.core.lead)
        to = to or self.best_transferee()
        if not to or not self.core.transfer_leadership(to):
            raise ValueError(f"cannot transfer leadership to node {to}: not a voter")
        log.info("leadership transfer from node %d to node %d started", self.id, to)
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            lead = self.core.lead
            if lead and lead != self.id:
                return lead
            if self.is_leader() and not self.core.lead_transferee:
                # abandoned by the core after an election timeout: try again
                self.core.transfer_leadership(to)
                self._wake.set()
            await self.wait_leader_change(min(left, 0.05))
        raise TimeoutError(f"leadership did not move to node {to} in {timeout:.1f}s")

    async def wait_applied(self, index: int, timeout: float) -> bool:
        if self.applied >= index:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._apply_waiters.append((index, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False

    async def read_barrier(self, timeout: float = 5.0) -> None:
        """Linearizable read point (leader): returns once this node has applied everything
        committed before the call. Raises NotLeader or TimeoutError."""
        if not self.is_leader():
            raise NotLeader(self.core.lead)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_queue.append(fut)
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        index = await asyncio.wait_for(fut, timeout)
        if not await self.wait_applied(index, max(0.0, deadline - loop.time())):
            raise TimeoutError("read barrier: apply did not catch up")

    # ------------------------------------------------------------------ state machine side

    def on_applied(self, results: list[tuple[int, int, Any]]) -> None:
        """(index, term, result) of applied entries, in order (called on the loop)."""
        for index, term, result in results:
            p = self._proposals.pop(index, None)
            if p is not None and not p[1].done():
                if p[0] == term:
                    p[1].set_result(result)
                else:
                    p[1].set_exception(ProposalDropped(f"entry {index} was overwritten"))
            self.applied = max(self.applied, index)
        self._release_apply_waiters()

    def set_applied(self, index: int) -> None:
        self.applied = max(self.applied, index)
        self._release_apply_waiters()

    def _release_apply_waiters(self) -> None:
        if not self._apply_waiters:
            return
        keep = []
        for index, fut in self._apply_waiters:
            if fut.done():
                continue
            if index <= self.applied:
                fut.set_result(None)
            else:
                keep.append((index, fut))
        self._apply_waiters = keep

    def on_snapshot_taken(self, meta: SnapshotMeta) -> None:
        """The state machine wrote snapshot ``meta`` (called on the loop)."""
        self._compact = meta
        self._wake.set()

    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the node's loop (safe from any thread)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    # ------------------------------------------------------------------ transport callbacks

    def _on_message(self, frm: int, frame: Frame) -> None:
        msg = from_wire(frame["m"])
        if msg.to != self.id or msg.type in (MsgType.SNAP_STATUS, MsgType.UNREACHABLE):
            return
        self.core.step(msg)
        self._wake.set()

    def _on_unreachable(self, peer: int) -> None:
        if self.is_leader():
            self.core.step(Message(MsgType.UNREACHABLE, self.id, peer, self.core.term))
            self._wake.set()

    def _on_lost(self, peer: int) -> None:
        if not self.is_leader() and peer and peer == self.core.lead:
            log.info("connection to leader %d lost: campaigning soon", peer)
            self.core.leader_unreachable(peer)
            self._wake.set()

    async def _on_request(self, frm: int, body: Frame) -> Frame:
        handler = self.request_handlers.get(str(body.get("op")))
        if handler is None:
            return {"err": "unknown request"}
        return await handler(frm, body)

    async def _on_snapshot(self, frm: int, meta: Frame, path: Path) -> bool:
        msg = from_wire(meta)
        if msg.type != MsgType.SNAP or msg.snapshot is None or msg.to != self.id:
            return False
        index = msg.snapshot.index
        # a unique name: a copy of the same snapshot sent again must never replace the file
        # an install is reading
        kept = path.with_name(f"snap-{index}-{next(self._snap_names)}.mdb")
        os.replace(path, kept)
        old = self._received.pop(index, None)
        if old is not None:
            old.unlink(missing_ok=True)
        self._received[index] = kept
        log.info("snapshot index=%d term=%d received from node %d", index,
                 msg.snapshot.term, frm)
        self.core.step(msg)
        pending = self.core.pending_snapshot
        if pending is None or pending.index != index:
            # not taken (this node already has that index): keep no orphan file
            if self._received.get(index) == kept:
                del self._received[index]
            kept.unlink(missing_ok=True)
        self._wake.set()
        return True

    # ------------------------------------------------------------------ the loop

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.cfg.tick
        nxt = loop.time()
        while True:
            nxt += tick
            await asyncio.sleep(max(0.0, nxt - loop.time()))
            if loop.time() - nxt > 10 * tick:  # we were stalled (SIGSTOP): do not burst
                nxt = loop.time()
            self.core.tick()
            self._wake.set()

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._flush_proposals()
                self._start_reads()
                if self._compact is not None:
                    await self._do_compact()
                while self.core.has_ready():
                    rd = self.core.ready()
                    await self._handle_ready(rd)
                    self.core.advance(rd)
                    self._after_ready(rd)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failed = exc
            log.exception("raft node %d stopped after a fatal error", self.id)
            self._fail_all(exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)
            raise

    async def _handle_ready(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            await self._install(rd.snapshot)
        committed = list(rd.committed)
        if committed and rd.entries and rd.snapshot is None:
            # committed entries below this Ready's new ones are already in the durable log:
            # start applying them while the new ones are being persisted
            durable = rd.entries[0].index - 1
            early = [e for e in committed if e.index <= durable]
            if early and all(e.type != EntryType.CONF_CHANGE for e in early):
                committed = committed[len(early):]
                self._hand_committed(early)
        hs = rd.hard_state
        if hs is not None and not rd.entries and rd.snapshot is None and (
                (hs.term, hs.vote) == (self._durable_hs.term, self._durable_hs.vote)):
            # only the commit index moved: it need not be durable (a restarted node learns it
            # again from the leader), so it rides along with the next write instead
            self._pending_hs = hs
        elif hs is not None or rd.entries or rd.snapshot is not None:
            hs = hs or self._pending_hs
            self._pending_hs = None  # before the write: stop() must never write an older one
            await self._blocking(self.log.save, hs, rd.entries, rd.snapshot)
            if hs is not None:
                self._durable_hs = hs
            if rd.snapshot is not None:
                self.snapshots.protect = rd.snapshot.index
        for m in rd.messages:
            if m.type == MsgType.SNAP:
                self._spawn(self._send_snapshot(m))
            else:
                self.transport.send(m.to, {"k": "m", "m": to_wire(m)})
        if committed:
            for e in committed:
                if e.type == EntryType.CONF_CHANGE:
                    await self._apply_conf(e.index, decode_conf_change(e.data))
            self._hand_committed(committed)
        for rs in rd.read_states:
            for fut in self._reads.pop(rs.context, ()):
                if not fut.done():
                    fut.set_result(rs.index)

    def _hand_committed(self, committed: list[Entry]) -> None:
        last = committed[-1]
        log.info("entry committed index=%d term=%d (%d entries)", last.index, last.term,
                 len(committed))
        self.sm.apply_entries(committed)

    async def _apply_conf(self, index: int, cc: ConfChange) -> None:
        was_leader = self.is_leader()
        self.core.apply_conf_change(cc)
        if index <= self._history[-1][0]:
            return  # already applied before a restart (idempotent for the core)
        members = _apply_members(self.peers, cc)
        await self._blocking(self.log.set_membership, index, members)
        tell = cc.op == "remove" and cc.node_id != self.id and was_leader
        self._set_members(index, members, keep=cc.node_id if tell else 0)
        if tell:
            self._spawn(self._tell_removed(cc.node_id, index))
        log.info("membership change applied: %s node %d at index %d (voters %s)", cc.op,
                 cc.node_id, index, sorted(members))
        self._event("info", f"cluster membership changed: {cc.op} node {cc.node_id}",
                    op=cc.op, node=cc.node_id, addr=cc.addr, index=index,
                    voters=sorted(members))
        if cc.node_id == self.id and cc.op == "remove":
            self._on_removed(index)

    def _set_members(self, index: int, members: dict[int, str], keep: int = 0) -> None:
        """Adopt ``members`` as of ``index``; the transport follows (``keep``: a peer whose
        connection stays until it was told it is removed)."""
        members = self._local_view(members)
        self._history = [*self._history[-7:], (index, dict(members))]
        for pid, addr in members.items():
            if pid != self.id and addr:
                self.transport.add_peer(pid, addr)
        for pid in list(self.peers):
            if pid not in members and pid != keep and pid != self.id:
                self.transport.remove_peer(pid)
        self.peers = dict(members)

    async def _tell_removed(self, peer: int, index: int) -> None:
        with contextlib.suppress(Exception):
            await self.transport.request(peer, {"op": "removed", "index": index,
                                                "term": self.core.term}, 2.0)
        if peer not in self.peers:
            self.transport.remove_peer(peer)

    async def _serve_removed(self, frm: int, body: Frame) -> Frame:
        if int(body.get("term", -1)) < self.core.term:
            return {"err": "stale term"}
        index = int(body.get("index", 0))
        if not self.removed:
            self.core.apply_conf_change(ConfChange("remove", self.id))
            members = {k: v for k, v in self.peers.items() if k != self.id}
            await self._blocking(self.log.set_membership, index, members)
            self._history = [*self._history[-7:], (index, dict(members))]
            self._on_removed(index)
        return {"ok": True}

    def _on_removed(self, index: int) -> None:
        log.warning("node %d was removed from the cluster (index %d): it no longer takes part "
                    "in elections", self.id, index)
        self._event("warning", f"node {self.id} removed from the cluster", node=self.id,
                    index=index)

    def _after_ready(self, rd: Ready) -> None:
        st = self.core
        if st.term != self._term:
            log.info("term changed: %d -> %d", self._term, st.term)
            self._event("info", f"raft term changed to {st.term}", old=self._term, term=st.term)
            self._term = st.term
        if rd.role_changed:
            log.info("node %d is now %s (term %d)", self.id, st.role.label, st.term)
            if st.role == Role.CANDIDATE:
                log.info("election started by node %d for term %d", self.id, st.term)
            if st.role != Role.LEADER:
                err = NotLeader(st.lead)
                for futs in self._reads.values():
                    for fut in futs:
                        if not fut.done():
                            fut.set_exception(err)
                self._reads.clear()
        if st.lead != self._leader:
            self._leader = st.lead
            if st.lead:
                log.info("leader changed: node %d is leader for term %d", st.lead, st.term)
                self._event("info", f"raft leader changed: node {st.lead}", leader=st.lead,
                            term=st.term, node=self.id)
            else:
                log.info("leader lost (term %d)", st.term)
                self._event("warning", "raft leader lost", term=st.term, node=self.id)
            self._leader_changed.set()
            self._leader_changed = asyncio.Event()

    def _start_reads(self) -> None:
        if not self._read_queue:
            return
        waiting, self._read_queue = self._read_queue, []
        ctx = next(self._read_ids).to_bytes(8, "big")
        if self.core.read_index(ctx):
            self._reads[ctx] = waiting
            return
        for fut in waiting:
            if not fut.done():
                fut.set_exception(NotLeader(self.core.lead))

    async def _do_compact(self) -> None:
        meta, self._compact = self._compact, None
        if meta is None:
            return
        term = self.core.term_at(meta.index)
        if term != meta.term:
            return
        members = self.membership_at(meta.index)
        voters = tuple(sorted(members))
        addrs = tuple(sorted(members.items()))
        try:
            self.core.compact(meta.index, meta.term, voters, addrs)
        except ValueError as exc:
            log.warning("cannot compact the log to %d: %s", meta.index, exc)
            return
        await self._blocking(self.log.compact, meta.index, meta.term, voters, addrs)
        self.snapshots.protect = meta.index
        log.info("snapshot taken index=%d term=%d; log compacted", meta.index, meta.term)
        self._event("info", "raft snapshot taken", index=meta.index, term=meta.term)

    async def _install(self, meta: SnapshotMeta) -> None:
        path = self._received.pop(meta.index, None)
        if path is None:
            raise RuntimeError(f"snapshot {meta.index} to install was not received")
        await self._blocking(self.snapshots.adopt, path, meta)
        await self.sm.install_snapshot(meta, path)
        # drop only snapshots this one supersedes: a newer one may have arrived meanwhile
        # (the leader took another snapshot while sending) and the core may ask for it next
        for idx in [i for i in self._received if i <= meta.index]:
            self._received.pop(idx).unlink(missing_ok=True)
        self.set_applied(meta.index)
        if meta.voters:
            addrs = dict(meta.addrs)
            members = {v: addrs.get(v) or self.peers.get(v, "") for v in meta.voters}
            self._set_members(meta.index, members)
        log.info("snapshot installed index=%d term=%d (voters %s)", meta.index, meta.term,
                 list(meta.voters))
        self._event("info", "raft snapshot installed", index=meta.index, term=meta.term)

    async def _send_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        path = self.snapshots.dir / f"snap-{m.snapshot.index}" / "data.mdb"
        ok = False
        if path.exists():
            log.info("sending snapshot index=%d to node %d", m.snapshot.index, m.to)
            ok = await self.transport.send_snapshot(m.to, to_wire(m), path)
        else:
            log.warning("snapshot %d for node %d is missing", m.snapshot.index, m.to)
        self.core.step(Message(MsgType.SNAP_STATUS, self.id, m.to, self.core.term,
                               reject=not ok))
        self._wake.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    def _fail_all(self, exc: BaseException) -> None:
        queued, self._propose_queue = self._propose_queue, []
        for q in queued:
            if not q.fut.done():
                q.fut.set_exception(NotLeader(0))
        for _, fut in self._proposals.values():
            if not fut.done():
                fut.set_exception(NotLeader(0) if isinstance(exc, NotLeader) else
                                  ProposalDropped(str(exc)))
        self._proposals.clear()
        for futs in [*self._reads.values(), self._read_queue]:
            for rf in futs:
                if not rf.done():
                    rf.set_exception(NotLeader(0))
        self._reads.clear()
        self._read_queue = []
