"""Attribute descriptions with options (RFC 4512 2.5): ``cn;lang-en``, ``userCertificate;binary``.

Rules for this module:
- An option is either a language tag ``lang-...`` (RFC 3866; case-insensitive, kept in lower
  case: the only tagging option slapd knows without ``attributeoptions``) or the transfer
  option ``binary`` (RFC 4522), which only the types whose syntax needs it take: Certificate,
  Certificate List, Certificate Pair and Supported Algorithm (RFC 4523 2.1; slapd's X-BINARY
  syntaxes). Any other option makes the description undefined (LDAP 17, ``unrecognized
  option``), as ``binary`` on another type does; both as in slapd.
- Values written under a description with tags are stored under their own key: the canonical
  type name, then ``;`` and the tags, lower case, sorted (``cn;lang-en``). ``binary`` is never
  part of a key: it says how values travel, not what they are (``userCertificate;binary`` and
  ``userCertificate`` are one attribute).
- A description with tags is a subtype of the same type with fewer tags (RFC 4512 2.5.2), as a
  type is a subtype of its SUP: ``name`` covers ``cn`` and ``cn;lang-en``, ``cn`` covers
  ``cn;lang-en``, ``cn;lang-en`` covers ``cn;lang-en`` (and ``cn;lang-en;lang-fr``) only.
- The types whose syntax needs ``;binary`` are always sent as ``type;binary`` (whether or not
  the client asked with it), as slapd does.
- ``objectClass``, ``userPassword`` and ``obaDisabled`` take no tags: their one untagged
  attribute is what schema checks, binds and access control read (slapd accepts tags there).
- Pure functions of the schema and the name; answers are memoised on the schema object (a
  schema is never changed in place).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

__all__ = [
    "BINARY_SYNTAXES",
    "Described",
    "OptionError",
    "describe",
    "key_parts",
    "needs_binary",
    "tagged_keys",
    "wire_name",
]

_P = "1.3.6.1.4.1.1466.115.121.1."
BINARY_SYNTAXES = frozenset({_P + "8", _P + "9", _P + "10", _P + "49"})
NO_TAGS = frozenset({"objectclass", "userpassword", "obadisabled"})
_OPTION = re.compile(r"[A-Za-z0-9-]+\Z")
_MEMO_MAX = 4096


class OptionError(ValueError):
    """An attribute description whose options the server does not support (LDAP 17)."""


class Described(NamedTuple):
    canon: str  # the canonical type name
    tags: tuple[str, ...]  # lower-case language tags, sorted, each once
    binary: bool  # ``;binary`` was given

    @property
    def key(self) -> str:
        """The key its values are stored under."""
        return self.canon + "".join(";" + t for t in self.tags)


def _memo(schema: Any, name: str) -> dict[Any, Any] | None:
    table: dict[Any, Any] | None = getattr(schema, name, None)
    if table is None:
        table = {}
        try:
            setattr(schema, name, table)
        except AttributeError:
            return None
    if len(table) >= _MEMO_MAX:
        table.clear()
    return table


def needs_binary(schema: Any, canon: str) -> bool:
    """Do values of this type travel with ``;binary`` (RFC 4523 2.1)?"""
    syntax = getattr(schema, "syntax", None)
    return callable(syntax) and syntax(canon) in BINARY_SYNTAXES


def describe(schema: Any, name: str) -> Described | None:
    """The description ``name`` (``type;option;...``): None when the type is undefined;
    ``OptionError`` for an option Oba does not support with that type."""
    memo = _memo(schema, "_options_described")
    if memo is not None:
        hit = memo.get(name)
        if hit is not None:
            if isinstance(hit, OptionError):
                raise hit
            return hit if hit else None
    try:
        found = _describe(schema, name)
    except OptionError as exc:
        if memo is not None:
            memo[name] = exc
        raise
    if memo is not None:
        memo[name] = found if found is not None else ()
    return found


def _describe(schema: Any, name: str) -> Described | None:
    base, *options = name.split(";")
    canon = schema.canonical(base)
    if canon is None:
        return None
    if not options:
        return Described(canon, (), False)
    tags: set[str] = set()
    binary = False
    for option in options:
        low = option.lower()
        if not _OPTION.match(option):
            raise OptionError(f"{name}: unrecognized option")
        if low == "binary":
            if not needs_binary(schema, canon):
                raise OptionError(f'{name}: option "binary" not supported with type')
            binary = True
        elif low.startswith("lang-"):
            tags.add(low)
        else:
            raise OptionError(f"{name}: unrecognized option")
    if tags and (canon.lower() in NO_TAGS or needs_binary(schema, canon)):
        raise OptionError(f"{name}: options not supported with type {canon}")
    return Described(canon, tuple(sorted(tags)), binary)


def key_parts(key: str) -> tuple[str, tuple[str, ...]]:
    """A stored key split into its type and its tags: ``cn;lang-en`` -> (cn, (lang-en,))."""
    if ";" not in key:
        return key, ()
    base, *tags = key.split(";")
    return base, tuple(tags)


def tagged_keys(entry: Any) -> tuple[str, ...]:
    """The keys of ``entry.attrs`` that carry tags, worked out once per entry object (stored
    entries are not changed once built; ``Entry.tagged`` holds the answer)."""
    found: tuple[str, ...] | None = entry.tagged
    if found is None:
        found = entry.tagged = tuple(k for k in entry.attrs if ";" in k)
    return found


def wire_name(schema: Any, key: str) -> str:
    """The name a stored attribute is sent under: ``type;binary`` for the types that need it,
    else the key itself."""
    memo = _memo(schema, "_options_wire")
    hit = None if memo is None else memo.get(key)
    if hit is None:
        base = key.split(";", 1)[0]
        hit = key + ";binary" if needs_binary(schema, base) else key
        if memo is not None:
            memo[key] = hit
    return hit
