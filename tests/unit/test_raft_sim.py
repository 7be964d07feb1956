"""The deterministic Raft simulation (``raftsim.Sim``) over many seeds.

By default seeds run until ``MAX_SEEDS`` or a wall-clock budget of ``BUDGET_S`` seconds,
alternating 3- and 5-node clusters. ``OBA_RAFT_SIM_SEEDS=N`` runs exactly N seeds (no budget);
``OBA_RAFT_SIM_SEED=k`` replays one seed (as printed by a failure).
"""

from __future__ import annotations

import os
import time

import pytest
import raftsim
from raftsim import Sim, Violation

from oba.raft.core import RaftCore
from oba.raft.types import Message, MsgType

BUDGET_S = 20.0
MAX_SEEDS = 3000


def _size(seed: int) -> int:
    return 5 if seed % 2 else 3


def test_simulation_many_seeds() -> None:
    one = os.environ.get("OBA_RAFT_SIM_SEED")
    wanted = os.environ.get("OBA_RAFT_SIM_SEEDS")
    if one is not None:
        seeds: range = range(int(one), int(one) + 1)
        deadline = float("inf")
    elif wanted is not None:
        seeds = range(int(wanted))
        deadline = float("inf")
    else:
        seeds = range(MAX_SEEDS)
        deadline = time.monotonic() + BUDGET_S
    start = time.monotonic()
    ran = 0
    totals: dict[str, int] = {}
    for seed in seeds:
        if time.monotonic() > deadline:
            break
        sim = Sim(seed, _size(seed))
        sim.run()  # raises Violation naming the seed
        ran += 1
        for k, v in sim.stats.items():
            totals[k] = totals.get(k, 0) + v
    took = time.monotonic() - start
    print(f"\nraft simulation: {ran} seeds in {took:.1f}s; {totals}")
    assert ran >= min(100, len(seeds))
    assert totals["elections"] > ran and totals["acked"] > ran  # the runs did real work
    assert totals["crashes"] > 0 and totals["snap_sent"] > 0 and totals["reads"] > 0


def test_simulation_is_deterministic() -> None:
    a, b = Sim(42, 5), Sim(42, 5)
    a.run()
    b.run()
    assert a.stats == b.stats and a.nodes[1].sm == b.nodes[1].sm


class _VotesForAnyLog(RaftCore):
    """A broken core: grants votes without the election restriction (paper 5.4.1)."""

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == MsgType.PRE_VOTE
        resp = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        if self.vote in (0, m.frm) or pre:
            self._send(Message(resp, m.frm, self.id, m.term))
            if not pre:
                self.vote = m.frm
                self.election_elapsed = 0
        else:
            self._send(Message(resp, m.frm, self.id, self.term, reject=True))


def test_simulation_detects_a_broken_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raftsim, "RaftCore", _VotesForAnyLog)
    caught = 0
    for seed in range(150):
        try:
            Sim(seed, 3).run()
        except Violation:
            caught += 1
            if caught >= 3:
                break
    assert caught >= 3


def test_simulation_detects_sending_before_persisting() -> None:
    caught = 0
    for seed in range(300):
        sim = Sim(seed, 3)
        sim.send_before_persist = True
        sim.max_fsync = 3
        sim.crash_p = 0.05
        try:
            sim.run()
        except Violation:
            caught += 1
            if caught >= 2:
                break
    assert caught >= 2
