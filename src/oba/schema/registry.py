"""The ``Schema`` registry: attribute types, object classes, syntaxes and matching rules.

Rules for this module: a ``Schema`` is immutable after construction and safe to share between
threads (its caches only ever map a key to the same value). Names and OIDs are looked up
case-insensitively, attribute options (``cn;lang-en``) are ignored by lookups. Matching rules,
syntax and other properties of an attribute type are inherited through ``SUP``. A matching rule
named in a definition but not implemented by Oba is tolerated (the attribute then has no such
rule). Values are normalised by the equality rule; an attribute without one compares its
values octet by octet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path

from oba.protocol.dn import DN, DNError, escape_value, parse_dn
from oba.schema.matching import InvalidValue, MatchingRule, build_rules
from oba.schema.model import (
    AttributeType,
    Definition,
    ObjectClass,
    SchemaError,
    parse_schema_text,
)
from oba.schema.syntaxes import SYNTAXES, Syntax

__all__ = ["DEFAULT_FILES", "Schema", "UndefinedAttribute", "default_schema_files"]

DEFAULT_FILES = ("core.schema", "cosine.schema", "inetorgperson.schema", "nis.schema", "oba.schema")
_DN_CACHE_MAX = 65536
_ATTR_CACHE_MAX = 4096


class UndefinedAttribute(KeyError):
    """The attribute type is not defined in the schema (LDAP undefinedAttributeType)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"undefined attribute type {self.name!r}"


def default_schema_files() -> list[Traversable]:
    """The schema files bundled with Oba, in load order."""
    base = resources.files("oba.schema").joinpath("files")
    return [base.joinpath(name) for name in DEFAULT_FILES]


SchemaSource = str | PathLike[str] | Traversable

_default: Schema | None = None
_default_lock = threading.Lock()


