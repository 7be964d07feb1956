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
Values are compared through the schema's matching rules (equality for ``=``, ordering for
``>=``/``<=``, substrings for ``=*x*``; ``~=`` is slapd's phonetic match on the attributes
whose equality rule is caseIgnore, caseExact, caseIgnoreIA5 or caseExactIA5, see
``oba.schema.phonetic``, and the equality rule on the others). Assertion values are normalised
once, when the filter is compiled; entry values once per entry object and rule (memoised on the
entry, see ``_normalised``: entries are never mutated once built).
An item on a type compares the values of its subtypes too (RFC 4512 2.5.1: ``name`` reads
``cn``, ``sn``...), and an item on a description compares those of the descriptions with more
options (``cn`` reads ``cn;lang-en``, ``cn;lang-en`` reads only those): see
``oba.schema.options``. A description with an option Oba does not know is an undefined type.
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
from oba.schema.options import OptionError, describe, key_parts, tagged_keys
from oba.schema.phonetic import assertion_codes, codes_match
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


def _described(schema: SchemaLike, attr: str) -> tuple[str | None, tuple[str, ...]]:
    """(canonical type name, tags) of a filter's attribute description; (None, ()) when the
    type is undefined or an option is not supported (an undefined description)."""
    try:
        found = describe(schema, attr)
    except OptionError:
        return None, ()
    return (None, ()) if found is None else (found.canon, found.tags)


def _canonical(schema: SchemaLike, attr: str, blind: Blind
               ) -> tuple[str | None, tuple[str, ...], bool]:
    """(canonical name or None when undefined, its tags, whether an item on it is hidden: the
    caller may not search it or one of its subtypes)."""
    canon, tags = _described(schema, attr)
    if canon is None or not blind:
        return canon, tags, False
    return canon, tags, any(n.lower() in blind for n in attr_names(schema, canon))


def hidden(schema: SchemaLike, attr: str, blind: Blind) -> bool:
    """Is a filter item on ``attr`` Undefined for a caller who may not search ``blind``? (Its
    type decides, whatever its options: an index on a hidden type is never read.)"""
    if not blind:
        return False
    canon = schema.canonical(attr)
    return canon is not None and any(n.lower() in blind for n in attr_names(schema, canon))


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
            canon = _described(schema, attr)[0]
            if canon is not None:
                names.update(n.lower() for n in attr_names(schema, canon))
    return frozenset(names), every


def _values(entry: Entry, names: tuple[str, ...], tags: tuple[str, ...] = ()) -> list[bytes]:
    """The values of the types ``names`` in ``entry`` under descriptions holding ``tags``
    (all of them, tagged or not, when ``tags`` is empty)."""
    attrs = entry.attrs
    if tags:
        out: list[bytes] = []
    elif len(names) == 1:
        out = attrs.get(names[0]) or []
    else:
        out = []
        for n in names:
            out.extend(attrs.get(n) or ())
    tagged = tagged_keys(entry)
    if tagged:
        extra = [key for key in tagged if _covers(names, tags, key)]
        if extra:
            out = list(out)
            for key in extra:
                out.extend(attrs[key])
    return out


def _covers(names: tuple[str, ...], tags: tuple[str, ...], key: str) -> bool:
    base, held = key_parts(key)
    return base in names and all(t in held for t in tags)


def _normalised(entry: Entry, names: tuple[str, ...], tags: tuple[str, ...], rule: Any
                ) -> list[bytes | None]:
    """The values of ``names`` (with ``tags``) in ``entry`` normalised by ``rule`` (None for a
    value the rule rejects), memoised on the entry: a cached entry is evaluated by search after
    search."""
    memo = entry.norms
    if memo is None:
        memo = entry.norms = {}
    key = (names, tags, rule)  # the rule object itself: it stays alive while it is a key
    out = memo.get(key)
    if out is None:
        out = memo[key] = [_safe_norm(rule, v) for v in _values(entry, names, tags)]
    return out


# equality rules whose attributes ``~=`` compares phonetically (slapd's approx associations)
APPROX_RULES = frozenset({"caseignorematch", "caseexactmatch", "caseignoreia5match",
                          "caseexactia5match"})


def _approx(schema: SchemaLike, attr: str, value: bytes, blind: Blind = SEES_ALL) -> Matcher:
    """``attr~=value``: the phonetic match where slapd has one, else equality."""
    canon, tags, unseen = _canonical(schema, attr, blind)
    if canon is None or unseen:
        return _undefined
    rule = schema.equality(canon)
    if rule is None or str(getattr(rule, "name", "")).lower() not in APPROX_RULES:
        return _equality(schema, attr, value, blind)
    if _safe_norm(rule, value) is None:  # an assertion invalid for the syntax
        return _undefined
    wanted = assertion_codes(value)
    if wanted is None:  # no word: matches nothing
        return _false
    names = attr_names(schema, canon)

    def match(entry: Entry) -> bool | None:
        return any(codes_match(v, wanted) for v in _values(entry, names, tags))

    return match


