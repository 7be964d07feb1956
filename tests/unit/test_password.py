"""Password schemes: hashes made here and by independent code verify; wrong ones don't."""

import base64
import hashlib

import argon2
import argon2.low_level
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


# ----------------------------------------------------------------- Argon2 parameters, rehash

FAST = pw.Argon2Params(iterations=1, memory_kib=1024, parallelism=1)


def _params(stored: bytes) -> argon2.Parameters:
    scheme, rest = pw.split_scheme(stored)
    assert scheme == "ARGON2"
    return argon2.extract_parameters(rest.decode())


def test_argon2_default_is_openldaps_module_default() -> None:
    # slappw-argon2(5): t=3, m=4096 KiB, p=1; Oba makes Argon2id
    got = _params(pw.hash_password(b"s3cret"))
    assert (got.type, got.time_cost, got.memory_cost, got.parallelism) == (
        argon2.Type.ID, 3, 4096, 1)


def test_argon2_uses_the_configured_parameters() -> None:
    stored = pw.hash_password(b"s3cret", "ARGON2", argon2_params=FAST)
    got = _params(stored)
    assert (got.time_cost, got.memory_cost, got.parallelism) == (1, 1024, 1)
    assert pw.verify(b"s3cret", stored) and not pw.verify(b"s3cret!", stored)


def test_dummy_hash_uses_the_configured_parameters() -> None:
    dummy = pw.dummy_hash("ARGON2", FAST)
    got = _params(dummy)
    assert (got.time_cost, got.memory_cost, got.parallelism) == (1, 1024, 1)
    assert pw.dummy_hash("SSHA", FAST).startswith(b"{SSHA}")


def test_other_parameters_and_types_still_verify_and_need_a_rehash() -> None:
    library_default = b"{ARGON2}" + argon2.PasswordHasher().hash("s3cret").encode()
    # what OpenLDAP's argon2 module makes (libargon2, Argon2i)
    slapd_style = b"{ARGON2}" + argon2.low_level.hash_secret(
        b"s3cret", b"0123456789abcdef", 3, 4096, 1, 32, argon2.low_level.Type.I)
    for stored in (library_default, slapd_style):
        assert pw.verify(b"s3cret", stored)
        assert pw.needs_rehash(stored, "{ARGON2}", pw.DEFAULT_ARGON2)
    made = pw.hash_password(b"s3cret")
    assert not pw.needs_rehash(made, "{ARGON2}", pw.DEFAULT_ARGON2)
    assert pw.needs_rehash(made, "{ARGON2}", FAST)  # cheaper parameters: re-made too


@pytest.mark.parametrize(("stored_scheme", "configured", "expected"), [
    ("SSHA", "ARGON2", True),
    ("SHA", "SSHA", True),
    ("CLEARTEXT", "SSHA", True),
    ("SSHA", "SSHA512", True),
    ("SSHA", "SSHA", False),
    ("ARGON2", "SSHA", False),  # never to a weaker scheme
    ("SSHA512", "SSHA", False),
    ("SSHA", "CLEARTEXT", False),
])
def test_rehash_only_towards_a_stronger_scheme(stored_scheme: str, configured: str,
                                               expected: bool) -> None:
    stored = pw.hash_password(b"s3cret", stored_scheme, argon2_params=FAST)
    assert pw.needs_rehash(stored, configured, FAST) is expected


def test_rehash_leaves_unknown_and_broken_values_alone() -> None:
    assert not pw.needs_rehash(b"{CRYPT}abc", "ARGON2")
    assert not pw.needs_rehash(b"{ARGON2}nonsense", "ARGON2")
    assert pw.needs_rehash(b"plain", "ARGON2")  # a cleartext value is upgraded


def test_describe_never_shows_the_hash() -> None:
    stored = pw.hash_password(b"s3cret", "ARGON2", argon2_params=FAST)
    assert pw.describe(stored) == "ARGON2 argon2id m=1024,t=1,p=1"
    assert pw.describe(pw.hash_password(b"x", "SSHA")) == "SSHA"
    assert pw.describe(b"plain") == "CLEARTEXT"
