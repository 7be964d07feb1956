"""Search filter evaluation (RFC 4511 section 4.5.1.7), compiled once per search.

Rules: three-valued logic — a matcher returns True, False or None (Undefined), and NOT of
Undefined is Undefined. A filter item is Undefined when its attribute type is unknown, its
attribute has no suitable matching rule, its assertion value is invalid for that rule, or the
caller may not search that attribute or one of its subtypes (whose values an item on the
supertype compares): ``blind``, lower-case canonical names given when the filter is compiled.
An absent attribute makes the item False. An extensible match without a type compares the
attributes not ``blind`` and is True when one matches; otherwise it is Undefined when anything
is ``blind`` (the hidden attributes count as present everywhere, so that neither their values
nor their presence show), else False. So the result never depends on a ``blind`` attribute,
and making more attributes ``blind`` only ever turns results into Undefined (monotone: a
search may evaluate with fewer ``blind`` attributes first, then with the caller's own).
Values are compared through the schema's matching rules (equality for ``=`` and ``~=``,
ordering for ``>=``/``<=``, substrings for ``=*x*``). Assertion values are normalised once,
when the filter is compiled; entry values once per entry object and rule (memoised on the
entry, see ``_normalised``: entries are never mutated once built).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oba.directory.entry import Entry
from oba.protocol.dn import DNError, parse_dn
from oba.protocol.messages import (
    And,
    Approx,
    Equality,
    Extensible,
    Filter,
    GreaterOrEqual,
    LessOrEqual,
    Not,
    Or,
    Present,
    Substrings,
)
from oba.storage.schemaapi import SchemaLike

Matcher = Callable[[Entry], bool | None]


def _undefined(_: Entry) -> bool | None:
    return None


def _false(_: Entry) -> bool | None:
    return False


def _true(_: Entry) -> bool | None:
    return True


def _safe_norm(rule: Any, value: bytes) -> bytes | None:
    try:
        out: bytes = rule.normalize(value)
    except Exception:  # a value the rule rejects never matches
        return None
    return out


Blind = frozenset[str]  # lower-case canonical names of attributes the caller may not search
SEES_ALL: Blind = frozenset()


def attr_names(schema: SchemaLike, canon: str) -> tuple[str, ...]:
    """``canon`` and the canonical names of its subtypes (attribute types whose SUP chain
    reaches it), when the schema can enumerate them."""
    subtypes = getattr(schema, "subtypes", None)
    if callable(subtypes):
        found = subtypes(canon)
        if found:
            names = [canon, *(str(n) for n in found if str(n) != canon)]
            return tuple(names)
    return (canon,)


def _canonical(schema: SchemaLike, attr: str, blind: Blind) -> tuple[str | None, bool]:
    """(canonical name or None when undefined, whether an item on it is hidden: the caller
    may not search it or one of its subtypes)."""
    canon = schema.canonical(attr)
    if canon is None or not blind:
        return canon, False
    return canon, any(n.lower() in blind for n in attr_names(schema, canon))


def hidden(schema: SchemaLike, attr: str, blind: Blind) -> bool:
    """Is a filter item on ``attr`` Undefined for a caller who may not search ``blind``?"""
    return bool(blind) and _canonical(schema, attr, blind)[1]


def filter_reads(flt: Filter, schema: SchemaLike) -> tuple[frozenset[str], bool]:
    """What evaluating ``flt`` reads: the lower-case canonical names of the attributes whose
    values it compares (subtypes included; undefined types left out, their items are
    Undefined anyway), and whether it compares every attribute (an extensible match without
    a type)."""
    names: set[str] = set()
    every = False
    stack: list[Filter] = [flt]
    while stack:
        f = stack.pop()
        if isinstance(f, And | Or):
            stack.extend(f.filters)
        elif isinstance(f, Not):
            stack.append(f.filter)
        else:
            attr = getattr(f, "attr", None)
            if not attr:
                every = True
                continue
            canon = schema.canonical(attr)
            if canon is not None:
                names.update(n.lower() for n in attr_names(schema, canon))
    return frozenset(names), every


def _values(entry: Entry, names: tuple[str, ...]) -> list[bytes]:
    if len(names) == 1:
        return entry.attrs.get(names[0]) or []
    out: list[bytes] = []
    for n in names:
        out.extend(entry.attrs.get(n) or ())
    return out


def _normalised(entry: Entry, names: tuple[str, ...], rule: Any) -> list[bytes | None]:
    """The values of ``names`` in ``entry`` normalised by ``rule`` (None for a value the rule
    rejects), memoised on the entry: a cached entry is evaluated by search after search."""
    memo = entry.norms
    if memo is None:
        memo = entry.norms = {}
    key = (names, rule)  # the rule object itself: it stays alive while it is a key
    out = memo.get(key)
    if out is None:
        out = memo[key] = [_safe_norm(rule, v) for v in _values(entry, names)]
    return out


def _equality(schema: SchemaLike, attr: str, value: bytes, blind: Blind = SEES_ALL) -> Matcher:
    canon, unseen = _canonical(schema, attr, blind)
    if canon is None or unseen:
        return _undefined
    rule = schema.equality(canon)
    if rule is None:
        return _undefined
    target = _safe_norm(rule, value)
    if target is None:
        return _undefined
    names = attr_names(schema, canon)
    closure = getattr(schema, "objectclass_closure", None)
    if canon == "objectClass" and closure is not None:

        def match_oc(entry: Entry) -> bool | None:
            return any(target in closure(v) for v in entry.attrs.get("objectClass", ()))

        return match_oc

    def match(entry: Entry) -> bool | None:
        return target in _normalised(entry, names, rule)

    return match


def _ordering(schema: SchemaLike, attr: str, value: bytes, ge: bool,
              blind: Blind = SEES_ALL) -> Matcher:
    canon, unseen = _canonical(schema, attr, blind)
    if canon is None or unseen:
        return _undefined
    rule = schema.ordering(canon)
    if rule is None:
        return _undefined
    target = _safe_norm(rule, value)
    if target is None:
        return _undefined
    names = attr_names(schema, canon)

    def match(entry: Entry) -> bool | None:
        for v in _values(entry, names):
            nv = _safe_norm(rule, v)
            if nv is None:
                continue
            c = rule.compare(nv, target)
            if (c >= 0) if ge else (c <= 0):
                return True
        return False

    return match


class _ComponentRule:
    """Normalises substring-assertion components (``normalize_component`` when the rule has
    one: components keep spaces that a whole value would lose)."""

    def __init__(self, rule: Any) -> None:
        self.normalize = getattr(rule, "normalize_component", rule.normalize)


def _substrings(schema: SchemaLike, f: Substrings, blind: Blind = SEES_ALL) -> Matcher:
    canon, unseen = _canonical(schema, f.attr, blind)
    if canon is None or unseen:
        return _undefined
    rule = schema.substr(canon)
    if rule is None:
        return _undefined
    comp = _ComponentRule(rule)
    initial = None if f.initial is None else _safe_norm(comp, f.initial)
    final = None if f.final is None else _safe_norm(comp, f.final)
    anys = [_safe_norm(comp, a) for a in f.any]
    if (f.initial is not None and initial is None) or (f.final is not None and final is None):
        return _undefined
    if any(a is None for a in anys):
        return _undefined
    any_t = tuple(a for a in anys if a is not None)
    names = attr_names(schema, canon)

    def match(entry: Entry) -> bool | None:
        for nv in _normalised(entry, names, rule):
            if nv is not None and rule.match_substrings(nv, initial, any_t, final):
                return True
        return False

    return match


def _present(schema: SchemaLike, attr: str, blind: Blind = SEES_ALL) -> Matcher:
    canon, unseen = _canonical(schema, attr, blind)
    if canon is None:
        return _false
    if unseen:
        return _undefined
    if canon.lower() == "objectclass":
        return _true
    names = attr_names(schema, canon)

    def match(entry: Entry) -> bool | None:
        return any(entry.attrs.get(n) for n in names)

    return match


def _lookup_rule(schema: SchemaLike, name: str) -> Any:
    finder = getattr(schema, "matching_rule", None)
    return finder(name) if callable(finder) else None


def _extensible(schema: SchemaLike, f: Extensible, blind: Blind = SEES_ALL) -> Matcher:
    """``attr:dn:rule:=value``: the rule (or the attribute's equality rule) over the attribute's
    values (or every attribute the rule can compare but the ``blind`` ones) and, with ``:dn``,
    the DN's AVAs (of types not ``blind``)."""
    canon: str | None = None
    if f.attr is not None:
        canon, unseen = _canonical(schema, f.attr, blind)
        if canon is None or unseen:
            return _undefined
    rule: Any
    if f.matching_rule is not None:
        rule = _lookup_rule(schema, f.matching_rule)
    elif canon is not None:
        rule = schema.equality(canon)
    else:
        return _undefined
    if rule is None:
        return _undefined
    target = _safe_norm(rule, f.value)
    if target is None:
        return _undefined
    rule_name = str(getattr(rule, "name", "")).lower()
    ordering = rule_name.endswith("orderingmatch")
    names = attr_names(schema, canon) if canon is not None else None
    # no type: the hidden attributes count as present everywhere, values unknown
    otherwise: bool | None = None if names is None and blind else False

    def hit(values: list[bytes]) -> bool:
        for v in values:
            nv = _safe_norm(rule, v)
            if nv is None:
                continue
            if ordering:
                if rule.compare(nv, target) < 0:
                    return True
            elif nv == target:
                return True
        return False

    def match(entry: Entry) -> bool | None:
        if names is not None:
            if hit(_values(entry, names)):
                return True
        elif blind:
            if any(hit(vals) for name, vals in entry.attrs.items()
                   if name.lower() not in blind):
                return True
        elif any(hit(vals) for vals in entry.attrs.values()):
            return True
        if f.dn_attributes:
            try:
                dn = parse_dn(entry.dn)
            except DNError:
                return otherwise
            for rdn in dn:
                for typ, val in rdn:
                    typ_canon = schema.canonical(typ)
                    if canon is not None and typ_canon != canon:
                        continue
                    if blind and (typ_canon or typ).lower() in blind:
                        continue
                    if hit([val.encode("utf-8")]):
                        return True
        return otherwise

    return match


def compile_filter(flt: Filter, schema: SchemaLike, blind: Blind = SEES_ALL) -> Matcher:
    """A closure evaluating ``flt`` against an entry (True / False / None = Undefined), for a
    caller who may not search the ``blind`` attributes (their items are Undefined)."""
    if isinstance(flt, And):
        parts = [compile_filter(f, schema, blind) for f in flt.filters]

        def and_(entry: Entry) -> bool | None:
            result: bool | None = True
            for p in parts:
                r = p(entry)
                if r is False:
                    return False
                if r is None:
                    result = None
            return result

        return and_
    if isinstance(flt, Or):
        parts = [compile_filter(f, schema, blind) for f in flt.filters]

        def or_(entry: Entry) -> bool | None:
            result: bool | None = False
            for p in parts:
                r = p(entry)
                if r is True:
                    return True
                if r is None:
                    result = None
            return result

        return or_
    if isinstance(flt, Not):
        inner = compile_filter(flt.filter, schema, blind)

        def not_(entry: Entry) -> bool | None:
            r = inner(entry)
            return None if r is None else not r

        return not_
    if isinstance(flt, Equality | Approx):
        return _equality(schema, flt.attr, flt.value, blind)
    if isinstance(flt, GreaterOrEqual):
        return _ordering(schema, flt.attr, flt.value, True, blind)
    if isinstance(flt, LessOrEqual):
        return _ordering(schema, flt.attr, flt.value, False, blind)
    if isinstance(flt, Substrings):
        return _substrings(schema, flt, blind)
    if isinstance(flt, Present):
        return _present(schema, flt.attr, blind)
    return _extensible(schema, flt, blind)


def compare(entry: Entry, attr: str, value: bytes, schema: SchemaLike) -> bool | None:
    """LDAP compare: True/False by the attribute's equality rule; None when the type is
    unknown, has no equality rule or the value is invalid (the caller maps absent attributes
    to noSuchAttribute itself)."""
    return _equality(schema, attr, value)(entry)