def _equality(schema: SchemaLike, attr: str, value: bytes, blind: Blind = SEES_ALL) -> Matcher:
    canon, tags, unseen = _canonical(schema, attr, blind)
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
    if canon == "objectClass" and closure is not None and not tags:

        def match_oc(entry: Entry) -> bool | None:
            return any(target in closure(v) for v in entry.attrs.get("objectClass", ()))

        return match_oc

    def match(entry: Entry) -> bool | None:
        return target in _normalised(entry, names, tags, rule)

    return match


def _ordering(schema: SchemaLike, attr: str, value: bytes, ge: bool,
              blind: Blind = SEES_ALL) -> Matcher:
    canon, tags, unseen = _canonical(schema, attr, blind)
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
        for v in _values(entry, names, tags):
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
    canon, tags, unseen = _canonical(schema, f.attr, blind)
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
        for nv in _normalised(entry, names, tags, rule):
            if nv is not None and rule.match_substrings(nv, initial, any_t, final):
                return True
        return False

    return match


def _present(schema: SchemaLike, attr: str, blind: Blind = SEES_ALL) -> Matcher:
    canon, tags, unseen = _canonical(schema, attr, blind)
    if canon is None:
        return _false
    if unseen:
        return _undefined
    if canon.lower() == "objectclass" and not tags:
        return _true
    names = attr_names(schema, canon)

    def match(entry: Entry) -> bool | None:
        if not tags and any(entry.attrs.get(n) for n in names):
            return True
        tagged = tagged_keys(entry)
        return bool(tagged) and any(_covers(names, tags, key) for key in tagged)

    return match


def _lookup_rule(schema: SchemaLike, name: str) -> Any:
    finder = getattr(schema, "matching_rule", None)
    return finder(name) if callable(finder) else None


def _extensible(schema: SchemaLike, f: Extensible, blind: Blind = SEES_ALL) -> Matcher:
    """``attr:dn:rule:=value``: the rule (or the attribute's equality rule) over the attribute's
    values (or every attribute the rule can compare but the ``blind`` ones) and, with ``:dn``,
    the DN's AVAs (of types not ``blind``)."""
    canon: str | None = None
    tags: tuple[str, ...] = ()
    if f.attr is not None:
        canon, tags, unseen = _canonical(schema, f.attr, blind)
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
            if hit(_values(entry, names, tags)):
                return True
        elif blind:
            if any(hit(vals) for name, vals in entry.attrs.items()
                   if name.split(";", 1)[0].lower() not in blind
                   and name.lower() not in blind):
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
    if isinstance(flt, Equality):
        return _equality(schema, flt.attr, flt.value, blind)
    if isinstance(flt, Approx):
        return _approx(schema, flt.attr, flt.value, blind)
    if isinstance(flt, GreaterOrEqual):
        return _ordering(schema, flt.attr, flt.value, True, blind)
    if isinstance(flt, LessOrEqual):
        return _ordering(schema, flt.attr, flt.value, False, blind)
    if isinstance(flt, Substrings):
        return _substrings(schema, flt, blind)
    if isinstance(flt, Present):
        return _present(schema, flt.attr, blind)
    return _extensible(schema, flt, blind)


def compare_types(schema: SchemaLike, attr: str
                  ) -> tuple[str, tuple[str, ...], tuple[str, ...]] | None:
    """What a Compare of ``attr`` reads: (its canonical type, the type and its subtypes, the
    tags a description must hold); None for an undefined type, ``OptionError`` for an option
    Oba does not support (both LDAP 17)."""
    found = describe(schema, attr)
    if found is None:
        return None
    return found.canon, attr_names(schema, found.canon), found.tags


def values_of(entry: Entry, names: tuple[str, ...], tags: tuple[str, ...] = ()) -> list[bytes]:
    """The values a filter item or a Compare on the types ``names`` (with ``tags``) reads."""
    return _values(entry, names, tags)


def compare_among(entry: Entry, canon: str, names: tuple[str, ...], tags: tuple[str, ...],
                  value: bytes, schema: SchemaLike) -> bool | None:
    """Compare ``value`` with the values of ``names`` (with ``tags``) by the equality rule of
    ``canon``; None when it has none or the value is invalid for it."""
    rule = schema.equality(canon)
    if rule is None:
        return None
    target = _safe_norm(rule, value)
    if target is None:
        return None
    closure = getattr(schema, "objectclass_closure", None)
    if canon == "objectClass" and closure is not None and not tags:
        return any(target in closure(v) for v in entry.attrs.get("objectClass", ()))
    return target in _normalised(entry, names, tags, rule)


def compare(entry: Entry, attr: str, value: bytes, schema: SchemaLike) -> bool | None:
    """LDAP compare: True/False by the attribute's equality rule; None when the type is
    unknown, has no equality rule or the value is invalid (the caller maps absent attributes
    to noSuchAttribute itself)."""
    return _equality(schema, attr, value)(entry)
