"""Tests of oba.protocol.codec: captured vectors, every operation, strictness, framing."""

from __future__ import annotations

import pytest

from oba.protocol.ber import tlv
from oba.protocol.codec import (
    MAX_FILTER_DEPTH,
    OP_ADD_RESPONSE,
    OP_SEARCH_RESULT_DONE,
    LDAPDecoder,
    ProtocolError,
    decode_message,
    encode_message,
    encode_result,
    encode_search_entry,
)
from oba.protocol.messages import (
    AbandonRequest,
    AddRequest,
    AddResponse,
    And,
    Approx,
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
    Scope,
    SearchRequest,
    SearchResultDone,
    SearchResultEntry,
    SearchResultReference,
    Substrings,
    UnbindRequest,
)
from oba.protocol.resultcodes import ResultCode

# PDUs captured from OpenLDAP 2.5 command-line tools (ldapsearch, ldapmodify, ldapwhoami,
# ldapcompare, ldappasswd) talking to a recording listener on loopback.
CAPTURED: list[tuple[str, LDAPMessage]] = [
    ("300c020101600702010304008000", LDAPMessage(1, BindRequest(3, "", simple=b""))),
    (
        "302c0201016027020103041a636e3d61646d696e2c64633d6578616d706c652c64633d636f6d80067365"
        "63726574",
        LDAPMessage(1, BindRequest(3, "cn=admin,dc=example,dc=com", simple=b"secret")),
    ),
    ("30050201034200", LDAPMessage(3, UnbindRequest())),
    (
        "30818a020102638184041164633d6578616d706c652c64633d636f6d0a01020a0100020100020100010100"
        "a054a315040b6f626a656374436c6173730406706572736f6ea11da40f0402636e300980016a81016e8201"
        "65a20aa3080403756964040178a91c810e6361736545786163744d617463688202636e8303466f6f8401ff"
        "300a0402636e04046d61696c",
        LDAPMessage(
            2,
            SearchRequest(
                "dc=example,dc=com",
                Scope.SUB,
                Deref.NEVER,
                0,
                0,
                False,
                And(
                    (
                        Equality("objectClass", b"person"),
                        Or((Substrings("cn", b"j", (b"n",), b"e"), Not(Equality("uid", b"x")))),
                        Extensible("caseExactMatch", "cn", b"Foo", True),
                    )
                ),
                ("cn", "mail"),
            ),
        ),
    ),
    (
        "304d020102632304000a01000a0100020100020100010100870b6f626a656374436c617373300304012b"
        "a02330210416312e322e3834302e3131333535362e312e342e3331390407300502010a0400",
        LDAPMessage(
            2,
            SearchRequest("", Scope.BASE, Deref.NEVER, 0, 0, False, Present("objectClass"), ("+",)),
            (Control("1.2.840.113556.1.4.319", False, bytes.fromhex("300502010a0400")),),
        ),
    ),
    (
        "3052020102664d0418636e3d666f6f2c64633d6578616d706c652c64633d636f6d303130140a0102300f"
        "04046d61696c310704056140622e6330190a01003014040b6465736372697074696f6e3105040368c3a9",
        LDAPMessage(
            2,
            ModifyRequest(
                "cn=foo,dc=example,dc=com",
                (
                    (ModOp.REPLACE, ("mail", (b"a@b.c",))),
                    (ModOp.ADD, ("description", ("hé".encode(),))),
                ),
            ),
        ),
    ),
    (
        "3052020103684d0418636e3d6e65772c64633d6578616d706c652c64633d636f6d30313017040b6f626a"
        "656374436c61737331080406706572736f6e300b0402636e310504036e657730090402736e310304014e",
        LDAPMessage(
            3,
            AddRequest(
                "cn=new,dc=example,dc=com",
                (("objectClass", (b"person",)), ("cn", (b"new",)), ("sn", (b"N",))),
            ),
        ),
    ),
    (
        "30490201046c440418636e3d6e65772c64633d6578616d706c652c64633d636f6d0408636e3d6e657765"
        "720101ff801b6f753d70656f706c652c64633d6578616d706c652c64633d636f6d",
        LDAPMessage(
            4,
            ModifyDNRequest(
                "cn=new,dc=example,dc=com", "cn=newer", True, "ou=people,dc=example,dc=com"
            ),
        ),
    ),
    (
        "30290201054a24636e3d6e657765722c6f753d70656f706c652c64633d6578616d706c652c64633d636f6d",
        LDAPMessage(5, DelRequest("cn=newer,ou=people,dc=example,dc=com")),
    ),
    (
        "301e02010277198017312e332e362e312e342e312e343230332e312e31312e33",
        LDAPMessage(2, ExtendedRequest("1.3.6.1.4.1.4203.1.11.3")),
    ),
    (
        "302a0201026e250418636e3d666f6f2c64633d6578616d706c652c64633d636f6d30090402736e0403466f6f",
        LDAPMessage(2, CompareRequest("cn=foo,dc=example,dc=com", "sn", b"Foo")),
    ),
    (
        "3043020102773e8017312e332e362e312e342e312e343230332e312e31312e3181233021801863"
        "6e3d666f6f2c64633d6578616d706c652c64633d636f6d82056e65777077",
        LDAPMessage(
            2,
            ExtendedRequest(
                "1.3.6.1.4.1.4203.1.11.1",
                bytes.fromhex(
                    "30218018636e3d666f6f2c64633d6578616d706c652c64633d636f6d82056e65777077"
                ),
            ),
        ),
    ),
    # A hand-checked response (RFC 4511 section 4.2.2 layout).
    ("300c02010161070a010004000400", LDAPMessage(1, BindResponse(LDAPResult(ResultCode.SUCCESS)))),
]


