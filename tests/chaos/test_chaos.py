"""A short seeded chaos run of every nemesis kind (``make chaos SEEDS=N`` runs long ones).

Each run starts a real 3-node cluster behind per-link proxies, runs the register and set
workloads while the kind's faults happen, heals, and checks: no acknowledged add lost, no
definitely failed add present, every register history linearizable, every node holding the
same data, and convergence within 10 s of the heal. A failure prints the replay command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .nemesis import KINDS
from .run import run_one

pytestmark = pytest.mark.timeout(300)

SEED = 7
DURATION = 14.0


@pytest.mark.parametrize("kind", KINDS)
def test_short_chaos_run(kind: str, tmp_path: Path) -> None:
    res = run_one(SEED, kind, DURATION, tmp_path / "run")
    report = "\n".join([*res.problems, *res.anomalies, *res.nemesis.get("log", [])])
    assert res.ok, (f"chaos run {kind} seed {SEED} failed; replay with: make chaos "
                    f"SEED={SEED} KIND={kind} DURATION={DURATION:.0f}\n{report}")
    # the run did real work under its faults
    assert res.reg_ops > 50 and res.adds_ok > 20, res
    assert res.nemesis["log"], "no fault was injected"
