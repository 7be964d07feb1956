"""The writer process's side of ``server.workers``: starts, feeds and stops listener workers.

Rules for this module:
- ``worker_count`` turns the config value into a process count (0: one per CPU core). With a
  count above 1, ``make_pool`` builds the ``WorkerPool`` before the LDAP listener starts and
  makes it the listener's ``Dispatcher``: the node accepts every LDAP/LDAPS connection and
  keeps it or passes it (SCM_RIGHTS) to the listener process with the fewest open connections
  (``oba.server.board``, which ``server.maxConnections`` also counts). ``start_workers`` starts
  ``count - 1`` worker processes (``oba.server.worker``) once the node serves; the node itself
  stays the writer and one of the listeners. (Not SO_REUSEPORT or a shared accept queue: with
  the first a second server started on the same port would silently share it and the kernel
  hashes connections without regard to load; with the second the first process to wake takes
  a whole burst of connections.)
- Each worker has a ``Channel``. From a worker: ``submit`` (a Command, answered with its
  ApplyResult after the node's replicator committed it), ``barrier`` (cluster mode: a
  linearizable read; a follower answers "local"), ``audit`` (a record for the node's audit
  store), ``want`` (change events on/off), ``stats`` (its LDAP counters, every
  second, merged by ``Node.all_stats`` for /metrics and the REST stats), ``ready``. To a
  worker: ``hello``, ``change``, ``acl`` and ``hot`` (answered: ``sync`` waits make a change
  visible everywhere before the caller reports it done), ``ping``, ``stop``.
- A worker that dies is restarted after ``RESTART_DELAY`` (stale LMDB reader slots are
  cleared first), doubling up to ``MAX_RESTART_DELAY`` while each dies within
  ``STABLE_AFTER`` seconds of its start; ``stop`` asks every worker to stop, waits
  ``STOP_GRACE`` seconds and kills the ones still running, so the node never leaves a
  process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from oba.acl.document import AclDocument
from oba.cluster.raft_replicator import result_to_wire
from oba.cluster.replicator import Change, LocalReplicator
from oba.config import Config
from oba.directory.apply import ApplyResult
from oba.directory.commands import decode, encode
from oba.server.board import ConnectionBoard
from oba.server.channel import Channel, Message

log = logging.getLogger("oba.workers")

RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0  # a worker that keeps dying soon after its start backs off to this
STABLE_AFTER = 10.0  # seconds a worker must live for its next restart to be quick again
STOP_GRACE = 5.0
SYNC_TIMEOUT = 5.0
READY_TIMEOUT = 30.0  # the node's "ready" banner waits this long for its workers


def worker_count(config: Config) -> int:
    """Listener processes for ``server.workers`` (0: one per CPU core)."""
    configured = int(config.server.workers)
    if configured > 0:
        return configured
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


@dataclass
class _Worker:
    slot: int
    proc: subprocess.Popen[bytes]
    channel: Channel
    conns: socket.socket  # accepted connections are passed over it (SCM_RIGHTS)
    # connections passed but not yet confirmed: id -> (this process's socket, implicit_tls)
    unacked: dict[int, tuple[socket.socket, bool]] = field(default_factory=dict)
    want_changes: bool = False
    stats: dict[str, Any] | None = None  # the worker's last counters (``Stats.snapshot``)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pid: int = 0
    started: float = field(default_factory=time.monotonic)
    delay: float = RESTART_DELAY  # before the restart that follows this worker's death


class WorkerPool:
    """The ``count - 1`` listener workers of one node (``runtime`` is the ``NodeRuntime``)."""

    def __init__(self, runtime: Any, count: int) -> None:
        self.runtime = runtime
        self.node = runtime.node
        self.count = count
        self.workers: dict[int, _Worker] = {}
        # every process's open connections (maxConnections, and where a new one goes)
        self.board = ConnectionBoard.create(count)
        self._turn = 0  # ties in ``choose`` go round the processes
        self._handed = 0  # connections passed to workers so far (their ids)
        self.stopping = False
        self.pausing = False  # workers stopped on purpose for a while (``paused``)
        self.restarts = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the workers (the node's listener dispatches to them once they are ready)."""
        self._loop = asyncio.get_running_loop()
        self.node.store.restore_guard = self.paused
        stats = self.node.stats
        stats.board = self.board
        stats.connections = stats.connections  # publish this process's count
        self.node.replicator.add_listener(self._on_change_thread)
        self.node.access.on_change.append(self._on_acl)
        for slot in range(1, self.count):
            await self._spawn(slot)

    async def _spawn(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # one datagram per connection: a kind byte and its descriptor, never merged
        conns, conns_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conns.setblocking(False)
        child_fds = (child.fileno(), conns_child.fileno())  # their numbers in the child too
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "oba.server.worker", str(child_fds[0])],
                pass_fds=(*child_fds, self.board.fd),
                stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            child.close()
            conns_child.close()
        holder: list[_Worker] = []
        _, channel = await loop.connect_accepted_socket(
            lambda: Channel(lambda msg: self._handle(holder[0], msg),
                            lambda: self._lost(holder[0])), parent)
        worker = _Worker(slot, proc, channel, conns, pid=proc.pid)
        holder.append(worker)
        self.workers[slot] = worker
        channel.send({"t": "hello", "config": self.runtime.config.model_dump(mode="json",
                                                                              by_alias=True),
                      "conns": child_fds[1],
                      "board": [self.board.fd, self.board.slots, slot],
                      "acl": self._acl_payload(self.node.access.document,
                                               self.node.access.source),
                      "audit": not _null_audit(self.node.audit)})
        log.info("listener worker %d started (pid %d)", slot, proc.pid)

    def _lost(self, worker: _Worker) -> None:
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        self.board.clear(worker.slot)  # its connections died with it
        worker.conns.close()
        for conn, implicit_tls in worker.unacked.values():  # passed but never taken over
            self.runtime.ldap.serve_socket(conn, implicit_tls)
        worker.unacked.clear()
        if self.stopping or self.pausing:
            return
        log.warning("listener worker %d (pid %d) went away: restarting it", worker.slot,
                    worker.pid)
        self._spawn_task(self._restart(worker))

    async def _restart(self, worker: _Worker) -> None:
        await self._reap(worker)
        with contextlib.suppress(Exception):
            self.node.store.env.reader_check()  # slots of a killed reader
        quick = time.monotonic() - worker.started < STABLE_AFTER
        delay = worker.delay if quick else RESTART_DELAY
        await asyncio.sleep(delay)
        if not self.stopping:
            self.restarts += 1
            await self._spawn(worker.slot)
            replacement = self.workers.get(worker.slot)
            if replacement is not None and quick:
                replacement.delay = min(MAX_RESTART_DELAY, delay * 2)

    async def _reap(self, worker: _Worker, grace: float = STOP_GRACE) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(None, worker.proc.wait), grace)
        except TimeoutError:
            log.warning("listener worker %d (pid %d) did not stop: killed", worker.slot,
                        worker.pid)
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
            await loop.run_in_executor(None, worker.proc.wait)

    async def _stop_workers(self) -> None:
        workers = list(self.workers.values())
        for worker in workers:
            worker.channel.send({"t": "stop"})
        await asyncio.gather(*(self._reap(w) for w in workers))
        for worker in workers:
            worker.channel.close()
            for conn, _ in worker.unacked.values():
                conn.close()
            worker.unacked.clear()
            self.board.clear(worker.slot)
        self.workers.clear()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No worker runs inside the block (the store's ``restore_guard``: a snapshot is being
        installed); they are started again after it. Their connections are closed; new ones
        are served by this process meanwhile."""
        self.pausing = True
        try:
            log.info("stopping the listener workers while the database is replaced")
            await self._stop_workers()
            yield
        finally:
            self.pausing = False
            if not self.stopping:  # they take connections again once each is ready
                for slot in range(1, self.count):
                    await self._spawn(slot)

    async def stop(self) -> None:
        self.stopping = True
        self.node.store.restore_guard = None
        await self._stop_workers()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(ValueError):
            self.node.access.on_change.remove(self._on_acl)
        self.node.stats.board = None
        self.board.close()

    async def wait_ready(self, timeout: float) -> bool:
        """True when every worker listens (within ``timeout`` seconds)."""
        try:
            await asyncio.wait_for(
                asyncio.gather(*(w.ready.wait() for w in self.workers.values())), timeout)
        except TimeoutError:
            return False
        return len(self.workers) == self.count - 1

    # ------------------------------------------------------------------ the listener's Dispatcher

    def choose(self, burst: list[int]) -> int:
        """The process for a new connection: the fewest open connections (counting the ones
        handed out in this accept ``burst``, not yet counted by their process); slot 0 is this
        one."""
        counts = self.board.counts()
        slots = [0, *(w.slot for w in self.workers.values() if w.ready.is_set())]
        self._turn = (self._turn + 1) % len(slots)
        order = slots[self._turn:] + slots[:self._turn]
        return min(order, key=lambda slot: counts[slot] + burst.count(slot))

    def hand_over(self, slot: int, conn: socket.socket, implicit_tls: bool) -> bool:
        """Pass ``conn`` to the worker in ``slot`` (True: the pool owns ``conn`` now); False
        when it cannot take it now. This process keeps its descriptor until the worker says it
        has the connection (``got``): if the worker dies first, the connection is served
        here instead of being lost with it."""
        worker = self.workers.get(slot)
        if worker is None or not worker.ready.is_set():
            return False
        self._handed += 1
        ident = self._handed
        try:
            socket.send_fds(worker.conns, [(b"S" if implicit_tls else b"L")
                                           + ident.to_bytes(8, "big")], [conn.fileno()])
        except OSError:
            return False
        worker.unacked[ident] = (conn, implicit_tls)
        return True

    def stats_snapshots(self) -> list[dict[str, Any]]:
        return [w.stats for w in self.workers.values() if w.stats is not None]

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers.values()]

    # ------------------------------------------------------------------ from the workers

    def _handle(self, worker: _Worker, msg: Message) -> None:
        kind = msg.get("t")
        if kind == "submit":
            replicator = self.node.replicator
            if isinstance(replicator, LocalReplicator):  # standalone: no task per write
                try:
                    replicator.submit_then(
                        decode(msg["c"]), lambda result: self._answer(worker, msg, result, None))
                except Exception as exc:  # undecodable, or the writer has stopped
                    self._answer(worker, msg, None, exc)
            else:
                self._spawn_task(self._submit(worker, msg))
        elif kind == "audit":
            add = getattr(self.node.audit, "add_records", None)
            if add is not None:
                add(msg["a"])
        elif kind == "barrier":
            self._spawn_task(self._barrier(worker, msg))
        elif kind == "got":
            taken = worker.unacked.pop(int(msg["i"]), None)
            if taken is not None:
                taken[0].close()
        elif kind == "stats":
            worker.stats = dict(msg["s"])
        elif kind == "want":
            worker.want_changes = bool(msg.get("on"))
        elif kind == "ready":
            worker.ready.set()
            log.info("listener worker %d (pid %d) serving", worker.slot, worker.pid)

    async def _submit(self, worker: _Worker, msg: Message) -> None:
        try:
            result = await self.node.replicator.submit(decode(msg["c"]))
        except Exception as exc:
            self._answer(worker, msg, None, exc)
            return
        self._answer(worker, msg, result, None)

    def _answer(self, worker: _Worker, msg: Message, result: ApplyResult | None,
                error: Exception | None) -> None:
        if result is not None:
            # without the entry: nothing on a worker's write path reads it (the operations
            # layer answers from code, message and matchedDN), and it is the bulk of the reply
            worker.channel.reply(msg, {"t": "result",
                                       "r": result_to_wire(result, with_entry=False)})
            return
        # the worker answers the client with 52
        log.warning("write from listener worker %d failed: %s", worker.slot, error)
        worker.channel.reply(msg, {"t": "result", "r": {"c": 52, "s": str(error)}})

    async def _barrier(self, worker: _Worker, msg: Message) -> None:
        cluster = self.node.cluster
        if cluster is None or not cluster.is_leader():
            worker.channel.reply(msg, {"t": "local"})
            return
        try:
            await cluster.read_barrier()
        except Exception as exc:
            worker.channel.reply(msg, {"t": "barrier", "err": str(exc) or type(exc).__name__})
            return
        worker.channel.reply(msg, {"t": "barrier"})

    def _spawn_task(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ to the workers

    def _on_change_thread(self, change: Change) -> None:
        """Replicator listener (writer thread): hand the change to the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed() and any(
                w.want_changes for w in self.workers.values()):
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._send_change, change)

    def _send_change(self, change: Change) -> None:
        msg: Message | None = None
        for worker in self.workers.values():
            if worker.want_changes:
                if msg is None:
                    msg = {"t": "change", "i": change.index, "c": encode(change.command),
                           "r": result_to_wire(change.result)}
                worker.channel.send(msg)

    @staticmethod
    def _acl_payload(document: AclDocument | None, source: str) -> dict[str, Any] | None:
        if document is None:
            return None
        return {"document": document.model_dump(mode="json"), "source": source}

    def _on_acl(self, document: AclDocument | None, source: str) -> None:
        msg = {"t": "acl", "acl": self._acl_payload(document, source)}
        for worker in self.workers.values():
            self._spawn_task(self._ask(worker, dict(msg)))

    async def _ask(self, worker: _Worker, msg: Message) -> None:
        with contextlib.suppress(Exception):  # a worker that went away is restarted anyway
            await worker.channel.call(msg, SYNC_TIMEOUT)

    def push_hot(self, section: str, values: dict[str, Any]) -> None:
        """Hot-reloadable keys changed in ``section``: the workers apply them too."""
        msg = {"t": "hot", "section": section, "values": values}
        for worker in self.workers.values():
            self._spawn_task(self._ask(worker, dict(msg)))

    async def sync(self) -> None:
        """Return once every worker has handled every message sent to it so far (the
        channel is ordered: a ping's answer means everything before it was handled)."""
        # a worker not serving yet handles everything sent to it before it takes a connection
        await asyncio.gather(*(self._ask(w, {"t": "ping"}) for w in list(self.workers.values())
                               if w.ready.is_set()))


