"""RaftReplicator: the cluster-mode ``Replicator`` and the node's replicated state machine.

Rules for this module:
- ``submit``: on the leader propose and wait until applied; on a follower forward the encoded
  command to the leader (transport request ``{"op": "fwd"}``), get the real result, then wait
  until this node has applied that index too (read-your-writes); with no leader, wait and retry
  until ``proposalTimeout``, then answer 52 (unavailable). Never report success that did not
  commit.
- Apply runs in ONE writer thread, batching committed entries into one LMDB transaction that
  also stores the applied Raft index (``txn.set_applied_index``) and each command's request id
  (``reqids``): an entry at or below the stored applied index is skipped (restart, snapshot), a
  command whose request id was already applied answers the recorded result (retries after a
  leader change are not applied twice). The request-id table keeps the last ``REQID_WINDOW``
  indexes.
- Every ``snapshotInterval`` applied entries the writer copies the directory database
  (``SnapshotStore.create``) between two transactions, so the copy holds exactly that index.
- Listeners see each successfully applied command as a ``Change`` whose index is the Raft index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from oba.cluster.replicator import (
    Change,
    ChangeListener,
    ReplicatorStopped,
    commit_with_fallback,
    internal_error,
    notify_listeners,
)
from oba.directory.apply import ApplyContext, ApplyResult, apply
from oba.directory.commands import Command, CommandDecodeError, decode, encode
from oba.directory.entry import Entry as DirEntry
from oba.protocol.resultcodes import ResultCode
from oba.raft.node import NotLeader, ProposalDropped, RaftNode
from oba.raft.transport import Frame, NotSent
from oba.raft.types import Entry, EntryType, SnapshotMeta
from oba.storage import Store

log = logging.getLogger("oba.raft")

MAX_BATCH = 256
REQID_WINDOW = 100_000
UNAVAILABLE = 52

_STOP = object()
_Applied = tuple[Entry, Command | None, ApplyResult | None]


def result_to_wire(r: ApplyResult, with_entry: bool = True) -> Frame:
    """``r`` for the wire; ``with_entry=False`` leaves the entry out (a caller that only needs
    code, message and matchedDN: it is the bulk of the frame)."""
    out: Frame = {"c": r.code, "m": r.matched_dn, "s": r.message, "o": r.old_dn}
    if with_entry and r.entry is not None:
        out["e"] = [r.entry.id, r.entry.dn, r.entry.attrs]
    return out


def result_from_wire(d: Frame) -> ApplyResult:
    e = d.get("e")
    entry = None
    if e is not None:
        entry = DirEntry(int(e[0]), str(e[1]),
                         {str(k): [bytes(v) for v in vs] for k, vs in dict(e[2]).items()})
    old = d.get("o")
    return ApplyResult(int(d["c"]), str(d.get("m") or ""), str(d.get("s") or ""), entry,
                       None if old is None else str(old))


def unavailable(message: str) -> ApplyResult:
    return ApplyResult(UNAVAILABLE, message=message)


class _LeaderChanged(Exception):
    """The leader a write was forwarded to is no longer this node's leader."""


