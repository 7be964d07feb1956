"""Values of the LDAP controls and extended operations Oba understands.

Rules for this module:
- One frozen dataclass per value, with ``encode() -> bytes`` and ``decode(bytes)`` classmethod;
  values are BER per the defining RFC/draft, built from ``ber.py`` primitives.
- Malformed values raise ``ControlError`` (a ``ValueError``); nothing else escapes ``decode``.
- No I/O. OIDs are exported as constants.

Covered: Simple Paged Results (RFC 2696), Server-Side Sorting (RFC 2891), Persistent Search
and Entry Change Notification (draft-ietf-ldapext-psearch), ManageDsaIT (RFC 3296, no value),
Password Modify (RFC 3062) and Who am I? (RFC 4532, no request value).
"""

from __future__ import annotations

from dataclasses import dataclass

from oba.protocol.ber import (
    BERError,
    decode_boolean,
    decode_integer,
    decode_string,
    decode_uint,
    encode_boolean,
    encode_integer,
    expect,
    read_header,
    tlv,
)

OID_PAGED_RESULTS = "1.2.840.113556.1.4.319"
OID_SORT_REQUEST = "1.2.840.113556.1.4.473"
OID_SORT_RESPONSE = "1.2.840.113556.1.4.474"
OID_PERSISTENT_SEARCH = "2.16.840.1.113730.3.4.3"
OID_ENTRY_CHANGE_NOTIFICATION = "2.16.840.1.113730.3.4.7"
OID_MANAGE_DSA_IT = "2.16.840.1.113730.3.4.2"
OID_PASSWORD_MODIFY = "1.3.6.1.4.1.4203.1.11.1"
OID_WHO_AM_I = "1.3.6.1.4.1.4203.1.11.3"

# Persistent search change types (bit flags).
CHANGE_ADD = 1
CHANGE_DELETE = 2
CHANGE_MODIFY = 4
CHANGE_MODDN = 8
CHANGE_ALL = 15

_SEQ = 0x30
_OCTETS = 0x04
_INTEGER = 0x02
_ENUM = 0x0A
_BOOL = 0x01


class ControlError(ValueError):
    """A control or extended-operation value is malformed."""


def _outer(data: bytes | None) -> tuple[bytes, int, int]:
    """The contents bounds of a value that must be exactly one SEQUENCE."""
    if data is None:
        raise ControlError("control value is missing")
    d = bytes(data)
    try:
        s, e = expect(d, 0, len(d), _SEQ)
    except BERError as exc:
        raise ControlError(str(exc)) from None
    if e != len(d):
        raise ControlError("trailing data after control value")
    return d, s, e


def _end(pos: int, end: int) -> None:
    if pos != end:
        raise BERError("unexpected data in control value")


@dataclass(frozen=True, slots=True)
class PagedResults:
    """RFC 2696 realSearchControlValue (request: page size; response: estimate)."""

    size: int
    cookie: bytes = b""

    def encode(self) -> bytes:
        return tlv(_SEQ, encode_integer(self.size) + tlv(_OCTETS, self.cookie))

    @classmethod
    def decode(cls, data: bytes | None) -> PagedResults:
        d, s, e = _outer(data)
        try:
            vs, ve = expect(d, s, e, _INTEGER)
            size = decode_uint(d, vs, ve, "page size")
            cs, ce = expect(d, ve, e, _OCTETS)
            _end(ce, e)
        except BERError as exc:
            raise ControlError(str(exc)) from None
        return cls(size, d[cs:ce])


@dataclass(frozen=True, slots=True)
class SortKey:
    attr: str
    ordering_rule: str | None = None
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class SortRequest:
    """RFC 2891 SortKeyList."""

    keys: tuple[SortKey, ...]

    def encode(self) -> bytes:
        parts = []
        for key in self.keys:
            body = tlv(_OCTETS, key.attr.encode("utf-8"))
            if key.ordering_rule is not None:
                body += tlv(0x80, key.ordering_rule.encode("utf-8"))
            if key.reverse:
                body += encode_boolean(True, 0x81)
            parts.append(tlv(_SEQ, body))
        return tlv(_SEQ, b"".join(parts))

    @classmethod
    def decode(cls, data: bytes | None) -> SortRequest:
        d, s, e = _outer(data)
        keys: list[SortKey] = []
        try:
            p = s
            while p < e:
                ks, ke = expect(d, p, e, _SEQ)
                as_, q = expect(d, ks, ke, _OCTETS)
                attr = decode_string(d, as_, q)
                rule: str | None = None
                reverse = False
                if q < ke and d[q] == 0x80:
                    rs, q = expect(d, q, ke, 0x80)
                    rule = decode_string(d, rs, q)
                if q < ke:
                    bs, q = expect(d, q, ke, 0x81)
                    reverse = decode_boolean(d, bs, q)
                _end(q, ke)
                keys.append(SortKey(attr, rule, reverse))
                p = ke
        except BERError as exc:
            raise ControlError(str(exc)) from None
        if not keys:
            raise ControlError("sort request without sort keys")
        return cls(tuple(keys))


