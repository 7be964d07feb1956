"""A memoising view of a ``Schema`` for bulk loads (the schema does not change during one).

Rules for this module: answers exactly what the wrapped schema answers; only the pure name
lookups (``canonical``, ``attribute``, ``object_class``, the matching-rule getters) are cached,
per exact argument. Value normalisation is never cached.
"""

from __future__ import annotations

from typing import Any

from oba.schema import Schema


class CachedSchema:
    def __init__(self, schema: Schema) -> None:
        self._s = schema
        self._canon: dict[str, str | None] = {}
        self._attr: dict[str, Any] = {}
        self._oc: dict[str, Any] = {}
        self._rules: dict[tuple[str, str], Any] = {}

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
        return self._s.normalize(attr, value)

    def normalize_dn(self, dn: str) -> str:
        return self._s.normalize_dn(dn)
