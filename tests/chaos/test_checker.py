"""Tests of the chaos history checkers (tests/chaos/checker.py).

Every guarantee is tested in the direction that can fail: hand-written histories that must be
rejected next to their valid twins, and a differential test against a brute-force checker.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from typing import Any

import pytest

from . import checker
from .checker import (
    RegOp,
    SetAdd,
    check_register,
    check_registers,
    check_set,
)

K = "k"


def op(
    process: int,
    f: str,
    arg: Any,
    invoke: float,
    complete: float | None,
    outcome: str = "ok",
    result: Any = None,
    key: str = K,
) -> RegOp:
    return RegOp(key, process, f, arg, invoke, complete, outcome, result)  # type: ignore[arg-type]


def w(p: int, v: Any, t0: float, t1: float | None, outcome: str = "ok") -> RegOp:
    return op(p, "write", v, t0, t1, outcome)


def r(p: int, v: Any, t0: float, t1: float | None, outcome: str = "ok") -> RegOp:
    return op(p, "read", None, t0, t1, outcome, result=v)


def cas(p: int, old: Any, new: Any, t0: float, t1: float | None, outcome: str = "ok") -> RegOp:
    return op(p, "cas", (old, new), t0, t1, outcome)


def valid(ops: list[RegOp], initial: Any = None) -> bool | None:
    return check_register(K, ops, initial).valid


# ---------------------------------------------------------------------------------------------
# Brute force: every order of the ops that respects real time (info ops optional)
# ---------------------------------------------------------------------------------------------


def brute_force(ops: list[RegOp], initial: Any = None) -> bool:
    """Exhaustive search over sequences, written independently of the checker's machinery."""
    used = [
        o
        for o in ops
        if o.outcome == "ok" or (o.outcome == "fail" and o.f == "cas")
        or (o.outcome == "info" and o.f != "read")
    ]
    # b may be placed only after every definite a with a.complete < b.invoke
    preds = [
        {
            i
            for i, a in enumerate(used)
            if a.outcome != "info" and a.complete is not None and a.complete < b.invoke
        }
        for b in used
    ]
    needed = {i for i, o in enumerate(used) if o.outcome != "info"}

    def step(o: RegOp, s: Any) -> tuple[bool, Any]:
        if o.f == "read":
            return s == o.result, s
        if o.f == "write":
            return True, o.arg
        old, new = o.arg
        if o.outcome == "ok":
            return s == old, new
        if o.outcome == "fail":
            return s != old, s
        return True, new if s == old else s  # info cas

    def search(placed: frozenset[int], s: Any) -> bool:
        if needed <= placed:
            return True
        for i, o in enumerate(used):
            if i in placed or not preds[i] <= placed:
                continue
            ok, s2 = step(o, s)
            if ok and search(placed | {i}, s2):
                return True
        return False

    return search(frozenset(), initial)


# ---------------------------------------------------------------------------------------------
# Random histories from a real sequential register
# ---------------------------------------------------------------------------------------------


@dataclass
class _Pending:
    process: int
    f: str
    arg: Any
    invoke: float
    applied: bool = False
    result: Any = None
    succeeded: bool = True
    lost: bool = False  # the answer will never arrive (info)


