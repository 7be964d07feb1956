"""Server-Side Sorting (RFC 2891) of a search result, as slapd's sssvlv overlay does it.

Rules for this module: every sort key must name a defined attribute type (else
``noSuchAttribute``, 16) with an ordering rule (else ``inappropriateMatching``, 18); a named
``orderingRule`` must be an ordering rule the server knows. slapd refuses such a request as a
whole, critical or not, so ``check_keys`` raises and the search fails with that code. Values
compare by the ordering rule on their normalised forms; an entry's smallest value (largest, for a
reverse key) is its sort value; entries without a value sort last for ascending and first for
reverse keys (RFC 2891: absent values are treated as larger than any value). The sort is stable.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from oba.directory.entry import Entry
from oba.protocol.controls import SortKey
from oba.protocol.resultcodes import ResultCode
from oba.schema import InvalidValue, Schema
from oba.schema.matching import MatchingRule


class SortError(Exception):
    def __init__(self, code: ResultCode, message: str, attr: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.attr = attr


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    attr: str  # canonical name
    rule: MatchingRule
    reverse: bool


def check_keys(schema: Schema, keys: Sequence[SortKey]) -> tuple[ResolvedKey, ...]:
    resolved: list[ResolvedKey] = []
    for key in keys:
        canon = schema.canonical(key.attr.split(";", 1)[0])
        if canon is None:
            raise SortError(ResultCode.NO_SUCH_ATTRIBUTE,
                            "serverSort control: Unrecognized attribute type in sort key",
                            key.attr)
        rule = schema.ordering(canon)
        if key.ordering_rule is not None:
            named = _ordering_rule(schema, key.ordering_rule)
            if named is None:
                raise SortError(ResultCode.INAPPROPRIATE_MATCHING,
                                "serverSort control: Unrecognized ordering rule in sort key",
                                key.attr)
            rule = named
        if rule is None:
            raise SortError(ResultCode.INAPPROPRIATE_MATCHING,
                            "serverSort control: No ordering rule", key.attr)
        resolved.append(ResolvedKey(canon, rule, key.reverse))
    return tuple(resolved)


def _ordering_rule(schema: Schema, name: str) -> MatchingRule | None:
    rule = schema.matching_rule(name)
    return rule if rule is not None and rule.kind == "ordering" else None


def _sort_value(entry: Entry, key: ResolvedKey) -> bytes | None:
    best: bytes | None = None
    cmp = key.rule.compare
    for raw in entry.attrs.get(key.attr, ()):
        try:
            norm = key.rule.normalize(raw)
        except InvalidValue:
            continue
        if best is None or (cmp(norm, best) > 0 if key.reverse else cmp(norm, best) < 0):
            best = norm
    return best


def sort_entries(entries: list[Entry], keys: Sequence[ResolvedKey]) -> list[Entry]:
    """The entries ordered by ``keys`` (first key most significant)."""
    values = {id(e): [_sort_value(e, k) for k in keys] for e in entries}

    def compare(a: Entry, b: Entry) -> int:
        va, vb = values[id(a)], values[id(b)]
        for i, key in enumerate(keys):
            x, y = va[i], vb[i]
            if x is None or y is None:
                if x is None and y is None:
                    continue
                c = 1 if x is None else -1  # absent sorts as larger than any value
            else:
                c = key.rule.compare(x, y)
            if c:
                return -c if key.reverse else c
        return 0

    return sorted(entries, key=functools.cmp_to_key(compare))
