"""Password schemes: hashes made here and by independent code verify; wrong ones don't."""

import base64
import hashlib

import pytest

from oba.directory import password as pw


@pytest.mark.parametrize("scheme", ["SSHA", "SSHA256", "SSHA384", "SSHA512", "SHA", "SHA256",
                                    "SHA512", "SMD5", "MD5", "ARGON2"])
def test_hash_then_verify(scheme: str) -> None:
    stored = pw.hash_password(b"s3cret", scheme)
    assert stored.startswith(b"{" + scheme.encode() + b"}")
    assert pw.verify(b"s3cret", stored)
    assert not pw.verify(b"s3cret!", stored)
    assert pw.is_hashed(stored)


def test_salted_hashes_differ_per_salt() -> None:
    assert pw.hash_password(b"x", "SSHA") != pw.hash_password(b"x", "SSHA")
    assert pw.hash_password(b"x", "SSHA", salt=b"12345678") == pw.hash_password(
        b"x", "SSHA", salt=b"12345678")


def test_independent_ssha_value_verifies() -> None:
    # {SSHA} as slappasswd makes it: base64(sha1(password + salt) + salt)
    salt = b"\x01\x02\x03\x04"
    value = b"{SSHA}" + base64.b64encode(hashlib.sha1(b"alice123" + salt).digest() + salt)
    assert pw.verify(b"alice123", value)
    assert not pw.verify(b"alice124", value)


def test_cleartext_and_prefix_case() -> None:
    assert pw.verify(b"plain", b"plain")
    assert not pw.verify(b"plain", b"Plain")
    assert pw.verify(b"plain", b"{CLEARTEXT}plain")
    assert pw.verify(b"abc", b"{sha}" + base64.b64encode(hashlib.sha1(b"abc").digest()))
    assert not pw.is_hashed(b"plain")


@pytest.mark.parametrize("bad", [b"{SSHA}!!!", b"{SSHA}", b"{SHA}AAAA", b"{ARGON2}nonsense",
                                 b"{UNKNOWN}abc"])
def test_malformed_stored_values_never_verify(bad: bytes) -> None:
    assert not pw.verify(b"", bad)
    assert not pw.verify(b"abc", bad)


def test_unknown_scheme_is_an_error() -> None:
    with pytest.raises(ValueError):
        pw.hash_password(b"x", "ROT13")
