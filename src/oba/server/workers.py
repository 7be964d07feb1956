"""The writer process's side of ``server.workers``: starts, feeds and stops listener workers.

Rules for this module:
- ``worker_count`` turns the config value into a process count (0: one per CPU core). With a
  count above 1, ``WorkerPool`` starts ``count - 1`` worker processes (``oba.server.worker``)
  once the node serves, handing them the node's listening sockets; the node itself stays the
  writer and one of the listeners. ``server.maxConnections`` counts every process's
  connections (``oba.server.board``). (Not SO_REUSEPORT: with it a second server started on the
  same port would silently share it instead of failing, and the kernel would hash connections
  to a busy process while another idles.)
- Each worker has a ``Channel``. From a worker: ``submit`` (a Command, answered with its
  ApplyResult after the node's replicator committed it), ``barrier`` (cluster mode: a
  linearizable read; a follower answers "local"), ``audit`` (a record for the node's audit
  store), ``want`` (change events on/off), ``stats`` (its LDAP counters, every
  second, merged by ``Node.all_stats`` for /metrics and the REST stats), ``ready``. To a
  worker: ``hello``, ``change``, ``acl`` and ``hot`` (answered: ``sync`` waits make a change
  visible everywhere before the caller reports it done), ``ping``, ``stop``.
- A worker that dies is restarted after ``RESTART_DELAY`` (stale LMDB reader slots are
  cleared first); ``stop`` asks every worker to stop, waits ``STOP_GRACE`` seconds and kills
  the ones still running, so the node never leaves a process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from oba.acl.document import AclDocument
from oba.cluster.raft_replicator import result_to_wire
from oba.cluster.replicator import Change
from oba.config import Config
from oba.directory.commands import decode, encode
from oba.server.board import ConnectionBoard
from oba.server.channel import Channel, Message

log = logging.getLogger("oba.workers")

RESTART_DELAY = 1.0
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
    want_changes: bool = False
    stats: dict[str, Any] | None = None  # the worker's last counters (``Stats.snapshot``)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pid: int = 0


class WorkerPool:
    """The ``count - 1`` listener workers of one node (``runtime`` is the ``NodeRuntime``)."""

    def __init__(self, runtime: Any, count: int) -> None:
        self.runtime = runtime
        self.node = runtime.node
        self.count = count
        self.workers: dict[int, _Worker] = {}
        self.fds: dict[bool, int] = {}  # implicit_tls -> the node's listening socket
        self.board: ConnectionBoard  # every process's open connections (maxConnections)
        self.stopping = False
        self.restarts = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, fds: dict[bool, int]) -> None:
        """Start the workers; ``fds`` are the node's listening sockets (LDAP, LDAPS)."""
        self._loop = asyncio.get_running_loop()
        self.fds = dict(fds)
        self.board = ConnectionBoard.create(self.count)
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
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "oba.server.worker", str(child.fileno())],
                pass_fds=(child.fileno(), self.board.fd, *self.fds.values()),
                stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            child.close()
        holder: list[_Worker] = []
        _, channel = await loop.connect_accepted_socket(
            lambda: Channel(lambda msg: self._handle(holder[0], msg),
                            lambda: self._lost(holder[0])), parent)
        worker = _Worker(slot, proc, channel, pid=proc.pid)
        holder.append(worker)
        self.workers[slot] = worker
        channel.send({"t": "hello", "config": self.runtime.config.model_dump(mode="json",
                                                                              by_alias=True),
                      "fds": {int(tls): fd for tls, fd in self.fds.items()},
                      "board": [self.board.fd, self.board.slots, slot],
                      "acl": self._acl_payload(self.node.access.document,
                                               self.node.access.source),
                      "audit": not _null_audit(self.node.audit)})
        log.info("listener worker %d started (pid %d)", slot, proc.pid)

    def _lost(self, worker: _Worker) -> None:
        if self.workers.get(worker.slot) is worker:
            del self.workers[worker.slot]
        self.board.clear(worker.slot)  # its connections died with it
        if self.stopping:
            return
        log.warning("listener worker %d (pid %d) went away: restarting it", worker.slot,
                    worker.pid)
        self._spawn_task(self._restart(worker))

    async def _restart(self, worker: _Worker) -> None:
        await self._reap(worker)
        with contextlib.suppress(Exception):
            self.node.store.env.reader_check()  # slots of a killed reader
        await asyncio.sleep(RESTART_DELAY)
        if not self.stopping:
            self.restarts += 1
            await self._spawn(worker.slot)

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

    async def stop(self) -> None:
        self.stopping = True
        workers = list(self.workers.values())
        for worker in workers:
            worker.channel.send({"t": "stop"})
        await asyncio.gather(*(self._reap(w) for w in workers))
        for worker in workers:
            worker.channel.close()
        for task in list(self._tasks):
            task.cancel()
        self.workers.clear()
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

    def stats_snapshots(self) -> list[dict[str, Any]]:
        return [w.stats for w in self.workers.values() if w.stats is not None]

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers.values()]

    # ------------------------------------------------------------------ from the workers

    def _handle(self, worker: _Worker, msg: Message) -> None:
        kind = msg.get("t")
        if kind == "submit":
            self._spawn_task(self._submit(worker, msg))
        elif kind == "audit":
            level, message, source, user, request_id, fields = msg["a"]
            self.node.audit.record(level, message, source, user, request_id, **dict(fields))
        elif kind == "barrier":
            self._spawn_task(self._barrier(worker, msg))
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
            worker.channel.reply(msg, {"t": "result", "r": result_to_wire(result)})
        except Exception as exc:  # the worker answers the client with 52
            log.warning("write from listener worker %d failed: %s", worker.slot, exc)
            worker.channel.reply(msg, {"t": "result", "r": {"c": 52, "s": str(exc)}})

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
        await asyncio.gather(*(self._ask(w, {"t": "ping"}) for w in list(self.workers.values())))


def _null_audit(audit: Any) -> bool:
    from oba.audit.sink import NullAudit

    return isinstance(audit, NullAudit)


async def start_workers(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    """Start the pool when ``server.workers`` asks for more than one process; returns its
    stop callable (``runtime.workers`` is set to the pool, ``runtime.node.workers`` too)."""
    count = worker_count(runtime.config)
    if count <= 1:
        return None
    pool = WorkerPool(runtime, count)
    runtime.workers = pool
    runtime.node.workers = pool
    await pool.start(runtime.ldap.fds)
    if not await pool.wait_ready(READY_TIMEOUT):
        log.warning("not every listener worker serves after %.0f s; going on", READY_TIMEOUT)
    return pool.stop


async def sync_workers(node: Any) -> None:
    """Wait until the node's workers have applied what was sent to them (no-op without)."""
    pool = getattr(node, "workers", None)
    if pool is not None:
        await pool.sync()