@pytest.mark.parametrize(("hexdata", "message"), CAPTURED)
def test_captured_vectors(hexdata: str, message: LDAPMessage) -> None:
    data = bytes.fromhex(hexdata)
    assert decode_message(data) == message
    assert encode_message(message) == data


RESULT = LDAPResult(ResultCode.NO_SUCH_OBJECT, "dc=example", "no such entry")
REFERRAL = LDAPResult(ResultCode.REFERRAL, "", "", ("ldap://a.example/", "ldap://b.example/"))

EVERY_OP = [
    BindRequest(3, "cn=x", simple=b"pw"),
    BindRequest(3, "", sasl_mechanism="EXTERNAL"),
    BindRequest(3, "", sasl_mechanism="DIGEST-MD5", sasl_credentials=b"\x00\x01"),
    BindResponse(LDAPResult(ResultCode.SASL_BIND_IN_PROGRESS), b"challenge"),
    BindResponse(REFERRAL),
    UnbindRequest(),
    SearchRequest(
        "ou=é",
        Scope.SUBORDINATE,
        Deref.ALWAYS,
        2**31 - 1,
        10,
        True,
        Or(
            (
                GreaterOrEqual("age", b"10"),
                LessOrEqual("age", b"\x00\xff"),
                Approx("cn", b"jon"),
                Extensible(None, None, b"v"),
                Extensible("2.5.13.2", None, b"v", True),
                Substrings("cn", None, (), b"z"),
                Substrings("cn", None, (b"a", b"b"), None),
                And(()),
                Or(()),
            )
        ),
        (),
    ),
    SearchResultEntry("cn=x", (("cn", (b"x", b"y")), ("jpegPhoto", (b"\xff\xd8",)), ("e", ()))),
    SearchResultReference(("ldap://h/dc=x??sub",)),
    SearchResultDone(RESULT),
    SearchResultDone(LDAPResult(12345)),
    ModifyRequest(
        "cn=x",
        (
            (ModOp.ADD, ("a", (b"1",))),
            (ModOp.DELETE, ("b", ())),
            (ModOp.REPLACE, ("c", (b"", b"2"))),
            (ModOp.INCREMENT, ("n", (b"-1",))),
        ),
    ),
    ModifyResponse(RESULT),
    AddRequest("cn=x", (("objectClass", (b"top",)),)),
    AddResponse(REFERRAL),
    DelRequest(""),
    DelResponse(RESULT),
    ModifyDNRequest("cn=x", "cn=y", False),
    ModifyDNResponse(RESULT),
    CompareRequest("cn=x", "cn", b"x"),
    CompareResponse(LDAPResult(ResultCode.COMPARE_TRUE)),
    AbandonRequest(0),
    AbandonRequest(2**31 - 1),
    ExtendedRequest("1.3.6.1.4.1.1466.20037"),
    ExtendedRequest("1.2.3", b""),
    ExtendedResponse(LDAPResult(0), "1.2.3", b"v"),
    ExtendedResponse(LDAPResult(2), None, b"v"),
    ExtendedResponse(REFERRAL, "1.2.3"),
    IntermediateResponse(),
    IntermediateResponse("1.3.6.1.4.1.4203.1.9.1.4", b"\x01"),
    IntermediateResponse(None, b"\x01"),
]


