"""Search: index planning, scope restriction and full filter evaluation.

Rules: the caller has checked that the base exists and keeps the read transaction open (and
in the same thread) while it consumes the iterator. Indexed equality / presence / substring
items of AND/OR give a candidate id set (a superset of the matches: an attribute's index also
holds the values of its tagged descriptions, ``cn;lang-en`` under ``cn``; an approximate item
uses the equality index only where ``~=`` is equality, never for a phonetic match); without
one the scope is walked through the ``children`` database. A subtree search with a selective
candidate set never walks the tree: each candidate's normalised DN is checked against the base
instead. The full filter is always evaluated on each candidate; only entries for which it is
True are returned.
Compiled filters are memoised per ``SearchContext`` (bounded; a filter is a frozen value), keyed
by the filter and the ``blind`` set. ``blind`` names the attributes the caller may not search
(lower-case canonical): their items are Undefined in the evaluation, and never used to plan, so
an index on such an attribute can neither narrow nor widen the result (an Undefined item is
never True: it contributes no candidates, and an AND holding it has none).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from oba.directory.entry import Entry
from oba.directory.evaluate import (
    APPROX_RULES,
    SEES_ALL,
    Blind,
    Matcher,
    compile_filter,
    hidden,
)
from oba.protocol.messages import (
    And,
    Approx,
    Equality,
    Filter,
    Or,
    Present,
    Substrings,
)
from oba.storage.lmdbstore import ReadTxn, parent_ndn
from oba.storage.schemaapi import SchemaLike

BASE, ONE, SUB, SUBORDINATE = 0, 1, 2, 3


# compiled filters kept per SearchContext: clients repeat the same filters, and a compiled
# matcher is a pure function of the filter and the schema. Cleared when full.
MATCHER_CACHE_SIZE = 16384


@dataclass(slots=True)
class SearchContext:
    schema: SchemaLike
    matchers: dict[tuple[Filter, Blind], Matcher] = field(default_factory=dict)
    # (attribute as written, blind) -> is an item on it hidden (see ``evaluate.hidden``)
    hidden: dict[tuple[str, Blind], bool] = field(default_factory=dict)


def _matcher(ctx: SearchContext, flt: Filter, blind: Blind = SEES_ALL) -> Matcher:
    matchers = ctx.matchers
    key = (flt, blind)
    try:
        found = matchers.get(key)
    except TypeError:  # a filter holding something unhashable: compile it each time
        return compile_filter(flt, ctx.schema, blind)
    if found is None:
        found = compile_filter(flt, ctx.schema, blind)
        if len(matchers) >= MATCHER_CACHE_SIZE:
            matchers.clear()
        matchers[key] = found
    return found


def _hidden(schema: SchemaLike, attr: str, blind: Blind,
            memo: dict[tuple[str, Blind], bool] | None) -> bool:
    if not blind:
        return False
    if memo is None:
        return hidden(schema, attr, blind)
    key = (attr, blind)
    found = memo.get(key)
    if found is None:
        if len(memo) >= MATCHER_CACHE_SIZE:
            memo.clear()
        found = memo[key] = hidden(schema, attr, blind)
    return found


def plan(txn: ReadTxn, schema: SchemaLike, flt: Filter, blind: Blind = SEES_ALL,
         memo: dict[tuple[str, Blind], bool] | None = None) -> set[int] | None:
    """Candidate ids from the indexes (a superset of the entries for which ``flt`` is True),
    or None when the filter cannot narrow the search. An item on a ``blind`` attribute is
    never True: no candidates, and its index is not read. ``memo``: ``SearchContext.hidden``."""
    if isinstance(flt, Equality | Approx | Present | Substrings) and _hidden(schema, flt.attr,
                                                                               blind, memo):
        return set()
    if isinstance(flt, Equality | Approx):
        canon = schema.canonical(flt.attr)
        if canon is None or not txn.has_index(canon, "eq"):
            return None
        if isinstance(flt, Approx) and _phonetic(schema, canon):
            return None  # sounds-alike values have other equality keys: no index narrows it
        try:
            norm = schema.normalize(canon, flt.value)
        except Exception:  # an invalid assertion matches nothing
            return set()
        ids = txn.eq(canon, norm)
        return None if ids is None else set(ids)
    if isinstance(flt, Present):
        canon = schema.canonical(flt.attr)
        if canon is None:
            return set()
        ids = txn.pres(canon)
        return None if ids is None else set(ids)
    if isinstance(flt, Substrings):
        canon = schema.canonical(flt.attr)
        if canon is None or not txn.has_index(canon, "sub"):
            return None
        rule = schema.substr(canon)
        if rule is None:
            return None
        try:
            norm = getattr(rule, "normalize_component", rule.normalize)
            initial = None if flt.initial is None else norm(flt.initial)
            final = None if flt.final is None else norm(flt.final)
            anys = [norm(a) for a in flt.any]
        except Exception:
            return set()
        ids = txn.sub(canon, initial, anys, final)
        return None if ids is None else set(ids)
    if isinstance(flt, And):
        result: set[int] | None = None
        for f in flt.filters:
            c = plan(txn, schema, f, blind, memo)
            if c is None:
                continue
            result = c if result is None else result & c
            if not result:
                return set()
        return result
    if isinstance(flt, Or):
        union: set[int] = set()
        for f in flt.filters:
            c = plan(txn, schema, f, blind, memo)
            if c is None:
                return None
            union |= c
        return union
    return None


def _phonetic(schema: SchemaLike, canon: str) -> bool:
    """Does ``~=`` on this type compare phonetically (not by its equality rule)?"""
    rule = schema.equality(canon)
    return rule is not None and str(getattr(rule, "name", "")).lower() in APPROX_RULES


def _walk(txn: ReadTxn, root: int, include_root: bool) -> Iterator[int]:
    """Ids of the subtree under ``root`` (pre-order, parents first)."""
    if include_root:
        yield root
    stack = [root]
    while stack:
        kids = txn.children(stack.pop())
        yield from kids
        stack.extend(reversed(kids))


def _in_scope(ndn: str, base_ndn: str, scope: int) -> bool:
    if scope == BASE:
        return ndn == base_ndn
    if scope == ONE:
        return parent_ndn(ndn) == base_ndn if ndn else False
    if ndn == base_ndn:
        return scope == SUB
    return not base_ndn or ndn.endswith("," + base_ndn)


def search(
    txn: ReadTxn,
    ctx: SearchContext,
    base_ndn: str,
    scope: int,
    flt: Filter,
    size_limit: int = 0,
    base_entry: Entry | None = None,
    blind: Blind = SEES_ALL,
) -> Iterator[Entry]:
    """Entries in scope for which ``flt`` is True; at most ``size_limit`` when it is > 0.
    ``base_ndn`` "" means the whole database (the root DSE itself is never returned).
    ``base_entry``: the entry at ``base_ndn`` when the caller has already read it. ``blind``:
    the attributes the caller may not search in any entry (their items are Undefined)."""
    schema = ctx.schema
    matcher = _matcher(ctx, flt, blind)
    if base_entry is not None:
        base_id: int | None = base_entry.id
    else:
        base_id = txn.id_for_ndn(base_ndn) if base_ndn else 0
    if base_id is None:
        return
    returned = 0

    def emit(entry: Entry) -> bool:
        nonlocal returned
        if matcher(entry) is True:
            returned += 1
            return True
        return False

    if scope == BASE:
        entry = base_entry if base_entry is not None else txn.get(base_id) if base_id else None
        if entry is not None and emit(entry):
            yield entry
        return

    candidates = plan(txn, schema, flt, blind, ctx.hidden)
    ids: Iterator[int] | list[int]
    if scope == ONE:
        if candidates is not None and len(candidates) < 64:
            ids = sorted(candidates)
            check_dn = True
        else:
            kids = txn.children(base_id)
            ids = kids if candidates is None else [k for k in kids if k in candidates]
            check_dn = False
    elif candidates is not None and (len(candidates) <= 16
                                     or len(candidates) * 4 <= max(txn.count(), 64)):
        ids = sorted(candidates)
        check_dn = True
    else:
        walked = _walk(txn, base_id, include_root=scope == SUB and base_id != 0)
        ids = walked if candidates is None else (i for i in walked if i in candidates)
        check_dn = False

    for eid in ids:
        entry = txn.get(eid)
        if entry is None:
            continue
        if check_dn and not _in_scope(entry.normalized_dn(schema), base_ndn, scope):
            continue
        if emit(entry):
            yield entry
            if size_limit and returned >= size_limit:
                return
