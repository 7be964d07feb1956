"""Replicators: ``submit(cmd) -> ApplyResult`` is the single write path of a node.

Rules for this module: commands are applied only here, in the one writer thread, in the order
they are committed. A caller is answered only after the LMDB transaction holding its command has
been committed to disk (``sync=True``), so an acknowledged write survives ``kill -9``.

``LocalReplicator`` (standalone mode) does group commit: commands that queue up while the
writer is busy are applied in one LMDB transaction and share one fsync; with several
concurrent writers a commit waits briefly (at most ``MAX_GROUP_WAIT``) for the ones about to
submit. ``apply`` validates before it writes, so a failing command leaves no trace in the
shared transaction; if ``apply`` raises (a bug), the batch is aborted and each command retried
in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar

from oba.directory.apply import ApplyContext, ApplyResult, apply
from oba.directory.commands import Command
from oba.protocol.resultcodes import ResultCode
from oba.storage import Store

log = logging.getLogger("oba.replicator")

MAX_BATCH = 256
MAX_GROUP_WAIT = 0.002  # seconds a commit may wait for concurrent writers (see ``_gather``)


@dataclass(frozen=True, slots=True)
class Change:
    """A committed change, as seen by change listeners (persistent search, audit, events)."""

    index: int
    command: Command
    result: ApplyResult


ChangeListener = Callable[[Change], None]


class Replicator(Protocol):
    async def submit(self, cmd: Command) -> ApplyResult: ...

    def add_listener(self, listener: ChangeListener) -> None: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...


class ReplicatorStopped(RuntimeError):
    pass


_STOP = object()


# who waits for a command's result: a caller on an event loop (its loop and a future, or a
# callback: ``submit_then``) or a blocking caller (``submit_sync``)
Answer: TypeAlias = Callable[[ApplyResult], None]
Target: TypeAlias = asyncio.Future[ApplyResult] | Answer
Waiter: TypeAlias = tuple[asyncio.AbstractEventLoop, Target] | Future[ApplyResult]


def _answer_all(answers: list[tuple[Target, ApplyResult]]) -> None:
    for target, result in answers:
        if isinstance(target, asyncio.Future):
            if not target.done():
                target.set_result(result)
            continue
        try:
            target(result)
        except Exception:
            log.exception("answering a write failed")


class LocalReplicator:
    """Standalone mode: apply each command locally, durably, with group commit."""

    def __init__(self, store: Store, ctx: ApplyContext) -> None:
        self._store = store
        self._ctx = ctx
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._listeners: list[ChangeListener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.commits = 0
        self.applied = 0

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        if self._thread is not None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._thread = threading.Thread(target=self._run, name="oba-writer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        self._thread = None
        log.info("writer stopped: %d commands applied in %d commits", self.applied,
                 self.commits)

    async def submit(self, cmd: Command) -> ApplyResult:
        if self._thread is None:
            raise ReplicatorStopped("the writer is not running")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ApplyResult] = loop.create_future()
        self._queue.put((cmd, (loop, fut)))
        return await fut

    def submit_then(self, cmd: Command, then: Answer) -> None:
        """Submit from the event loop without a task: ``then(result)`` runs on this loop after
        the commit (the writer process answers its listener workers' writes this way)."""
        if self._thread is None:
            raise ReplicatorStopped("the writer is not running")
        self._queue.put((cmd, (asyncio.get_running_loop(), then)))

    def submit_sync(self, cmd: Command) -> ApplyResult:
        """Blocking submit for code that runs outside the event loop (tools, bootstrap)."""
        if self._thread is None:
            raise ReplicatorStopped("the writer is not running")
        fut: Future[ApplyResult] = Future()
        self._queue.put((cmd, fut))
        return fut.result()

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        # Writers seen at once at the end of the last commit (its batch + those queued
        # meanwhile), and how long that commit took: see ``_gather``.
        writers = 1
        last_commit = 0.0
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop_after = self._gather(batch, writers, min(MAX_GROUP_WAIT, last_commit / 2))
            started = time.monotonic()
            self._commit_batch(batch)  # type: ignore[arg-type]
            last_commit = time.monotonic() - started
            writers = len(batch) + self._queue.qsize()
            if stop_after:
                return

    def _gather(self, batch: list[object], writers: int, wait: float) -> bool:
        """Add the queued commands to ``batch``; True when a stop request was met.

        Adaptive group commit: with C concurrent writers, each waiting for its answer before
        it sends the next write, the writers split into two groups that alternate (one
        queues while the other's fsync runs), so a commit holds only C/2. When fewer than
        the ``writers`` of the last commit are queued, the writer waits up to ``wait``
        (bounded by half the last commit time) for the rest, and the groups merge. A single
        writer never waits."""
        deadline = 0.0
        while len(batch) < MAX_BATCH:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                if len(batch) >= writers or wait <= 0:
                    return False
                now = time.monotonic()
                if not deadline:
                    deadline = now + wait
                if now >= deadline:
                    return False
                try:
                    nxt = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    return False
            if nxt is _STOP:
                return True
            batch.append(nxt)
        return False

    def _commit_batch(self, batch: list[tuple[Command, Waiter]]) -> None:
        def failed(one: tuple[Command, Waiter], exc: Exception
                   ) -> list[tuple[Change, Waiter]]:
            return [(Change(0, one[0], internal_error(exc)), one[1])]

        done = commit_with_fallback(batch, self._apply_all, failed)
        self.commits += 1
        # the callers on an event loop are answered with one hand-over per loop and batch
        # (not a thread-safe callback per write); a caller that stopped waiting (its client
        # went away) is skipped: its write is committed all the same
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Target, ApplyResult]]] = {}
        for change, waiter in done:
            if isinstance(waiter, Future):
                if not waiter.done():
                    waiter.set_result(change.result)
            else:
                by_loop.setdefault(waiter[0], []).append((waiter[1], change.result))
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_answer_all, answers)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass
        for change, _ in done:
            if change.result.code == ResultCode.SUCCESS:
                notify_listeners(self._listeners, change)

    def _apply_all(self, batch: list[tuple[Command, Waiter]]) -> list[tuple[Change, Waiter]]:
        out: list[tuple[Change, Waiter]] = []
        with self._store.write() as txn:
            index = txn.applied_index()
            for cmd, fut in batch:
                result = apply(txn, cmd, self._ctx)
                if result.code == ResultCode.SUCCESS:
                    index += 1
                out.append((Change(index, cmd, result), fut))
            txn.set_applied_index(index)
        # the ``with`` block committed (fsync) before anyone is answered
        self.applied += len(out)
        return out


# --------------------------------------------------------------------------- shared pieces
# (used by LocalReplicator here and by RaftReplicator in ``raft_replicator``)

T = TypeVar("T")
R = TypeVar("R")


def internal_error(exc: Exception) -> ApplyResult:
    return ApplyResult(int(ResultCode.OTHER), message=f"internal error: {exc}")


def commit_with_fallback(
    items: list[T],
    apply_all: Callable[[list[T]], list[R]],
    on_error: Callable[[T, Exception], list[R]],
) -> list[R]:
    """Apply ``items`` in one transaction; if that raises (a bug in ``apply``), retry each in a
    transaction of its own, answering an item that still raises with ``on_error``."""
    try:
        return apply_all(items)
    except Exception:
        log.exception("batch of %d commands failed; retrying one by one", len(items))
    out: list[R] = []
    for one in items:
        try:
            out.extend(apply_all([one]))
        except Exception as exc:  # a bug in apply: answer, never hang the caller
            log.exception("command failed: %r", one)
            out.extend(on_error(one, exc))
    return out


def notify_listeners(listeners: list[ChangeListener], change: Change) -> None:
    for listener in listeners:
        try:
            listener(change)
        except Exception:
            log.exception("change listener failed")