@pytest.mark.parametrize("op", EVERY_OP, ids=lambda op: type(op).__name__)
def test_every_operation_round_trips(op: object) -> None:
    controls = (Control("1.2.3", True, b"\x30\x00"), Control("2.16.840.1.113730.3.4.2"))
    for msg in (LDAPMessage(7, op), LDAPMessage(2**31 - 1, op, controls)):  # type: ignore[arg-type]
        data = encode_message(msg)
        assert decode_message(data) == msg
        assert decode_message(memoryview(data)) == msg


CAPTURED_SEARCH = bytes.fromhex(CAPTURED[3][0])


def test_decoded_enums_are_typed() -> None:
    msg = decode_message(encode_message(LDAPMessage(1, SearchResultDone(LDAPResult(32)))))
    assert isinstance(msg.op, SearchResultDone)
    assert msg.op.result.code is ResultCode.NO_SUCH_OBJECT
    req = decode_message(CAPTURED_SEARCH)
    assert isinstance(req.op, SearchRequest)
    assert req.op.scope is Scope.SUB and req.op.deref is Deref.NEVER


def test_fast_paths_match_generic_encoder() -> None:
    attrs = [("cn", [b"a", b"b"]), ("mail", [b"x" * 300])]
    assert encode_search_entry(9, "cn=é", attrs) == encode_message(
        LDAPMessage(9, SearchResultEntry("cn=é", (("cn", (b"a", b"b")), ("mail", (b"x" * 300,)))))
    )
    assert encode_result(4, OP_SEARCH_RESULT_DONE, 0) == encode_message(
        LDAPMessage(4, SearchResultDone(LDAPResult(0)))
    )
    assert encode_result(300, OP_ADD_RESPONSE, 68, "dc=x", "exists") == encode_message(
        LDAPMessage(300, AddResponse(LDAPResult(68, "dc=x", "exists")))
    )


def test_boolean_decodes_any_nonzero_as_true() -> None:
    data = bytearray(encode_message(LDAPMessage(1, ModifyDNRequest("a", "b", True))))
    data[data.index(b"\x01\x01\xff") + 2] = 0x01
    msg = decode_message(bytes(data))
    assert isinstance(msg.op, ModifyDNRequest) and msg.op.delete_old_rdn is True


# --------------------------------------------------------------------------- strictness


def _nested_not(depth: int) -> bytes:
    """A filter of ``depth`` levels (depth-1 NOTs around a present filter), built iteratively."""
    inner = b"\x87\x02cn"
    for _ in range(depth - 1):
        inner = tlv(0xA2, inner)
    return inner


def _search_with_filter(filter_bytes: bytes, message_id: int = 3) -> bytes:
    head = b"\x04\x00\x0a\x01\x00\x0a\x01\x00\x02\x01\x00\x02\x01\x00\x01\x01\x00"
    body = head + filter_bytes + b"\x30\x00"
    return tlv(0x30, bytes((0x02, 0x01, message_id)) + tlv(0x63, body))


def _deep_filter(depth: int) -> Filter:
    f: Filter = Present("cn")
    for _ in range(depth - 1):
        f = Not(f)
    return f


def test_filter_depth_limit() -> None:
    ok = decode_message(_search_with_filter(_nested_not(MAX_FILTER_DEPTH)))
    assert isinstance(ok.op, SearchRequest)
    assert ok.op.filter == _deep_filter(MAX_FILTER_DEPTH)
    for depth in (MAX_FILTER_DEPTH + 1, 1000, 5000):
        with pytest.raises(ProtocolError, match="deeper") as info:
            decode_message(_search_with_filter(_nested_not(depth)))
        assert info.value.message_id == 3


def test_encoder_refuses_bad_message_ids() -> None:
    for bad in (-1, 2**31):
        with pytest.raises(ValueError, match="message id"):
            encode_message(LDAPMessage(bad, UnbindRequest()))


def test_encoder_refuses_too_deep_filter() -> None:
    msg = LDAPMessage(1, SearchRequest("", 0, 0, 0, 0, False, _deep_filter(1000), ()))
    with pytest.raises(ValueError, match="deeper"):
        encode_message(msg)


def _msg(message_id: bytes, op: bytes, extra: bytes = b"") -> str:
    return tlv(0x30, tlv(0x02, message_id) + op + extra).hex()