@dataclass(frozen=True, slots=True)
class SortResponse:
    """RFC 2891 SortResult."""

    result: int
    attr: str | None = None

    def encode(self) -> bytes:
        body = encode_integer(self.result, _ENUM)
        if self.attr is not None:
            body += tlv(0x80, self.attr.encode("utf-8"))
        return tlv(_SEQ, body)

    @classmethod
    def decode(cls, data: bytes | None) -> SortResponse:
        d, s, e = _outer(data)
        try:
            vs, p = expect(d, s, e, _ENUM)
            result = decode_uint(d, vs, p, "sortResult")
            attr: str | None = None
            if p < e:
                as_, p = expect(d, p, e, 0x80)
                attr = decode_string(d, as_, p)
            _end(p, e)
        except BERError as exc:
            raise ControlError(str(exc)) from None
        return cls(result, attr)


@dataclass(frozen=True, slots=True)
class PersistentSearch:
    """draft-ietf-ldapext-psearch PersistentSearch control value."""

    change_types: int = CHANGE_ALL
    changes_only: bool = True
    return_ecs: bool = True

    def encode(self) -> bytes:
        return tlv(
            _SEQ,
            encode_integer(self.change_types)
            + encode_boolean(self.changes_only)
            + encode_boolean(self.return_ecs),
        )

    @classmethod
    def decode(cls, data: bytes | None) -> PersistentSearch:
        d, s, e = _outer(data)
        try:
            vs, p = expect(d, s, e, _INTEGER)
            types = decode_integer(d, vs, p)
            bs, p = expect(d, p, e, _BOOL)
            changes_only = decode_boolean(d, bs, p)
            bs, p = expect(d, p, e, _BOOL)
            return_ecs = decode_boolean(d, bs, p)
            _end(p, e)
        except BERError as exc:
            raise ControlError(str(exc)) from None
        if not 1 <= types <= CHANGE_ALL:
            raise ControlError(f"bad persistent search changeTypes {types}")
        return cls(types, changes_only, return_ecs)


@dataclass(frozen=True, slots=True)
class EntryChangeNotification:
    """draft-ietf-ldapext-psearch EntryChangeNotification control value."""

    change_type: int
    previous_dn: str | None = None
    change_number: int | None = None

    def encode(self) -> bytes:
        body = encode_integer(self.change_type, _ENUM)
        if self.previous_dn is not None:
            body += tlv(_OCTETS, self.previous_dn.encode("utf-8"))
        if self.change_number is not None:
            body += encode_integer(self.change_number)
        return tlv(_SEQ, body)

    @classmethod
    def decode(cls, data: bytes | None) -> EntryChangeNotification:
        d, s, e = _outer(data)
        try:
            vs, p = expect(d, s, e, _ENUM)
            change_type = decode_integer(d, vs, p)
            previous: str | None = None
            number: int | None = None
            if p < e and d[p] == _OCTETS:
                ps, p = expect(d, p, e, _OCTETS)
                previous = decode_string(d, ps, p)
            if p < e:
                ns, p = expect(d, p, e, _INTEGER)
                number = decode_integer(d, ns, p)
            _end(p, e)
        except BERError as exc:
            raise ControlError(str(exc)) from None
        if change_type not in (CHANGE_ADD, CHANGE_DELETE, CHANGE_MODIFY, CHANGE_MODDN):
            raise ControlError(f"bad entry change type {change_type}")
        return cls(change_type, previous, number)


def check_no_value(oid: str, value: bytes | None) -> None:
    """ManageDsaIT and Who am I? carry no value; raise ControlError if one is present."""
    if value is not None:
        raise ControlError(f"{oid} takes no value")


@dataclass(frozen=True, slots=True)
class PasswordModifyRequest:
    """RFC 3062 PasswdModifyRequestValue; the value may be absent entirely (all None)."""

    user_identity: str | None = None
    old_password: bytes | None = None
    new_password: bytes | None = None

    def encode(self) -> bytes:
        body = b""
        if self.user_identity is not None:
            body += tlv(0x80, self.user_identity.encode("utf-8"))
        if self.old_password is not None:
            body += tlv(0x81, self.old_password)
        if self.new_password is not None:
            body += tlv(0x82, self.new_password)
        return tlv(_SEQ, body)

    @classmethod
    def decode(cls, data: bytes | None) -> PasswordModifyRequest:
        if data is None:
            return cls()
        d, s, e = _outer(data)
        fields: dict[int, bytes] = {}
        try:
            p = s
            last = 0x7F
            while p < e:
                tag, vs, p = read_header(d, p, e)
                if tag not in (0x80, 0x81, 0x82) or tag <= last:
                    raise BERError(f"unexpected tag 0x{tag:02x} in password modify request")
                last = tag
                fields[tag] = d[vs:p]
            user = fields.get(0x80)
            identity = None if user is None else decode_string(user, 0, len(user))
        except BERError as exc:
            raise ControlError(str(exc)) from None
        return cls(identity, fields.get(0x81), fields.get(0x82))


@dataclass(frozen=True, slots=True)
class PasswordModifyResponse:
    """RFC 3062 PasswdModifyResponseValue."""

    generated_password: bytes | None = None

    def encode(self) -> bytes:
        if self.generated_password is None:
            return tlv(_SEQ, b"")
        return tlv(_SEQ, tlv(0x80, self.generated_password))

    @classmethod
    def decode(cls, data: bytes | None) -> PasswordModifyResponse:
        if data is None:
            return cls()
        d, s, e = _outer(data)
        if s == e:
            return cls()
        try:
            gs, p = expect(d, s, e, 0x80)
            _end(p, e)
        except BERError as exc:
            raise ControlError(str(exc)) from None
        return cls(d[gs:p])
