"""The replicated audit store: the node's ``AuditSink``, batching records into SystemCommands.

Rules for this module:
- ``record`` never blocks and never raises: it stamps the record (RFC 3339 time with ms, chosen
  here, on the proposing node, with this node's id) and queues it.
- One background task seals queued records into ``audit.append`` batches and submits them
  through ``node.replicator`` (followers' batches reach the leader through the replicator's
  forwarding); under heavy load (the last batch held ``BUSY`` records or more) at most one
  batch per ``FLUSH_INTERVAL`` while fewer than ``BATCH`` wait. A batch that fails (no
  leader: 52, timeout, stopped) stays at the head of the retry buffer and is resubmitted with
  back-off under the same request id, so a batch the old leader did commit is not applied
  twice. At most ``MAX_BUFFERED`` records wait; beyond that the oldest are dropped and counted.
- Submissions made by this module run with auditing suppressed, so they never audit
  themselves.
- Retention: the proposer (standalone node or the leader) submits ``audit.retain`` when the
  store holds more than ``logging.store.maxEntries``; each node archives the dropped records
  locally as it applies the command (``audit.archive``). ``retainDays`` cleanup is local.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from oba import reqctx
from oba.audit import db
from oba.audit.archive import Archiver
from oba.directory.commands import SystemCommand

log = logging.getLogger("oba.audit")

MAX_BUFFERED = 10_000
BATCH = 500
SUBMIT_TIMEOUT = 10.0
MAX_BACKOFF = 5.0
CHECK_INTERVAL = 30.0
GATHER = 0.02  # after an idle spell, wait this long for a burst to gather into one batch
FLUSH_INTERVAL = 0.1  # at most one batch per interval under load (unless BATCH are queued)
BUSY = 100  # a batch this large means heavy load: the next one waits for FLUSH_INTERVAL
CLEANUP_INTERVAL = 3600.0

_suppressed: contextvars.ContextVar[bool] = contextvars.ContextVar("oba_audit_suppressed",
                                                                   default=False)


def _gtime() -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime())


_SCALARS = (str, int, float, bool, type(None))
_second: tuple[int, str] = (-1, "")


def _stamp() -> str:
    """``db.now_rfc3339()`` (UTC, milliseconds), with the date part formatted once a second:
    one record per bind makes this a hot path."""
    global _second
    now = time.time()
    sec = int(now)
    if sec != _second[0]:
        _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{_second[1]}.{min(999, int((now - sec) * 1000)):03d}Z"


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` made JSON-shaped (values that are not scalars pass through JSON); a copy."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        kind = type(value)
        if kind in _SCALARS:  # the common case: dn, resultCode
            out[key] = value
        elif kind in (list, tuple) and all(type(v) in _SCALARS for v in value):
            out[key] = list(value)  # a write's attribute names
        else:
            break
    else:
        return out
    try:
        out = json.loads(json.dumps(fields, default=str))
        return out
    except (TypeError, ValueError):
        return {"fields": str(fields)}


def _record(stamp: str, level: object, message: object, source: object, user: object,
            request_id: object, node_id: int, fields: dict[str, Any]) -> db.Record:
    """A queued record (its id comes with the append); ``fields`` already JSON-shaped."""
    return {
        "timestamp": stamp, "level": str(level).lower(),
        "message": message if type(message) is str else str(message),
        "source": str(source).lower(), "user": user if type(user) is str else str(user),
        "requestId": str(request_id), "nodeId": node_id, "fields": fields,
    }


@dataclass
class _Batch:
    request_id: str
    records: list[db.Record] = field(default_factory=list)


class AuditStore:
    """The node's ``AuditSink`` once ``attach_audit`` ran."""

    def __init__(self, node: Any) -> None:
        self.node = node
        cfg = node.config
        self.store_cfg = cfg.logging.store
        self.cluster_mode = bool(cfg.cluster.enabled)
        self.node_id = int(cfg.cluster.nodeID) if self.cluster_mode else 0
        self.archiver = Archiver(str(self.store_cfg.archiveDir or ""),
                                 bool(self.store_cfg.compress))
        self.queue: deque[db.Record] = deque()
        self.batches: deque[_Batch] = deque()
        self.dropped = 0
        self.committed = 0
        self.retry_running = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._retain_wanted = False
        self._unsubscribe: Callable[[], None] | None = None
        self._side: set[asyncio.Future[bool]] = set()
        # applied index when the store was attached: changes after it are in the ChangeHub
        # (used by /events to decide whether a Last-Event-ID can be resumed)
        self.events_floor: int | None = None

    # ------------------------------------------------------------------ AuditSink

    def record(self, level: str, message: str, source: str, user: str = "",
               request_id: str = "", **fields: Any) -> None:
        try:
            if _suppressed.get():
                return
            if fields:
                for value in fields.values():
                    if type(value) not in _SCALARS:
                        fields = _plain(fields)
                        break
            # the call's own keyword dict is the record's fields: JSON-shaped here
            self.queue.append(_record(_stamp(), level, message, source, user,
                                      request_id or reqctx.current(), self.node_id, fields))
            self._queued()
        except Exception:  # auditing must never break the operation it describes
            log.debug("audit record dropped", exc_info=True)

    def add_records(self, items: list[Any]) -> None:
        """Records made by a listener worker: ``[level, message, source, user, requestId,
        fields]`` each, the fields already JSON-shaped; stamped here, like ``record``'s."""
        stamp = _stamp()
        node_id = self.node_id
        queue = self.queue
        for item in items:
            try:
                level, message, source, user, request_id, fields = item
                queue.append(_record(stamp, level, message, source, user, request_id, node_id,
                                     fields if type(fields) is dict else {}))
            except (TypeError, ValueError):  # not a record: dropped and counted
                self.dropped += 1
        self._queued()

    def _queued(self) -> None:
        """After records joined the queue: keep the buffer bounded, wake the flusher."""
        # a batch holds at most BATCH records: trim only when the bound may be passed
        if len(self.queue) + len(self.batches) * BATCH > MAX_BUFFERED:
            self._trim()
        wake = self._wake
        if wake is None or not wake.is_set():  # set: the flusher is already awake
            self._poke()

    def _poke(self) -> None:
        loop, wake = self.loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    def buffered(self) -> int:
        return len(self.queue) + sum(len(b.records) for b in self.batches)

    def _trim(self) -> None:
        excess = self.buffered() - MAX_BUFFERED
        while excess > 0:
            if self.batches:
                head = self.batches[0]
                n = min(excess, len(head.records))
                del head.records[:n]
                if not head.records:
                    self.batches.popleft()
            else:
                n = min(excess, len(self.queue))
                for _ in range(n):
                    self.queue.popleft()
            self.dropped += n
            excess -= n

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        with self.node.store.read() as txn:
            self.events_floor = txn.applied_index()
        self._wake = asyncio.Event()
        if self.queue:
            self._wake.set()
        events = getattr(self.node, "events", None)
        if events is not None:
            self._unsubscribe = events.subscribe_system(self._on_system)
        self._tasks = [asyncio.ensure_future(self._flusher()),
                       asyncio.ensure_future(self._housekeeping())]

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        # best effort: commit what is still queued (the replicator is still running)
        deadline = time.monotonic() + 2.0
        while (self.queue or self.batches) and time.monotonic() < deadline:
            if not await self._submit_one(timeout=max(0.1, deadline - time.monotonic())):
                break

    def is_proposer(self) -> bool:
        cluster = getattr(self.node, "cluster", None)
        if cluster is None:
            return True
        try:
            return bool(cluster.is_leader())
        except Exception:
            return False

    # ------------------------------------------------------------------ background work

    async def _submit(self, kind: str, payload: dict[str, Any], request_id: str,
                      timeout: float = SUBMIT_TIMEOUT) -> bool:
        token = _suppressed.set(True)
        try:
            cmd = SystemCommand(kind, payload, request_id, "", _gtime())
            res = await asyncio.wait_for(self.node.replicator.submit(cmd), timeout)
            if res.code != 0:
                log.debug("%s refused: %s %s", kind, res.code, res.message)
            return bool(res.code == 0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("%s failed: %s", kind, exc)
            return False
        finally:
            _suppressed.reset(token)

    async def _submit_one(self, timeout: float = SUBMIT_TIMEOUT) -> bool:
        if not self.batches:
            take = [self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))]
            if not take:
                return True
            self.batches.append(_Batch(uuid.uuid4().hex, take))
        batch = self.batches[0]
        records = list(batch.records)
        ok = await self._submit("audit.append", {"records": records}, batch.request_id, timeout)
        if ok:
            if self.batches and self.batches[0] is batch:
                self.batches.popleft()
            self.committed += len(records)
        return ok

    async def _flusher(self) -> None:
        assert self._wake is not None
        delay = 0.0
        last = 0.0
        busy = False  # the last batch was large: records arrive faster than batches commit
        while True:
            if not self.queue and not self.batches:
                self._wake.clear()
                await self._wake.wait()
                await asyncio.sleep(GATHER)  # let a burst gather into one batch
                continue
            if busy and not self.batches and len(self.queue) < BATCH:
                # under heavy load, at most one batch per FLUSH_INTERVAL: fewer, larger
                # commits (each costs a transaction, an fsync and a change event); light
                # load keeps the short GATHER latency
                wait = last + FLUSH_INTERVAL - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            last = time.monotonic()
            busy = (len(self.batches[0].records) if self.batches else len(self.queue)) >= BUSY
            if await self._submit_one():
                delay = 0.0
                self.retry_running = bool(self.batches)
            else:
                self.retry_running = True
                delay = min(MAX_BACKOFF, max(0.1, delay * 2))
                await asyncio.sleep(delay)

    def _on_system(self, event: Any) -> None:
        if event.kind == "audit.append" and self.is_proposer():
            with self.node.store.read() as txn:
                held = db.count(txn)
            if held > int(self.store_cfg.maxEntries) and not self._retain_wanted:
                self._retain_wanted = True
                if self._wake is not None:
                    task = asyncio.ensure_future(self._retain())
                    self._side.add(task)
                    task.add_done_callback(self._side.discard)

    async def _retain(self, keep: int | None = None) -> bool:
        try:
            target = int(self.store_cfg.maxEntries) if keep is None else keep
            return await self._submit("audit.retain",
                                      {"keep": target, "at": db.now_rfc3339()},
                                      uuid.uuid4().hex)
        finally:
            self._retain_wanted = False

    async def archive_now(self, keep: int = 0) -> bool:
        """Archive (and drop from the active store) all but the newest ``keep`` records."""
        return await self._retain(keep)

    async def clear(self) -> bool:
        return await self._submit("audit.clear", {}, uuid.uuid4().hex)

    async def _housekeeping(self) -> None:
        last_cleanup = 0.0
        while True:
            if self.is_proposer():
                with self.node.store.read() as txn:
                    held = db.count(txn)
                if held > int(self.store_cfg.maxEntries):
                    await self._retain()
            if time.monotonic() - last_cleanup >= CLEANUP_INTERVAL or not last_cleanup:
                last_cleanup = time.monotonic()
                try:
                    self.archiver.cleanup(int(self.store_cfg.retainDays))
                except OSError as exc:
                    log.warning("audit archive cleanup failed: %s", exc)
            await asyncio.sleep(CHECK_INTERVAL)

    def stats(self) -> dict[str, Any]:
        return {
            "max_entries": int(self.store_cfg.maxEntries),
            "pending_entries": len(self.queue),
            "retry_buffer_size": sum(len(b.records) for b in self.batches),
            "retry_running": self.retry_running,
            "dropped_entries": self.dropped,
            "cluster_mode": self.cluster_mode,
            "writer_ready": bool(self._tasks) and not any(t.done() for t in self._tasks),
            "node_id": self.node_id,
        }


def audit_store(node: Any) -> AuditStore | None:
    sink = getattr(node, "audit", None)
    return sink if isinstance(sink, AuditStore) else None


async def attach_audit(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    """Set ``runtime.node.audit`` to the replicated store; returns a stop callable or None."""
    node = runtime.node
    if not node.config.logging.store.enabled:
        return None
    db.open_dbs(node.store)
    store = AuditStore(node)
    db.set_archiver(node.store, store.archiver)
    node.audit = store
    store.start()
    return store.stop