def random_history(
    rng: random.Random,
    n_ops: int,
    n_clients: int,
    values: int = 5,
    p_info: float = 0.05,
    info_ops: int | None = None,
    ties: bool = True,
    mix: tuple[float, float, float] = (0.25, 0.25, 0.5),
) -> list[RegOp]:
    """A concurrent history produced by running the ops against ONE real register, each op
    taking effect at a single instant between its invoke and its completion: linearizable by
    construction. Info ops either took effect (before or after the client gave up) or never."""
    state: Any = None
    t = 0.0
    out: list[RegOp] = []
    idle = list(range(n_clients))
    next_process = n_clients
    pending: list[_Pending] = []
    limbo: list[_Pending] = []  # requests whose client gave up but that may still apply
    started = 0
    info_slots: set[int] = set()
    if info_ops is not None:
        info_slots = set(rng.sample(range(n_ops), min(info_ops, n_ops)))

    def apply(p: _Pending) -> None:
        nonlocal state
        p.applied = True
        if p.f == "read":
            p.result = state
        elif p.f == "write":
            state = p.arg
        else:
            old, new = p.arg
            p.succeeded = state == old
            if p.succeeded:
                state = new

    while started < n_ops or pending or limbo:
        if not ties or rng.random() < 0.8:
            t += rng.random()
        choice = rng.random()
        if idle and started < n_ops and choice < 0.3:
            proc = idle.pop(rng.randrange(len(idle)))
            f = rng.choices(["read", "write", "cas"], weights=mix)[0]
            arg: Any = None
            if f == "write":
                arg = rng.randrange(values)
            elif f == "cas":
                arg = (rng.choice([None, *range(values)]), rng.randrange(values))
            p = _Pending(proc, f, arg, t)
            if info_ops is None:
                p.lost = rng.random() < p_info
            else:
                p.lost = started in info_slots
            started += 1
            pending.append(p)
        elif pending and choice < 0.65:
            p = rng.choice(pending)
            if not p.applied and not (p.lost and rng.random() < 0.5):
                apply(p)
            elif p.applied or p.lost:
                # the answer arrives (or, for a lost one, the client gives up)
                pending.remove(p)
                if p.lost:
                    out.append(RegOp(K, p.process, p.f, p.arg, p.invoke, None, "info"))  # type: ignore[arg-type]
                    if not p.applied and rng.random() < 0.5:
                        limbo.append(p)
                    idle.append(next_process)  # a fresh client id after an unknown outcome
                    next_process += 1
                    continue
                outcome = "ok" if p.succeeded else "fail"
                out.append(
                    RegOp(K, p.process, p.f, p.arg, p.invoke, t, outcome,  # type: ignore[arg-type]
                          p.result if p.f == "read" else None)
                )
                idle.append(p.process)
        elif limbo and choice < 0.75:
            p = limbo.pop(rng.randrange(len(limbo)))
            if rng.random() < 0.7:
                apply(p)
        elif idle and started < n_ops and rng.random() < 0.05:
            # a write refused before it reached the state machine: a definite failure
            proc = idle[rng.randrange(len(idle))]
            out.append(RegOp(K, proc, "write", rng.randrange(values), t, t + 0.1, "fail"))
            started += 1
    return sorted(out, key=lambda o: o.invoke)


def mutate(rng: random.Random, ops: list[RegOp], values: int = 5) -> list[RegOp]:
    """Change one op's result, outcome or argument (the history may or may not stay valid)."""
    ops = list(ops)
    i = rng.randrange(len(ops))
    o = ops[i]
    pick = rng.random()
    domain: list[Any] = [None, *range(values)]
    if o.f == "read" and o.outcome == "ok" and pick < 0.6:
        ops[i] = replace(o, result=rng.choice(domain))
    elif o.f == "cas" and o.outcome in ("ok", "fail") and pick < 0.5:
        ops[i] = replace(o, outcome="fail" if o.outcome == "ok" else "ok")
    elif o.f == "cas" and pick < 0.8:
        ops[i] = replace(o, arg=(rng.choice(domain), rng.randrange(values)))
    elif o.f == "write" and pick < 0.5:
        ops[i] = replace(o, arg=rng.randrange(values))
    elif o.outcome == "info":
        ops[i] = replace(o, outcome="ok", complete=o.invoke + rng.random() * 3,
                         result=rng.choice(domain) if o.f == "read" else None)
    else:
        ops[i] = replace(o, outcome="info", complete=None)
    return ops


# ---------------------------------------------------------------------------------------------
# Hand-written histories
# ---------------------------------------------------------------------------------------------


def test_empty_and_trivial() -> None:
    assert valid([]) is True
    assert valid([r(1, None, 0, 1)]) is True
    assert valid([r(1, 3, 0, 1)], initial=3) is True
    assert valid([r(1, 3, 0, 1)]) is False


def test_sequential_write_read() -> None:
    assert valid([w(1, 1, 0, 1), r(2, 1, 2, 3)]) is True
    assert valid([w(1, 1, 0, 1), r(2, 2, 2, 3)]) is False


def test_stale_read() -> None:
    # write 1 then write 2 complete; a later read still sees 1
    hist = [w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)]
    assert valid(hist) is False
    # the same read overlapping the second write may see 1
    assert valid([w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 2.5, 5)]) is True