_SEARCH_HEAD = b"\x04\x00\x0a\x01\x00\x0a\x01\x00\x02\x01\x00\x02\x01\x00\x01\x01\x00"


def _search(filter_bytes: bytes, head: bytes = _SEARCH_HEAD) -> bytes:
    return tlv(0x63, head + filter_bytes + b"\x30\x00")


_DONE = tlv(0x65, b"\x0a\x01\x00\x04\x00\x04\x00")

BAD_PDUS = {
    "empty": ("", None),
    "not a sequence": ("040100", None),
    "indefinite": ("30800201034200" + "0000", None),
    "trailing after message": (_msg(b"\x03", b"\x42\x00") + "00", None),
    "unknown op": (_msg(b"\x03", b"\x5f\x00"), 3),
    "unknown op 20": (_msg(b"\x03", tlv(0x74, b"")), 3),
    "negative id": (_msg(b"\xff", b"\x42\x00"), None),
    "id too big": (_msg(b"\x00\x80\x00\x00\x00", b"\x42\x00"), None),
    "id 9 octets": (_msg(b"\x00" * 8 + b"\x01", b"\x42\x00"), None),
    "empty id": (_msg(b"", b"\x42\x00"), None),
    "missing op": (_msg(b"\x03", b""), 3),
    "unbind with content": (_msg(b"\x03", b"\x42\x01\x00"), 3),
    "bad utf8 dn": (_msg(b"\x03", b"\x4a\x02\xff\xfe"), 3),
    "bad utf8 attr": (_msg(b"\x03", _search(b"\x87\x02\xc3\x28")), 3),
    "bind version 0": (_msg(b"\x01", tlv(0x60, b"\x02\x01\x00\x04\x00\x80\x00")), 1),
    "bind unknown auth": (_msg(b"\x01", tlv(0x60, b"\x02\x01\x03\x04\x00\x81\x00")), 1),
    "scope 4": (
        _msg(b"\x02", _search(b"\x87\x01a", b"\x04\x00\x0a\x01\x04" + _SEARCH_HEAD[5:])),
        2,
    ),
    "size limit negative": (
        _msg(
            b"\x02", _search(b"\x87\x01a", _SEARCH_HEAD[:8] + b"\x02\x01\xff" + _SEARCH_HEAD[11:])
        ),
        2,
    ),
    "bad filter tag": (_msg(b"\x02", _search(b"\xaa\x00")), 2),
    "not with two filters": (_msg(b"\x02", _search(tlv(0xA2, b"\x87\x01a\x87\x01b"))), 2),
    "empty substrings": (_msg(b"\x02", _search(tlv(0xA4, b"\x04\x01a\x30\x00"))), 2),
    "substring initial late": (
        _msg(b"\x02", _search(tlv(0xA4, b"\x04\x01a" + tlv(0x30, b"\x81\x01x\x80\x01y")))),
        2,
    ),
    "substring after final": (
        _msg(b"\x02", _search(tlv(0xA4, b"\x04\x01a" + tlv(0x30, b"\x82\x01x\x81\x01y")))),
        2,
    ),
    "extensible without value": (_msg(b"\x02", _search(tlv(0xA9, b"\x82\x01a"))), 2),
    "extensible out of order": (_msg(b"\x02", _search(tlv(0xA9, b"\x83\x01a\x82\x01a"))), 2),
    "bool too long": (_msg(b"\x01", tlv(0x6C, b"\x04\x00\x04\x00\x01\x02\x00\xff")), 1),
    "trailing in op": (_msg(b"\x01", tlv(0x6C, b"\x04\x00\x04\x00\x01\x01\xff\x05\x00")), 1),
    "trailing in attribute": (
        _msg(b"\x01", tlv(0x68, b"\x04\x00" + tlv(0x30, tlv(0x30, b"\x04\x01a\x31\x00\x05\x00")))),
        1,
    ),
    "modify op 4": (
        _msg(
            b"\x01",
            tlv(0x66, b"\x04\x00" + tlv(0x30, tlv(0x30, b"\x0a\x01\x04\x30\x05\x04\x01a\x31\x00"))),
        ),
        1,
    ),
    "controls wrong tag": (_msg(b"\x03", b"\x42\x00", b"\x30\x00"), 3),
    "control without oid": (_msg(b"\x03", b"\x42\x00", tlv(0xA0, b"\x30\x00")), 3),
    "stuff after controls": (_msg(b"\x03", b"\x42\x00", b"\xa0\x00\x05\x00"), 3),
    "empty referral": (_msg(b"\x01", tlv(0x65, b"\x0a\x01\x00\x04\x00\x04\x00\xa3\x00")), 1),
    "negative result code": (_msg(b"\x01", tlv(0x65, b"\x0a\x01\xff\x04\x00\x04\x00")), 1),
    "empty reference": (_msg(b"\x01", b"\x73\x00"), 1),
    "abandon id negative": (_msg(b"\x01", b"\x50\x01\xff"), 1),
    "extended request without name": (_msg(b"\x01", tlv(0x77, b"\x81\x00")), 1),
    "bind response bad tag": (_msg(b"\x01", tlv(0x61, _DONE[2:] + b"\x88\x00")), 1),
}


