"""Distinguished names in their RFC 4514 string form.

Rules for this module: pure functions, no schema knowledge (normalisation lives in
``oba.schema``). A DN is a tuple of RDNs, leftmost (most specific) first; an RDN is a tuple of
AVAs; an AVA is ``(attribute type as written, unescaped value)``. Parsing is lenient the way
OpenLDAP is (spaces around ``,`` ``+`` ``=`` are ignored, ``;`` separates RDNs like ``,``,
quoted values are accepted) and strict about everything else (bad escapes, bad attribute types,
invalid UTF-8). ``#hex`` values are decoded when they hold a BER string type, otherwise kept
as the ``#...`` text. Results of ``parse_dn`` are cached: callers must treat them as immutable
(they are tuples).
"""

from __future__ import annotations

import re
from functools import lru_cache

AVA = tuple[str, str]
RDN = tuple[AVA, ...]
DN = tuple[RDN, ...]

__all__ = ["AVA", "DN", "RDN", "DNError", "escape_value", "format_dn", "parent", "parse_dn"]


class DNError(ValueError):
    """The string is not a valid distinguished name."""


_DESCR_OR_OID = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)\Z")
# Strings that need no escape handling at all: the fast path of parse_dn.
_PLAIN = re.compile(r'[^\\"#+;<>\x00]*\Z')
_HEX = "0123456789abcdefABCDEF"
_SPACES = " "
# Characters that must be escaped anywhere in a value when formatting.
_NEEDS_ESCAPE = re.compile(r'[\\"+,;<>\x00]|^[ #]| $')
# BER universal string tags whose content we turn back into text for #hex values.
_BER_STRING_TAGS = frozenset({0x04, 0x0C, 0x13, 0x14, 0x16, 0x1A, 0x1E})


def _check_type(attr: str, dn: str) -> str:
    if not _DESCR_OR_OID.match(attr):
        if attr[:4].upper() == "OID." and _DESCR_OR_OID.match(attr[4:]):
            return attr[4:]
        raise DNError(f"invalid attribute type {attr!r} in DN {dn!r}")
    return attr


def _decode_hex_value(text: str, dn: str) -> str:
    """Decode a ``#hexstring`` value; BER strings become text, others stay as written."""
    digits = text[1:]
    if not digits or len(digits) % 2 or any(c not in _HEX for c in digits):
        raise DNError(f"invalid hex value {text!r} in DN {dn!r}")
    raw = bytes.fromhex(digits)
    if len(raw) >= 2 and raw[0] in _BER_STRING_TAGS:
        length = raw[1]
        offset = 2
        if length & 0x80:
            n = length & 0x7F
            if n == 0 or n > 4 or len(raw) < 2 + n:
                return text
            length = int.from_bytes(raw[2 : 2 + n], "big")
            offset = 2 + n
        if offset + length == len(raw):
            content = raw[offset:]
            try:
                if raw[0] == 0x1E:
                    return content.decode("utf-16-be")
                return content.decode("utf-8")
            except UnicodeDecodeError:
                return text
    return text


def _parse_slow(s: str) -> DN:
    """Character-level parser for DNs that contain escapes, quotes, ``+`` or ``#``."""
    n = len(s)
    i = 0
    rdns: list[RDN] = []
    avas: list[AVA] = []
    while True:
        # attribute type
        while i < n and s[i] == " ":
            i += 1
        start = i
        while i < n and s[i] not in "= ,+;":
            i += 1
        attr = s[start:i]
        while i < n and s[i] == " ":
            i += 1
        if not attr or i >= n or s[i] != "=":
            raise DNError(f"expected 'type=value' at offset {start} in DN {s!r}")
        attr = _check_type(attr, s)
        i += 1
        while i < n and s[i] == " ":
            i += 1
        # value
        if i < n and s[i] == "#":
            start = i
            while i < n and s[i] not in ",+; ":
                i += 1
            value = _decode_hex_value(s[start:i], s)
            while i < n and s[i] == " ":
                i += 1
        elif i < n and s[i] == '"':
            i += 1
            buf = bytearray()
            while True:
                if i >= n:
                    raise DNError(f"unterminated quoted value in DN {s!r}")
                c = s[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    i = _unescape(s, i, buf)
                    continue
                buf += c.encode()
                i += 1
            value = _utf8(buf, s)
            while i < n and s[i] == " ":
                i += 1
        else:
            buf = bytearray()
            keep = 0  # length of buf up to the last significant (non-trailing-space) byte
            while i < n:
                c = s[i]
                if c in ",+;":
                    break
                if c == "\\":
                    i = _unescape(s, i, buf)
                    keep = len(buf)
                    continue
                if c in '"<>\x00':
                    raise DNError(f"character {c!r} must be escaped in DN {s!r}")
                buf += c.encode()
                if c != " ":
                    keep = len(buf)
                i += 1
            del buf[keep:]
            value = _utf8(buf, s)
        avas.append((attr, value))
        if i >= n:
            rdns.append(tuple(avas))
            return tuple(rdns)
        c = s[i]
        i += 1
        if c == "+":
            continue
        if c in ",;":
            rdns.append(tuple(avas))
            avas = []
            continue
        raise DNError(f"unexpected {c!r} at offset {i - 1} in DN {s!r}")


def _unescape(s: str, i: int, buf: bytearray) -> int:
    """Decode the escape starting at ``s[i] == '\\'`` into ``buf``; return the next index."""
    if i + 1 >= len(s):
        raise DNError(f"dangling backslash in DN {s!r}")
    c = s[i + 1]
    if c in _HEX:
        if i + 2 >= len(s) or s[i + 2] not in _HEX:
            raise DNError(f"invalid hex escape at offset {i} in DN {s!r}")
        buf.append(int(s[i + 1 : i + 3], 16))
        return i + 3
    if c in ' "#+,;<=>\\':
        buf += c.encode()
        return i + 2
    raise DNError(f"invalid escape '\\{c}' in DN {s!r}")


def _utf8(buf: bytearray, dn: str) -> str:
    try:
        return buf.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DNError(f"escaped value is not valid UTF-8 in DN {dn!r}") from exc


@lru_cache(maxsize=8192)
def parse_dn(s: str) -> DN:
    """Parse an RFC 4514 DN string; ``""`` is the empty DN (root DSE)."""
    if not s or s.isspace():
        return ()
    if _PLAIN.match(s):
        rdns: list[RDN] = []
        for part in s.split(","):
            attr, sep, value = part.partition("=")
            attr = attr.strip(_SPACES)
            if not sep or not attr:
                raise DNError(f"expected 'type=value' in DN {s!r}, got {part!r}")
            rdns.append(((_check_type(attr, s), value.strip(_SPACES)),))
        return tuple(rdns)
    return _parse_slow(s)


def escape_value(value: str) -> str:
    """Escape an attribute value for the RFC 4514 string form."""
    if not _NEEDS_ESCAPE.search(value):
        return value
    out: list[str] = []
    last = len(value) - 1
    for i, c in enumerate(value):
        if c in '\\"+,;<>':
            out.append("\\" + c)
        elif c == "\x00":
            out.append("\\00")
        elif (i == 0 and c in " #") or (i == last and c == " "):
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


def format_dn(dn: DN) -> str:
    """Render a DN as an RFC 4514 string (types as given, values escaped)."""
    return ",".join("+".join(f"{t}={escape_value(v)}" for t, v in rdn) for rdn in dn)


def parent(dn: DN) -> DN:
    """The DN of the entry's superior; the parent of the root DSE is the root DSE."""
    return dn[1:]
