"""History checkers for the chaos harness: per-key register linearizability and a set workload.

Rules for this module:
- Pure functions over recorded histories: no I/O, no clock, no randomness. The harness records
  every client operation as a ``RegOp`` (or ``SetAdd``) and hands the whole history over after
  the run; the checkers never see the cluster.
- Times are the client's monotonic seconds. Intervals are CLOSED: op ``a`` must precede op ``b``
  iff ``a`` is definite (ok/fail) and ``a.complete < b.invoke``; equal stamps are concurrent.
- Register semantics (one single-valued register per key, initial value given, ``None`` =
  absent):
  * ok write v: at one instant in [invoke, complete] state := v.
  * ok cas (old, new): at one instant in [invoke, complete] state == old, then state := new.
  * fail cas (old, new): the state machine answered "value not present": an OBSERVATION that
    state != old at one instant in [invoke, complete]; nothing changes.
  * ok read: at one instant in [invoke, complete] state == result.
  * fail read / fail write: never took effect; ignored. info read: carries nothing; ignored.
  * info write / info cas: took effect at one instant in [invoke, +inf), or never. An info cas
    that takes effect while state != old is a no-op (so an info cas(x, x) is ignored).
- P-compositionality: registers are independent, so ``check_registers`` checks each key alone.
- ``valid`` is True (a linearization exists), False (none exists: ``message`` explains) or None
  (the search budget ran out). An exhausted budget is never reported as True; every search
  below is exact, the budget only bounds it.

The search (Wing & Gong's tree search with Lowe's memoisation, "WGL", as in Porcupine/Knossos):
- A configuration is (the definite ops linearized so far, the register state, the info ops used
  so far). Its candidates are the pending definite ops invoked no later than the earliest
  return among the pending definite ops: exactly WGL's "calls before the first return event"
  of its call/return event list. The list is not materialised (dancing links only work for one
  depth-first walk; the search below also goes breadth-wise), the window is read off the ops
  sorted by invoke, from the first pending one. A history is linearizable as soon as every
  definite op is linearized (the unused info ops never took effect).
- Model pruning: a candidate is tried only if its step is legal in the state (a read must see
  its value, a cas its old value, a failed cas anything but its old value).
- Observations first: if a candidate read or failed cas is legal now, it is the only move.
  Moving it to the front of any completion keeps every state the same and respects real time
  (it is a candidate), so nothing is lost; orderings among concurrent observations are never
  enumerated.
- Info ops only when needed: in a shortest linearization every info op that is used changes
  the state and is IMMEDIATELY followed by an op it enables (illegal before it, legal after
  it): otherwise it could be dropped (overwritten or no-op) or moved later (no deadline). So
  after an info op the next move must be enabled by it (``req`` = the state before it): a
  definite read/cas, or an info cas (a chain); never an info write, never back to ``req``.
- Info ops as pooled resources: what an info op does depends only on its target value v and
  type (write, or cas(x, v)), so a move is a TRANSITION s -> v made by "some info op of v's
  pool", not by a named one. Along a path the window bound never decreases, so the k-th
  transition served by one type can always take that type's k-th info op (in invoke order): it
  is possible iff fewer than (ops of that type invoked by the bound) were taken before. The
  info state is therefore, per target, the set of possible consumption vectors (one count per
  type; a transition from x may use a write or a cas(x, v), whichever is left). Info ops that
  would have been interchangeable under other names collapse into one configuration.
- Memoisation with dominance: the memo key is (first pending definite op, bits of the
  linearized ops after it, state, req). A configuration is skipped if one with the same key (or
  the same key with no ``req``) was expanded whose consumption leaves at least the same info
  ops (every vector of the new one is >= one of the old one). With the moves above, a shortest
  completion of a skipped configuration is also one of the configuration that covered it, so
  the search stays exact.
- Order: (1) a plain depth-first pass (definite candidates in invoke order, then info
  transitions) with a small budget: linearizable histories are found in about one
  configuration per op. (2) Window refutation: the definite ops invoked from time c and
  returned by e, checked from EVERY initial state, with the ops straddling c or e and every
  info op invoked by e as optional (info) ops; the middle of any linearization of the whole
  history is a linearization of that, so a window with none proves the history invalid, and
  local anomalies (stale read, lost write, duplicated cas) are found without searching the
  whole prefix. Windows of 50 and 200 definite ops, overlapping by half. (3) The exhaustive
  search, best-first by the number of info transitions (depth-first within one number), so a
  configuration is first reached with as few info ops as possible and dominance prunes the
  rest. All stacks are explicit lists (no recursion).
- Each configuration expanded counts against ``budget`` (all passes). When the history is not
  linearizable, the configuration that linearized the most definite ops is reported: its
  prefix (info ops named by a matching of its transitions to the pools), its state, and the
  pending op that returns first, which no continuation could place.

Set workload (``check_set``): unique adds with ok/fail/info outcomes and the final set read from
every node. lost = ok adds missing on a node; phantom = adds that only ever failed definitely
but are present; unexpected = elements present that were never attempted; divergence = nodes
whose final sets differ. Info adds may be present or absent anywhere (as long as the nodes
agree).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from operator import le
from typing import Any, Literal

__all__ = [
    "Outcome",
    "RegOp",
    "RegisterResult",
    "SetAdd",
    "SetDivergence",
    "SetResult",
    "check_register",
    "check_registers",
    "check_set",
    "format_op",
]

Outcome = Literal["ok", "fail", "info"]

DEFAULT_BUDGET = 2_000_000
_PREFIX_SHOWN = 20  # how many ops of the linearized prefix a failure message lists
_GREEDY_PER_OP = 20  # the depth-first pass may expand this many configurations per op
_GREEDY_MIN = 5_000  # ... and at least this many for a whole history (at most half the budget)
_WINDOW = 12  # definite ops per window when refuting by windows (then 4x, 16x as many)
_WINDOW_BUDGET = 500  # configurations per window of _WINDOW ops (proportionally more)
_SAMPLE = 10  # how many elements of a set difference a message / divergence lists


@dataclass(frozen=True, slots=True)
class RegOp:
    """One client operation on the register ``key`` (see the module rules for semantics)."""

    key: str
    process: int  # client id (a client runs one op at a time)
    f: Literal["read", "write", "cas"]
    arg: Any  # write: new value; cas: (old, new); read: None
    invoke: float  # monotonic seconds when the client sent it
    complete: float | None  # when the answer arrived; None for "info"
    outcome: Outcome  # ok: happened; fail: definitely did not; info: unknown
    result: Any = None  # read: the value read (ok reads only); None means "no value"


@dataclass
class RegisterResult:
    key: str
    valid: bool | None  # None = search budget exhausted ("unknown"), never silently True
    ops: int  # ops given for this key (including the ignored ones)
    explored: int  # configurations entered by the search
    message: str  # on failure: longest linearizable prefix and the op that could not be placed


# ---------------------------------------------------------------------------------------------
# Register linearizability
# ---------------------------------------------------------------------------------------------

# Step kinds of definite ops.
_READ = 0  # legal iff state == a; state unchanged
_WRITE = 1  # always legal; state := a
_CAS = 2  # legal iff state == a; state := b
_NCAS = 3  # failed cas: legal iff state != a; state unchanged

# A transition made by some info op: (state before, 0 = an info write or cas / 1 = an info cas
# only, how many of the target's pool (in invoke order) were invoked by the time it was made).
_Need = tuple[int, int, int]
# Info ops used so far, per target value (interned id): the possible consumption vectors (how
# many info ops of each type of the target's pool: [writes, cas(x1, v), cas(x2, v), ...]).
_Used = tuple[tuple[tuple[int, ...], ...], ...]
# Memo key: (first pending definite op, definite bits from it on, state, req).
_Key = tuple[int, int, int, int]
# Moves so far, newest first: (1 = definite / 0 = info, op index / target value, need, earlier),
# ending in (2, initial state, None, None).
_Path = tuple[int, int, "_Need | None", "_Path | None"]
# A configuration: (memo key, definite bits, info ops used, how many, path).
_Config = tuple[_Key, int, _Used, int, "_Path | None"]
# A move: (op index / target value, state after, the target's new consumption vectors, the
# need); the last two are None for a definite op.
_Move = tuple[int, int, "tuple[tuple[int, ...], ...] | None", "_Need | None"]


class _Interner:
    """Maps register values to small ints (by ``==``) so states are cheap to compare and hash."""

    def __init__(self) -> None:
        self.ids: dict[Hashable, int] = {}
        self.values: list[Any] = []

    def __call__(self, value: Any) -> int:
        try:
            found = self.ids.get(value)
        except TypeError:
            raise TypeError(f"register values must be hashable, got {value!r}") from None
        if found is None:
            found = len(self.values)
            self.ids[value] = found
            self.values.append(value)
        return found


def _cas_pair(op: RegOp) -> tuple[Any, Any]:
    try:
        old, new = op.arg
    except (TypeError, ValueError):
        raise ValueError(f"cas arg must be (old, new): {op!r}") from None
    return old, new


def _validate(op: RegOp) -> None:
    if op.f not in ("read", "write", "cas"):
        raise ValueError(f"unknown f {op.f!r}: {op!r}")
    if op.outcome not in ("ok", "fail", "info"):
        raise ValueError(f"unknown outcome {op.outcome!r}: {op!r}")
    if op.outcome != "info":
        if op.complete is None:
            raise ValueError(f"a definite ({op.outcome}) op needs a complete time: {op!r}")
        if op.complete < op.invoke:
            raise ValueError(f"op completes before it is invoked: {op!r}")
    if op.f == "cas":
        _cas_pair(op)


def _relevant(op: RegOp) -> bool:
    """Whether ``op`` constrains the history at all (module rules)."""
    if op.outcome == "info":
        if op.f == "cas":
            old, new = _cas_pair(op)
            return bool(old != new)  # an info cas(x, x) can never change anything
        return op.f == "write"
    if op.outcome == "fail":
        return op.f == "cas"
    return True


def format_op(op: RegOp, t0: float = 0.0) -> str:
    """``p3 cas(1, 2) ok [+0.120000, +0.135000]``: times relative to ``t0``."""
    if op.f == "read":
        what = f"read -> {op.result!r}" if op.outcome == "ok" else "read"
    elif op.f == "write":
        what = f"write {op.arg!r}"
    else:
        old, new = _cas_pair(op)
        what = f"cas({old!r}, {new!r})"
    end = "+inf)" if op.outcome == "info" or op.complete is None else f"+{op.complete - t0:.6f}]"
    return f"p{op.process} {what} {op.outcome} [+{op.invoke - t0:.6f}, {end}"


def _assign(typ: list[int], needs: tuple[_Need, ...]) -> list[int] | None:
    """Give every need its own info op of one target value's pool, or None if impossible.

    ``typ`` is the pool in invoke order: -1 for an info write and x for an info cas(x, target).
    Bipartite matching by breadth-first augmenting paths (no recursion).
    """
    owner = [-1] * len(typ)  # info op -> need
    assigned = [-1] * len(needs)  # need -> info op
    for n in range(len(needs)):
        parent: dict[int, int] = {}  # info op -> the need that reached it
        queue = [n]
        found = -1
        qi = 0
        while qi < len(queue) and found < 0:
            m = queue[qi]
            qi += 1
            x, kind, avail = needs[m]
            for t in range(avail):
                if t in parent or (typ[t] != x and (typ[t] != -1 or kind)):
                    continue
                parent[t] = m
                if owner[t] < 0:
                    found = t
                    break
                queue.append(owner[t])
        if found < 0:
            return None
        t = found
        while True:  # flip the augmenting path
            m = parent[t]
            prev = assigned[m]
            assigned[m] = t
            owner[t] = m
            if m == n:
                break
            t = prev
    return assigned


def check_register(
    key: str,
    ops: Iterable[RegOp],
    initial: Any = None,
    budget: int = DEFAULT_BUDGET,
) -> RegisterResult:
    """Is the history of the single register ``key`` linearizable from ``initial``?"""
    given = list(ops)
    for op in given:
        if op.key != key:
            raise ValueError(f"op for key {op.key!r} given to check_register({key!r}): {op!r}")
        _validate(op)
    t0 = min((op.invoke for op in given), default=0.0)
    considered = [op for op in given if _relevant(op)]
    ni = sum(op.outcome == "info" for op in considered)
    header = (
        f"key {key!r}: {len(given)} ops ({len(considered) - ni} definite, {ni} info, "
        f"{len(given) - len(considered)} ignored)"
    )
    found = _search(considered, [initial], budget, t0, windows=True)
    if found.valid is None:
        message = (
            f"{header}: unknown: search budget of {budget} configurations exhausted "
            f"(best prefix: {found.best} of {len(considered) - ni} definite ops linearized)"
        )
    elif found.valid:
        message = f"{header}: linearizable"
    else:
        message = "\n".join(
            [f"{header}: NOT linearizable (explored {found.explored} configurations)", *found.lines]
        )
    return RegisterResult(
        key=key, valid=found.valid, ops=len(given), explored=found.explored, message=message
    )


class _Other:
    """An initial state for a window that none of its ops mentions."""

    def __repr__(self) -> str:
        return "<any other value>"


_OTHER = _Other()


@dataclass
class _Found:
    valid: bool | None
    explored: int
    best: int  # definite ops in the longest linearizable prefix found
    lines: list[str]  # when not valid: the explanation


def _refute_by_windows(
    definite: list[RegOp],
    infos: list[RegOp],
    initial: list[Any],
    budget: int,
    t0: float,
    focus: int,
) -> _Found:
    """Look for a window of the history that no initial state explains (valid=False), which
    proves the whole history not linearizable; ``valid`` is None when none was found.

    The window between times c and e: its ops are the definite ops invoked at or after c that
    returned by e. In any linearization of the whole history, the ops after the last op that
    returned before c, up to the last window op, are a linearization of those ops from some
    state, interleaved with some ops that straddle c or e (which may or may not fall there) and
    some info ops invoked by e (each at most once). So the window is checked from every state
    with those straddling ops turned into info ops (reads and failed cas dropped) and every
    info op invoked by e available: if no state works, the history is not linearizable.

    First windows of growing size that end when ``focus`` (the op the depth-first pass could
    not place) returns, then a sweep of overlapping windows from the end of the history.
    """
    inf = float("inf")
    nd = len(definite)
    explored = 0

    def window(lo: int, e: float, limit: int) -> _Found:
        nonlocal explored
        c = definite[lo].invoke
        mandatory: list[RegOp] = []
        loose: list[RegOp] = []
        for op in definite:
            assert op.complete is not None
            if op.complete < c or op.invoke > e:
                continue
            if op.invoke >= c and op.complete <= e:
                mandatory.append(op)
            elif op.f == "write" or (op.f == "cas" and op.outcome == "ok"):
                loose.append(replace(op, outcome="info", complete=None))
        sub = mandatory + loose + [op for op in infos if op.invoke <= e]
        starts = list(initial)
        if lo > 0:  # every value an op there mentions, and one that none does
            for op in sub:
                if op.f == "read":
                    starts.append(op.result)
                elif op.f == "write":
                    starts.append(op.arg)
                else:
                    starts.extend(_cas_pair(op))
            starts.append(_OTHER)
        found = _search(sub, starts, min(limit, budget - explored), t0, False)
        explored += found.explored
        if found.valid is False:
            end = "the end" if e == inf else f"+{e - t0:.6f}"
            found.lines = [
                f"the {len(mandatory)} definite ops invoked from +{c - t0:.6f} and returned "
                f"by {end} cannot be linearized from any initial state (ops straddling "
                "those times and the info ops invoked by then count as info ops there)",
                *found.lines,
            ]
        return found

    stuck = definite[focus].complete
    assert stuck is not None
    size = 4
    while explored < budget:
        lo = max(0, focus - size)
        found = window(lo, stuck, _WINDOW_BUDGET * size // _WINDOW)
        if found.valid is False:
            return _Found(False, explored, found.best, found.lines)
        if lo == 0:
            break
        size *= 2
    for size in (_WINDOW, 4 * _WINDOW, 16 * _WINDOW):
        if size >= nd:
            break
        step = max(1, size // 2)
        for start in reversed(range(0, nd - step, step)):  # the end first: late anomalies
            # are the costliest ones for the exhaustive search
            if explored >= budget:
                return _Found(None, explored, 0, [])
            e = definite[start + size].invoke if start + size < nd else inf
            found = window(start, e, _WINDOW_BUDGET * size // _WINDOW)
            if found.valid is False:
                return _Found(False, explored, found.best, found.lines)
    return _Found(None, explored, 0, [])


def _search(
    considered: list[RegOp], initial: list[Any], budget: int, t0: float, windows: bool
) -> _Found:
    """The search over the relevant ops of one key (module rules), from any of the ``initial``
    states."""
    intern = _Interner()
    starts = sorted({intern(x) for x in initial})

    # Definite ops indexed in invoke order (ties: input order); info ops likewise.
    definite = sorted((op for op in considered if op.outcome != "info"), key=lambda o: o.invoke)
    infos = sorted((op for op in considered if op.outcome == "info"), key=lambda o: o.invoke)
    nd, ni = len(definite), len(infos)
    dkind: list[int] = []
    da: list[int] = []
    db: list[int] = []
    for op in definite:
        if op.f == "read":
            dkind.append(_READ)
            da.append(intern(op.result))
            db.append(-1)
        elif op.f == "write":
            dkind.append(_WRITE)
            da.append(intern(op.arg))
            db.append(-1)
        else:
            old, new = _cas_pair(op)
            dkind.append(_CAS if op.outcome == "ok" else _NCAS)
            da.append(intern(old))
            db.append(intern(new))
    itarget: list[int] = []
    ityp: list[int] = []
    for op in infos:
        if op.f == "write":
            itarget.append(intern(op.arg))
            ityp.append(-1)
        else:
            old, new = _cas_pair(op)
            itarget.append(intern(new))
            ityp.append(intern(old))
    nvals = len(intern.values)
    if nd == 0:
        return _Found(True, 0, 0, [])

    inf = float("inf")
    dinv = [op.invoke for op in definite]
    dcomp = [inf if op.complete is None else op.complete for op in definite]
    # The pools: per target value, the info ops that can set the state to it, in invoke order
    # (for naming them in a failure message), and split by type: slot 0 for info writes, one
    # slot per old value x of the info cas(x, v).
    pool_inv: list[list[float]] = [[] for _ in range(nvals)]
    pool_typ: list[list[int]] = [[] for _ in range(nvals)]
    pool_op: list[list[int]] = [[] for _ in range(nvals)]
    slot_of: list[dict[int, int]] = [{-1: 0} for _ in range(nvals)]
    slot_inv: list[list[list[float]]] = [[[]] for _ in range(nvals)]
    for j, op in enumerate(infos):
        v, typ = itarget[j], ityp[j]
        pool_inv[v].append(op.invoke)
        pool_typ[v].append(typ)
        pool_op[v].append(j)
        slot = slot_of[v].setdefault(typ, len(slot_inv[v]))
        if slot == len(slot_inv[v]):
            slot_inv[v].append([])
        slot_inv[v][slot].append(op.invoke)
    targets = [v for v in range(nvals) if pool_inv[v]]
    unused: _Used = tuple(((0,) * len(slot_inv[v]),) if pool_inv[v] else () for v in range(nvals))
    use_cache: dict[tuple[int, tuple[tuple[int, ...], ...], int, int, int], Any] = {}

    def use(v: int, used: tuple[tuple[int, ...], ...], x: int, kind: int, bound: float
            ) -> tuple[tuple[int, ...], ...] | None:
        """The consumption vectors after one more transition x -> v made by an info op invoked
        by ``bound``: an info write (kind 0 only) or an info cas(x, v). None if impossible.

        The k-th transition served by one type takes that type's k-th info op, so it is
        possible iff fewer than (info ops of the type invoked by ``bound``) were taken before.
        """
        sx = slot_of[v].get(x, -1)
        cw = bisect_right(slot_inv[v][0], bound) if kind == 0 else 0
        cx = bisect_right(slot_inv[v][sx], bound) if sx > 0 else 0
        if not cw and not cx:
            return None
        ck = (v, used, sx, cw, cx)
        if ck in use_cache:
            out: tuple[tuple[int, ...], ...] | None = use_cache[ck]
            return out
        nxt: set[tuple[int, ...]] = set()
        for c in used:
            if c[0] < cw:
                nxt.add((c[0] + 1, *c[1:]))
            if sx > 0 and c[sx] < cx:
                nxt.add((*c[:sx], c[sx] + 1, *c[sx + 1 :]))
        out = tuple(sorted(nxt)) or None
        use_cache[ck] = out
        return out

    # casfrom[x]: the targets u of the info cas(x, u)
    casfrom: list[list[int]] = [[] for _ in range(nvals)]
    for u in targets:
        for x in slot_of[u]:
            if x >= 0:
                casfrom[x].append(u)
    # useful[i]: the info transitions p -> v worth making while the ops from the i-th on are
    # pending (a superset of what is pending when the i-th is the first pending one). In a
    # shortest linearization a chain of info ops ends with a definite op it enables (legal in
    # v, not in p): a read or cas of v, a failed cas of p, or a further info cas v -> u
    # (u != p) that is itself worth making. relevant[i]: the targets of those transitions;
    # the info ops of the other pools can no longer matter, so their use is forgotten.
    useful: list[frozenset[tuple[int, int]]] = [frozenset()] * (nd + 1)
    relevant: list[frozenset[int]] = [frozenset()] * (nd + 1)
    eq: set[int] = set()  # old values of the reads / cas from the i-th op on
    ne: set[int] = set()  # old values of the failed cas from the i-th op on
    cache: dict[tuple[frozenset[int], frozenset[int]], frozenset[tuple[int, int]]] = {}
    for i in range(nd - 1, -1, -1):
        if dkind[i] == _NCAS:
            ne.add(da[i])
        elif dkind[i] != _WRITE:
            eq.add(da[i])
        ck = (frozenset(eq), frozenset(ne))
        if ck not in cache:
            good = {(p, v) for p in range(nvals) for v in targets if v in eq or p in ne}
            grown = True
            while grown:
                grown = False
                for p in range(nvals):
                    for v in targets:
                        if (p, v) not in good and any(
                            u != p and (v, u) in good for u in casfrom[v]
                        ):
                            good.add((p, v))
                            grown = True
            cache[ck] = frozenset((p, v) for p, v in good if p != v)
        useful[i] = cache[ck]
        relevant[i] = frozenset(v for _, v in useful[i])

    def project(used: _Used, low: int) -> _Used:
        """Forget the use of the pools no pending op can need any more."""
        keep = relevant[low]
        if all(v in keep or not used[v] for v in targets):
            return used
        return tuple(x if v in keep else () for v, x in enumerate(used))

    def expand(d: int, low: int, used: _Used, s: int, req: int) -> tuple[list[_Move], int]:
        """The moves of a configuration (definite ops in invoke order, then info transitions)
        and its blocking op: the pending definite op that returns first.

        ``req`` is -1 after a definite op; after an info transition it is the state before
        it, and only ops that the transition enabled (illegal in ``req``, legal in ``s``)
        qualify: a definite read or cas, or a further transition by an info cas.
        """
        moves: list[_Move] = []
        w = d >> low
        bound = inf  # the earliest return among pending definite ops
        blocker = low
        observe = -1  # a legal observation (read or failed cas) among the candidates
        i = low
        while i < nd and dinv[i] <= bound:
            if not (w >> (i - low)) & 1:
                if dcomp[i] < bound:
                    bound = dcomp[i]
                    blocker = i
                if observe < 0:
                    k = dkind[i]
                    a = da[i]
                    if k == _WRITE:
                        if req < 0:
                            moves.append((i, a, None, None))
                    elif k == _READ:
                        if s == a and req != a:
                            observe = i
                    elif k == _CAS:
                        if s == a and req != a:
                            moves.append((i, db[i], None, None))
                    elif s != a and (req < 0 or req == a):
                        observe = i
            i += 1
        if observe >= 0:
            return [(observe, s, None, None)], blocker
        if not targets:
            return moves, blocker
        kind = 0 if req < 0 else 1
        good = useful[low]
        for v in targets:
            if v == s or v == req or (s, v) not in good:
                continue
            nv = use(v, used[v], s, kind, bound)
            if nv is not None:
                moves.append((v, v, nv, (s, kind, bisect_right(pool_inv[v], bound))))
        return moves, blocker

    def covers(a: _Used, b: _Used) -> bool:
        """Whether info ops used as in ``a`` leave at least the options of ``b``: every
        consumption vector of ``b`` is at least one of ``a``, type by type."""
        for v in targets:
            av, bv = a[v], b[v]
            if av == bv:
                continue
            for cb in bv:
                if not any(all(map(le, ca, cb)) for ca in av):
                    return False
        return True

    flat_cache: dict[_Used, tuple[int, ...] | None] = {}

    def flat(used: _Used) -> tuple[int, ...] | None:
        """All consumption counts in one tuple when every target has a single vector (the
        usual case: then ``covers`` is one componentwise comparison), else None."""
        found = flat_cache.get(used, ())
        if found == ():
            found = None
            if all(len(used[v]) <= 1 for v in targets):
                found = tuple(n for v in targets for c in used[v] for n in c)
            flat_cache[used] = found
        return found

    all_d = (1 << nd) - 1
    roots: list[_Config] = [
        ((0, 0, s0, -1), 0, project(unused, 0), 0, (2, s0, None, None))
        for s0 in reversed(starts)
    ]
    best: list[Any] = [-1, roots[-1], 0]  # most definite ops linearized, its configuration, blocker

    def search(greedy: bool, limit: int) -> tuple[bool | None, int]:
        """One search from the root with a fresh memo: True (found), False (exhausted) or
        None (``limit`` configurations expanded first), and the number expanded."""
        zero_memo: set[_Key] = set()  # keys expanded without any info transition
        seen: set[tuple[_Key, _Used]] = set()  # (key, info ops used) expanded
        # the info ops used expanded with each key (and their flat form)
        memo: dict[_Key, list[tuple[tuple[int, ...] | None, _Used]]] = {}

        def dominated(key: _Key, used: _Used) -> bool:
            if key in zero_memo or (key, used) in seen:
                return True
            stored = memo.get(key)
            if not stored:
                return False
            mine = flat(used)
            for prev_flat, prev in stored:
                if mine is not None and prev_flat is not None:
                    if all(map(le, prev_flat, mine)):
                        return True
                elif covers(prev, used):
                    return True
            return False

        # buckets[k]: configurations with k info transitions, each expanded depth-first; a
        # greedy search keeps everything in buckets[0] (plain depth-first).
        buckets: list[list[_Config]] = [[] for _ in range(ni + 1)]
        buckets[0].extend(roots)
        explored = 0
        for k in range(ni + 1):
            stack = buckets[k]
            later = stack if greedy else buckets[min(k + 1, ni)]
            while stack:
                config = stack.pop()
                ckey, d, used, count, path = config
                low, bits, s, req = ckey
                if dominated(ckey, used) or (req >= 0 and dominated((low, bits, s, -1), used)):
                    continue
                if count == 0:
                    zero_memo.add(ckey)
                else:
                    seen.add((ckey, used))
                    memo.setdefault(ckey, []).append((flat(used), used))
                if explored == limit:
                    return None, explored
                explored += 1
                moves, blocker = expand(d, low, used, s, req)
                done = d.bit_count()
                if done > best[0]:
                    best[:] = [done, config, blocker]
                for idx, ns, nv, need in reversed(moves):
                    if nv is None:
                        d2 = d | (1 << idx)
                        if d2 == all_d:
                            return True, explored
                        used2 = used
                        low2 = low
                        if idx == low:
                            low2 = ((d2 + 1) & ~d2).bit_length() - 1
                            used2 = project(used, low2)
                        key2: _Key = (low2, d2 >> low2, ns, -1)
                        if key2 not in zero_memo and (key2, used2) not in seen:
                            stack.append((key2, d2, used2, count, (1, idx, None, path)))
                    else:
                        used2 = (*used[:idx], nv, *used[idx + 1 :])
                        key2 = (low, bits, ns, s)
                        if key2 not in zero_memo and (key2, used2) not in seen:
                            later.append((key2, d, used2, count + 1, (0, idx, need, path)))
        return False, explored

    greedy_limit = _GREEDY_PER_OP * (nd + ni)
    if windows:  # the whole history (a window is mostly there to be refuted)
        greedy_limit = max(_GREEDY_MIN, greedy_limit)
    greedy_limit = min(budget // 2, greedy_limit)
    found, explored = search(True, greedy_limit)
    if found is None and windows:
        refuted = _refute_by_windows(
            definite, infos, initial, (budget - explored) // 2, t0, best[2]
        )
        explored += refuted.explored
        if refuted.valid is False:
            return _Found(False, explored, refuted.best, refuted.lines)
    if found is None and explored < budget:
        found, more = search(False, budget - explored)
        explored += more
    if found is None or found:
        return _Found(found, explored, best[0], [])

    # Not linearizable: explain the configuration that linearized the most definite ops,
    # naming an info op for every info transition in its prefix.
    best_done: int = best[0]
    best_config: _Config = best[1]
    best_blocker: int = best[2]
    path_needs: dict[int, list[_Need]] = {}
    node = best_config[4]
    while node is not None:
        if node[0] == 0 and node[2] is not None:
            path_needs.setdefault(node[1], []).append(node[2])
        node = node[3]
    by_need: dict[tuple[int, _Need], list[int]] = {}
    for v, needs in path_needs.items():
        chosen = _assign(pool_typ[v], tuple(needs))
        assert chosen is not None  # the k-th transition of a type can take its k-th info op
        for n, t in zip(needs, chosen, strict=True):
            by_need.setdefault((v, n), []).append(pool_op[v][t])
    seq: list[RegOp] = []
    start = starts[0]
    node = best_config[4]
    while node is not None:
        is_def, idx, need, node = node
        if is_def == 1:
            seq.append(definite[idx])
        elif is_def == 0:
            assert need is not None
            seq.append(infos[by_need[(idx, need)].pop()])
        else:
            start = idx
    seq.reverse()
    value = intern.values
    lines = [] if len(starts) == 1 else [f"from the initial state {value[start]!r}:"]
    lines += [
        f"longest linearizable prefix: {best_done} of {nd} definite ops "
        f"({len(seq) - best_done} info ops applied), ending in state "
        f"{value[best_config[0][2]]!r}{'' if seq else ' (the initial state)'}:"
    ]
    if len(seq) > _PREFIX_SHOWN:
        lines.append(f"  ... {len(seq) - _PREFIX_SHOWN} earlier ops")
    for op in seq[-_PREFIX_SHOWN:]:
        lines.append(f"  {format_op(op, t0)}")
    stuck = definite[best_blocker]
    lines.append(f"could not place: {format_op(stuck, t0)}")
    lines.append(
        "  (it returns first among the ops left; no order of the ops before or concurrent "
        "with it, with or without info ops, reaches a state where it can take effect)"
    )
    if (
        stuck.f == "read"
        and stuck.result not in initial
        and not any(
            (op.f == "write" and op.arg == stuck.result)
            or (op.f == "cas" and op.outcome != "fail" and _cas_pair(op)[1] == stuck.result)
            for op in considered
        )
    ):
        lines.append(f"  the value {stuck.result!r} was never written (nor the initial value)")
    return _Found(False, explored, best_done, lines)


def check_registers(
    ops: Iterable[RegOp],
    initial: Mapping[str, Any] | None = None,
    budget: int = DEFAULT_BUDGET,
    default_initial: Any = None,
) -> list[RegisterResult]:
    """Check every key's register independently (P-compositionality), sorted by key.

    ``initial`` maps keys to their initial value; keys it lacks start at ``default_initial``.
    ``budget`` applies to each key separately.
    """
    by_key: dict[str, list[RegOp]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    init = initial or {}
    return [
        check_register(key, by_key[key], init.get(key, default_initial), budget)
        for key in sorted(by_key)
    ]


# ---------------------------------------------------------------------------------------------
# Set workload
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetAdd:
    """One add of a unique ``element``; ``outcome`` as for ``RegOp``."""

    element: str
    outcome: Outcome
    process: int = 0
    invoke: float = 0.0
    complete: float | None = None


@dataclass(frozen=True, slots=True)
class SetDivergence:
    """Two nodes' final sets differ: counts and (bounded, sorted) samples of each side."""

    node_a: int
    node_b: int
    only_a: int
    only_b: int
    sample_only_a: list[str]
    sample_only_b: list[str]


