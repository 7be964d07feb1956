"""Schema element descriptions (RFC 4512 section 4.1) and their parser.

Rules for this module: frozen dataclasses holding a definition exactly as written (names,
superiors and rules are references by name, resolved by ``registry.Schema``), each able to
render its RFC 4512 description string with ``describe()``. The parser reads one description
(``( oid NAME ... )``) or a whole OpenLDAP-style ``.schema`` file and reports errors as
``SchemaError`` with ``file:line``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "AttributeType",
    "AttributeUsage",
    "ObjectClass",
    "ObjectClassKind",
    "SchemaError",
    "parse_attribute_type",
    "parse_object_class",
    "parse_schema_text",
]

Extensions = tuple[tuple[str, tuple[str, ...]], ...]


class SchemaError(ValueError):
    """A schema definition is malformed or inconsistent."""


class AttributeUsage(StrEnum):
    USER_APPLICATIONS = "userApplications"
    DIRECTORY_OPERATION = "directoryOperation"
    DISTRIBUTED_OPERATION = "distributedOperation"
    DSA_OPERATION = "dSAOperation"


class ObjectClassKind(StrEnum):
    ABSTRACT = "ABSTRACT"
    STRUCTURAL = "STRUCTURAL"
    AUXILIARY = "AUXILIARY"


def _qdstring(s: str) -> str:
    return "'" + s.replace("\\", "\\5C").replace("'", "\\27") + "'"


def _qdescrs(names: tuple[str, ...]) -> str:
    if len(names) == 1:
        return f"'{names[0]}'"
    return "( " + " ".join(f"'{n}'" for n in names) + " )"


def _oids(items: tuple[str, ...]) -> str:
    if len(items) == 1:
        return items[0]
    return "( " + " $ ".join(items) + " )"


def _extensions(ext: Extensions) -> list[str]:
    out: list[str] = []
    for key, values in ext:
        if len(values) == 1:
            out.append(f"{key} {_qdstring(values[0])}")
        else:
            out.append(f"{key} ( " + " ".join(_qdstring(v) for v in values) + " )")
    return out


@dataclass(frozen=True, slots=True)
class AttributeType:
    oid: str
    names: tuple[str, ...] = ()
    desc: str | None = None
    obsolete: bool = False
    sup: str | None = None
    equality: str | None = None
    ordering: str | None = None
    substr: str | None = None
    syntax: str | None = None
    syntax_len: int | None = None
    single_value: bool = False
    collective: bool = False
    no_user_modification: bool = False
    usage: AttributeUsage = AttributeUsage.USER_APPLICATIONS
    extensions: Extensions = field(default=())

    @property
    def name(self) -> str:
        """Primary name (first NAME), or the OID when the type has no name."""
        return self.names[0] if self.names else self.oid

    @property
    def operational(self) -> bool:
        return self.usage is not AttributeUsage.USER_APPLICATIONS

    def describe(self) -> str:
        parts = ["(", self.oid]
        if self.names:
            parts += ["NAME", _qdescrs(self.names)]
        if self.desc is not None:
            parts += ["DESC", _qdstring(self.desc)]
        if self.obsolete:
            parts.append("OBSOLETE")
        if self.sup:
            parts += ["SUP", self.sup]
        if self.equality:
            parts += ["EQUALITY", self.equality]
        if self.ordering:
            parts += ["ORDERING", self.ordering]
        if self.substr:
            parts += ["SUBSTR", self.substr]
        if self.syntax:
            length = f"{{{self.syntax_len}}}" if self.syntax_len is not None else ""
            parts += ["SYNTAX", self.syntax + length]
        if self.single_value:
            parts.append("SINGLE-VALUE")
        if self.collective:
            parts.append("COLLECTIVE")
        if self.no_user_modification:
            parts.append("NO-USER-MODIFICATION")
        if self.usage is not AttributeUsage.USER_APPLICATIONS:
            parts += ["USAGE", self.usage.value]
        parts += _extensions(self.extensions)
        parts.append(")")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class ObjectClass:
    oid: str
    names: tuple[str, ...] = ()
    desc: str | None = None
    obsolete: bool = False
    sup: tuple[str, ...] = ()
    kind: ObjectClassKind = ObjectClassKind.STRUCTURAL
    must: tuple[str, ...] = ()
    may: tuple[str, ...] = ()
    extensions: Extensions = field(default=())

    @property
    def name(self) -> str:
        return self.names[0] if self.names else self.oid

    def describe(self) -> str:
        parts = ["(", self.oid]
        if self.names:
            parts += ["NAME", _qdescrs(self.names)]
        if self.desc is not None:
            parts += ["DESC", _qdstring(self.desc)]
        if self.obsolete:
            parts.append("OBSOLETE")
        if self.sup:
            parts += ["SUP", _oids(self.sup)]
        parts.append(self.kind.value)
        if self.must:
            parts += ["MUST", _oids(self.must)]
        if self.may:
            parts += ["MAY", _oids(self.may)]
        parts += _extensions(self.extensions)
        parts.append(")")
        return " ".join(parts)


# --------------------------------------------------------------------------- parser

_TOKEN = re.compile(r"\s*(?:(\()|(\))|(\$)|'((?:[^'\\]|\\[0-9A-Fa-f]{2})*)'|([^\s()$']+))")
_NUMERICOID = re.compile(r"[0-9]+(?:\.[0-9]+)*\Z")
_DESCR = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
_OID_MACRO = re.compile(r"[A-Za-z][A-Za-z0-9-]*(?::[0-9]+(?:\.[0-9]+)*)?\Z")
_SYNTAX = re.compile(r"([0-9]+(?:\.[0-9]+)*|[A-Za-z][A-Za-z0-9-]*(?::[0-9.]+)?)(?:\{([0-9]+)\})?\Z")

# token kinds
_LP, _RP, _DOLLAR, _QSTR, _WORD = range(5)


def _tokens(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SchemaError(f"unexpected character at offset {pos}: {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.group(1):
            out.append((_LP, "("))
        elif m.group(2):
            out.append((_RP, ")"))
        elif m.group(3):
            out.append((_DOLLAR, "$"))
        elif m.group(4) is not None:
            value = re.sub(r"\\([0-9A-Fa-f]{2})", lambda h: chr(int(h.group(1), 16)), m.group(4))
            out.append((_QSTR, value))
        else:
            out.append((_WORD, m.group(5)))
    return out


class _Reader:
    def __init__(self, text: str, macros: dict[str, str]) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.macros = macros

    def peek(self) -> tuple[int, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[int, str]:
        if self.i >= len(self.toks):
            raise SchemaError("unexpected end of description")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, kind: int, what: str) -> str:
        k, v = self.take()
        if k != kind:
            raise SchemaError(f"expected {what}, got {v!r}")
        return v

    def oid(self) -> str:
        """numericoid, or an OpenLDAP objectIdentifier macro ``name`` / ``name:suffix``."""
        k, v = self.take()
        if k == _QSTR:  # some files quote OIDs
            k = _WORD
        if k != _WORD:
            raise SchemaError(f"expected an OID, got {v!r}")
        return self.expand(v)

    def expand(self, v: str) -> str:
        if _NUMERICOID.match(v):
            return v
        base, _, suffix = v.partition(":")
        if base.lower() in self.macros:
            expanded = self.macros[base.lower()]
            return f"{expanded}.{suffix}" if suffix else expanded
        if suffix:
            raise SchemaError(f"unknown OID macro {base!r}")
        return v

    def name_ref(self) -> str:
        """oid = descr / numericoid (a reference to another element)."""
        k, v = self.take()
        if k == _QSTR:
            k = _WORD
        if k != _WORD or not (_DESCR.match(v) or _NUMERICOID.match(v)):
            raise SchemaError(f"expected a name or OID, got {v!r}")
        return v

    def name_refs(self) -> tuple[str, ...]:
        tok = self.peek()
        if tok and tok[0] == _LP:
            self.take()
            out = [self.name_ref()]
            while True:
                k, v = self.take()
                if k == _RP:
                    return tuple(out)
                if k != _DOLLAR:
                    raise SchemaError(f"expected '$' or ')', got {v!r}")
                out.append(self.name_ref())
        return (self.name_ref(),)

    def qdescrs(self) -> tuple[str, ...]:
        k, v = self.take()
        if k == _QSTR:
            names = [v]
        elif k == _LP:
            names = []
            while True:
                k, v = self.take()
                if k == _RP:
                    break
                if k != _QSTR:
                    raise SchemaError(f"expected a quoted name, got {v!r}")
                names.append(v)
        else:
            raise SchemaError(f"expected NAME value, got {v!r}")
        for n in names:
            if not _DESCR.match(n):
                raise SchemaError(f"invalid name {n!r}")
        if not names:
            raise SchemaError("empty NAME list")
        return tuple(names)

    def qdstrings(self) -> tuple[str, ...]:
        k, v = self.take()
        if k == _QSTR:
            return (v,)
        if k != _LP:
            raise SchemaError(f"expected quoted string(s), got {v!r}")
        out: list[str] = []
        while True:
            k, v = self.take()
            if k == _RP:
                return tuple(out)
            if k != _QSTR:
                raise SchemaError(f"expected a quoted string, got {v!r}")
            out.append(v)


def _fields(text: str, macros: dict[str, str]) -> tuple[str, Iterator[tuple[str, _Reader]]]:
    r = _Reader(text, macros)
    r.expect(_LP, "'('")
    oid = r.oid()
    if not _NUMERICOID.match(oid):
        raise SchemaError(f"invalid OID {oid!r}")

    def gen() -> Iterator[tuple[str, _Reader]]:
        while True:
            k, v = r.take()
            if k == _RP:
                if r.peek() is not None:
                    raise SchemaError("text after the closing ')'")
                return
            if k != _WORD:
                raise SchemaError(f"expected a keyword, got {v!r}")
            yield v.upper(), r

    return oid, gen()


def _extension(key: str, r: _Reader, ext: list[tuple[str, tuple[str, ...]]]) -> bool:
    if key.startswith("X-"):
        ext.append((key, r.qdstrings()))
        return True
    return False


def parse_attribute_type(text: str, macros: dict[str, str] | None = None) -> AttributeType:
    """Parse an AttributeTypeDescription (RFC 4512 section 4.1.2)."""
    oid, fields = _fields(text, macros or {})
    kw: dict[str, object] = {}
    ext: list[tuple[str, tuple[str, ...]]] = []
    seen: set[str] = set()
    for key, r in fields:
        if key in seen:
            raise SchemaError(f"{key} given twice")
        seen.add(key)
        if key == "NAME":
            kw["names"] = r.qdescrs()
        elif key == "DESC":
            kw["desc"] = r.expect(_QSTR, "a quoted DESC")
        elif key == "OBSOLETE":
            kw["obsolete"] = True
        elif key == "SUP":
            kw["sup"] = r.name_ref()
        elif key in ("EQUALITY", "ORDERING", "SUBSTR"):
            kw[key.lower()] = r.name_ref()
        elif key == "SYNTAX":
            k, v = r.take()
            m = _SYNTAX.match(v) if k in (_WORD, _QSTR) else None
            if not m:
                raise SchemaError(f"invalid SYNTAX {v!r}")
            kw["syntax"] = r.expand(m.group(1))
            if m.group(2):
                kw["syntax_len"] = int(m.group(2))
        elif key == "SINGLE-VALUE":
            kw["single_value"] = True
        elif key == "COLLECTIVE":
            kw["collective"] = True
        elif key == "NO-USER-MODIFICATION":
            kw["no_user_modification"] = True
        elif key == "USAGE":
            value = r.expect(_WORD, "a USAGE value")
            for usage in AttributeUsage:
                if usage.value.lower() == value.lower():
                    kw["usage"] = usage
                    break
            else:
                raise SchemaError(f"invalid USAGE {value!r}")
        elif not _extension(key, r, ext):
            raise SchemaError(f"unknown keyword {key!r} in attribute type {oid}")
    if "sup" not in kw and "syntax" not in kw:
        raise SchemaError(f"attribute type {oid} needs SUP or SYNTAX")
    return AttributeType(oid=oid, extensions=tuple(ext), **kw)  # type: ignore[arg-type]


def parse_object_class(text: str, macros: dict[str, str] | None = None) -> ObjectClass:
    """Parse an ObjectClassDescription (RFC 4512 section 4.1.1)."""
    oid, fields = _fields(text, macros or {})
    kw: dict[str, object] = {}
    ext: list[tuple[str, tuple[str, ...]]] = []
    seen: set[str] = set()
    for key, r in fields:
        if key in seen:
            raise SchemaError(f"{key} given twice")
        seen.add(key)
        if key == "NAME":
            kw["names"] = r.qdescrs()
        elif key == "DESC":
            kw["desc"] = r.expect(_QSTR, "a quoted DESC")
        elif key == "OBSOLETE":
            kw["obsolete"] = True
        elif key == "SUP":
            kw["sup"] = r.name_refs()
        elif key in ("ABSTRACT", "STRUCTURAL", "AUXILIARY"):
            if "kind" in kw:
                raise SchemaError(f"object class {oid} has more than one kind")
            kw["kind"] = ObjectClassKind(key)
        elif key in ("MUST", "MAY"):
            kw[key.lower()] = r.name_refs()
        elif not _extension(key, r, ext):
            raise SchemaError(f"unknown keyword {key!r} in object class {oid}")
    return ObjectClass(oid=oid, extensions=tuple(ext), **kw)  # type: ignore[arg-type]


Definition = AttributeType | ObjectClass


def parse_schema_text(text: str, source: str = "<string>") -> list[Definition]:
    """Parse a ``.schema`` file: ``attributetype``/``objectclass``/``objectidentifier``."""
    # Join continuation lines, remembering where each definition starts.
    statements: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if not statements:
                raise SchemaError(f"{source}:{lineno}: continuation line without a definition")
            start, body = statements[-1]
            statements[-1] = (start, body + " " + stripped)
        else:
            statements.append((lineno, stripped))
    macros: dict[str, str] = {}
    out: list[Definition] = []
    for lineno, stmt in statements:
        words = stmt.split(None, 1)
        keyword = words[0].lower()
        rest = words[1] if len(words) > 1 else ""
        try:
            if keyword == "attributetype":
                out.append(parse_attribute_type(rest, macros))
            elif keyword == "objectclass":
                out.append(parse_object_class(rest, macros))
            elif keyword == "objectidentifier":
                words = rest.split()
                if len(words) != 2 or not _DESCR.match(words[0]):
                    raise SchemaError("expected 'objectidentifier <name> <oid>'")
                reader = _Reader(words[1], macros)
                macros[words[0].lower()] = reader.expand(words[1])
            else:
                raise SchemaError(f"unknown directive {keyword!r}")
        except SchemaError as exc:
            raise SchemaError(f"{source}:{lineno}: {exc}") from None
    return out
