"""Matching rules: value normalisation, ordering and substring matching (RFC 4517, RFC 4518).

Rules for this module: a ``MatchingRule`` turns a value into its normalised bytes (raising
``InvalidValue`` when the value does not fit the rule's syntax); two values match when their
normalised forms are equal. String preparation is RFC 4518 simplified: Unicode NFKC, case
folding for the *Ignore* rules, and insignificant spaces (leading/trailing removed, inner runs
of white space collapsed to one space); pure-ASCII values take a fast path without Unicode
work. Substring components are normalised with ``normalize_component`` (like ``normalize`` but
keeping one leading/trailing space, which is significant inside a substring). Rules that need
the schema (DNs, OIDs) are built by ``build_rules`` around two callbacks.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["InvalidValue", "MatchingRule", "build_rules"]

Normalizer = Callable[[bytes], bytes]
_P = "1.3.6.1.4.1.1466.115.121.1."


class InvalidValue(ValueError):
    """A value does not conform to the syntax a matching rule expects."""


class MatchingRule:
    """One matching rule; ``kind`` is ``"equality"``, ``"ordering"`` or ``"substr"``."""

    __slots__ = ("_component", "_key", "_norm", "kind", "name", "oid", "syntax")

    def __init__(
        self,
        name: str,
        oid: str,
        syntax: str,
        kind: str,
        norm: Normalizer,
        component: Normalizer | None = None,
        key: Callable[[bytes], object] | None = None,
    ) -> None:
        self.name = name
        self.oid = oid
        self.syntax = syntax
        self.kind = kind
        self._norm = norm
        self._component = component or norm
        self._key = key

    def __repr__(self) -> str:
        return f"MatchingRule({self.name!r}, {self.oid!r})"

    def normalize(self, value: bytes) -> bytes:
        return self._norm(value)

    @property
    def normalizer(self) -> Normalizer:
        """The function ``normalize`` calls (bulk paths call it directly)."""
        return self._norm

    def normalize_component(self, value: bytes) -> bytes:
        """Normalise one substring-assertion component (initial/any/final)."""
        return self._component(value)

    def compare(self, a: bytes, b: bytes) -> int:
        """Order two normalised values: negative, zero or positive."""
        if self._key is not None:
            ka: Any = self._key(a)
            kb: Any = self._key(b)
            return int(ka > kb) - int(ka < kb)
        return (a > b) - (a < b)

    def match_substrings(
        self, value: bytes, initial: bytes | None, any_: Sequence[bytes], final: bytes | None
    ) -> bool:
        """Whether normalised ``value`` matches the normalised substring components."""
        pos = 0
        end = len(value)
        if initial:
            if not value.startswith(initial):
                return False
            pos = len(initial)
        if final:
            if len(final) > end - pos or not value.endswith(final):
                return False
            end -= len(final)
        for part in any_:
            i = value.find(part, pos, end)
            if i < 0:
                return False
            pos = i + len(part)
        return True

    def describe(self) -> str:
        return f"( {self.oid} NAME '{self.name}' SYNTAX {self.syntax} )"


# --------------------------------------------------------------------------- string prep


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidValue("value is not valid UTF-8") from exc


def _fold(value: bytes) -> bytes:
    if value.isascii():
        return b" ".join(value.lower().split())
    s = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", _text(value)).casefold())
    return " ".join(s.split()).encode("utf-8")


def _exact(value: bytes) -> bytes:
    if value.isascii():
        return b" ".join(value.split())
    return " ".join(unicodedata.normalize("NFKC", _text(value)).split()).encode("utf-8")


def _directory_string(prep: Normalizer) -> Normalizer:
    """A Directory String is never empty; one made only of spaces prepares to one space."""

    def norm(value: bytes) -> bytes:
        if not value:
            raise InvalidValue("a Directory String may not be empty")
        return prep(value) or b" "

    return norm


_case_ignore = _directory_string(_fold)
_case_exact = _directory_string(_exact)


def _component(prep: Normalizer) -> Normalizer:
    """Component normaliser: like ``prep`` but one edge space is kept when present."""

    def norm(value: bytes) -> bytes:
        core = prep(value)
        if not core.strip(b" "):
            return core
        text = value.decode("utf-8", "replace")
        lead = b" " if text[:1].isspace() and core else b""
        trail = b" " if text[-1:].isspace() and core else b""
        return lead + core + trail

    return norm


def _ia5(prep: Normalizer) -> Normalizer:
    def norm(value: bytes) -> bytes:
        if not value.isascii():
            raise InvalidValue("value is not an IA5 (ASCII) string")
        return prep(value)

    return norm


def _case_ignore_list(value: bytes) -> bytes:
    if not value:
        raise InvalidValue("a Postal Address may not be empty")
    return b"$".join(_fold(line) for line in value.split(b"$"))


_NUMERIC = re.compile(rb"[0-9 ]*\Z")


def _numeric(value: bytes) -> bytes:
    if not _NUMERIC.match(value):
        raise InvalidValue("value is not a numeric string")
    return value.replace(b" ", b"")


def _telephone(value: bytes) -> bytes:
    v = value if value.isascii() else unicodedata.normalize("NFKC", _text(value)).encode()
    return b"".join(v.lower().replace(b"-", b" ").split())


def _octets(value: bytes) -> bytes:
    return value


# RFC 4517 3.3.16: Integer = ( HYPHEN LDIGIT *DIGIT ) / number — no leading zeros, no "+"
_INTEGER = re.compile(rb"\s*(0|-?[1-9][0-9]*)\s*\Z")


def _integer(value: bytes) -> bytes:
    if value.isdigit() and (value[0] != 0x30 or len(value) == 1):  # already canonical
        return value
    m = _INTEGER.match(value)
    if not m:
        raise InvalidValue(f"{value[:40]!r} is not an INTEGER")
    return str(int(m.group(1))).encode()


def _integer_key(value: bytes) -> int:
    return int(value)


def _boolean(value: bytes) -> bytes:
    v = value.strip().upper()
    if v not in (b"TRUE", b"FALSE"):
        raise InvalidValue("a Boolean is TRUE or FALSE")
    return v


_UUID = re.compile(
    rb"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\Z"
)


def _uuid(value: bytes) -> bytes:
    if not _UUID.match(value):
        raise InvalidValue("value is not a UUID")
    return value.lower()


_BITSTRING = re.compile(rb"'[01]*'B\Z")


def _bitstring(value: bytes) -> bytes:
    v = value.strip()
    if not _BITSTRING.match(v):
        raise InvalidValue("value is not a bit string ('0101'B)")
    return v


_GTIME = re.compile(
    rb"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})?([0-9]{2})?"
    rb"(?:[.,]([0-9]+))?(Z|[+-][0-9]{2}(?:[0-9]{2})?)\Z"
)


def _generalized_time(value: bytes) -> bytes:
    """Normalise to UTC ``YYYYmmddHHMMSS[.f]Z`` (fraction without trailing zeros)."""
    m = _GTIME.match(value.strip())
    if not m:
        raise InvalidValue(f"{value[:40]!r} is not a GeneralizedTime")
    year, month, day, hour, minute, second, frac, tz = m.groups()
    if second and int(second) > 60:
        raise InvalidValue(f"{value[:40]!r} has an invalid second")
    try:
        dt = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute or 0),
            min(int(second or 0), 59),  # a leap second counts as :59
            tzinfo=UTC,
        )
        if frac:
            unit = (
                timedelta(seconds=1)
                if second
                else timedelta(minutes=1)
                if minute
                else timedelta(hours=1)
            )
            fraction = int(frac) / 10 ** len(frac)
            dt += timedelta(microseconds=round(unit / timedelta(microseconds=1) * fraction))
        if tz != b"Z":
            sign = 1 if tz[:1] == b"+" else -1
            offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5] or 0))
            if offset >= timedelta(hours=24) or int(tz[3:5] or 0) > 59:
                raise InvalidValue("invalid time zone offset")
            dt -= sign * offset
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, InvalidValue):
            raise
        raise InvalidValue(f"{value[:40]!r} is not a valid GeneralizedTime") from exc
    out = f"{dt.year:04d}{dt.month:02d}{dt.day:02d}{dt.hour:02d}{dt.minute:02d}{dt.second:02d}"
    if dt.microsecond:
        out += "." + f"{dt.microsecond:06d}".rstrip("0")
    return (out + "Z").encode()


def _gtime_key(norm: bytes) -> tuple[bytes, int]:
    head, _, frac = norm[:-1].partition(b".")
    return head, int(frac.ljust(6, b"0")) if frac else 0


_NUMERICOID = re.compile(r"[0-9]+(?:\.[0-9]+)*\Z")
_DESCR = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")


# --------------------------------------------------------------------------- the rules


def build_rules(
    normalize_dn: Callable[[str], str], resolve_oid: Callable[[str], str | None]
) -> list[MatchingRule]:
    """All matching rules; ``normalize_dn`` and ``resolve_oid`` come from the schema."""

    def dn(value: bytes) -> bytes:
        try:
            return normalize_dn(_text(value)).encode("utf-8")
        except ValueError as exc:  # DNError
            raise InvalidValue(str(exc)) from exc

    def unique_member(value: bytes) -> bytes:
        text = _text(value)
        if text.endswith("'B") and "#'" in text:
            cut = text.rfind("#'")
            bits = text[cut + 1 :]
            if not _BITSTRING.match(bits.encode()):
                raise InvalidValue("invalid optional UID in Name And Optional UID")
            return dn(text[:cut].encode()) + b"#" + bits.encode()
        return dn(value)

    def oid(value: bytes) -> bytes:
        text = value.decode("ascii", "replace").strip()
        if _NUMERICOID.match(text):
            return text.encode()
        if not _DESCR.match(text):
            raise InvalidValue(f"{text!r} is not an object identifier")
        resolved = resolve_oid(text)
        return (resolved or text.lower()).encode()

    def first_component(inner: Normalizer) -> Normalizer:
        def norm(value: bytes) -> bytes:
            v = value.strip()
            if v.startswith(b"("):
                parts = v[1:].split(None, 1)
                if not parts:
                    raise InvalidValue("empty description")
                v = parts[0]
            return inner(v)

        return norm

    ci_comp = _component(_case_ignore)
    ce_comp = _component(_case_exact)
    s15, s26, s58 = _P + "15", _P + "26", _P + "58"
    R = MatchingRule
    return [
        R("objectIdentifierMatch", "2.5.13.0", _P + "38", "equality", oid),
        R("distinguishedNameMatch", "2.5.13.1", _P + "12", "equality", dn),
        R("caseIgnoreMatch", "2.5.13.2", s15, "equality", _case_ignore),
        R("caseIgnoreOrderingMatch", "2.5.13.3", s15, "ordering", _case_ignore),
        R("caseIgnoreSubstringsMatch", "2.5.13.4", s58, "substr", _case_ignore, ci_comp),
        R("caseExactMatch", "2.5.13.5", s15, "equality", _case_exact),
        R("caseExactOrderingMatch", "2.5.13.6", s15, "ordering", _case_exact),
        R("caseExactSubstringsMatch", "2.5.13.7", s58, "substr", _case_exact, ce_comp),
        R("numericStringMatch", "2.5.13.8", _P + "36", "equality", _numeric),
        R("numericStringOrderingMatch", "2.5.13.9", _P + "36", "ordering", _numeric),
        R("numericStringSubstringsMatch", "2.5.13.10", s58, "substr", _numeric),
        R("caseIgnoreListMatch", "2.5.13.11", _P + "41", "equality", _case_ignore_list),
        R(
            "caseIgnoreListSubstringsMatch",
            "2.5.13.12",
            s58,
            "substr",
            _case_ignore_list,
            ci_comp,
        ),
        R("booleanMatch", "2.5.13.13", _P + "7", "equality", _boolean),
        R("integerMatch", "2.5.13.14", _P + "27", "equality", _integer),
        R("integerOrderingMatch", "2.5.13.15", _P + "27", "ordering", _integer, key=_integer_key),
        R("bitStringMatch", "2.5.13.16", _P + "6", "equality", _bitstring),
        R("octetStringMatch", "2.5.13.17", _P + "40", "equality", _octets),
        R("octetStringOrderingMatch", "2.5.13.18", _P + "40", "ordering", _octets),
        R("telephoneNumberMatch", "2.5.13.20", _P + "50", "equality", _telephone),
        R("telephoneNumberSubstringsMatch", "2.5.13.21", s58, "substr", _telephone),
        R("uniqueMemberMatch", "2.5.13.23", _P + "34", "equality", unique_member),
        R("generalizedTimeMatch", "2.5.13.27", _P + "24", "equality", _generalized_time),
        R(
            "generalizedTimeOrderingMatch",
            "2.5.13.28",
            _P + "24",
            "ordering",
            _generalized_time,
            key=_gtime_key,
        ),
        R(
            "integerFirstComponentMatch",
            "2.5.13.29",
            _P + "27",
            "equality",
            first_component(_integer),
        ),
        R(
            "objectIdentifierFirstComponentMatch",
            "2.5.13.30",
            _P + "38",
            "equality",
            first_component(oid),
        ),
        R("caseExactIA5Match", "1.3.6.1.4.1.1466.109.114.1", s26, "equality", _ia5(_exact)),
        R("caseIgnoreIA5Match", "1.3.6.1.4.1.1466.109.114.2", s26, "equality", _ia5(_fold)),
        R(
            "caseIgnoreIA5SubstringsMatch",
            "1.3.6.1.4.1.1466.109.114.3",
            s58,
            "substr",
            _ia5(_fold),
            _ia5(ci_comp),
        ),
        R(
            "caseExactIA5SubstringsMatch",
            "1.3.6.1.4.1.4203.1.2.1",
            s58,
            "substr",
            _ia5(_exact),
            _ia5(ce_comp),
        ),
        # Simplified: certificates compare as their exact DER octets.
        R("certificateExactMatch", "2.5.13.34", _P + "8", "equality", _octets),
        R("uuidMatch", "1.3.6.1.1.16.2", "1.3.6.1.1.16.1", "equality", _uuid),
        R("uuidOrderingMatch", "1.3.6.1.1.16.3", "1.3.6.1.1.16.1", "ordering", _uuid),
    ]