def test_read_of_initial_after_write_is_stale() -> None:
    assert valid([w(1, 1, 0, 1), r(2, None, 2, 3)]) is False
    assert valid([w(1, 1, 0, 1), r(2, None, 0.5, 3)]) is True


def test_lost_write() -> None:
    # an acknowledged write disappears: later reads see the older value
    hist = [w(1, 0, 0, 1), w(2, 1, 2, 3), r(3, 0, 4, 5), r(3, 0, 6, 7)]
    res = check_register(K, hist)
    assert res.valid is False
    assert "could not place" in res.message
    assert "read -> 0" in res.message


def test_read_of_value_never_written() -> None:
    hist = [w(1, 1, 0, 1), r(2, 4, 0.5, 2)]
    res = check_register(K, hist)
    assert res.valid is False
    assert "never written" in res.message
    # the value was written, by an info write: then it can be explained
    assert valid([*hist, w(3, 4, 0.2, None, "info")]) is True
    # ...but not by an info write invoked after the read returned
    assert valid([*hist, w(3, 4, 2.5, None, "info")]) is False


def test_aba_cas_applied_once_is_valid() -> None:
    hist = [cas(1, 0, 1, 0, 1), cas(2, 1, 0, 2, 3), r(3, 0, 4, 5)]
    assert valid(hist, initial=0) is True


def test_duplicate_cas_applied_twice_is_caught() -> None:
    # cas(0,1) ok, cas(1,0) ok, then the SAME client request cas(0,1) retried / applied again:
    # only one cas(0,1) was acknowledged, so a later read of 1 is impossible.
    hist = [cas(1, 0, 1, 0, 1), cas(2, 1, 0, 2, 3), r(3, 1, 4, 5)]
    assert valid(hist, initial=0) is False
    # if the first cas(0,1) had an unknown outcome and a second one was acked, 1 is fine...
    hist2 = [cas(1, 0, 1, 0, 1), cas(2, 1, 0, 2, 3), cas(4, 0, 1, 2.5, None, "info"),
             r(3, 1, 4, 5)]
    assert valid(hist2, initial=0) is True
    # ...but an info cas(0,1) invoked after the read cannot explain it.
    hist3 = [cas(1, 0, 1, 0, 1), cas(2, 1, 0, 2, 3), cas(4, 0, 1, 6, None, "info"),
             r(3, 1, 4, 5)]
    assert valid(hist3, initial=0) is False


def test_info_cas_cannot_apply_twice() -> None:
    # one info cas(0,1) can take effect once: 0 -> 1 (read) -> 0 (cas) -> 1 again needs two.
    hist = [
        cas(9, 0, 1, 0, None, "info"),
        r(1, 1, 1, 2),
        cas(1, 1, 0, 3, 4),
        r(1, 1, 5, 6),
    ]
    assert valid(hist, initial=0) is False
    assert valid([*hist, cas(8, 0, 1, 0.5, None, "info")], initial=0) is True


def test_failed_cas_contradicts() -> None:
    # the state is 0 for the whole interval of the cas, yet it "failed: value not present"
    hist = [w(1, 0, 0, 1), cas(2, 0, 1, 2, 3, "fail"), r(1, 0, 4, 5)]
    assert valid(hist) is False
    # a concurrent write of 2 explains the failure
    assert valid([*hist[:2], w(3, 2, 1.5, 2.5), r(1, 2, 4, 5)]) is True


def test_failed_cas_is_an_observation_not_a_noop() -> None:
    # a failed cas(None, x) proves the state was not None at some point in its interval
    hist = [cas(1, None, 1, 0, 1, "fail")]
    assert valid(hist) is False
    assert valid([*hist, w(2, 3, 0.5, 4)]) is True  # concurrent write may come first
    assert valid([*hist, w(2, 3, 1.5, 4)]) is False  # write starts after the cas returned


def test_failed_read_and_write_are_ignored() -> None:
    hist = [w(1, 1, 0, 1, "fail"), r(2, 7, 0, 1, "fail"), r(3, None, 2, 3)]
    assert valid(hist) is True


