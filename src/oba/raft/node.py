"""The Raft runtime: drives ``RaftCore`` with a real clock, the durable log and the transport.

Rules for this module:
- Only the event loop touches the core. One task (``_run``) turns each ``Ready`` into I/O in the
  etcd order: install a received snapshot, persist snapshot meta + hard state + entries in ONE
  fsynced LMDB transaction (in a worker thread, never on the loop), THEN send the messages,
  hand the committed entries to the state machine (in order), serve read states, ``advance``.
  Everything that queued up while a Ready was being persisted goes into the next one (batching).
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
from oba.raft.transport import Frame, Transport
from oba.raft.types import (
    CoreConfig,
    Entry,
    EntryType,
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
        hs, entries, snap = self.log.load()
        voters = snap.voters if snap is not None else tuple(sorted(cfg.peers))
        core_cfg = CoreConfig(node_id=cfg.node_id, voters=voters,
                              election_ticks=cfg.election_ticks, heartbeat_ticks=HEARTBEAT_TICKS)
        self.applied = sm.applied_index()
        self.core = RaftCore(core_cfg, hs, entries, snap, rng or random.Random(),
                             applied=self.applied)
        self.peers = dict(cfg.peers)
        self.transport = Transport(
            cfg.node_id, cfg.raft_addr, cfg.peers,
            on_message=self._on_message, on_request=self._on_request,
            on_snapshot=self._on_snapshot, snapshot_dir=self.snapshots.incoming,
            server_ssl=cfg.server_ssl, client_ssl=cfg.client_ssl,
            on_unreachable=self._on_unreachable)
        self.request_handlers: dict[str, RequestHandler] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._side: set[asyncio.Task[None]] = set()
        self._proposals: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._apply_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._read_queue: list[asyncio.Future[int]] = []
        self._reads: dict[bytes, list[asyncio.Future[int]]] = {}
        self._read_ids = itertools.count(1)
        self._received: dict[int, Path] = {}
        self._compact: SnapshotMeta | None = None
        self._leader = 0
        self._leader_changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed: BaseException | None = None

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
        index = self.core.propose(data)
        if index is None:
            raise NotLeader(self.core.lead)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals[index] = (self.core.term, fut)
        self._wake.set()
        try:
            return index, await asyncio.wait_for(fut, timeout)
        finally:
            current = self._proposals.get(index)
            if current is not None and current[1] is fut:
                del self._proposals[index]

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

    async def _on_request(self, frm: int, body: Frame) -> Frame:
        handler = self.request_handlers.get(str(body.get("op")))
        if handler is None:
            return {"err": "unknown request"}
        return await handler(frm, body)

    async def _on_snapshot(self, frm: int, meta: Frame, path: Path) -> bool:
        msg = from_wire(meta)
        if msg.type != MsgType.SNAP or msg.snapshot is None or msg.to != self.id:
            return False
        kept = path.with_name(f"snap-{msg.snapshot.index}.mdb")
        os.replace(path, kept)
        old = self._received.pop(msg.snapshot.index, None)
        if old is not None and old != kept:
            old.unlink(missing_ok=True)
        self._received[msg.snapshot.index] = kept
        log.info("snapshot index=%d term=%d received from node %d",
                 msg.snapshot.index, msg.snapshot.term, frm)
        self.core.step(msg)
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
            raise

    async def _handle_ready(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            await self._install(rd.snapshot)
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            await asyncio.to_thread(self.log.save, rd.hard_state, rd.entries, rd.snapshot)
        for m in rd.messages:
            if m.type == MsgType.SNAP:
                self._spawn(self._send_snapshot(m))
            else:
                self.transport.send(m.to, {"k": "m", "m": to_wire(m)})
        if rd.committed:
            for e in rd.committed:
                if e.type == EntryType.CONF_CHANGE:
                    cc = decode_conf_change(e.data)
                    self.core.apply_conf_change(cc)
                    if cc.op == "add" and cc.addr:
                        self.peers[cc.node_id] = cc.addr
                        self.transport.add_peer(cc.node_id, cc.addr)
                    log.info("membership change applied: %s node %d", cc.op, cc.node_id)
            last = rd.committed[-1]
            log.info("entry committed index=%d term=%d (%d entries)", last.index, last.term,
                     len(rd.committed))
            self.sm.apply_entries(list(rd.committed))
        for rs in rd.read_states:
            for fut in self._reads.pop(rs.context, ()):
                if not fut.done():
                    fut.set_result(rs.index)

    def _after_ready(self, rd: Ready) -> None:
        st = self.core
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
            else:
                log.info("leader lost (term %d)", st.term)
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
        try:
            self.core.compact(meta.index, meta.term, self.core.voters)
        except ValueError as exc:
            log.warning("cannot compact the log to %d: %s", meta.index, exc)
            return
        await asyncio.to_thread(self.log.compact, meta.index, meta.term, self.core.voters)
        log.info("snapshot taken index=%d term=%d; log compacted", meta.index, meta.term)

    async def _install(self, meta: SnapshotMeta) -> None:
        path = self._received.pop(meta.index, None)
        if path is None:
            raise RuntimeError(f"snapshot {meta.index} to install was not received")
        await asyncio.to_thread(self.snapshots.adopt, path, meta)
        await self.sm.install_snapshot(meta, path)
        for stale in self._received.values():
            stale.unlink(missing_ok=True)
        self._received.clear()
        self.set_applied(meta.index)
        log.info("snapshot installed index=%d term=%d", meta.index, meta.term)

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
