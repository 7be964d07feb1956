"""Search filters in their RFC 4515 string form, to and from the AST in ``messages``.

Rules for this module: pure functions, no schema knowledge. Values become ``bytes`` (UTF-8 of
the text with ``\\XX`` escapes decoded); ``format_filter`` escapes ``* ( ) \\ NUL``, control
characters and bytes that are not valid UTF-8, so ``parse_filter(format_filter(f)) == f``.
Leniency follows OpenLDAP's ldapsearch: a filter without outer parentheses (``cn=foo``),
whitespace around the whole filter and between the parts of ``&``/``|``/``!``, ``\\*``-style
escapes of a special character, and the empty ``(&)``/``(|)`` of RFC 4526. Nesting deeper than
``MAX_FILTER_DEPTH`` is a ``FilterError`` (never a RecursionError).
"""

from __future__ import annotations

import re

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

__all__ = [
    "MAX_FILTER_DEPTH",
    "FilterError",
    "escape_filter_value",
    "format_filter",
    "parse_filter",
]

MAX_FILTER_DEPTH = 100


class FilterError(ValueError):
    """The string is not a valid search filter."""


_ATTR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:;[A-Za-z0-9_-]+)*\Z")
_OID_OR_DESCR = re.compile(r"(?:[A-Za-z][A-Za-z0-9_-]*|[0-9]+(?:\.[0-9]+)*)\Z")
_HEX = "0123456789abcdefABCDEF"
_WS = " \t\r\n"


class _Parser:
    __slots__ = ("n", "pos", "s")

    def __init__(self, s: str) -> None:
        self.s = s
        self.n = len(s)
        self.pos = 0

    def error(self, msg: str) -> FilterError:
        return FilterError(f"{msg} at offset {self.pos} in filter {self.s!r}")

    def skip_ws(self) -> None:
        while self.pos < self.n and self.s[self.pos] in _WS:
            self.pos += 1

    def parse(self, depth: int) -> Filter:
        if depth > MAX_FILTER_DEPTH:
            raise self.error(f"filter nested deeper than {MAX_FILTER_DEPTH}")
        self.skip_ws()
        if self.pos >= self.n or self.s[self.pos] != "(":
            raise self.error("expected '('")
        self.pos += 1
        self.skip_ws()
        if self.pos >= self.n:
            raise self.error("unexpected end")
        c = self.s[self.pos]
        result: Filter
        if c in "&|":
            self.pos += 1
            parts: list[Filter] = []
            while True:
                self.skip_ws()
                if self.pos >= self.n:
                    raise self.error("unbalanced parentheses")
                if self.s[self.pos] == ")":
                    break
                parts.append(self.parse(depth + 1))
            result = And(tuple(parts)) if c == "&" else Or(tuple(parts))
        elif c == "!":
            self.pos += 1
            result = Not(self.parse(depth + 1))
            self.skip_ws()
        else:
            result = self.item()
        if self.pos >= self.n or self.s[self.pos] != ")":
            raise self.error("expected ')'")
        self.pos += 1
        return result

    def item(self) -> Filter:
        s = self.s
        start = self.pos
        while self.pos < self.n and s[self.pos] not in "=~<>:()":
            self.pos += 1
        if self.pos >= self.n:
            raise self.error("unexpected end")
        head = s[start : self.pos].rstrip(_WS)
        c = s[self.pos]
        if c == ":":
            return self.extensible(start)
        if c in "~<>":
            if self.pos + 1 >= self.n or s[self.pos + 1] != "=":
                raise self.error(f"expected '=' after {c!r}")
            self.pos += 2
        elif c == "=":
            self.pos += 1
        else:
            raise self.error("expected a filter operator")
        attr = self.attr(head)
        segments = self.value(allow_star=(c == "="))
        if c == "=":
            if len(segments) == 1:
                return Equality(attr, segments[0])
            if len(segments) == 2 and segments == [b"", b""]:
                return Present(attr)
            initial = segments[0] or None
            final = segments[-1] or None
            middle = tuple(x for x in segments[1:-1] if x)
            if initial is None and final is None and not middle:
                raise self.error("substring filter without any substring")
            return Substrings(attr, initial, middle, final)
        value = segments[0]
        if c == "~":
            return Approx(attr, value)
        if c == ">":
            return GreaterOrEqual(attr, value)
        return LessOrEqual(attr, value)

    def attr(self, text: str) -> str:
        if not _ATTR.match(text):
            raise self.error(f"invalid attribute description {text!r}")
        return text

    def extensible(self, start: int) -> Filter:
        s = self.s
        end = s.find(":=", start)
        if end < 0 or "(" in s[start:end] or ")" in s[start:end]:
            raise self.error("invalid extensible match")
        parts = s[start:end].split(":")
        attr_text = parts[0].strip(_WS)
        rest = [p.strip(_WS) for p in parts[1:]]
        dn_attrs = False
        if rest and rest[0].lower() == "dn":
            dn_attrs = True
            rest = rest[1:]
        rule: str | None = None
        if len(rest) == 1:
            rule = rest[0]
            if not _OID_OR_DESCR.match(rule):
                raise self.error(f"invalid matching rule {rule!r}")
        elif rest:
            raise self.error("invalid extensible match")
        attr: str | None = None
        if attr_text:
            attr = self.attr(attr_text)
        elif rule is None:
            raise self.error("extensible match needs an attribute or a matching rule")
        self.pos = end + 2
        value = self.value(allow_star=False)[0]
        return Extensible(rule, attr, value, dn_attrs)

    def value(self, allow_star: bool) -> list[bytes]:
        """Read an assertion value up to ``)``; split on unescaped ``*`` if allowed."""
        s = self.s
        segments: list[bytes] = []
        buf = bytearray()
        while True:
            if self.pos >= self.n:
                raise self.error("unbalanced parentheses")
            c = s[self.pos]
            if c == ")":
                break
            if c == "(":
                raise self.error("unescaped '(' in value")
            if c == "*":
                if not allow_star:
                    raise self.error("unescaped '*' in value")
                segments.append(bytes(buf))
                buf.clear()
                self.pos += 1
            elif c == "\\":
                nxt = s[self.pos + 1 : self.pos + 2]
                if nxt and nxt in _HEX:
                    pair = s[self.pos + 1 : self.pos + 3]
                    if len(pair) != 2 or pair[1] not in _HEX:
                        raise self.error("invalid escape")
                    buf.append(int(pair, 16))
                    self.pos += 3
                elif nxt and nxt in "*()\\":
                    buf += nxt.encode()
                    self.pos += 2
                else:
                    raise self.error("invalid escape")
            else:
                j = self.pos + 1
                while j < self.n and s[j] not in ")(*\\":
                    j += 1
                buf += s[self.pos : j].encode("utf-8", "surrogatepass")
                self.pos = j
        segments.append(bytes(buf))
        return segments