class Schema:
    """A consistent set of schema definitions plus Oba's matching rules and syntaxes."""

    def __init__(self, definitions: Iterable[Definition]) -> None:
        self._attr_list: list[AttributeType] = []
        self._oc_closure: dict[bytes, frozenset[bytes]] = {}
        self._class_list: list[ObjectClass] = []
        self._attrs: dict[str, AttributeType] = {}
        self._classes: dict[str, ObjectClass] = {}
        for d in definitions:
            if isinstance(d, AttributeType):
                self._register(self._attrs, d, d.names, "attribute type")
                self._attr_list.append(d)
            else:
                self._register(self._classes, d, d.names, "object class")
                self._class_list.append(d)
        self._rule_list = build_rules(self.normalize_dn, self._resolve_oid)
        self._rules: dict[str, MatchingRule] = {}
        for rule in self._rule_list:
            self._rules[rule.name.lower()] = rule
            self._rules[rule.oid] = rule
        self._syntaxes: dict[str, Syntax] = dict(SYNTAXES)
        # resolved per attribute OID: (equality, ordering, substr, syntax)
        self._eq: dict[str, MatchingRule | None] = {}
        self._ord: dict[str, MatchingRule | None] = {}
        self._sub: dict[str, MatchingRule | None] = {}
        self._syn: dict[str, str | None] = {}
        self._subtypes: dict[str, list[AttributeType]] = {a.oid: [] for a in self._attr_list}
        for at in self._attr_list:
            self._resolve_attribute(at)
        for oc in self._class_list:
            self._check_class(oc)
        self._fast: dict[str, tuple[AttributeType, MatchingRule | None]] = {}
        self._dn_cache: dict[str, str] = {}

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _register(
        table: dict[str, AttributeType] | dict[str, ObjectClass],
        item: AttributeType | ObjectClass,
        names: Sequence[str],
        what: str,
    ) -> None:
        for key in (item.oid, *(n.lower() for n in names)):
            if key in table:
                raise SchemaError(f"{what} {key!r} defined twice")
            table[key] = item  # type: ignore[assignment]

    def _resolve_attribute(self, at: AttributeType) -> None:
        chain = [at]
        seen = {at.oid}
        cur = at
        while cur.sup is not None:
            sup = self._attrs.get(cur.sup.lower())
            if sup is None:
                raise SchemaError(f"attribute type {at.name}: unknown SUP {cur.sup!r}")
            if sup.oid in seen:
                raise SchemaError(f"attribute type {at.name}: SUP cycle")
            seen.add(sup.oid)
            chain.append(sup)
            cur = sup
        for sup in chain[1:]:
            self._subtypes[sup.oid].append(at)

        def first(attr: str) -> str | None:
            for a in chain:
                v: str | None = getattr(a, attr)
                if v is not None:
                    return v
            return None

        tables = (("equality", self._eq), ("ordering", self._ord), ("substr", self._sub))
        for field, table in tables:
            name = first(field)
            table[at.oid] = self._rules.get(name.lower()) if name else None
        self._syn[at.oid] = first("syntax")
        if self._syn[at.oid] is None:
            raise SchemaError(f"attribute type {at.name}: no SYNTAX (directly or via SUP)")

    def _check_class(self, oc: ObjectClass) -> None:
        for sup in oc.sup:
            if sup.lower() not in self._classes:
                raise SchemaError(f"object class {oc.name}: unknown SUP {sup!r}")
        for attr in (*oc.must, *oc.may):
            if attr.lower() not in self._attrs:
                raise SchemaError(f"object class {oc.name}: unknown attribute type {attr!r}")
        # cycle check
        stack, seen = list(oc.sup), {oc.oid}
        while stack:
            sup_oc = self._classes[stack.pop().lower()]
            if sup_oc.oid in seen:
                if sup_oc.oid == oc.oid:
                    raise SchemaError(f"object class {oc.name}: SUP cycle")
                continue
            seen.add(sup_oc.oid)
            stack.extend(sup_oc.sup)

    @classmethod
    def load(cls, paths: Iterable[SchemaSource]) -> Schema:
        """Build a schema from ``.schema`` files (file paths or importlib Traversables)."""
        definitions: list[Definition] = []
        for path in paths:
            if isinstance(path, str | PathLike):
                p = Path(path)
                text, source = p.read_text(encoding="utf-8"), str(p)
            else:
                text, source = path.read_text(encoding="utf-8"), path.name
            definitions.extend(parse_schema_text(text, source))
        return cls(definitions)

    @classmethod
    def default(cls) -> Schema:
        """The bundled schema (core, cosine, inetorgperson, nis, oba), built once."""
        global _default
        if _default is None:
            with _default_lock:
                if _default is None:
                    _default = cls.load(default_schema_files())
        return _default

    # ------------------------------------------------------------------ lookups

    def attribute(self, name_or_oid: str) -> AttributeType | None:
        key = name_or_oid.lower()
        at = self._attrs.get(key)
        if at is None and ";" in key:
            at = self._attrs.get(key.split(";", 1)[0])
        return at

    def canonical(self, name: str) -> str | None:
        at = self.attribute(name)
        return at.name if at is not None else None

    def object_class(self, name_or_oid: str) -> ObjectClass | None:
        return self._classes.get(name_or_oid.lower())

    def matching_rule(self, name_or_oid: str) -> MatchingRule | None:
        return self._rules.get(name_or_oid.lower())

    def equality(self, attr: str) -> MatchingRule | None:
        at = self.attribute(attr)
        return self._eq[at.oid] if at is not None else None

    def ordering(self, attr: str) -> MatchingRule | None:
        at = self.attribute(attr)
        return self._ord[at.oid] if at is not None else None

    def substr(self, attr: str) -> MatchingRule | None:
        at = self.attribute(attr)
        return self._sub[at.oid] if at is not None else None

    def syntax(self, attr: str) -> str | None:
        """The attribute's syntax OID, following SUP."""
        at = self.attribute(attr)
        return self._syn[at.oid] if at is not None else None

    def subtypes(self, attr: str) -> tuple[str, ...]:
        """Canonical names of the types derived from ``attr`` through SUP (not itself)."""
        at = self.attribute(attr)
        return tuple(a.name for a in self._subtypes[at.oid]) if at is not None else ()

    def objectclass_closure(self, value: bytes) -> frozenset[bytes]:
        """Normalised (OID) forms of an objectClass value and all its superclasses, so that
        ``(objectClass=person)`` matches an entry that lists only ``inetOrgPerson``, as in
        slapd. Unknown class names give just their own normalised form."""
        cached = self._oc_closure.get(value)
        if cached is not None:
            return cached
        try:
            own = self.normalize("objectClass", value)
        except (InvalidValue, KeyError):
            own = value.lower()
        out = {own}
        for oc in self.superclasses(value.decode("utf-8", "replace")):
            out.add(oc.oid.encode())
        result = frozenset(out)
        if len(self._oc_closure) < 10_000:
            self._oc_closure[value] = result
        return result

    def superclasses(self, name: str) -> tuple[ObjectClass, ...]:
        """The object class and all its superclasses (nearest first, each once)."""
        oc = self.object_class(name)
        if oc is None:
            return ()
        out: list[ObjectClass] = []
        seen: set[str] = set()
        stack = [oc]
        while stack:
            cur = stack.pop(0)
            if cur.oid in seen:
                continue
            seen.add(cur.oid)
            out.append(cur)
            stack.extend(self._classes[s.lower()] for s in cur.sup)
        return tuple(out)

    def must(self, name: str) -> frozenset[str]:
        """Canonical names of the attributes required by the class, including inherited."""
        return frozenset(
            self._attrs[a.lower()].name for oc in self.superclasses(name) for a in oc.must
        )

    def may(self, name: str) -> frozenset[str]:
        """Canonical names of the attributes allowed by the class, including inherited."""
        return frozenset(
            self._attrs[a.lower()].name for oc in self.superclasses(name) for a in oc.may
        )

    def _resolve_oid(self, descr: str) -> str | None:
        key = descr.lower()
        item = self._attrs.get(key) or self._classes.get(key)
        if item is not None:
            return item.oid
        rule = self._rules.get(key)
        return rule.oid if rule is not None else None

    # ------------------------------------------------------------------ listings

    def attribute_types(self) -> list[AttributeType]:
        """Every attribute type, in definition order."""
        return list(self._attr_list)

    def object_classes(self) -> list[ObjectClass]:
        """Every object class, in definition order."""
        return list(self._class_list)

    def syntaxes(self) -> list[Syntax]:
        return list(self._syntaxes.values())

    def matching_rules(self) -> list[MatchingRule]:
        return list(self._rule_list)

    def syntax_descriptions(self) -> list[str]:
        """RFC 4512 SyntaxDescriptions (for cn=Subschema ``ldapSyntaxes``)."""
        return [s.describe() for s in self._syntaxes.values()]

    def matching_rule_descriptions(self) -> list[str]:
        """RFC 4512 MatchingRuleDescriptions (for cn=Subschema ``matchingRules``)."""
        return [r.describe() for r in self._rule_list]

    def matching_rule_use_descriptions(self) -> list[str]:
        """Same as ``matching_rule_uses()`` (for cn=Subschema ``matchingRuleUse``)."""
        return self.matching_rule_uses()

    def matching_rule_uses(self) -> list[str]:
        """RFC 4512 MatchingRuleUseDescriptions: each rule with the attributes it applies to."""
        uses: dict[str, list[str]] = {}
        for at in self._attr_list:
            for table in (self._eq, self._ord, self._sub):
                rule = table[at.oid]
                if rule is not None:
                    uses.setdefault(rule.oid, []).append(at.name)
        out = []
        for rule in self._rule_list:
            names = uses.get(rule.oid)
            if names:
                applies = names[0] if len(names) == 1 else "( " + " $ ".join(names) + " )"
                out.append(f"( {rule.oid} NAME '{rule.name}' APPLIES {applies} )")
        return out

    # ------------------------------------------------------------------ normalisation

    def _lookup_fast(self, attr: str) -> tuple[AttributeType, MatchingRule | None]:
        hit = self._fast.get(attr)
        if hit is None:
            at = self.attribute(attr)
            if at is None:
                raise UndefinedAttribute(attr)
            hit = (at, self._eq[at.oid])
            if len(self._fast) >= _ATTR_CACHE_MAX:
                self._fast.clear()
            self._fast[attr] = hit
        return hit

    def normalize(self, attr: str, value: bytes) -> bytes:
        """Equality-normalised form of ``value`` (``UndefinedAttribute``, ``InvalidValue``)."""
        rule = self._lookup_fast(attr)[1]
        if rule is None:
            return value
        return rule.normalize(value)

    def normalizer(self, attr: str) -> Callable[[bytes], bytes]:
        """The function ``normalize(attr, value)`` applies to ``value`` (looked up once by bulk
        paths; ``UndefinedAttribute`` for an unknown type)."""
        rule = self._lookup_fast(attr)[1]
        return _unchanged if rule is None else rule.normalizer

    def normalize_dn(self, dn: str | DN) -> str:
        """Normalised string form of a DN (see module docs of oba.schema)."""
        if isinstance(dn, str):
            cached = self._dn_cache.get(dn)
            if cached is not None:
                return cached
            parsed = parse_dn(dn)
        else:
            parsed = dn
        rdns: list[str] = []
        for rdn in parsed:
            avas: list[tuple[str, str]] = []
            for attr, value in rdn:
                try:
                    at, rule = self._lookup_fast(attr)
                except UndefinedAttribute:
                    raise DNError(f"undefined attribute type {attr!r} in DN") from None
                if rule is None:
                    norm = value
                else:
                    try:
                        norm = rule.normalize(value.encode("utf-8")).decode("utf-8")
                    except (InvalidValue, UnicodeError) as exc:
                        raise DNError(f"invalid value for {at.name} in DN: {exc}") from None
                avas.append((at.name.lower(), norm))
            if len(avas) > 1:
                avas.sort()
            rdns.append("+".join(f"{t}={escape_value(v)}" for t, v in avas))
        result = ",".join(rdns)
        if isinstance(dn, str):
            if len(self._dn_cache) >= _DN_CACHE_MAX:
                self._dn_cache.clear()
            self._dn_cache[dn] = result
        return result


def _unchanged(value: bytes) -> bytes:
    return value