@dataclass
class SetResult:
    valid: bool
    ok: int  # adds answered ok
    fail: int  # adds answered with a definite failure
    info: int  # adds with an unknown outcome
    info_present: int  # info-only elements present on at least one node
    lost: dict[int, list[str]] = field(default_factory=dict)  # node -> ok adds missing
    phantom: dict[int, list[str]] = field(default_factory=dict)  # node -> failed adds present
    unexpected: dict[int, list[str]] = field(default_factory=dict)  # node -> never attempted
    divergent: list[SetDivergence] = field(default_factory=list)  # pairs of differing nodes
    message: str = ""


def _sample(items: Iterable[str]) -> str:
    ordered = sorted(items)
    shown = ", ".join(repr(x) for x in ordered[:_SAMPLE])
    more = f", ... ({len(ordered)} in all)" if len(ordered) > _SAMPLE else ""
    return f"[{shown}{more}]"


def check_set(adds: list[SetAdd], final: dict[int, set[str]]) -> SetResult:
    """Check the final sets read from every node (``final``: node id -> elements) against the
    adds. An element added more than once must be present if any add was ok, and counts as a
    phantom only if every add of it failed definitely."""
    if not final:
        raise ValueError("check_set needs the final set of at least one node")
    outcomes: dict[str, set[str]] = defaultdict(set)
    for add in adds:
        if add.outcome not in ("ok", "fail", "info"):
            raise ValueError(f"unknown outcome {add.outcome!r}: {add!r}")
        outcomes[add.element].add(add.outcome)
    must = {e for e, o in outcomes.items() if "ok" in o}
    never = {e for e, o in outcomes.items() if o == {"fail"}}
    unknown = {e for e, o in outcomes.items() if o == {"info"}}
    union: set[str] = set().union(*final.values())

    lost: dict[int, list[str]] = {}
    phantom: dict[int, list[str]] = {}
    unexpected: dict[int, list[str]] = {}
    for node in sorted(final):
        present = final[node]
        if missing := must - present:
            lost[node] = sorted(missing)
        if bad := never & present:
            phantom[node] = sorted(bad)
        if extra := {e for e in present if e not in outcomes}:
            unexpected[node] = sorted(extra)
    divergent: list[SetDivergence] = []
    nodes = sorted(final)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            only_a, only_b = final[a] - final[b], final[b] - final[a]
            if only_a or only_b:
                divergent.append(SetDivergence(
                    node_a=a, node_b=b, only_a=len(only_a), only_b=len(only_b),
                    sample_only_a=sorted(only_a)[:_SAMPLE],
                    sample_only_b=sorted(only_b)[:_SAMPLE],
                ))

    counts = {"ok": 0, "fail": 0, "info": 0}
    for add in adds:
        counts[add.outcome] += 1
    valid = not (lost or phantom or unexpected or divergent)
    lines = [
        f"set: {len(adds)} adds ({counts['ok']} ok, {counts['fail']} fail, {counts['info']} "
        f"info, {len(unknown & union)} of {len(unknown)} info-only elements present), "
        f"{len(final)} nodes: {'valid' if valid else 'INVALID'}"
    ]
    for node, items in lost.items():
        lines.append(f"  node {node} lost {len(items)} ok adds: {_sample(items)}")
    for node, items in phantom.items():
        lines.append(f"  node {node} has {len(items)} failed adds: {_sample(items)}")
    for node, items in unexpected.items():
        lines.append(f"  node {node} has {len(items)} never-attempted elements: {_sample(items)}")
    for dv in divergent:
        lines.append(
            f"  nodes {dv.node_a} and {dv.node_b} differ: {dv.only_a} only on {dv.node_a} "
            f"{_sample(dv.sample_only_a)}, {dv.only_b} only on {dv.node_b} "
            f"{_sample(dv.sample_only_b)}"
        )
    return SetResult(
        valid=valid,
        ok=counts["ok"],
        fail=counts["fail"],
        info=counts["info"],
        info_present=len(unknown & union),
        lost=lost,
        phantom=phantom,
        unexpected=unexpected,
        divergent=divergent,
        message="\n".join(lines),
    )
