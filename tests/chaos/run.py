"""Run the chaos harness: ``make chaos SEEDS=N`` or, from the project root,
``PYTHONPATH=tests .venv/bin/python -m chaos.run [options]``.

One run: start a 3-node cluster whose Raft links all pass through proxies, create the
registers, run the clients for ``--duration`` seconds while a nemesis injects the seed's
schedule, heal everything, wait for convergence (bounded), read every node directly, check.

    --seeds N            run seeds first..first+N-1, the nemesis kind cycling through --kinds
    --seed S --kind K    replay one run (same schedule; "the leader" is whoever leads then)
    --duration 60        seconds of workload and faults per run
    --out DIR            one JSON line per run (results.jsonl) and the logs of failed runs

Exit status 1 when any run failed a check. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import ldap

from .checker import check_registers, check_set
from .cluster import ChaosCluster
from .nemesis import KINDS, Nemesis, schedule
from .workload import Client, History, dump, read_registers, read_set, setup

T = TypeVar("T")

CONVERGE_BOUND = 10.0  # seconds after the heal
QUIET = 3.0  # at least this long after the heal before the final reads
KEYS = [f"r{k}" for k in range(8)]


@dataclass
class RunResult:
    seed: int
    kind: str
    duration: float
    ok: bool = False
    reg_ops: int = 0
    reg_info: int = 0
    adds_ok: int = 0
    adds_fail: int = 0
    adds_info: int = 0
    lost: int = 0  # acknowledged adds missing on some node
    phantom: int = 0  # definitely failed adds present
    divergent_nodes: int = 0  # nodes whose data differs from the others after the heal
    nonlinearizable_keys: int = 0
    unknown_keys: int = 0  # the checker's budget ran out (never counted as valid)
    converge_s: float = -1.0  # heal -> every node at the same applied index (-1: never)
    converged_in_bound: bool = False
    terms: int = 0  # the term at the end (elections during the run)
    anomalies: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    nemesis: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


def run_one(seed: int, kind: str, duration: float, workdir: Path,
            snapshot_interval: int = 300, reg_clients: int = 6, set_clients: int = 3,
            log: Any = print) -> RunResult:
    started = time.monotonic()
    res = RunResult(seed, kind, duration)
    faults = schedule(kind, seed, duration)
    cluster = ChaosCluster(workdir, snapshot_interval=snapshot_interval)
    nemesis = Nemesis(cluster, faults, seed)
    history = History()
    stop = threading.Event()
    clients: list[Client] = []
    try:
        cluster.start()
        cluster.wait_leader(60)
        setup(cluster, KEYS)
        ids = cluster.ids
        for cid in range(reg_clients + set_clients):
            nd = cluster.node(ids[cid % len(ids)])
            clients.append(Client(cid, nd.url, "set" if cid >= reg_clients else "reg", KEYS,
                                  history, stop, seed))
        t0 = time.monotonic()
        for c in clients:
            c.start()
        nemesis.start(t0)
        while time.monotonic() - t0 < duration and nemesis.error is None:
            time.sleep(0.1)
        stop.set()
        nemesis.heal()
        healed = time.monotonic()
        if nemesis.error is not None:
            res.problems.append(f"nemesis error: {nemesis.error!r}")
        for c in clients:
            c.join(30)
            if c.is_alive():
                res.problems.append(f"client {c.cid} did not stop")
        # convergence: bounded, then keep watching a while to tell slow from stuck
        converged = 0.0
        while time.monotonic() - healed < CONVERGE_BOUND + 20:
            if cluster.converged():
                converged = time.monotonic()
                break
            time.sleep(0.05)
        if converged:
            res.converge_s = round(converged - healed, 2)
            res.converged_in_bound = res.converge_s <= CONVERGE_BOUND
        if not res.converged_in_bound:
            res.problems.append(f"not converged {CONVERGE_BOUND:.0f} s after the heal "
                                f"(took {res.converge_s} s):\n{cluster.describe()}")
        time.sleep(max(0.0, healed + QUIET - time.monotonic()))
        _check(cluster, history, res)
        st = [s for s in cluster.statuses().values() if s]
        res.terms = max((s["term"] for s in st), default=0)
    except Exception as exc:
        res.problems.append(f"harness error: {exc!r}")
        stop.set()
        try:
            res.problems.append(cluster.describe())
        except Exception:
            pass
    finally:
        nemesis.stop()
        stop.set()
        cluster.close()
    res.nemesis = nemesis.summary()
    res.anomalies = history.anomalies[:20]
    res.ok = not res.problems and not res.anomalies
    res.wall_s = round(time.monotonic() - started, 1)
    return res


def _retry(fn: Callable[[str], T], url: str, timeout: float = 30.0) -> T:
    """A final read: a node that is between leaders answers 52; ask again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn(url)
        except ldap.LDAPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _check(cluster: ChaosCluster, h: History, res: RunResult) -> None:
    urls = {nd.id: nd.url for nd in cluster.nodes}
    # the set: every node's view, read directly
    final = {i: _retry(read_set, u) for i, u in urls.items()}
    sres = check_set(h.adds, final)
    res.adds_ok = sum(1 for a in h.adds if a.outcome == "ok")
    res.adds_fail = sum(1 for a in h.adds if a.outcome == "fail")
    res.adds_info = sum(1 for a in h.adds if a.outcome == "info")
    res.lost = len(set().union(*sres.lost.values()))
    res.phantom = len(set().union(*sres.phantom.values()))
    if not sres.valid:
        res.problems.append(f"set: {sres.message}")
    # registers: the final value read on every node must agree, and join the history
    regs = {i: _retry(lambda url: read_registers(url, KEYS), u) for i, u in urls.items()}
    first = regs[_majority(regs)]
    now = time.monotonic()
    ops = list(h.reg)
    for k in KEYS:
        vals = first[k]
        if len(vals) != 1:
            res.problems.append(f"register {k} holds {vals} (one value expected)")
            continue
        ops.append(_final_read(k, vals[0], now))
    res.reg_ops = len(h.reg)
    res.reg_info = sum(1 for o in h.reg if o.outcome == "info")
    results = check_registers(ops, default_initial="0")
    for r in results:
        if r.valid is False:
            res.nonlinearizable_keys += 1
            res.problems.append(f"register {r.key} not linearizable: {r.message}")
        elif r.valid is None:
            res.unknown_keys += 1
            res.problems.append(f"register {r.key}: checker budget exhausted ({r.explored})")
    # whole-tree equality
    views = {i: (_retry(dump, u), regs[i], final[i]) for i, u in urls.items()}
    ref = _majority(views)
    divergent = sorted(i for i, v in views.items() if v != views[ref])
    res.divergent_nodes = len(divergent)
    if divergent:
        res.problems.append(f"nodes {divergent} hold other data than node {ref} (and the "
                            "nodes that agree with it)")


