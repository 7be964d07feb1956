"""Fault schedules for the chaos harness: generated from a seed, executed against a cluster.

Rules for this module:
- ``schedule(kind, seed, duration, n)`` is pure: the same arguments give the same list of
  ``Fault``s (start, length, what, on whom). Who "the leader" is gets decided when a fault
  starts, so a replay has the same schedule, not always the same victims; the executed log
  (``Nemesis.log``) says who was hit.
- Kinds: ``kill`` (kill -9, restart after the fault), ``pause`` (SIGSTOP/SIGCONT), ``isolate``
  (every link of one node held), ``partition`` (majority/minority, the leader on either
  side), ``bridge`` (two sides that only see one middle node), ``links`` (one direction or
  both of a pair held, reset, or delayed), ``mix`` (any of these, overlapping at times).
- Link modes follow the active faults: a link is in the strongest mode any active fault puts
  it in (blackhole > reset > delay > pass). A node is never killed and paused at once.
- ``heal`` ends everything: every node resumed or restarted, every link back to pass.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .cluster import ChaosCluster

KINDS = ("kill", "pause", "isolate", "partition", "bridge", "links", "mix")
_STRENGTH = {"pass": 0, "delay": 1, "reset": 2, "blackhole": 3}


@dataclass(frozen=True, slots=True)
class Fault:
    at: float  # seconds after the workload started
    length: float
    what: str  # kill | pause | isolate | partition | bridge | links
    who: str  # leader | follower | any
    mode: str = "blackhole"  # links: blackhole | reset | delay
    oneway: bool = False  # links: only one direction
    delay_ms: int = 0
    minority_leader: bool = True  # partition: the leader on the minority side

    def describe(self) -> str:
        extra = ""
        if self.what == "links":
            extra = f" {self.mode}{' one way' if self.oneway else ''}"
            extra += f" {self.delay_ms} ms" if self.mode == "delay" else ""
        if self.what == "partition":
            extra = " leader in the minority" if self.minority_leader else " leader in majority"
        return f"{self.at:5.1f}s +{self.length:.1f}s {self.what} {self.who}{extra}"


def schedule(kind: str, seed: int, duration: float, n: int = 3) -> list[Fault]:
    if kind not in KINDS:
        raise ValueError(f"unknown nemesis {kind!r}; one of {', '.join(KINDS)}")
    rng = random.Random(f"{kind}/{seed}/{n}")
    faults: list[Fault] = []
    t = rng.uniform(1.0, 3.0)
    while True:
        what = rng.choice(KINDS[:-1]) if kind == "mix" else kind
        length = rng.uniform(2.0, 7.0)
        if t + length > duration - 0.5:
            break
        who = rng.choice(("leader", "leader", "follower")) if what != "bridge" else "any"
        mode, oneway, delay = "blackhole", False, 0
        if what == "links":
            mode = rng.choice(("blackhole", "blackhole", "reset", "delay"))
            oneway = mode != "delay" and rng.random() < 0.3
            delay = rng.choice((60, 120, 250, 500)) if mode == "delay" else 0
        faults.append(Fault(round(t, 2), round(length, 2), what, who, mode, oneway, delay,
                            rng.random() < 0.5))
        # a mix sometimes starts the next fault while this one still holds
        overlap = kind == "mix" and rng.random() < 0.35
        t += rng.uniform(0.5, length) if overlap else length + rng.uniform(0.5, 3.0)
    return faults


@dataclass
class _Active:
    fault: Fault
    ends: float
    nodes: list[int] = field(default_factory=list)  # killed or paused
    links: dict[str, str] = field(default_factory=dict)  # link -> mode
    delay_ms: int = 0


class Nemesis:
    """Runs a schedule in a thread against ``cluster``; ``heal()`` ends every fault."""

    def __init__(self, cluster: ChaosCluster, faults: list[Fault], seed: int) -> None:
        self.cluster = cluster
        self.faults = faults
        self.rng = random.Random(f"targets/{seed}")
        self.log: list[str] = []
        self.active: list[_Active] = []
        self.t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:6.2f}s {text}")

    def _run(self) -> None:
        try:
            pending = sorted(self.faults, key=lambda f: f.at)
            while not self._stop.is_set():
                now = time.monotonic() - self.t0
                for act in [a for a in self.active if a.ends <= now]:
                    self._end(act)
                while pending and pending[0].at <= now:
                    self._begin(pending.pop(0), now)
                if not pending and not self.active:
                    return
                self._stop.wait(0.02)
        except BaseException as exc:  # reported by the run, never silently lost
            self.error = exc
            self._note(f"nemesis failed: {exc!r}")

    # ------------------------------------------------------------------ targets

    def _busy_nodes(self) -> set[int]:
        return {n for a in self.active for n in a.nodes}

    def _pick(self, who: str, free_only: bool = False) -> int:
        c = self.cluster
        busy = self._busy_nodes() if free_only else set()
        lead = c.leader()
        ids = [i for i in c.ids if i not in busy]
        if not ids:
            return 0
        if who == "leader" and lead in ids:
            return lead
        others = [i for i in ids if i != lead] or ids
        return self.rng.choice(others)

    # ------------------------------------------------------------------ faults

    def _begin(self, f: Fault, now: float) -> None:
        c = self.cluster
        act = _Active(f, now + f.length)
        ids = c.ids
        if f.what in ("kill", "pause"):
            victim = self._pick(f.who, free_only=True)
            if not victim:
                self._note(f"skip {f.what}: every node is already down")
                return
            nd = c.node(victim)
            if f.what == "kill":
                nd.kill()
            else:
                nd.pause()
            act.nodes = [victim]
            self._note(f"{f.what} node {victim} for {f.length:.1f}s")
        elif f.what == "isolate":
            victim = self._pick(f.who)
            act.links = {lk: "blackhole" for lk in self._partition_links([[victim]], ids)}
            self._note(f"isolate node {victim} for {f.length:.1f}s")
        elif f.what == "partition":
            lead = c.leader() or self.rng.choice(ids)
            others = [i for i in ids if i != lead]
            self.rng.shuffle(others)
            minority = (len(ids) - 1) // 2
            if f.minority_leader:
                small = [lead, *others[: minority - 1]]
            else:
                small = others[:minority]
            big = [i for i in ids if i not in small]
            act.links = {lk: "blackhole" for lk in self._partition_links([small, big], ids)}
            self._note(f"partition {small} | {big} (leader {lead}) for {f.length:.1f}s")
        elif f.what == "bridge":
            middle = self._pick("follower")
            others = [i for i in ids if i != middle]
            self.rng.shuffle(others)
            left, right = others[: len(others) // 2], others[len(others) // 2 :]
            act.links = {f"{a}->{b}": "blackhole" for a in ids for b in ids
                         if (a in left and b in right) or (a in right and b in left)}
            self._note(f"bridge {left} - {middle} - {right} for {f.length:.1f}s")
        elif f.what == "links":
            a = self._pick(f.who)
            b = self.rng.choice([i for i in ids if i != a])
            pair = [f"{a}->{b}"] if f.oneway else [f"{a}->{b}", f"{b}->{a}"]
            act.links = {lk: f.mode for lk in pair}
            act.delay_ms = f.delay_ms
            self._note(f"links {pair} {f.mode}"
                       f"{f' {f.delay_ms} ms' if f.mode == 'delay' else ''} for {f.length:.1f}s")
        self.active.append(act)
        self._apply_links()

    def _partition_links(self, groups: list[list[int]], ids: list[int]) -> list[str]:
        side = {n: k for k, g in enumerate(groups) for n in g}
        return [f"{a}->{b}" for a in ids for b in ids
                if a != b and side.get(a, -1) != side.get(b, -1)]

    def _end(self, act: _Active) -> None:
        self.active.remove(act)
        c = self.cluster
        for victim in act.nodes:
            nd = c.node(victim)
            if act.fault.what == "kill":
                nd.start()
                self._note(f"restart node {victim}")
            else:
                nd.resume()
                self._note(f"resume node {victim}")
        if act.links:
            self._note(f"end {act.fault.what} on {sorted(act.links)}")
        self._apply_links()

    def _apply_links(self) -> None:
        want: dict[str, tuple[str, int]] = {}
        for act in self.active:
            for link, mode in act.links.items():
                cur = want.get(link, ("pass", 0))
                if _STRENGTH[mode] > _STRENGTH[cur[0]]:
                    want[link] = (mode, act.delay_ms)
        c = self.cluster
        groups: dict[tuple[str, int], list[str]] = {}
        for link in c.links:
            mode, delay = want.get(link, ("pass", 0))
            if c.modes.get(link) != mode or mode == "delay":
                groups.setdefault((mode, delay), []).append(link)
        for (mode, delay), links in groups.items():
            c.set_links(links, mode, delay)

    def heal(self) -> None:
        """End every fault now: resume, restart, every link back to pass."""
        self.stop()
        for act in list(self.active):
            self._end(act)
        c = self.cluster
        for nd in c.nodes:
            if nd.paused:
                nd.resume()
            if not nd.alive:
                nd.start()
        c.heal_links()
        self._note("healed")

    def summary(self) -> dict[str, Any]:
        return {"faults": [f.describe() for f in self.faults], "log": self.log}