def test_info_read_is_ignored() -> None:
    assert valid([op(1, "read", None, 0, None, "info", result=3)]) is True


def test_concurrent_valid_only_in_one_order() -> None:
    # two concurrent writes; reads afterwards fix their order: write 2 must win
    base = [w(1, 1, 0, 2), w(2, 2, 0, 2)]
    assert valid([*base, r(3, 2, 3, 4)]) is True
    assert valid([*base, r(3, 1, 3, 4)]) is True
    # a read during the writes sees 1, a later one sees 2: order 1 then 2 only
    assert valid([*base, r(3, 1, 1, 1.5), r(3, 2, 3, 4)]) is True
    # reads that need 2 then 1 then 2: impossible with one write of each
    assert valid([*base, r(3, 2, 1, 1.5), r(4, 1, 1.6, 1.7), r(3, 2, 3, 4)]) is False


def test_concurrent_cas_chain_one_order() -> None:
    # cas(0,1), cas(1,2), cas(2,3) all concurrent: only the order 0->1->2->3 works
    hist = [cas(1, 0, 1, 0, 5), cas(2, 1, 2, 0, 5), cas(3, 2, 3, 0, 5), r(4, 3, 6, 7)]
    assert valid(hist, initial=0) is True
    # the invokes are listed in the worst order for a greedy search
    hist_rev = [cas(1, 2, 3, 0, 5), cas(2, 1, 2, 0.1, 5), cas(3, 0, 1, 0.2, 5), r(4, 3, 6, 7)]
    assert valid(hist_rev, initial=0) is True
    # real time forces cas(1,2) to end before cas(0,1) starts: impossible
    bad = [cas(2, 1, 2, 0, 1), cas(1, 0, 1, 2, 5), cas(3, 2, 3, 0, 5)]
    assert valid(bad, initial=0) is False


def test_equal_timestamps_are_concurrent() -> None:
    # intervals are closed: a read invoked exactly when a write completed may precede it? no:
    # both instants can be the shared time, so either order is allowed
    assert valid([w(1, 1, 0, 1), r(2, None, 1, 2)]) is True
    assert valid([w(1, 1, 0, 1), r(2, None, 1.0001, 2)]) is False


def test_info_write_took_effect_or_not() -> None:
    # the info write took effect (late: after its client gave up)
    took = [w(1, 1, 0, None, "info"), r(2, None, 1, 2), r(2, 1, 3, 4)]
    assert valid(took) is True
    # ...or never
    never = [w(1, 1, 0, None, "info"), r(2, None, 1, 2), r(2, None, 3, 4)]
    assert valid(never) is True
    # but it cannot take effect twice, nor go back
    flip = [w(1, 1, 0, None, "info"), r(2, 1, 1, 2), r(2, None, 3, 4)]
    assert valid(flip) is False
    # nor take effect before it was invoked
    early = [r(2, 1, 1, 2), w(1, 1, 3, None, "info")]
    assert valid(early) is False


def test_info_ops_only_when_needed() -> None:
    # many interchangeable pending info writes; one explains a read, the rest never happen
    hist = [w(10 + i, 3, 0.1 * i, None, "info") for i in range(30)]
    hist += [w(1, 0, 0, 1), r(2, 3, 5, 6), w(1, 1, 7, 8), r(2, 1, 9, 10), r(2, 3, 11, 12)]
    assert valid(hist) is True  # a second info write of 3 lands after write 1
    assert valid(hist[:-1]) is True
    only_one = [w(10, 3, 0, None, "info"), w(1, 0, 0, 1), r(2, 3, 5, 6), w(1, 1, 7, 8),
                r(2, 1, 9, 10), r(2, 3, 11, 12)]
    assert valid(only_one) is False


def test_info_op_spent_early_is_gone() -> None:
    # The failed cas(1, 1) needs the info write 0 (nothing else makes the state != 1 then); the
    # second cas(1, 0) needs the info cas(0, 1). A search that let a configuration that had
    # spent the info cas stand in for one that had not would wrongly answer "invalid".
    hist = [
        cas(2, None, 1, 0.8, 2.8),
        w(4, 0, 3.1, None, "info"),
        cas(1, 1, 1, 4.3, 7.3, "fail"),
        w(5, 1, 7.1, 9.2),
        cas(1, 0, 1, 12.4, None, "info"),
        cas(0, 1, 0, 14.1, 14.1),
        cas(2, 1, 0, 18.5, 18.9),
    ]
    assert brute_force(hist) is True
    assert valid(hist) is True
    # without the info cas, the second cas(1, 0) is impossible
    assert brute_force(hist[:4] + hist[5:]) is False
    assert valid(hist[:4] + hist[5:]) is False
    # and without the info write, the failed cas is
    assert valid(hist[:1] + hist[2:]) is False


