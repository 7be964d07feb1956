"""The bounded hashing pool: at most threads + queue jobs at once, the rest refused at once
(``HashBusy``); a job that waits too long or whose caller goes away never runs; the threads run
at a lower CPU priority than the event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from oba.directory import hashpool
from oba.directory.hashpool import HashBusy, HashPool


def test_refuses_beyond_threads_plus_queue_and_runs_the_rest() -> None:
    async def main() -> None:
        pool = HashPool(threads=1, queue=2)
        gate = threading.Event()
        ran: list[int] = []

        def job(n: int) -> int:
            gate.wait(5)
            ran.append(n)
            return n

        accepted = [asyncio.ensure_future(pool.run(lambda n=n: job(n))) for n in range(3)]
        await asyncio.sleep(0)  # every task has submitted its job
        started = time.perf_counter()
        with pytest.raises(HashBusy):
            await pool.run(lambda: job(99))
        assert time.perf_counter() - started < 0.1  # refused at once, not queued
        assert pool.refused == 1 and pool.pending == 3
        gate.set()
        assert await asyncio.gather(*accepted) == [0, 1, 2]
        assert ran == [0, 1, 2] and pool.pending == 0 and pool.completed == 3
        assert await pool.run(lambda: 7) == 7  # room again
        pool.shutdown()

    asyncio.run(main())


def test_a_job_waiting_too_long_is_dropped_and_never_runs() -> None:
    async def main() -> None:
        pool = HashPool(threads=1, queue=4, wait_timeout=0.2)
        gate = threading.Event()
        ran: list[str] = []
        blocker = asyncio.ensure_future(pool.run(lambda: (gate.wait(5), ran.append("first"))))
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(HashBusy):
            await pool.run(lambda: ran.append("late"))
        assert 0.15 < time.perf_counter() - started < 2.0
        gate.set()
        await blocker
        await asyncio.sleep(0.05)
        assert ran == ["first"] and pool.timed_out == 1 and pool.pending == 0
        pool.shutdown()

    asyncio.run(main())


def test_a_cancelled_caller_takes_its_job_out_of_the_queue() -> None:
    async def main() -> None:
        pool = HashPool(threads=1, queue=4)
        gate = threading.Event()
        ran: list[str] = []
        blocker = asyncio.ensure_future(pool.run(lambda: (gate.wait(5), ran.append("first"))))
        waiting = asyncio.ensure_future(pool.run(lambda: ran.append("cancelled")))
        await asyncio.sleep(0.05)
        waiting.cancel()
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        await asyncio.sleep(0.05)
        assert ran == ["first"] and pool.pending == 0
        pool.shutdown()

    asyncio.run(main())


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no per-thread nice here")
def test_threads_run_below_the_event_loop() -> None:
    async def main() -> None:
        pool = HashPool(threads=1, queue=1)
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        theirs = await pool.run(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        assert theirs == min(19, mine + hashpool.NICE)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
        pool.shutdown()

    asyncio.run(main())


def test_sized_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashpool, "_SHARED", None)  # restored afterwards
    cores = hashpool.cores()
    assert hashpool.auto_threads(1) == cores  # one listener process: every core
    assert hashpool.auto_threads(0) == 1  # one listener process per core: one each
    assert hashpool.auto_threads(cores * 4) == 1
    pool = hashpool.shared(2, 8)
    assert hashpool.shared(2, 8) is pool  # one per process
    other = hashpool.shared(3, 8)
    assert other is not pool and other.threads == 3
    other.shutdown()
