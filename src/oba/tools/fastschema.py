"""A memoising view of a ``Schema`` for bulk loads (the schema does not change during one).

Rules for this module: answers exactly what the wrapped schema answers. The pure name lookups
(``canonical``, ``attribute``, ``object_class``, the matching-rule getters) are cached per
exact argument; value and DN normalisation results are cached too (pure functions of their
arguments), in bounded tables that are emptied when full. A value that fails to normalise is
never cached: it raises again on every call. A plain DN is its first RDN's normal form (a
simple ``type=value`` normalised here with the type's rule, anything else by the schema) plus
its parent's, which is cached.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from oba.protocol.dn import escape_value
from oba.schema import Schema

_LIMIT = 300_000
_SIMPLE_RDN = re.compile(r"([A-Za-z][A-Za-z0-9-]*)=([A-Za-z0-9._@-]+)\Z")


class CachedSchema:
    def __init__(self, schema: Schema) -> None:
        self._s = schema
        self._canon: dict[str, str | None] = {}
        self._attr: dict[str, Any] = {}
        self._oc: dict[str, Any] = {}
        self._rules: dict[tuple[str, str], Any] = {}
        self._norm: dict[tuple[str, bytes], bytes] = {}
        self._ndn: dict[str, str] = {}
        self._rdn_plans: dict[str, tuple[str, Callable[[bytes], bytes]] | tuple[()]] = {}

    def __getattr__(self, name: str) -> Any:  # everything else: the real schema
        return getattr(self._s, name)

    def canonical(self, name: str) -> str | None:
        try:
            return self._canon[name]
        except KeyError:
            value = self._canon[name] = self._s.canonical(name)
            return value

    def attribute(self, name: str) -> Any:
        try:
            return self._attr[name]
        except KeyError:
            value = self._attr[name] = self._s.attribute(name)
            return value

    def object_class(self, name: str) -> Any:
        try:
            return self._oc[name]
        except KeyError:
            value = self._oc[name] = self._s.object_class(name)
            return value

    def _rule(self, kind: str, attr: str) -> Any:
        key = (kind, attr)
        try:
            return self._rules[key]
        except KeyError:
            value = self._rules[key] = getattr(self._s, kind)(attr)
            return value

    def equality(self, attr: str) -> Any:
        return self._rule("equality", attr)

    def ordering(self, attr: str) -> Any:
        return self._rule("ordering", attr)

    def substr(self, attr: str) -> Any:
        return self._rule("substr", attr)

    def normalize(self, attr: str, value: bytes) -> bytes:
        key = (attr, value)
        try:
            return self._norm[key]
        except KeyError:
            if len(self._norm) >= _LIMIT:
                self._norm.clear()
            out = self._norm[key] = self._s.normalize(attr, value)
            return out

    def normalize_dn(self, dn: str) -> str:
        """A normalised DN is its normalised RDNs joined by commas, so a plain DN (no quotes,
        escapes or spaces around its first comma) is its first RDN normalised + the parent's
        normalised DN, which is cached: a bulk load names thousands of entries per parent."""
        try:
            return self._ndn[dn]
        except KeyError:
            pass
        i = dn.find(",")
        if (0 < i < len(dn) - 1 and dn[i - 1] != " " and dn[i + 1] != " "
                and '"' not in dn and "\\" not in dn):
            out = self._rdn(dn[:i]) + "," + self.normalize_dn(dn[i + 1 :])
        else:
            out = self._s.normalize_dn(dn)
        if len(self._ndn) >= _LIMIT:
            self._ndn.clear()
        self._ndn[dn] = out
        return out

    def _rdn(self, rdn: str) -> str:
        """``normalize_dn`` of one RDN. A plain ``type=value`` (a type name, a value of
        letters, digits and ``._@-``) parses to exactly that pair, so it is normalised here
        with the type's rule (looked up once per type); anything else, or a value the rule
        refuses, goes to the schema (which gives the result or the error)."""
        m = _SIMPLE_RDN.match(rdn)
        if m is not None:
            plan = self._rdn_plans.get(m.group(1))
            if plan is None:
                plan = self._rdn_plans[m.group(1)] = self._rdn_plan(m.group(1))
            if plan:
                name, fn = plan
                try:
                    value = fn(m.group(2).encode("utf-8")).decode("utf-8")
                except Exception:  # the schema reports it
                    return self._s.normalize_dn(rdn)
                return name + "=" + escape_value(value)
        return self._s.normalize_dn(rdn)

    def _rdn_plan(self, attr: str) -> tuple[str, Callable[[bytes], bytes]] | tuple[()]:
        """(lower-cased schema name, equality normaliser) of a type; () when undefined."""
        at = self._s.attribute(attr)
        if at is None:
            return ()
        return (at.name.lower(), self._s.normalizer(attr))