def _majority(views: dict[int, Any]) -> int:
    """A node whose view the most nodes share."""
    return max(views, key=lambda i: sum(1 for v in views.values() if v == views[i]))


def _final_read(key: str, value: str, at: float) -> Any:
    from .checker import RegOp

    return RegOp(key, 10**9, "read", None, at, at, "ok", value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=0)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--kind", choices=KINDS)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--snapshot-interval", type=int, default=300)
    ap.add_argument("--out", default="chaos-results")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    if args.seed is not None:
        runs = [(args.seed, args.kind or kinds[args.seed % len(kinds)])]
    else:
        n = args.seeds or 1
        runs = [(s, kinds[s % len(kinds)])
                for s in range(args.first_seed, args.first_seed + n)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[RunResult] = []
    for seed, kind in runs:
        work = Path(tempfile.mkdtemp(prefix=f"chaos-{kind}-{seed}-"))
        res = run_one(seed, kind, args.duration, work, args.snapshot_interval)
        results.append(res)
        with open(out / "results.jsonl", "a") as fh:
            fh.write(json.dumps(asdict(res)) + "\n")
        verdict = "ok" if res.ok else "FAILED"
        print(f"seed {seed:4d} {kind:9s} {verdict:6s} reg {res.reg_ops} ops ({res.reg_info} "
              f"info), adds {res.adds_ok}/{res.adds_fail}/{res.adds_info} ok/fail/info, "
              f"lost {res.lost}, divergent {res.divergent_nodes}, non-lin "
              f"{res.nonlinearizable_keys}, converged {res.converge_s} s, term {res.terms}",
              flush=True)
        if not res.ok:
            for p in res.problems[:10]:
                print("    " + p.replace("\n", "\n    "), flush=True)
            keep = out / f"failed-{kind}-{seed}"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(work, keep, ignore=shutil.ignore_patterns("*.mdb", "snapshots"))
            print(f"    logs: {keep}", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    return 0 if all(r.ok for r in results) else 1


def table(results: list[RunResult]) -> str:
    rows = ["| nemesis | runs | reg ops | adds acked | acked adds lost | divergent nodes | "
            "non-linearizable keys | not converged in 10 s | converge s (max) |",
            "|---|---|---|---|---|---|---|---|---|"]
    kinds = sorted({r.kind for r in results}, key=lambda k: KINDS.index(k))
    for k in [*kinds, "all"]:
        rs = [r for r in results if k in ("all", r.kind)]
        if not rs:
            continue
        rows.append(
            f"| {k} | {len(rs)} | {sum(r.reg_ops for r in rs)} | "
            f"{sum(r.adds_ok for r in rs)} | {sum(r.lost for r in rs)} | "
            f"{sum(r.divergent_nodes for r in rs)} | "
            f"{sum(r.nonlinearizable_keys for r in rs)} | "
            f"{sum(1 for r in rs if not r.converged_in_bound)} | "
            f"{max((r.converge_s for r in rs), default=0)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