def _null_audit(audit: Any) -> bool:
    from oba.audit.sink import NullAudit

    return isinstance(audit, NullAudit)


def make_pool(runtime: Any) -> WorkerPool | None:
    """The pool when ``server.workers`` asks for more than one process (before the LDAP
    listener starts: it becomes the listener's dispatcher), else None."""
    count = worker_count(runtime.config)
    if count <= 1:
        return None
    pool = WorkerPool(runtime, count)
    runtime.node.workers = pool
    runtime.ldap.dispatcher = pool
    return pool


async def start_workers(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    """Start the processes of ``runtime.workers`` (made by ``make_pool``); returns the stop
    callable, or None without workers."""
    pool: WorkerPool | None = runtime.workers
    if pool is None:
        return None
    await pool.start()
    ready = asyncio.ensure_future(pool.wait_ready(READY_TIMEOUT))
    stop = asyncio.ensure_future(runtime.stopping.wait())
    await asyncio.wait((ready, stop), return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not ready.done():  # a stop signal came first: do not hold it up
        ready.cancel()
    elif not ready.result():
        log.warning("not every listener worker serves after %.0f s; going on", READY_TIMEOUT)
    return pool.stop


async def sync_workers(node: Any) -> None:
    """Wait until the node's workers have applied what was sent to them (no-op without)."""
    pool = getattr(node, "workers", None)
    if pool is not None:
        await pool.sync()