def parse_filter(s: str) -> Filter:
    """Parse an RFC 4515 filter string."""
    text = s.strip(_WS)
    if not text:
        raise FilterError("empty filter")
    if text[0] != "(":
        text = f"({text})"
    parser = _Parser(text)
    result = parser.parse(1)
    parser.skip_ws()
    if parser.pos != parser.n:
        raise parser.error("trailing characters after filter")
    return result


_SPECIAL = frozenset(b"*()\\")


def escape_filter_value(value: bytes) -> str:
    """Escape an assertion value for the string form."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(
            f"\\{b:02x}" if b in _SPECIAL or b < 0x20 or b >= 0x7F else chr(b) for b in value
        )
    if text.isascii() and text.isprintable() and not any(c in text for c in "*()\\"):
        return text
    return "".join(
        f"\\{ord(c):02x}" if c in "*()\\" or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )


def format_filter(f: Filter) -> str:
    """Render a filter AST as an RFC 4515 string."""
    parts: list[str] = []
    _format(f, parts)
    return "".join(parts)


def _format(f: Filter, out: list[str]) -> None:
    match f:
        case And(filters):
            out.append("(&")
            for sub in filters:
                _format(sub, out)
            out.append(")")
        case Or(filters):
            out.append("(|")
            for sub in filters:
                _format(sub, out)
            out.append(")")
        case Not(sub):
            out.append("(!")
            _format(sub, out)
            out.append(")")
        case Equality(attr, value):
            out.append(f"({attr}={escape_filter_value(value)})")
        case Substrings(attr, initial, any_, final):
            pieces = [escape_filter_value(initial or b"")]
            pieces += [escape_filter_value(x) for x in any_]
            pieces.append(escape_filter_value(final or b""))
            out.append(f"({attr}={'*'.join(pieces)})")
        case GreaterOrEqual(attr, value):
            out.append(f"({attr}>={escape_filter_value(value)})")
        case LessOrEqual(attr, value):
            out.append(f"({attr}<={escape_filter_value(value)})")
        case Present(attr):
            out.append(f"({attr}=*)")
        case Approx(attr, value):
            out.append(f"({attr}~={escape_filter_value(value)})")
        case Extensible(rule, attr, value, dn_attributes):
            head = attr or ""
            if dn_attributes:
                head += ":dn"
            if rule:
                head += ":" + rule
            out.append(f"({head}:={escape_filter_value(value)})")
