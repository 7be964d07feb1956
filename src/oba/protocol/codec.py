"""BER codec for LDAP v3 messages (RFC 4511 section 5.1 and appendix B).

Rules for this module:
- Sans-I/O: bytes in, ``LDAPMessage`` out and back; no sockets, no clock.
- Encoding is definite-length with minimal lengths; BOOLEAN TRUE is 0xFF; DEFAULT-valued
  fields (criticality FALSE, dnAttributes FALSE) are omitted.
- Decoding is strict: each constructed value must be filled exactly by its elements, unknown
  tags are rejected, LDAPString/LDAPDN must be valid UTF-8, message ids and limits must be in
  0 .. 2**31-1, filters may nest at most ``MAX_FILTER_DEPTH`` levels. Anything malformed raises
  ``ProtocolError`` (carrying the message id once it could be read) and never another error.
- ``LDAPDecoder`` frames a byte stream; it rejects over-long PDUs from the length header alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from oba.protocol.ber import (
    MAX_INT,
    BERError,
    decode_boolean,
    decode_integer,
    decode_string,
    decode_uint,
    encode_integer,
    expect,
    integer_contents,
    peek_length,
    read_header,
    tlv,
)
from oba.protocol.ber import SHORT_HEADERS as _H
from oba.protocol.messages import (
    AbandonRequest,
    AddRequest,
    AddResponse,
    And,
    Approx,
    Attribute,
    BindRequest,
    BindResponse,
    CompareRequest,
    CompareResponse,
    Control,
    DelRequest,
    DelResponse,
    Deref,
    Equality,
    ExtendedRequest,
    ExtendedResponse,
    Extensible,
    Filter,
    GreaterOrEqual,
    IntermediateResponse,
    LDAPMessage,
    LDAPResult,
    LessOrEqual,
    ModifyDNRequest,
    ModifyDNResponse,
    ModifyRequest,
    ModifyResponse,
    ModOp,
    Not,
    Or,
    Present,
    ProtocolOp,
    Scope,
    SearchRequest,
    SearchResultDone,
    SearchResultEntry,
    SearchResultReference,
    Substrings,
    UnbindRequest,
)
from oba.protocol.resultcodes import ResultCode

__all__ = [
    "MAX_FILTER_DEPTH",
    "OP_ABANDON_REQUEST",
    "OP_ADD_REQUEST",
    "OP_ADD_RESPONSE",
    "OP_BIND_REQUEST",
    "OP_BIND_RESPONSE",
    "OP_COMPARE_REQUEST",
    "OP_COMPARE_RESPONSE",
    "OP_DEL_REQUEST",
    "OP_DEL_RESPONSE",
    "OP_EXTENDED_REQUEST",
    "OP_EXTENDED_RESPONSE",
    "OP_INTERMEDIATE_RESPONSE",
    "OP_MODIFY_DN_REQUEST",
    "OP_MODIFY_DN_RESPONSE",
    "OP_MODIFY_REQUEST",
    "OP_MODIFY_RESPONSE",
    "OP_SEARCH_REQUEST",
    "OP_SEARCH_RESULT_DONE",
    "OP_SEARCH_RESULT_ENTRY",
    "OP_SEARCH_RESULT_REFERENCE",
    "OP_UNBIND_REQUEST",
    "LDAPDecoder",
    "ProtocolError",
    "decode_message",
    "encode_message",
    "encode_result",
    "encode_search_entry",
]

MAX_FILTER_DEPTH = 100

# protocolOp tags ([APPLICATION n], with the constructed bit where the type is a SEQUENCE).
OP_BIND_REQUEST = 0x60
OP_BIND_RESPONSE = 0x61
OP_UNBIND_REQUEST = 0x42
OP_SEARCH_REQUEST = 0x63
OP_SEARCH_RESULT_ENTRY = 0x64
OP_SEARCH_RESULT_DONE = 0x65
OP_MODIFY_REQUEST = 0x66
OP_MODIFY_RESPONSE = 0x67
OP_ADD_REQUEST = 0x68
OP_ADD_RESPONSE = 0x69
OP_DEL_REQUEST = 0x4A
OP_DEL_RESPONSE = 0x6B
OP_MODIFY_DN_REQUEST = 0x6C
OP_MODIFY_DN_RESPONSE = 0x6D
OP_COMPARE_REQUEST = 0x6E
OP_COMPARE_RESPONSE = 0x6F
OP_ABANDON_REQUEST = 0x50
OP_SEARCH_RESULT_REFERENCE = 0x73
OP_EXTENDED_REQUEST = 0x77
OP_EXTENDED_RESPONSE = 0x78
OP_INTERMEDIATE_RESPONSE = 0x79

_OCTETS = 0x04
_INTEGER = 0x02
_ENUM = 0x0A
_BOOL = 0x01
_SEQ = 0x30
_SET = 0x31
_CONTROLS = 0xA0
_REFERRAL = 0xA3

# Filter CHOICE tags.
_F_AND = 0xA0
_F_OR = 0xA1
_F_NOT = 0xA2
_F_EQ = 0xA3
_F_SUB = 0xA4
_F_GE = 0xA5
_F_LE = 0xA6
_F_PRESENT = 0x87
_F_APPROX = 0xA8
_F_EXT = 0xA9


class ProtocolError(Exception):
    """Malformed LDAP PDU. ``message_id`` is set when the message id could be read."""

    def __init__(self, message: str, message_id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.message_id = message_id


# ============================================================================ decoding


def _read_str(d: bytes, pos: int, end: int) -> tuple[str, int]:
    if pos + 2 <= end and d[pos] == _OCTETS:  # fast path: short-form length
        e = pos + 2 + d[pos + 1]
        if d[pos + 1] < 0x80 and e <= end:
            try:
                return d[pos + 2 : e].decode("utf-8"), e
            except UnicodeDecodeError:
                raise BERError("invalid UTF-8 in a string") from None
    s, e = expect(d, pos, end, _OCTETS)
    return decode_string(d, s, e), e


def _read_bytes(d: bytes, pos: int, end: int) -> tuple[bytes, int]:
    s, e = expect(d, pos, end, _OCTETS)
    return d[s:e], e


def _done(pos: int, end: int, what: str) -> None:
    if pos != end:
        raise BERError(f"unexpected data after {what}")


def _enum_in(d: bytes, pos: int, end: int, limit: int, what: str) -> tuple[int, int]:
    s, e = expect(d, pos, end, _ENUM)
    value = decode_integer(d, s, e)
    if not 0 <= value <= limit:
        raise BERError(f"bad {what} {value}")
    return value, e


_RESULT_CODES = {int(c): c for c in ResultCode}


def _read_result(d: bytes, pos: int, end: int) -> tuple[LDAPResult, int]:
    s, e = expect(d, pos, end, _ENUM)
    raw = decode_uint(d, s, e, "resultCode")
    code: ResultCode | int = _RESULT_CODES.get(raw, raw)
    matched, pos = _read_str(d, e, end)
    message, pos = _read_str(d, pos, end)
    referral: tuple[str, ...] = ()
    if pos < end and d[pos] == _REFERRAL:
        _, rs, re_ = read_header(d, pos, end)
        referral = _read_uris(d, rs, re_)
        if not referral:
            raise BERError("empty referral")
        pos = re_
    return LDAPResult(code, matched, message, referral), pos


def _read_uris(d: bytes, pos: int, end: int) -> tuple[str, ...]:
    uris: list[str] = []
    while pos < end:
        s, e = expect(d, pos, end, _OCTETS)
        uris.append(decode_string(d, s, e))
        pos = e
    return tuple(uris)


def _read_values(d: bytes, pos: int, end: int) -> tuple[bytes, ...]:
    values: list[bytes] = []
    while pos < end:
        s, e = expect(d, pos, end, _OCTETS)
        values.append(d[s:e])
        pos = e
    return tuple(values)


def _read_attribute(d: bytes, pos: int, end: int) -> tuple[Attribute, int]:
    s, e = expect(d, pos, end, _SEQ)
    name, p = _read_str(d, s, e)
    vs, ve = expect(d, p, e, _SET)
    _done(ve, e, "attribute")
    return (name, _read_values(d, vs, ve)), e


def _read_attribute_list(d: bytes, pos: int, end: int) -> tuple[Attribute, ...]:
    attrs: list[Attribute] = []
    while pos < end:
        attr, pos = _read_attribute(d, pos, end)
        attrs.append(attr)
    return tuple(attrs)


def _read_ava(d: bytes, s: int, e: int) -> tuple[str, bytes]:
    attr, p = _read_str(d, s, e)
    value, p = _read_bytes(d, p, e)
    _done(p, e, "attribute value assertion")
    return attr, value


def _decode_filter(d: bytes, pos: int, end: int, depth: int) -> tuple[Filter, int]:
    if depth > MAX_FILTER_DEPTH:
        raise BERError(f"filter nested deeper than {MAX_FILTER_DEPTH}")
    tag, s, e = read_header(d, pos, end)
    if tag == _F_EQ:
        a, v = _read_ava(d, s, e)
        return Equality(a, v), e
    if tag == _F_PRESENT:
        return Present(decode_string(d, s, e)), e
    if tag == _F_AND or tag == _F_OR:
        subs: list[Filter] = []
        p = s
        while p < e:
            sub, p = _decode_filter(d, p, e, depth + 1)
            subs.append(sub)
        return (And(tuple(subs)) if tag == _F_AND else Or(tuple(subs))), e
    if tag == _F_NOT:
        sub, p = _decode_filter(d, s, e, depth + 1)
        _done(p, e, "not filter")
        return Not(sub), e
    if tag == _F_SUB:
        return _decode_substrings(d, s, e), e
    if tag == _F_GE:
        a, v = _read_ava(d, s, e)
        return GreaterOrEqual(a, v), e
    if tag == _F_LE:
        a, v = _read_ava(d, s, e)
        return LessOrEqual(a, v), e
    if tag == _F_APPROX:
        a, v = _read_ava(d, s, e)
        return Approx(a, v), e
    if tag == _F_EXT:
        return _decode_extensible(d, s, e), e
    raise BERError(f"unknown filter tag 0x{tag:02x}")


def _decode_substrings(d: bytes, s: int, e: int) -> Substrings:
    attr, p = _read_str(d, s, e)
    ss, se = expect(d, p, e, _SEQ)
    _done(se, e, "substring filter")
    initial: bytes | None = None
    final: bytes | None = None
    anys: list[bytes] = []
    p = ss
    count = 0
    while p < se:
        tag, vs, ve = read_header(d, p, se)
        if final is not None:
            raise BERError("substring component after final")
        if tag == 0x80:
            if count:
                raise BERError("initial substring must come first")
            initial = d[vs:ve]
        elif tag == 0x81:
            anys.append(d[vs:ve])
        elif tag == 0x82:
            final = d[vs:ve]
        else:
            raise BERError(f"unknown substring tag 0x{tag:02x}")
        count += 1
        p = ve
    if count == 0:
        raise BERError("substring filter without components")
    return Substrings(attr, initial, tuple(anys), final)


def _decode_extensible(d: bytes, s: int, e: int) -> Extensible:
    rule: str | None = None
    attr: str | None = None
    value: bytes | None = None
    dn_attrs = False
    p = s
    last = 0
    while p < e:
        tag, vs, ve = read_header(d, p, e)
        if not 0x81 <= tag <= 0x84 or tag <= last:
            raise BERError(f"unexpected tag 0x{tag:02x} in extensible match")
        last = tag
        if tag == 0x81:
            rule = decode_string(d, vs, ve)
        elif tag == 0x82:
            attr = decode_string(d, vs, ve)
        elif tag == 0x83:
            value = d[vs:ve]
        else:
            dn_attrs = decode_boolean(d, vs, ve)
        p = ve
    if value is None:
        raise BERError("extensible match without matchValue")
    return Extensible(rule, attr, value, dn_attrs)


def _dec_bind_request(d: bytes, s: int, e: int) -> BindRequest:
    vs, ve = expect(d, s, e, _INTEGER)
    version = decode_uint(d, vs, ve, "version")
    if not 1 <= version <= 127:
        raise BERError("bind version out of range")
    name, p = _read_str(d, ve, e)
    tag, as_, ae = read_header(d, p, e)
    _done(ae, e, "bind request")
    if tag == 0x80:
        return BindRequest(version, name, simple=d[as_:ae])
    if tag == 0xA3:
        mech, p = _read_str(d, as_, ae)
        creds: bytes | None = None
        if p < ae:
            creds, p = _read_bytes(d, p, ae)
        _done(p, ae, "SASL credentials")
        return BindRequest(version, name, sasl_mechanism=mech, sasl_credentials=creds)
    raise BERError(f"unsupported authentication choice 0x{tag:02x}")


def _dec_bind_response(d: bytes, s: int, e: int) -> BindResponse:
    result, p = _read_result(d, s, e)
    creds: bytes | None = None
    if p < e:
        tag, cs, ce = read_header(d, p, e)
        if tag != 0x87:
            raise BERError(f"unexpected tag 0x{tag:02x} in bind response")
        creds = d[cs:ce]
        p = ce
    _done(p, e, "bind response")
    return BindResponse(result, creds)


def _dec_unbind(d: bytes, s: int, e: int) -> UnbindRequest:
    if s != e:
        raise BERError("unbind request must be empty")
    return UnbindRequest()


def _dec_search_request(d: bytes, s: int, e: int) -> SearchRequest:
    base, p = _read_str(d, s, e)
    scope, p = _enum_in(d, p, e, 3, "scope")
    deref, p = _enum_in(d, p, e, 3, "derefAliases")
    vs, ve = expect(d, p, e, _INTEGER)
    size_limit = decode_uint(d, vs, ve, "sizeLimit")
    vs, p = expect(d, ve, e, _INTEGER)
    time_limit = decode_uint(d, vs, p, "timeLimit")
    vs, ve = expect(d, p, e, _BOOL)
    types_only = decode_boolean(d, vs, ve)
    flt, p = _decode_filter(d, ve, e, 1)
    as_, ae = expect(d, p, e, _SEQ)
    _done(ae, e, "search request")
    attrs: list[str] = []
    p = as_
    while p < ae:
        vs, ve = expect(d, p, ae, _OCTETS)
        attrs.append(decode_string(d, vs, ve))
        p = ve
    return SearchRequest(
        base, _SCOPES[scope], _DEREFS[deref], size_limit, time_limit, types_only, flt, tuple(attrs)
    )


_SCOPES = tuple(Scope)
_DEREFS = tuple(Deref)
_MOD_OPS = tuple(ModOp)


def _dec_search_entry(d: bytes, s: int, e: int) -> SearchResultEntry:
    dn, p = _read_str(d, s, e)
    as_, ae = expect(d, p, e, _SEQ)
    _done(ae, e, "search result entry")
    return SearchResultEntry(dn, _read_attribute_list(d, as_, ae))


def _dec_search_reference(d: bytes, s: int, e: int) -> SearchResultReference:
    uris = _read_uris(d, s, e)
    if not uris:
        raise BERError("empty search result reference")
    return SearchResultReference(uris)


def _result_only(cls: Callable[[LDAPResult], Any]) -> Callable[[bytes, int, int], Any]:
    def decode(d: bytes, s: int, e: int) -> Any:
        result, p = _read_result(d, s, e)
        _done(p, e, "result")
        return cls(result)

    return decode


def _dec_modify_request(d: bytes, s: int, e: int) -> ModifyRequest:
    dn, p = _read_str(d, s, e)
    cs, ce = expect(d, p, e, _SEQ)
    _done(ce, e, "modify request")
    changes: list[tuple[ModOp | int, Attribute]] = []
    p = cs
    while p < ce:
        is_, ie = expect(d, p, ce, _SEQ)
        op, q = _enum_in(d, is_, ie, 3, "modify operation")
        attr, q = _read_attribute(d, q, ie)
        _done(q, ie, "change")
        changes.append((_MOD_OPS[op], attr))
        p = ie
    return ModifyRequest(dn, tuple(changes))


def _dec_add_request(d: bytes, s: int, e: int) -> AddRequest:
    dn, p = _read_str(d, s, e)
    as_, ae = expect(d, p, e, _SEQ)
    _done(ae, e, "add request")
    return AddRequest(dn, _read_attribute_list(d, as_, ae))


def _dec_del_request(d: bytes, s: int, e: int) -> DelRequest:
    return DelRequest(decode_string(d, s, e))


def _dec_modify_dn_request(d: bytes, s: int, e: int) -> ModifyDNRequest:
    dn, p = _read_str(d, s, e)
    rdn, p = _read_str(d, p, e)
    bs, be = expect(d, p, e, _BOOL)
    delete_old = decode_boolean(d, bs, be)
    superior: str | None = None
    if be < e:
        ss, se = expect(d, be, e, 0x80)
        superior = decode_string(d, ss, se)
        be = se
    _done(be, e, "modify DN request")
    return ModifyDNRequest(dn, rdn, delete_old, superior)


def _dec_compare_request(d: bytes, s: int, e: int) -> CompareRequest:
    dn, p = _read_str(d, s, e)
    vs, ve = expect(d, p, e, _SEQ)
    _done(ve, e, "compare request")
    attr, value = _read_ava(d, vs, ve)
    return CompareRequest(dn, attr, value)


def _dec_abandon(d: bytes, s: int, e: int) -> AbandonRequest:
    return AbandonRequest(decode_uint(d, s, e, "abandon message id"))


def _dec_extended_request(d: bytes, s: int, e: int) -> ExtendedRequest:
    ns, ne = expect(d, s, e, 0x80)
    name = decode_string(d, ns, ne)
    value: bytes | None = None
    if ne < e:
        vs, ve = expect(d, ne, e, 0x81)
        value = d[vs:ve]
        ne = ve
    _done(ne, e, "extended request")
    return ExtendedRequest(name, value)


def _dec_extended_response(d: bytes, s: int, e: int) -> ExtendedResponse:
    result, p = _read_result(d, s, e)
    name: str | None = None
    value: bytes | None = None
    if p < e and d[p] == 0x8A:
        ns, p = expect(d, p, e, 0x8A)
        name = decode_string(d, ns, p)
    if p < e:
        vs, p = expect(d, p, e, 0x8B)
        value = d[vs:p]
    _done(p, e, "extended response")
    return ExtendedResponse(result, name, value)


def _dec_intermediate(d: bytes, s: int, e: int) -> IntermediateResponse:
    p = s
    name: str | None = None
    value: bytes | None = None
    if p < e and d[p] == 0x80:
        ns, p = expect(d, p, e, 0x80)
        name = decode_string(d, ns, p)
    if p < e:
        vs, p = expect(d, p, e, 0x81)
        value = d[vs:p]
    _done(p, e, "intermediate response")
    return IntermediateResponse(name, value)


_OP_DECODERS: dict[int, Callable[[bytes, int, int], Any]] = {
    OP_BIND_REQUEST: _dec_bind_request,
    OP_BIND_RESPONSE: _dec_bind_response,
    OP_UNBIND_REQUEST: _dec_unbind,
    OP_SEARCH_REQUEST: _dec_search_request,
    OP_SEARCH_RESULT_ENTRY: _dec_search_entry,
    OP_SEARCH_RESULT_DONE: _result_only(SearchResultDone),
    OP_MODIFY_REQUEST: _dec_modify_request,
    OP_MODIFY_RESPONSE: _result_only(ModifyResponse),
    OP_ADD_REQUEST: _dec_add_request,
    OP_ADD_RESPONSE: _result_only(AddResponse),
    OP_DEL_REQUEST: _dec_del_request,
    OP_DEL_RESPONSE: _result_only(DelResponse),
    OP_MODIFY_DN_REQUEST: _dec_modify_dn_request,
    OP_MODIFY_DN_RESPONSE: _result_only(ModifyDNResponse),
    OP_COMPARE_REQUEST: _dec_compare_request,
    OP_COMPARE_RESPONSE: _result_only(CompareResponse),
    OP_ABANDON_REQUEST: _dec_abandon,
    OP_SEARCH_RESULT_REFERENCE: _dec_search_reference,
    OP_EXTENDED_REQUEST: _dec_extended_request,
    OP_EXTENDED_RESPONSE: _dec_extended_response,
    OP_INTERMEDIATE_RESPONSE: _dec_intermediate,
}


def _decode_controls(d: bytes, pos: int, end: int) -> tuple[Control, ...]:
    controls: list[Control] = []
    while pos < end:
        cs, ce = expect(d, pos, end, _SEQ)
        oid, p = _read_str(d, cs, ce)
        critical = False
        value: bytes | None = None
        if p < ce and d[p] == _BOOL:
            bs, p = expect(d, p, ce, _BOOL)
            critical = decode_boolean(d, bs, p)
        if p < ce:
            value, p = _read_bytes(d, p, ce)
        _done(p, ce, "control")
        controls.append(Control(oid, critical, value))
        pos = ce
    return tuple(controls)


def _decode_body(d: bytes, start: int, stop: int) -> tuple[int, int]:
    """Read the message id of the LDAPMessage contents; return ``(message_id, next_pos)``."""
    s, e = expect(d, start, stop, _INTEGER)
    return decode_uint(d, s, e, "message id"), e


def decode_message(data: bytes | bytearray | memoryview) -> LDAPMessage:
    """Decode exactly one complete LDAPMessage."""
    d = data if isinstance(data, bytes) else bytes(data)
    message_id: int | None = None
    try:
        end = len(d)
        tag, start, stop = read_header(d, 0, end)
        if tag != _SEQ:
            raise BERError(f"LDAPMessage must be a SEQUENCE, got tag 0x{tag:02x}")
        _done(stop, end, "LDAPMessage")
        message_id, p = _decode_body(d, start, stop)
        tag, s, e = read_header(d, p, stop)
        decoder = _OP_DECODERS.get(tag)
        if decoder is None:
            raise BERError(f"unknown protocolOp tag 0x{tag:02x}")
        op: ProtocolOp = decoder(d, s, e)
        controls: tuple[Control, ...] = ()
        if e < stop:
            cs, ce = expect(d, e, stop, _CONTROLS)
            controls = _decode_controls(d, cs, ce)
            _done(ce, stop, "controls")
        return LDAPMessage(message_id, op, controls)
    except BERError as exc:
        raise ProtocolError(str(exc), message_id) from None
    except RecursionError:  # pragma: no cover - the depth limit prevents this
        raise ProtocolError("message nested too deeply", message_id) from None


# ============================================================================ encoding


def _s(value: str, tag: int = _OCTETS) -> bytes:
    return tlv(tag, value.encode("utf-8"))


def _o(value: bytes, tag: int = _OCTETS) -> bytes:
    return tlv(tag, value)


def _enc_attribute(name: str, values: Iterable[bytes]) -> bytes:
    # Hot path (every search entry): inline the short-form headers of OCTET STRINGs.
    vals = b"".join([_H[0x200 | len(v)] + v if len(v) < 0x80 else tlv(4, v) for v in values])
    nb = name.encode("utf-8")
    body = (_H[0x200 | len(nb)] + nb if len(nb) < 0x80 else tlv(4, nb)) + tlv(_SET, vals)
    return tlv(_SEQ, body)


def _enc_attribute_list(attrs: Iterable[tuple[str, Iterable[bytes]]]) -> bytes:
    return tlv(_SEQ, b"".join([_enc_attribute(n, vs) for n, vs in attrs]))


def _enc_result_body(result: LDAPResult) -> bytes:
    body = encode_integer(int(result.code), _ENUM) + _s(result.matched_dn) + _s(result.message)
    if result.referral:
        body += tlv(_REFERRAL, b"".join([_s(u) for u in result.referral]))
    return body


def _enc_ava(attr: str, value: bytes) -> bytes:
    return _s(attr) + tlv(_OCTETS, value)


def _encode_filter(f: Filter, depth: int = 1) -> bytes:
    if depth > MAX_FILTER_DEPTH:
        raise ValueError(f"filter nested deeper than {MAX_FILTER_DEPTH}")
    if isinstance(f, Equality):
        return tlv(_F_EQ, _enc_ava(f.attr, f.value))
    if isinstance(f, Present):
        return _s(f.attr, _F_PRESENT)
    if isinstance(f, And):
        return tlv(_F_AND, b"".join([_encode_filter(x, depth + 1) for x in f.filters]))
    if isinstance(f, Or):
        return tlv(_F_OR, b"".join([_encode_filter(x, depth + 1) for x in f.filters]))
    if isinstance(f, Not):
        return tlv(_F_NOT, _encode_filter(f.filter, depth + 1))
    if isinstance(f, Substrings):
        parts: list[bytes] = []
        if f.initial is not None:
            parts.append(tlv(0x80, f.initial))
        parts.extend(tlv(0x81, a) for a in f.any)
        if f.final is not None:
            parts.append(tlv(0x82, f.final))
        if not parts:
            raise ValueError("substring filter needs at least one component")
        return tlv(_F_SUB, _s(f.attr) + tlv(_SEQ, b"".join(parts)))
    if isinstance(f, GreaterOrEqual):
        return tlv(_F_GE, _enc_ava(f.attr, f.value))
    if isinstance(f, LessOrEqual):
        return tlv(_F_LE, _enc_ava(f.attr, f.value))
    if isinstance(f, Approx):
        return tlv(_F_APPROX, _enc_ava(f.attr, f.value))
    if isinstance(f, Extensible):
        body = b""
        if f.matching_rule is not None:
            body += _s(f.matching_rule, 0x81)
        if f.attr is not None:
            body += _s(f.attr, 0x82)
        body += tlv(0x83, f.value)
        if f.dn_attributes:
            body += b"\x84\x01\xff"
        return tlv(_F_EXT, body)
    raise TypeError(f"not a filter: {f!r}")


def _enc_bind_request(op: BindRequest) -> bytes:
    body = encode_integer(op.version) + _s(op.name)
    if op.sasl_mechanism is not None:
        sasl = _s(op.sasl_mechanism)
        if op.sasl_credentials is not None:
            sasl += tlv(_OCTETS, op.sasl_credentials)
        body += tlv(0xA3, sasl)
    else:
        body += tlv(0x80, op.simple or b"")
    return tlv(OP_BIND_REQUEST, body)


def _enc_bind_response(op: BindResponse) -> bytes:
    body = _enc_result_body(op.result)
    if op.server_sasl_creds is not None:
        body += tlv(0x87, op.server_sasl_creds)
    return tlv(OP_BIND_RESPONSE, body)


def _enc_search_request(op: SearchRequest) -> bytes:
    body = b"".join(
        [
            _s(op.base),
            encode_integer(int(op.scope), _ENUM),
            encode_integer(int(op.deref), _ENUM),
            encode_integer(op.size_limit),
            encode_integer(op.time_limit),
            b"\x01\x01\xff" if op.types_only else b"\x01\x01\x00",
            _encode_filter(op.filter),
            tlv(_SEQ, b"".join([_s(a) for a in op.attributes])),
        ]
    )
    return tlv(OP_SEARCH_REQUEST, body)


def _enc_modify_request(op: ModifyRequest) -> bytes:
    changes = b"".join(
        [
            tlv(_SEQ, encode_integer(int(mod), _ENUM) + _enc_attribute(name, values))
            for mod, (name, values) in op.changes
        ]
    )
    return tlv(OP_MODIFY_REQUEST, _s(op.dn) + tlv(_SEQ, changes))


def _enc_modify_dn_request(op: ModifyDNRequest) -> bytes:
    body = _s(op.dn) + _s(op.new_rdn) + (b"\x01\x01\xff" if op.delete_old_rdn else b"\x01\x01\x00")
    if op.new_superior is not None:
        body += _s(op.new_superior, 0x80)
    return tlv(OP_MODIFY_DN_REQUEST, body)


def _enc_extended_request(op: ExtendedRequest) -> bytes:
    body = _s(op.name, 0x80)
    if op.value is not None:
        body += tlv(0x81, op.value)
    return tlv(OP_EXTENDED_REQUEST, body)


def _enc_extended_response(op: ExtendedResponse) -> bytes:
    body = _enc_result_body(op.result)
    if op.name is not None:
        body += _s(op.name, 0x8A)
    if op.value is not None:
        body += tlv(0x8B, op.value)
    return tlv(OP_EXTENDED_RESPONSE, body)


def _enc_intermediate(op: IntermediateResponse) -> bytes:
    body = b""
    if op.name is not None:
        body += _s(op.name, 0x80)
    if op.value is not None:
        body += tlv(0x81, op.value)
    return tlv(OP_INTERMEDIATE_RESPONSE, body)


def _result_encoder(tag: int) -> Callable[[Any], bytes]:
    def encode(op: Any) -> bytes:
        return tlv(tag, _enc_result_body(op.result))

    return encode


_OP_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    BindRequest: _enc_bind_request,
    BindResponse: _enc_bind_response,
    UnbindRequest: lambda op: b"\x42\x00",
    SearchRequest: _enc_search_request,
    SearchResultEntry: lambda op: tlv(
        OP_SEARCH_RESULT_ENTRY, _s(op.dn) + _enc_attribute_list(op.attributes)
    ),
    SearchResultDone: _result_encoder(OP_SEARCH_RESULT_DONE),
    SearchResultReference: lambda op: tlv(
        OP_SEARCH_RESULT_REFERENCE, b"".join([_s(u) for u in op.uris])
    ),
    ModifyRequest: _enc_modify_request,
    ModifyResponse: _result_encoder(OP_MODIFY_RESPONSE),
    AddRequest: lambda op: tlv(OP_ADD_REQUEST, _s(op.dn) + _enc_attribute_list(op.attributes)),
    AddResponse: _result_encoder(OP_ADD_RESPONSE),
    DelRequest: lambda op: _s(op.dn, OP_DEL_REQUEST),
    DelResponse: _result_encoder(OP_DEL_RESPONSE),
    ModifyDNRequest: _enc_modify_dn_request,
    ModifyDNResponse: _result_encoder(OP_MODIFY_DN_RESPONSE),
    CompareRequest: lambda op: tlv(
        OP_COMPARE_REQUEST, _s(op.dn) + tlv(_SEQ, _enc_ava(op.attr, op.value))
    ),
    CompareResponse: _result_encoder(OP_COMPARE_RESPONSE),
    AbandonRequest: lambda op: tlv(OP_ABANDON_REQUEST, integer_contents(op.message_id)),
    ExtendedRequest: _enc_extended_request,
    ExtendedResponse: _enc_extended_response,
    IntermediateResponse: _enc_intermediate,
}


def _enc_controls(controls: Sequence[Control]) -> bytes:
    parts = []
    for c in controls:
        body = _s(c.oid)
        if c.critical:
            body += b"\x01\x01\xff"
        if c.value is not None:
            body += tlv(_OCTETS, c.value)
        parts.append(tlv(_SEQ, body))
    return tlv(_CONTROLS, b"".join(parts))


def encode_message(msg: LDAPMessage) -> bytes:
    """Encode an LDAPMessage as definite-length BER."""
    encoder = _OP_ENCODERS.get(type(msg.op))
    if encoder is None:
        raise TypeError(f"not a protocol operation: {msg.op!r}")
    if not 0 <= msg.message_id <= MAX_INT:
        raise ValueError(f"message id {msg.message_id} out of range")
    body = encode_integer(msg.message_id) + encoder(msg.op)
    if msg.controls:
        body += _enc_controls(msg.controls)
    return tlv(_SEQ, body)


# ---------------------------------------------------------------------------- fast paths


def encode_search_entry(
    message_id: int, dn: str, attributes: Iterable[tuple[str, Sequence[bytes]]]
) -> bytes:
    """A complete SearchResultEntry PDU, without building message objects."""
    body = _s(dn) + _enc_attribute_list(attributes)
    return tlv(_SEQ, encode_integer(message_id) + tlv(OP_SEARCH_RESULT_ENTRY, body))


def encode_attribute(name: str, values: Iterable[bytes]) -> bytes:
    """One PartialAttribute (for callers that memoise encoded attributes)."""
    return _enc_attribute(name, values)


def encode_search_entry_pieces(message_id: int, dn: str, pieces: Iterable[bytes]) -> bytes:
    """A SearchResultEntry PDU from already-encoded PartialAttributes."""
    body = _s(dn) + tlv(_SEQ, b"".join(pieces))
    return tlv(_SEQ, encode_integer(message_id) + tlv(OP_SEARCH_RESULT_ENTRY, body))


def encode_search_entry_op(dn: str, pieces: Iterable[bytes]) -> bytes:
    """The protocolOp part of a SearchResultEntry from encoded PartialAttributes, for callers
    that memoise it and add the message id with ``encode_with_id``."""
    return tlv(OP_SEARCH_RESULT_ENTRY, _s(dn) + tlv(_SEQ, b"".join(pieces)))


def encode_with_id(message_id: int, op_part: bytes) -> bytes:
    """A complete LDAPMessage (no controls) around an encoded protocolOp."""
    return tlv(_SEQ, encode_integer(message_id) + op_part)


def encode_result(
    message_id: int, op_tag: int, code: int, matched_dn: str = "", message: str = ""
) -> bytes:
    """A complete PDU for a response that is just an LDAPResult (``op_tag``: ``OP_*``)."""
    if not matched_dn and not message:  # the common case: only the message id varies
        op_part = _BARE_RESULTS.get((op_tag, code))
        if op_part is None:
            op_part = tlv(op_tag, encode_integer(int(code), _ENUM) + b"\x04\x00\x04\x00")
            if len(_BARE_RESULTS) < 4096:
                _BARE_RESULTS[(op_tag, code)] = op_part
        return tlv(_SEQ, encode_integer(message_id) + op_part)
    body = encode_integer(int(code), _ENUM) + _s(matched_dn) + _s(message)
    return tlv(_SEQ, encode_integer(message_id) + tlv(op_tag, body))


# (protocolOp tag, result code) -> the encoded protocolOp of a result without texts
_BARE_RESULTS: dict[tuple[int, int], bytes] = {}


# ============================================================================ framing


class LDAPDecoder:
    """Sans-I/O framing of a stream of LDAPMessages.

    ``feed`` appends bytes; ``next_message`` returns one message per call or None when more
    bytes are needed. The buffer is consumed by moving an offset and compacted once per feed,
    so many small PDUs in one feed cost linear time.
    """

    def __init__(self, max_message_size: int = 10 * 1024 * 1024) -> None:
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_message(self) -> LDAPMessage | None:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if pos >= end:
            return None
        if buf[pos] != _SEQ:
            raise ProtocolError(f"LDAPMessage must be a SEQUENCE, got tag 0x{buf[pos]:02x}")
        try:
            head = peek_length(buf, pos, end)
        except BERError as exc:
            raise ProtocolError(str(exc)) from None
        if head is None:
            return None
        total = head[1]
        if total > self.max_message_size:
            raise ProtocolError(
                f"message of {total} bytes exceeds the limit of {self.max_message_size}"
            )
        if end - pos < total:
            return None
        self._pos = pos + total
        return decode_message(bytes(buf[pos : pos + total]))
