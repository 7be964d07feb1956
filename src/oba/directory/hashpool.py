"""The bounded pool every password hash and verification of a process runs in.

Rules for this module:
- One pool per process (``shared``), sized to the cores: ``threads`` hash at once, at most
  ``queue`` more wait, and a job that would exceed that is refused at once with ``HashBusy``
  (the caller answers LDAP busy, 51, or HTTP 503) instead of piling up. Every wait is bounded
  too: a job still queued after ``WAIT_TIMEOUT`` seconds is dropped with ``HashBusy``.
- The threads run at a lower CPU priority than the rest of the process (``NICE`` above it,
  Linux per-thread nice), so that under a flood of binds the event loop — other clients' reads,
  Raft heartbeats — is scheduled first and the hashing takes the CPU that is left.
- Nothing here blocks the event loop: ``run`` takes a lock only to count, and waits for the
  job's thread through an asyncio future. A caller cancelled while its job is queued (a
  connection closed) takes the job out of the queue.
- No directory semantics here: callers pass plain callables (``oba.directory.password``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("oba.hashing")

T = TypeVar("T")

NICE = 5  # added to the hashing threads' nice value: the event loop goes first
WAIT_TIMEOUT = 5.0  # seconds a job may wait in the queue before it is refused


class HashBusy(Exception):
    """Too many password hashes or verifications waiting: try again later."""


def cores() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def auto_threads(processes: int) -> int:
    """Hashing threads per process when ``processes`` listener processes share the cores
    (``server.workers``; 0: one per core): the cores divided among them, at least one."""
    count = processes if processes > 0 else cores()
    return max(1, cores() // max(1, count))


def _lower_priority(nice: int) -> None:
    """Thread initializer: lower this thread's CPU priority (Linux: nice is per thread)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # not permitted here: the thread keeps the process's priority
        log.debug("cannot lower the priority of the hashing threads", exc_info=True)


class HashPool:
    """``threads`` hashing threads and a queue of at most ``queue`` waiting jobs."""

    def __init__(self, threads: int, queue: int, wait_timeout: float = WAIT_TIMEOUT,
                 nice: int = NICE) -> None:
        self.threads = max(1, threads)
        self.queue = max(0, queue)
        self.wait_timeout = wait_timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.threads, thread_name_prefix="oba-hash", initializer=_lower_priority,
            initargs=(nice,))
        self._lock = threading.Lock()
        self._pending = 0  # jobs queued or running
        self.completed = 0
        self.refused = 0  # refused at once: the queue was full
        self.timed_out = 0  # refused after WAIT_TIMEOUT in the queue

    @property
    def capacity(self) -> int:
        """Jobs accepted at once: running plus waiting."""
        return self.threads + self.queue

    @property
    def pending(self) -> int:
        return self._pending

    def _done(self, fut: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending -= 1
            if not fut.cancelled():
                self.completed += 1

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a hashing thread; ``HashBusy`` when the queue is full or the job
        waited ``wait_timeout`` seconds without starting."""
        with self._lock:
            if self._pending >= self.threads + self.queue:
                self.refused += 1
                raise HashBusy("too many password checks waiting")
            self._pending += 1
        try:
            fut = self._executor.submit(fn)
        except RuntimeError:  # shut down (a pool replaced by ``shared``)
            with self._lock:
                self._pending -= 1
            raise HashBusy("the password hashing pool is shut down") from None
        fut.add_done_callback(self._done)
        loop = asyncio.get_running_loop()
        # cancelling ``waiter`` (the caller went away) cancels a job still queued
        waiter = asyncio.wrap_future(fut, loop=loop)
        expired: list[bool] = []

        def expire() -> None:
            if fut.cancel():  # still queued after wait_timeout: it never runs
                expired.append(True)
                with self._lock:
                    self.timed_out += 1

        timer = loop.call_later(self.wait_timeout, expire)
        try:
            return await waiter
        except asyncio.CancelledError:
            if expired:
                raise HashBusy("password check not started in time") from None
            raise
        finally:
            timer.cancel()

    def shutdown(self) -> None:
        """Refuse new jobs; running and queued ones finish (their threads then end)."""
        self._executor.shutdown(wait=False)


_SHARED: HashPool | None = None
_SHARED_LOCK = threading.Lock()


def shared(threads: int, queue: int) -> HashPool:
    """This process's pool, (re)made with ``threads`` and ``queue`` when they changed."""
    global _SHARED
    with _SHARED_LOCK:
        pool = _SHARED
        if pool is None or pool.threads != max(1, threads) or pool.queue != max(0, queue):
            if pool is not None:
                pool.shutdown()
            pool = _SHARED = HashPool(threads, queue)
        return pool
