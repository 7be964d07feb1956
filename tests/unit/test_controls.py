"""Tests of control and extended-operation values in oba.protocol.controls."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oba.protocol.controls import (
    CHANGE_ADD,
    CHANGE_ALL,
    CHANGE_MODDN,
    OID_MANAGE_DSA_IT,
    OID_PAGED_RESULTS,
    OID_WHO_AM_I,
    ControlError,
    EntryChangeNotification,
    PagedResults,
    PasswordModifyRequest,
    PasswordModifyResponse,
    PersistentSearch,
    SortKey,
    SortRequest,
    SortResponse,
    check_no_value,
)

texts = st.text(st.characters(codec="utf-8"), max_size=10)

VALUES = [
    PagedResults(10),
    PagedResults(0, b"\x00cookie"),
    PagedResults(2**31 - 1, b"x" * 300),
    SortRequest((SortKey("cn"),)),
    SortRequest((SortKey("cn", "caseExactOrderingMatch", True), SortKey("sn", None, True))),
    SortResponse(0),
    SortResponse(16, "cn"),
    PersistentSearch(),
    PersistentSearch(CHANGE_ADD, False, False),
    EntryChangeNotification(CHANGE_ADD),
    EntryChangeNotification(CHANGE_MODDN, "cn=old,dc=x", 42),
    EntryChangeNotification(CHANGE_MODDN, None, 7),
    PasswordModifyRequest(),
    PasswordModifyRequest("cn=foo,dc=example,dc=com", None, b"newpw"),
    PasswordModifyRequest("u:é", b"old", b"new"),
    PasswordModifyResponse(),
    PasswordModifyResponse(b"generated"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip(value: object) -> None:
    encoded = value.encode()  # type: ignore[attr-defined]
    assert type(value).decode(encoded) == value  # type: ignore[attr-defined]


def test_known_encodings() -> None:
    # What ldapsearch -E pr=10/noprompt sends.
    assert PagedResults(10).encode().hex() == "300502010a0400"
    assert PagedResults.decode(bytes.fromhex("300502010a0400")) == PagedResults(10, b"")
    # What ldappasswd -s newpw cn=foo,dc=example,dc=com sends.
    captured = bytes.fromhex(
        "30218018636e3d666f6f2c64633d6578616d706c652c64633d636f6d82056e65777077"
    )
    request = PasswordModifyRequest("cn=foo,dc=example,dc=com", None, b"newpw")
    assert PasswordModifyRequest.decode(captured) == request
    assert request.encode() == captured
    assert SortRequest((SortKey("cn", "r", True),)).encode().hex() == "300c300a0402636e8001728101ff"
    assert PersistentSearch(CHANGE_ALL, True, True).encode().hex() == "30090201" + "0f0101ff0101ff"


def test_absent_values() -> None:
    assert PasswordModifyRequest.decode(None) == PasswordModifyRequest()
    assert PasswordModifyResponse.decode(None) == PasswordModifyResponse()
    assert PasswordModifyResponse.decode(b"\x30\x00") == PasswordModifyResponse()
    check_no_value(OID_MANAGE_DSA_IT, None)
    check_no_value(OID_WHO_AM_I, None)
    with pytest.raises(ControlError):
        check_no_value(OID_MANAGE_DSA_IT, b"")
    with pytest.raises(ControlError, match="missing"):
        PagedResults.decode(None)
    assert OID_PAGED_RESULTS == "1.2.840.113556.1.4.319"


MALFORMED = {
    PagedResults: [
        b"",
        b"\x30\x00",
        b"\x30\x03\x02\x01\xff",
        b"\x30\x05\x02\x01\x05\x04\x00\x00",
        b"\x30\x07\x02\x01\x05\x04\x00\x05\x00",
        b"\x04\x00",
    ],
    SortRequest: [
        b"\x30\x00",
        b"\x30\x02\x30\x00",
        b"\x30\x06\x30\x04\x04\x01a\x82\x00",
        b"\x30\x05\x30\x03\x04\x01\xff",
    ],
    SortResponse: [b"\x30\x00", b"\x30\x03\x0a\x01\xff", b"\x30\x05\x0a\x01\x00\x81\x00"],
    PersistentSearch: [
        b"\x30\x00",
        b"\x30\x09\x02\x01\x00\x01\x01\xff\x01\x01\xff",
        b"\x30\x09\x02\x01\x10\x01\x01\xff\x01\x01\xff",
        b"\x30\x06\x02\x01\x01\x01\x01\xff",
    ],
    EntryChangeNotification: [
        b"\x30\x03\x0a\x01\x03",
        b"\x30\x00",
        b"\x30\x05\x0a\x01\x01\x05\x00",
    ],
    PasswordModifyRequest: [
        b"\x30\x02\x83\x00",
        b"\x30\x04\x82\x00\x80\x00",
        b"\x31\x00",
        b"\x30\x03\x80\x01\xff",
    ],
    PasswordModifyResponse: [b"\x30\x02\x81\x00", b"\x30\x04\x80\x00\x80\x00"],
}


@pytest.mark.parametrize(
    ("cls", "data"), [(cls, data) for cls, items in MALFORMED.items() for data in items]
)
def test_malformed_values_raise_control_error(cls: type, data: bytes) -> None:
    with pytest.raises(ControlError):
        cls.decode(data)  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_raise_only_control_error(data: bytes) -> None:
    for cls in MALFORMED:
        try:
            value = cls.decode(data)  # type: ignore[attr-defined]
        except ControlError:
            continue
        assert cls.decode(value.encode()) == value  # type: ignore[attr-defined]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.builds(SortKey, texts, st.none() | texts, st.booleans()), min_size=1, max_size=4),
    st.integers(0, 2**31 - 1),
    st.binary(max_size=20),
)
def test_generated_round_trips(keys: list[SortKey], size: int, cookie: bytes) -> None:
    assert SortRequest.decode(SortRequest(tuple(keys)).encode()) == SortRequest(tuple(keys))
    assert PagedResults.decode(PagedResults(size, cookie).encode()) == PagedResults(size, cookie)
