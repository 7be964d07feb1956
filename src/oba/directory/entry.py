"""A directory entry as the storage layer and the directory semantics see it.

Rules: ``attrs`` is keyed by the canonical attribute name (the schema's primary spelling),
followed by the description's language tags when it has some (``cn;lang-en``, see
``oba.schema.options``), and holds values exactly as they were supplied (never normalised).
Helpers never mutate the entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class _Canonicaliser(Protocol):
    def canonical(self, name: str) -> str | None: ...


class _DNNormaliser(Protocol):
    def normalize_dn(self, dn: str) -> str: ...


@dataclass(slots=True)
class Entry:
    id: int
    dn: str
    attrs: dict[str, list[bytes]] = field(default_factory=dict)
    # Encoded PartialAttributes memoised by the LDAP search path (attribute -> BER bytes).
    # Only set on entries shared through the storage read cache, which nobody mutates.
    enc: dict[str, bytes] | None = field(default=None, compare=False, repr=False)
    # The normalised DN, memoised the same way (see ``normalized_dn``).
    ndn: str | None = field(default=None, compare=False, repr=False)
    # Normalised values memoised by filter evaluation ((attribute names, matching rule) -> one
    # normalised value or None per stored value); entries are not mutated once built.
    norms: dict[tuple[tuple[str, ...], tuple[str, ...], object], list[bytes | None]] | None = \
        field(default=None, compare=False, repr=False)
    # The keys of ``attrs`` with tags (``cn;lang-en``), memoised the same way (see
    # ``oba.schema.options.tagged_keys``).
    tagged: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def normalized_dn(self, schema: _DNNormaliser) -> str:
        """The entry's normalised DN, computed once per (cached) entry object."""
        ndn = self.ndn
        if ndn is None:
            ndn = self.ndn = schema.normalize_dn(self.dn)
        return ndn

    def get(self, name: str, schema: _Canonicaliser | None = None) -> list[bytes]:
        """Values of attribute ``name`` (any alias when a schema is given); [] when absent."""
        values = self.attrs.get(name)
        if values is not None:
            return values
        if schema is not None:
            canon = schema.canonical(name)
            if canon is not None and canon in self.attrs:
                return self.attrs[canon]
        lname = name.lower()
        for key, vals in self.attrs.items():
            if key.lower() == lname:
                return vals
        return []

    def object_classes(self) -> set[str]:
        """The entry's objectClass values, lower-cased."""
        return {v.decode("utf-8", "replace").lower() for v in self.get("objectClass")}

    def copy(self) -> Entry:
        """A deep enough copy: new dict and new value lists (the bytes are immutable)."""
        return Entry(self.id, self.dn, {k: list(v) for k, v in self.attrs.items()})