@pytest.mark.parametrize(("hexdata", "message_id"), BAD_PDUS.values(), ids=BAD_PDUS.keys())
def test_malformed_pdus_raise_protocol_error(hexdata: str, message_id: int | None) -> None:
    data = bytes.fromhex(hexdata)
    with pytest.raises(ProtocolError) as info:
        decode_message(data)
    assert info.value.message_id == message_id
    assert str(info.value) == info.value.message


def test_truncated_prefixes_of_every_operation() -> None:
    for op in EVERY_OP:
        msg = LDAPMessage(5, op, (Control("1.2", True, b"v"),))  # type: ignore[arg-type]
        data = encode_message(msg)
        for cut in range(len(data)):
            with pytest.raises(ProtocolError):
                decode_message(data[:cut])
            decoder = LDAPDecoder()
            decoder.feed(data[:cut])
            assert decoder.next_message() is None
            assert decoder.buffered() == cut


def test_inner_length_mismatch_is_rejected() -> None:
    # The DelRequest claims one byte fewer than the message holds.
    good = encode_message(LDAPMessage(1, DelRequest("cn=x")))
    bad = bytearray(good)
    bad[6] -= 1
    with pytest.raises(ProtocolError):
        decode_message(bytes(bad))


# --------------------------------------------------------------------------- framing


def test_decoder_frames_many_small_pdus_in_one_feed() -> None:
    msgs = [LDAPMessage(i, DelRequest(f"cn={i}")) for i in range(1, 2001)]
    stream = b"".join(encode_message(m) for m in msgs)
    decoder = LDAPDecoder()
    decoder.feed(stream)
    out = []
    while (m := decoder.next_message()) is not None:
        out.append(m)
    assert out == msgs
    assert decoder.buffered() == 0


def test_decoder_byte_by_byte() -> None:
    msgs = [LDAPMessage(i, op) for i, op in enumerate(EVERY_OP[:6], start=1)]  # type: ignore[arg-type]
    stream = b"".join(encode_message(m) for m in msgs)
    decoder = LDAPDecoder()
    out = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        while (m := decoder.next_message()) is not None:
            out.append(m)
    assert out == msgs
    assert decoder.next_message() is None


def test_decoder_rejects_oversize_from_header_alone() -> None:
    decoder = LDAPDecoder(max_message_size=1000)
    decoder.feed(b"\x30\x84\x00\x01\x00\x00")  # announces 65536 bytes, none sent
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.next_message()
    huge = LDAPDecoder()
    huge.feed(b"\x30\x88\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        huge.next_message()


def test_decoder_accepts_message_at_the_limit() -> None:
    data = encode_message(LDAPMessage(1, DelRequest("x" * 100)))
    decoder = LDAPDecoder(max_message_size=len(data))
    decoder.feed(data)
    assert decoder.next_message() == LDAPMessage(1, DelRequest("x" * 100))


def test_decoder_rejects_garbage_and_indefinite_early() -> None:
    for garbage in (b"GET / HTTP/1.1\r\n", b"\x30\x80", b"\x3f\x01"):
        decoder = LDAPDecoder()
        decoder.feed(garbage)
        with pytest.raises(ProtocolError):
            decoder.next_message()


def test_decoder_continues_after_a_bad_pdu_body() -> None:
    bad = bytes.fromhex("30050201035f00")
    good = encode_message(LDAPMessage(4, UnbindRequest()))
    decoder = LDAPDecoder()
    decoder.feed(bad + good)
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert info.value.message_id == 3
    assert decoder.next_message() == LDAPMessage(4, UnbindRequest())
