"""BER primitives for LDAP (X.690 subset that RFC 4511 section 5.1 allows).

Rules for this module:
- Definite lengths only; single-octet (low-number) tags only, which is all LDAP uses.
- Decoding works on ``bytes`` with explicit ``(pos, end)`` offsets, so nothing is copied until
  a value is materialised. Every reader checks its bounds and raises ``BERError`` for
  truncated data, indefinite lengths, lengths that run past their container and similar.
- Encoders return ``bytes`` and build each TLV with one concatenation; short headers and small
  integers come from precomputed tables. This is a hot path: keep it lean.
- No I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable

# Universal tags used by LDAP.
BOOLEAN = 0x01
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
ENUMERATED = 0x0A
SEQUENCE = 0x30
SET = 0x31

# Class / form bits.
APPLICATION = 0x40
CONTEXT = 0x80
CONSTRUCTED = 0x20

# Largest value accepted where the protocol says INTEGER (0 .. maxInt).
MAX_INT = 2**31 - 1

# Longest INTEGER content accepted anywhere (64-bit values).
MAX_INTEGER_OCTETS = 8


class BERError(ValueError):
    """Malformed BER data."""


# ----------------------------------------------------------------------------- decoding


def read_header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Read the tag and length at ``pos``; return ``(tag, value_start, value_end)``.

    ``end`` bounds the enclosing value: a length reaching past it is an error.
    """
    if pos + 2 > end:
        raise BERError("truncated TLV header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BERError("multi-octet tags are not used by LDAP")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0:
            raise BERError("indefinite length is not allowed")
        if count > 8:
            raise BERError("length field too long")
        if pos + count > end:
            raise BERError("truncated length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    stop = pos + length
    if stop > end:
        raise BERError("length runs past the end of the enclosing value")
    return tag, pos, stop


def peek_length(data: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int] | None:
    """Frame helper: for the TLV at ``pos``, return ``(tag, total_size)`` or None if the header
    itself is still incomplete. Does not require the value to be present."""
    if pos + 2 > end:
        return None
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BERError("multi-octet tags are not used by LDAP")
    length = data[pos + 1]
    if length < 0x80:
        return tag, 2 + length
    count = length & 0x7F
    if count == 0:
        raise BERError("indefinite length is not allowed")
    if count > 8:
        raise BERError("length field too long")
    if pos + 2 + count > end:
        return None
    length = int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
    return tag, 2 + count + length


def expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """Read a TLV that must carry ``tag``; return ``(value_start, value_end)``."""
    if pos + 2 <= end and data[pos] == tag:  # fast path: short-form length
        length = data[pos + 1]
        if length < 0x80:
            stop = pos + 2 + length
            if stop <= end:
                return pos + 2, stop
    got, start, stop = read_header(data, pos, end)
    if got != tag:
        raise BERError(f"expected tag 0x{tag:02x}, got 0x{got:02x}")
    return start, stop


def decode_integer(data: bytes, start: int, stop: int) -> int:
    """Signed INTEGER / ENUMERATED contents (at most 8 octets)."""
    size = stop - start
    if size == 0:
        raise BERError("empty INTEGER")
    if size > MAX_INTEGER_OCTETS:
        raise BERError("INTEGER longer than 8 octets")
    if size == 1:
        value = data[start]
        return value - 256 if value & 0x80 else value
    return int.from_bytes(data[start:stop], "big", signed=True)


def decode_uint(data: bytes, start: int, stop: int, what: str = "INTEGER") -> int:
    """INTEGER contents constrained to 0 .. maxInt (message ids, limits)."""
    size = stop - start
    if size == 1:
        value = data[start]
        if value & 0x80:
            raise BERError(f"{what} out of range")
        return value
    if size == 0 or size > MAX_INTEGER_OCTETS:
        raise BERError(f"{what} has a bad length")
    value = int.from_bytes(data[start:stop], "big", signed=True)
    if not 0 <= value <= MAX_INT:
        raise BERError(f"{what} out of range")
    return value


def decode_boolean(data: bytes, start: int, stop: int) -> bool:
    if stop - start != 1:
        raise BERError("BOOLEAN must have exactly one octet")
    return data[start] != 0


def decode_string(data: bytes, start: int, stop: int) -> str:
    """OCTET STRING contents as UTF-8 text (LDAPString, LDAPDN, LDAPOID)."""
    try:
        return data[start:stop].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BERError("invalid UTF-8 in a string") from exc


def iter_elements(data: bytes, start: int, stop: int) -> Iterable[tuple[int, int, int]]:
    """Iterate over the TLVs that exactly fill ``data[start:stop]``."""
    pos = start
    while pos < stop:
        tag, vstart, vstop = read_header(data, pos, stop)
        yield tag, vstart, vstop
        pos = vstop


# ----------------------------------------------------------------------------- encoding


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return _SHORT[length]
    if length < 0x100:
        return bytes((0x81, length))
    if length < 0x10000:
        return bytes((0x82, length >> 8, length & 0xFF))
    size = (length.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + length.to_bytes(size, "big")


_SHORT = [bytes((i,)) for i in range(0x80)]


# Every short-form header, indexed by ``tag << 7 | length`` (32768 two-octet strings).
SHORT_HEADERS = [bytes((i >> 7, i & 0x7F)) for i in range(256 << 7)]


def tlv(tag: int, value: bytes) -> bytes:
    """One TLV with definite minimal length."""
    length = len(value)
    if length < 0x80:
        return SHORT_HEADERS[tag << 7 | length] + value
    if length < 0x100:
        return bytes((tag, 0x81, length)) + value
    if length < 0x10000:
        return bytes((tag, 0x82, length >> 8, length & 0xFF)) + value
    return bytes((tag,)) + encode_length(length) + value


def tlv_join(tag: int, parts: Iterable[bytes]) -> bytes:
    """A constructed TLV whose contents are the concatenation of ``parts``."""
    return tlv(tag, b"".join(parts))


def integer_contents(value: int) -> bytes:
    """Minimal two's-complement contents of an INTEGER."""
    if 0 <= value < 0x80:
        return _SHORT[value]
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return value.to_bytes(size, "big", signed=True)


_INT_TLV = [bytes((INTEGER, 1, i)) for i in range(0x80)]
_ENUM_TLV = [bytes((ENUMERATED, 1, i)) for i in range(0x80)]


def encode_integer(value: int, tag: int = INTEGER) -> bytes:
    if 0 <= value < 0x80:
        if tag == INTEGER:
            return _INT_TLV[value]
        if tag == ENUMERATED:
            return _ENUM_TLV[value]
    return tlv(tag, integer_contents(value))


def encode_enumerated(value: int) -> bytes:
    return encode_integer(value, ENUMERATED)


TRUE_TLV = b"\x01\x01\xff"
FALSE_TLV = b"\x01\x01\x00"


def encode_boolean(value: bool, tag: int = BOOLEAN) -> bytes:
    if tag == BOOLEAN:
        return TRUE_TLV if value else FALSE_TLV
    return bytes((tag, 1, 0xFF if value else 0))


def encode_octets(value: bytes, tag: int = OCTET_STRING) -> bytes:
    return tlv(tag, value)


def encode_string(value: str, tag: int = OCTET_STRING) -> bytes:
    return tlv(tag, value.encode("utf-8"))


def encode_sequence(parts: Iterable[bytes], tag: int = SEQUENCE) -> bytes:
    return tlv(tag, b"".join(parts))


def encode_set(parts: Iterable[bytes], tag: int = SET) -> bytes:
    return tlv(tag, b"".join(parts))