def test_failure_message_is_readable() -> None:
    hist = [w(1, 1, 100.0, 100.5), w(1, 2, 101.0, 101.5), r(2, 1, 102.0, 102.25)]
    res = check_register(K, hist)
    assert res.valid is False
    assert res.ops == 3
    msg = res.message
    assert "longest linearizable prefix: 2 of 3" in msg
    assert "p1 write 1 ok [+0.000000, +0.500000]" in msg
    assert "could not place: p2 read -> 1 ok [+2.000000, +2.250000]" in msg
    assert "ending in state 2" in msg


def test_budget_exhaustion_is_unknown_not_valid() -> None:
    # concurrent writes and reads that cannot all be satisfied: needs a real search
    hist = [w(i, i % 3, 0, 10) for i in range(12)]
    hist += [r(20, 0, 11, 12), r(21, 4, 13, 14)]
    res = check_register(K, hist, budget=50)
    assert res.valid is None
    assert "budget" in res.message
    assert check_register(K, hist).valid is False


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        check_register(K, [w(1, 1, 0, None, "ok")])
    with pytest.raises(ValueError):
        check_register(K, [w(1, 1, 2, 1)])
    with pytest.raises(ValueError):
        check_register(K, [op(1, "cas", 3, 0, 1)])
    with pytest.raises(ValueError):
        check_register(K, [replace(w(1, 1, 0, 1), key="other")])


def test_check_registers_groups_by_key() -> None:
    ops = [
        replace(w(1, 1, 0, 1), key="a"),
        replace(r(2, 1, 2, 3), key="a"),
        replace(w(3, 1, 0, 1), key="b"),
        replace(r(4, 2, 2, 3), key="b"),  # invalid on b
        replace(r(5, 7, 0, 1), key="c"),  # valid on c thanks to its initial value
    ]
    results = check_registers(ops, initial={"c": 7})
    assert [(x.key, x.valid, x.ops) for x in results] == [
        ("a", True, 2), ("b", False, 2), ("c", True, 1)
    ]
    # P-compositionality: a per-key violation is not hidden by mixing keys
    assert check_registers(ops, default_initial=7)[2].valid is True


# ---------------------------------------------------------------------------------------------
# Differential and generated tests
# ---------------------------------------------------------------------------------------------


def test_brute_force_sanity() -> None:
    # the reference itself must reject the classic violations
    assert brute_force([w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 4, 5)]) is False
    assert brute_force([w(1, 1, 0, 1), w(1, 2, 2, 3), r(2, 1, 2.5, 5)]) is True
    assert brute_force([cas(1, 0, 1, 0, 1), cas(2, 1, 0, 2, 3), r(3, 1, 4, 5)], 0) is False


def test_generated_histories_are_valid() -> None:
    for seed in range(60):
        rng = random.Random(seed)
        hist = random_history(rng, rng.randrange(20, 120), rng.randrange(2, 7), p_info=0.08)
        res = check_register(K, hist)
        assert res.valid is True, (seed, res.message)


# The search runs in phases (a depth-first pass, window refutation, the exhaustive search);
# these settings force each of them to decide small histories.
PHASES: dict[str, dict[str, int]] = {
    "default": {},
    "exhaustive only": {"_GREEDY_MIN": 0, "_GREEDY_PER_OP": 0, "_WINDOW": 10**6},
    "windows of 2 then exhaustive": {"_GREEDY_MIN": 0, "_GREEDY_PER_OP": 0, "_WINDOW": 2},
    "windows of 1 then exhaustive": {"_GREEDY_MIN": 0, "_GREEDY_PER_OP": 0, "_WINDOW": 1},
    "depth-first then windows of 3": {"_GREEDY_MIN": 1, "_GREEDY_PER_OP": 0, "_WINDOW": 3},
}


