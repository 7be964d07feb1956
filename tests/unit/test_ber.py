"""Unit tests for the BER primitives in oba.protocol.ber."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oba.protocol import ber


@pytest.mark.parametrize(
    ("value", "contents"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "0080"),
        (255, "00ff"),
        (256, "0100"),
        (-1, "ff"),
        (-128, "80"),
        (-129, "ff7f"),
        (2**31 - 1, "7fffffff"),
        (2**63 - 1, "7fffffffffffffff"),
        (-(2**63), "8000000000000000"),
    ],
)
def test_integer_contents_are_minimal(value: int, contents: str) -> None:
    assert ber.integer_contents(value).hex() == contents
    encoded = ber.encode_integer(value)
    assert encoded[0] == ber.INTEGER
    tag, start, stop = ber.read_header(encoded, 0, len(encoded))
    assert (tag, stop) == (ber.INTEGER, len(encoded))
    assert ber.decode_integer(encoded, start, stop) == value


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integer_round_trip(value: int) -> None:
    encoded = ber.encode_integer(value, ber.ENUMERATED)
    tag, start, stop = ber.read_header(encoded, 0, len(encoded))
    assert tag == ber.ENUMERATED
    assert ber.decode_integer(encoded, start, stop) == value


@pytest.mark.parametrize("length", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**24 + 3])
def test_length_forms(length: int) -> None:
    encoded = ber.tlv(0x04, b"x" * length)
    tag, start, stop = ber.read_header(encoded, 0, len(encoded))
    assert tag == 0x04
    assert stop - start == length
    assert stop == len(encoded)
    if length < 128:
        assert start == 2
    assert ber.peek_length(encoded[:8], 0, 8) == (0x04, len(encoded))


def test_non_minimal_long_form_length_is_accepted() -> None:
    # OpenLDAP's liblber may send four-octet lengths; they are legal BER.
    data = bytes.fromhex("0484000000036162630000")
    assert ber.read_header(data, 0, len(data)) == (0x04, 6, 9)


@pytest.mark.parametrize(
    ("hexdata", "reason"),
    [
        ("", "truncated"),
        ("04", "truncated"),
        ("0480", "indefinite"),
        ("0405616263", "past the end"),
        ("0482", "truncated length"),
        ("1f0100", "multi-octet"),
        ("0489010203040506070809", "too long"),
    ],
)
def test_bad_headers(hexdata: str, reason: str) -> None:
    data = bytes.fromhex(hexdata)
    with pytest.raises(ber.BERError, match=reason):
        ber.read_header(data, 0, len(data))


def test_peek_length_needs_whole_header() -> None:
    assert ber.peek_length(b"\x30", 0, 1) is None
    assert ber.peek_length(b"\x30\x82\x01", 0, 3) is None
    assert ber.peek_length(b"\x30\x82\x01\x00", 0, 4) == (0x30, 260)
    with pytest.raises(ber.BERError):
        ber.peek_length(b"\x30\x80", 0, 2)


def test_boolean() -> None:
    assert ber.encode_boolean(True) == b"\x01\x01\xff"
    assert ber.encode_boolean(False) == b"\x01\x01\x00"
    assert ber.encode_boolean(True, 0x84) == b"\x84\x01\xff"
    assert ber.decode_boolean(b"\x01", 0, 1) is True
    assert ber.decode_boolean(b"\x00", 0, 1) is False
    with pytest.raises(ber.BERError):
        ber.decode_boolean(b"\x00\x00", 0, 2)
    with pytest.raises(ber.BERError):
        ber.decode_boolean(b"", 0, 0)


def test_integer_limits() -> None:
    with pytest.raises(ber.BERError):
        ber.decode_integer(b"", 0, 0)
    with pytest.raises(ber.BERError, match="8 octets"):
        ber.decode_integer(b"\x01" * 9, 0, 9)
    assert ber.decode_uint(b"\x7f\xff\xff\xff", 0, 4) == 2**31 - 1
    for bad in (b"\x00\x80\x00\x00\x00", b"\xff", b"\x01" * 9):
        with pytest.raises(ber.BERError):
            ber.decode_uint(bad, 0, len(bad))


def test_string_must_be_utf8() -> None:
    assert ber.decode_string("é".encode(), 0, 2) == "é"
    with pytest.raises(ber.BERError, match="UTF-8"):
        ber.decode_string(b"\xff\xfe", 0, 2)


def test_sequences_and_elements() -> None:
    seq = ber.encode_sequence([ber.encode_integer(5), ber.encode_string("ab")])
    assert seq.hex() == "3007020105040261" + "62"
    start, stop = ber.expect(seq, 0, len(seq), ber.SEQUENCE)
    elements = list(ber.iter_elements(seq, start, stop))
    assert [e[0] for e in elements] == [ber.INTEGER, ber.OCTET_STRING]
    assert ber.encode_set([b"\x05\x00"]) == b"\x31\x02\x05\x00"
    with pytest.raises(ber.BERError, match="expected tag"):
        ber.expect(seq, 0, len(seq), ber.SET)
    # An element running past its container is rejected.
    with pytest.raises(ber.BERError):
        list(ber.iter_elements(b"\x04\x05ab", 0, 4))
