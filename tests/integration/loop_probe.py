"""Run ``oba serve`` with an event-loop stall probe, for tests (``test_rest_first_requests``).

Usage: ``python tests/integration/loop_probe.py REPORT.json serve --config FILE``. The node runs
unchanged (the ``oba`` command line, uvloop and all); beside it:

- a task on the node's loop sleeps ``INTERVAL`` again and again and records every wake-up that
  comes more than ``STALL`` late: the wall-clock lateness (``wallMs``: how long nothing else ran
  on the loop) and the CPU time the loop's thread used meanwhile (``cpuMs``, from
  ``time.thread_time``: work done ON the loop; a process descheduled by a busy machine does not
  accumulate it);
- a watchdog thread samples the loop thread's stack while a wake-up is late, so a report names
  the code that blocked the loop;
- every import is attributed to the thread that runs it (``importlib._bootstrap._find_and_load``,
  which both the ``import`` statement and ``importlib.import_module`` go through, is wrapped):
  ``loopImports`` are the modules the loop's own thread imported, ``newModules`` every module
  that appeared (worker threads may import off the loop: that is fine);
- garbage collections over 10 ms are listed (``collections``: how long, which generation, on
  the loop's thread or not), to tell a collector pause from code in a stall;
- ``SIGUSR1`` writes the report (stalls, the largest lateness, the modules imported) of the
  window since the previous ``SIGUSR1`` (the first window starts when the node starts; in
  cluster mode it restarts once the Raft node runs) and opens a new window. The file is
  replaced atomically and carries ``seq`` (1, 2, ...).

Rules: nothing here changes what the node does; it only watches. Stopped like any node (SIGTERM).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import importlib._bootstrap as bootstrap
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

INTERVAL = 0.005
STALL = 0.020  # a wake-up later than this is recorded (with stack samples)
SAMPLE_EVERY = 0.005


class LoopProbe:
    def __init__(self, report: Path) -> None:
        self.report = report
        self.seq = 0
        self.loop_ident = threading.get_ident()
        self.beat = time.perf_counter()
        self.samples: collections.Counter[str] = collections.Counter()
        self.sampling = threading.Lock()
        self._reset()
        find_and_load = bootstrap._find_and_load

        def traced(name: str, import_: Any) -> Any:
            if threading.get_ident() == self.loop_ident and name not in sys.modules:
                self.loop_imports.append(name)
            return find_and_load(name, import_)

        bootstrap._find_and_load = traced
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def _reset(self) -> None:
        self.max_lag = 0.0
        self.stalls: list[dict[str, Any]] = []
        self.loop_imports: list[str] = []
        self.collections: list[dict[str, Any]] = []  # garbage collections over 10 ms
        self.modules = set(sys.modules)
        self.window_started = time.time()

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        if took > 0.010:
            self.collections.append({
                "at": round(time.time(), 3), "ms": round(took * 1000, 1),
                "generation": info.get("generation"),
                "onLoop": threading.get_ident() == self.loop_ident})

    def start_watchdog(self) -> None:
        threading.Thread(target=self._watchdog, name="loop-probe", daemon=True).start()

    async def watch(self) -> None:
        self.loop_ident = threading.get_ident()
        while True:
            t0 = self.beat = time.perf_counter()
            c0 = time.thread_time()
            await asyncio.sleep(INTERVAL)
            lag = time.perf_counter() - t0 - INTERVAL
            self.max_lag = max(self.max_lag, lag)
            if lag > STALL:
                with self.sampling:
                    top = self.samples.most_common(1)
                    self.samples.clear()
                self.stalls.append({
                    "at": round(time.time(), 3), "wallMs": round(lag * 1000, 1),
                    "cpuMs": round((time.thread_time() - c0) * 1000, 1),
                    "stack": top[0][0] if top else ""})

    def _watchdog(self) -> None:
        while True:
            time.sleep(SAMPLE_EVERY)
            if time.perf_counter() - self.beat - INTERVAL <= STALL:
                continue
            frame = sys._current_frames().get(self.loop_ident)
            if frame is None:
                continue
            frames = traceback.extract_stack(frame)[-16:]
            key = "\n".join(f"  {f.filename}:{f.lineno} {f.name}" for f in reversed(frames))
            with self.sampling:
                self.samples[key] += 1

    def write_report(self) -> None:
        self.seq += 1
        data = {"seq": self.seq, "pid": os.getpid(), "windowStarted": self.window_started,
                "maxLagMs": round(self.max_lag * 1000, 1), "stalls": self.stalls,
                "loopImports": sorted({m for m in self.loop_imports if m in sys.modules}),
                "newModules": sorted(set(sys.modules) - self.modules),
                "collections": self.collections}
        tmp = self.report.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.report)
        self._reset()


def main() -> None:
    probe = LoopProbe(Path(sys.argv.pop(1)))
    probe.start_watchdog()  # now: Thread.start() waits for the new thread, never on the loop

    import oba.app
    from oba.cluster import runtime as cluster_runtime

    run = oba.app.NodeRuntime.run
    start_cluster = cluster_runtime.ClusterRuntime.start

    async def probed_run(self: oba.app.NodeRuntime) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, probe.write_report)
        watcher = asyncio.ensure_future(probe.watch())
        try:
            return await run(self)
        finally:
            watcher.cancel()

    async def probed_start(self: Any, *args: Any, **kwargs: Any) -> None:
        await start_cluster(self, *args, **kwargs)
        probe._reset()  # the Raft node ticks from now on: what follows must not block it

    oba.app.NodeRuntime.run = probed_run  # type: ignore[method-assign]
    cluster_runtime.ClusterRuntime.start = probed_start  # type: ignore[method-assign]

    from oba.cli import main as cli_main

    sys.argv = ["oba", *sys.argv[1:]]
    cli_main()


if __name__ == "__main__":
    main()