def _differential(seeds: range, sizes: tuple[int, int], p_info: float) -> tuple[int, int]:
    """Mutated generated histories: checker and brute force must agree on every one."""
    disagreements = []
    invalid_seen = valid_seen = 0
    for seed in seeds:
        rng = random.Random(seed)
        values = rng.choice([2, 3, 5])
        hist = random_history(rng, rng.randrange(*sizes), rng.randrange(2, 5), values=values,
                              p_info=p_info)
        if not hist:
            continue
        assert brute_force(hist) is True, seed  # generated from a real execution
        assert check_register(K, hist).valid is True, seed
        bad = mutate(rng, hist, values)
        if rng.random() < 0.3:
            bad = mutate(rng, bad, values)
        expect = brute_force(bad)
        got = check_register(K, bad).valid
        if got is not expect:
            disagreements.append((seed, expect, got, bad))
        if expect:
            valid_seen += 1
        else:
            invalid_seen += 1
    assert not disagreements, disagreements[:3]
    return invalid_seen, valid_seen


@pytest.mark.parametrize("phase", list(PHASES))
def test_differential_against_brute_force(phase: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PHASES[phase].items():
        monkeypatch.setattr(checker, name, value)
    invalid_seen, valid_seen = _differential(range(1000, 1400), (3, 8), p_info=0.25)
    # the mutations must exercise both answers, or the comparison proves little
    assert invalid_seen >= 80 and valid_seen >= 80, (invalid_seen, valid_seen)


@pytest.mark.parametrize("phase", ["default", "windows of 2 then exhaustive"])
def test_differential_medium_histories(phase: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PHASES[phase].items():
        monkeypatch.setattr(checker, name, value)
    invalid_seen, valid_seen = _differential(range(5000, 5150), (8, 15), p_info=0.2)
    assert invalid_seen >= 30 and valid_seen >= 30, (invalid_seen, valid_seen)


def _inject_aba(hist: list[RegOp], at: float) -> list[RegOp]:
    """A duplicated cas made visible: 7 -> 8 -> 7, then a read of 8 (only one cas(7, 8))."""
    return sorted(
        [
            *hist,
            w(90, 7, at, at + 0.001),
            cas(90, 7, 8, at + 0.002, at + 0.003),
            cas(91, 8, 7, at + 0.004, at + 0.005),
            r(92, 8, at + 0.006, at + 0.007),
        ],
        key=lambda o: o.invoke,
    )


@pytest.mark.parametrize(
    ("n_ops", "clients", "info_ops", "mix"),
    [(600, 6, 20, (0.25, 0.25, 0.5)), (1000, 8, 40, (0.0, 0.25, 0.75))],
)
def test_timing(n_ops: int, clients: int, info_ops: int, mix: tuple[float, float, float]) -> None:
    rng = random.Random(7)
    hist = random_history(rng, n_ops, clients, info_ops=info_ops, mix=mix)
    assert sum(o.outcome == "info" for o in hist) >= info_ops * 3 // 4
    start = time.monotonic()
    res = check_register(K, hist)
    assert res.valid is True, res.message
    assert time.monotonic() - start < 2.0
    # a stale read at the very end: no info op can produce 7 or 8
    t = max(o.complete or o.invoke for o in hist) + 10.0
    stale = [*hist, w(99, 7, t, t + 1), w(99, 8, t + 2, t + 3), r(98, 7, t + 4, t + 5)]
    start = time.monotonic()
    res = check_register(K, stale)
    assert res.valid is False, res.message
    assert "could not place: p98 read -> 7" in res.message
    assert time.monotonic() - start < 4.0
    # a duplicated cas in the middle of the run, concurrent with everything else
    middle = hist[len(hist) // 2].invoke
    start = time.monotonic()
    res = check_register(K, _inject_aba(hist, middle))
    assert res.valid is False, res.message
    assert "could not place: p92 read -> 8" in res.message
    assert time.monotonic() - start < 4.0


def test_window_refutation(monkeypatch: pytest.MonkeyPatch) -> None:
    # no depth-first pass: the windows have to find it
    monkeypatch.setattr(checker, "_GREEDY_MIN", 0)
    monkeypatch.setattr(checker, "_GREEDY_PER_OP", 0)
    rng = random.Random(3)
    hist = random_history(rng, 400, 5, info_ops=10)
    res = check_register(K, _inject_aba(hist, hist[200].invoke))
    assert res.valid is False
    assert "cannot be linearized from any initial state" in res.message
    assert "could not place: p92 read -> 8" in res.message
    # the same history without the anomaly passes every window and the full search
    assert check_register(K, hist).valid is True


def test_failure_message_names_the_info_ops_used() -> None:
    hist = [
        w(1, 0, 0, 1),
        w(3, 5, 0.5, None, "info"),
        r(2, 5, 2, 3),  # only the info write explains it
        w(1, 1, 4, 5),
        r(2, 5, 6, 7),  # stale: the info write was used up
    ]
    res = check_register(K, hist)
    assert res.valid is False
    assert "(1 info ops applied)" in res.message
    assert "p3 write 5 info [+0.500000, +inf)" in res.message
    assert "could not place: p2 read -> 5 ok [+6.000000, +7.000000]" in res.message


# ---------------------------------------------------------------------------------------------
# Set workload
# ---------------------------------------------------------------------------------------------


def test_set_valid() -> None:
    adds = [SetAdd("a", "ok"), SetAdd("b", "fail"), SetAdd("c", "info"), SetAdd("d", "info")]
    res = check_set(adds, {1: {"a", "c"}, 2: {"a", "c"}, 3: {"a", "c"}})
    assert res.valid is True
    assert (res.ok, res.fail, res.info, res.info_present) == (1, 1, 2, 1)
    assert not (res.lost or res.phantom or res.unexpected or res.divergent)


def test_set_lost_on_one_node() -> None:
    adds = [SetAdd("a", "ok"), SetAdd("b", "ok")]
    res = check_set(adds, {1: {"a", "b"}, 2: {"a"}, 3: {"a", "b"}})
    assert res.valid is False
    assert res.lost == {2: ["b"]}
    assert [(d.node_a, d.node_b, d.only_a, d.only_b) for d in res.divergent] == [
        (1, 2, 1, 0), (2, 3, 0, 1)
    ]
    assert "node 2 lost 1 ok adds" in res.message


def test_set_lost_everywhere_is_not_divergence() -> None:
    res = check_set([SetAdd("a", "ok")], {1: set(), 2: set()})
    assert res.valid is False
    assert res.lost == {1: ["a"], 2: ["a"]}
    assert res.divergent == []


def test_set_phantom_and_unexpected() -> None:
    adds = [SetAdd("a", "fail"), SetAdd("b", "ok")]
    res = check_set(adds, {1: {"a", "b", "zz"}, 2: {"a", "b", "zz"}})
    assert res.valid is False
    assert res.phantom == {1: ["a"], 2: ["a"]}
    assert res.unexpected == {1: ["zz"], 2: ["zz"]}
    assert res.lost == {}


def test_set_divergent_info_adds() -> None:
    # info adds may be anywhere, but all nodes must agree
    adds = [SetAdd("a", "info")]
    assert check_set(adds, {1: {"a"}, 2: {"a"}}).valid is True
    assert check_set(adds, {1: set(), 2: set()}).valid is True
    res = check_set(adds, {1: {"a"}, 2: set()})
    assert res.valid is False
    assert res.lost == {} and res.phantom == {}
    assert res.divergent[0].sample_only_a == ["a"]


def test_set_divergence_samples_are_bounded() -> None:
    adds = [SetAdd(f"e{i:03}", "info") for i in range(500)]
    res = check_set(adds, {1: {a.element for a in adds}, 2: set()})
    assert res.divergent[0].only_a == 500
    assert len(res.divergent[0].sample_only_a) <= 10
    assert len(res.message) < 2000


def test_set_retried_element() -> None:
    # an element added twice: one fail and one ok => must be present, and is not a phantom
    adds = [SetAdd("a", "fail"), SetAdd("a", "ok")]
    assert check_set(adds, {1: {"a"}}).valid is True
    assert check_set(adds, {1: set()}).lost == {1: ["a"]}
    with pytest.raises(ValueError):
        check_set(adds, {})