class RaftReplicator:
    def __init__(self, store: Store, ctx: ApplyContext, proposal_timeout: float = 5.0,
                 snapshot_interval: int = 10000) -> None:
        self._store = store
        self._ctx = ctx
        self.proposal_timeout = proposal_timeout
        self.snapshot_interval = snapshot_interval
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._listeners: list[ChangeListener] = []
        self._node: RaftNode | None = None
        self._open_aux_dbs()
        with store.read() as txn:
            self._applied = txn.applied_index()
        self._last_snapshot = self._applied
        self.commits = 0

    def _open_aux_dbs(self) -> None:
        # opened here, outside any write transaction (opening one inside would deadlock)
        self._store.aux_db(b"reqids")
        self._store.aux_db(b"reqidx")

    # ------------------------------------------------------------------ wiring

    def attach(self, node: RaftNode) -> None:
        self._node = node
        node.request_handlers["fwd"] = self._serve_forward
        latest = node.snapshots.latest()
        if latest is not None:
            self._last_snapshot = max(self._last_snapshot, latest[0].index)

    @property
    def node(self) -> RaftNode:
        if self._node is None:
            raise ReplicatorStopped("no raft node attached")
        return self._node

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="oba-raft-apply", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        self._thread = None

    # ------------------------------------------------------------------ StateMachine

    def applied_index(self) -> int:
        return self._applied

    def apply_entries(self, entries: list[Entry]) -> None:
        self._queue.put(entries)

    async def install_snapshot(self, meta: SnapshotMeta, data_file: Path) -> None:
        """Wait until the writer is idle at this point of the log, then swap the database
        (on the loop thread, where no read transaction can be open). Other processes that
        read the database (listener workers) are stopped around the swap: the store's
        ``restore_guard``."""
        guard = self._store.restore_guard
        async with guard() if guard is not None else contextlib.nullcontext():
            reached: Future[None] = Future()
            resume = threading.Event()
            self._queue.put((reached, resume))
            await asyncio.wrap_future(reached)
            try:
                self._store.restore_from(data_file)
                self._open_aux_dbs()
                with self._store.read() as txn:
                    self._applied = txn.applied_index()
                self._last_snapshot = self._applied
            finally:
                resume.set()
        if self._applied != meta.index:
            log.warning("installed snapshot holds index %d, expected %d", self._applied,
                        meta.index)

    # ------------------------------------------------------------------ Replicator

    async def submit(self, cmd: Command) -> ApplyResult:
        if self._thread is None:
            raise ReplicatorStopped("the writer is not running")
        node = self.node
        data = encode(cmd)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.proposal_timeout
        why = "no leader"
        unsure = False  # some attempt may still commit: the outcome is unknown
        while (left := deadline - loop.time()) > 0:
            if node.is_leader():
                try:
                    _, result = await node.propose(data, left)
                    return result  # type: ignore[no-any-return]
                except NotLeader:
                    # still leader but refusing proposals: a leadership transfer is under way
                    # (wait for it instead of spinning on the loop)
                    await node.wait_leader_change(min(max(0.0, deadline - loop.time()), 0.02))
                    continue
                except ProposalDropped:
                    why = "leadership changed"  # overwritten: that attempt is not applied
                    continue
                except TimeoutError:
                    unsure = True
                    why = "timed out waiting for the commit"
                    break
            leader = node.leader_id()
            if not leader or leader == node.id:
                await node.wait_leader_change(min(left, 0.05))
                continue
            try:
                resp = await self._forward(node, leader, data, left)
            except NotSent:
                why = f"leader {leader} unreachable"
                await node.wait_leader_change(min(max(0.0, deadline - loop.time()), 0.05))
                continue
            except (ConnectionError, OSError):
                unsure = True  # it may have arrived before the connection broke
                why = f"leader {leader} unreachable"
                await node.wait_leader_change(min(max(0.0, deadline - loop.time()), 0.05))
                continue
            except _LeaderChanged:
                # a hung or deposed leader: send it to the new one at once (the request id
                # makes a second copy harmless: it is applied once)
                unsure = True
                why = f"leader {leader} stopped answering"
                continue
            except TimeoutError:
                unsure = True
                why = f"leader {leader} did not answer"
                break
            if "r" in resp:
                index = int(resp["index"])
                await node.wait_applied(index, max(0.0, deadline - loop.time()))
                return result_from_wire(resp["r"])
            why = str(resp.get("err") or "forwarding failed")
            if resp.get("unsure"):
                unsure = True
            await node.wait_leader_change(min(max(0.0, deadline - loop.time()), 0.05))
        if unsure:
            return unavailable(f"unavailable: {why}; the outcome is unknown: the change may "
                               "still be applied")
        return unavailable(f"unavailable: {why}; the change was not applied")

    async def _forward(self, node: RaftNode, leader: int, data: bytes, timeout: float
                       ) -> Frame:
        """Forward ``data`` to ``leader``; raises ``_LeaderChanged`` as soon as this node
        follows another leader (or none) while waiting."""
        request = asyncio.ensure_future(
            node.transport.request(leader, {"op": "fwd", "cmd": data}, timeout))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while not request.done():
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                change = asyncio.ensure_future(node.wait_leader_change(left))
                try:
                    await asyncio.wait({request, change}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    change.cancel()
                if not request.done() and node.leader_id() != leader:
                    raise _LeaderChanged
            return request.result()
        finally:
            request.cancel()

    async def _serve_forward(self, frm: int, body: Frame) -> Frame:
        node = self.node
        if not node.is_leader():
            return {"err": "not leader", "leader": node.leader_id()}
        try:
            decode(bytes(body["cmd"]))  # validate before it enters the log
        except (CommandDecodeError, KeyError, TypeError) as exc:
            return {"r": result_to_wire(ApplyResult(int(ResultCode.PROTOCOL_ERROR),
                                                    message=str(exc))), "index": 0}
        try:
            index, result = await node.propose(bytes(body["cmd"]), self.proposal_timeout)
        except NotLeader:
            return {"err": "not leader", "leader": node.leader_id()}
        except ProposalDropped:
            return {"err": "leadership changed"}
        except TimeoutError:
            return {"err": "commit timed out", "unsure": True}
        return {"index": index, "r": result_to_wire(result)}

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, tuple):
                reached, resume = item
                reached.set_result(None)
                resume.wait()
                continue
            entries: list[Entry] = [e for e in item if e.index > self._applied]
            for i in range(0, len(entries), MAX_BATCH):
                self._commit(entries[i : i + MAX_BATCH])

    def _commit(self, batch: list[Entry]) -> None:
        def failed(e: Entry, exc: Exception) -> list[_Applied]:
            with self._store.write() as txn:
                txn.set_applied_index(e.index)
            return [(e, None, internal_error(exc))]

        done = commit_with_fallback(batch, self._apply_all, failed)
        self.commits += 1
        self._applied = max(self._applied, batch[-1].index)
        node = self._node
        if node is not None:
            node.call_soon(node.on_applied, [(e.index, e.term, r) for e, _, r in done])
        for e, cmd, result in done:
            if cmd is not None and result is not None and result.code == ResultCode.SUCCESS:
                notify_listeners(self._listeners, Change(e.index, cmd, result))
        if node is not None and self._applied - self._last_snapshot >= self.snapshot_interval:
            self._snapshot(node, batch[-1])

    def _apply_all(self, batch: list[Entry]) -> list[_Applied]:
        out: list[_Applied] = []
        with self._store.write() as txn:
            for e in batch:
                if e.type != EntryType.NORMAL or not e.data:
                    out.append((e, None, None))
                    continue
                try:
                    cmd = decode(e.data)
                except CommandDecodeError as exc:
                    out.append((e, None, ApplyResult(int(ResultCode.OTHER), message=str(exc))))
                    continue
                prev = txn.request_result(cmd.request_id) if cmd.request_id else None
                if prev is not None:
                    _, code, matched, message = prev
                    out.append((e, None, ApplyResult(code, matched, message)))
                    continue
                result = apply(txn, cmd, self._ctx)
                if cmd.request_id:
                    txn.record_request(cmd.request_id, e.index, result.code, result.matched_dn,
                                       result.message)
                out.append((e, cmd, result))
            last = batch[-1].index
            txn.set_applied_index(last)
            if last > REQID_WINDOW:
                txn.prune_requests(last - REQID_WINDOW)
        return out

    def _snapshot(self, node: RaftNode, last: Entry) -> None:
        # the store's last commits may not be on disk yet (no meta fsync in cluster mode):
        # flush them before the log entries they came from can be compacted away
        self._store.env.sync(True)
        members = node.membership_at(last.index)
        meta = SnapshotMeta(last.index, last.term, tuple(sorted(members)),
                            tuple(sorted(members.items())))
        try:
            node.snapshots.create(self._store, meta)
        except Exception:
            log.exception("taking a snapshot at %d failed", last.index)
            return
        self._last_snapshot = last.index
        node.call_soon(node.on_snapshot_taken, meta)
