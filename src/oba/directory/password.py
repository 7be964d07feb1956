"""Password storage schemes ({SSHA}, {SSHA256}, {SSHA512}, {SHA}, {SHA256}, {SHA512}, {ARGON2}).

Rules for this module: verification is constant-time where the scheme allows it; hashing takes
its salt from the caller-supplied ``salt`` (or os.urandom) so that proposers, not ``apply``, pick
randomness. Cleartext values (no ``{SCHEME}`` prefix, or ``{CLEARTEXT}``) verify by comparison.
Every function here may be slow (Argon2: tens to hundreds of milliseconds): callers on the
event loop run them in a thread. ``dummy_hash`` gives what a bind for an unknown, locked or
disabled account verifies against, so that it costs what a wrong password costs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

import argon2

_DIGESTS: dict[str, tuple[str, bool]] = {
    # scheme -> (hashlib name, salted)
    "SHA": ("sha1", False),
    "SSHA": ("sha1", True),
    "SHA256": ("sha256", False),
    "SSHA256": ("sha256", True),
    "SHA384": ("sha384", False),
    "SSHA384": ("sha384", True),
    "SHA512": ("sha512", False),
    "SSHA512": ("sha512", True),
    "MD5": ("md5", False),
    "SMD5": ("md5", True),
}

SUPPORTED_SCHEMES = ("ARGON2", *_DIGESTS.keys(), "CLEARTEXT")

_argon2 = argon2.PasswordHasher()
_NEW = {algo: getattr(hashlib, algo) for algo, _ in _DIGESTS.values()}
_SIZES = {algo: new().digest_size for algo, new in _NEW.items()}


def split_scheme(stored: bytes) -> tuple[str | None, bytes]:
    """``b"{SSHA}abc"`` -> ``("SSHA", b"abc")``; no prefix -> ``(None, stored)``."""
    if stored.startswith(b"{"):
        end = stored.find(b"}")
        if end > 1:
            tag = stored[1:end]
            scheme = _SCHEME_NAMES.get(tag)
            if scheme is None:
                scheme = tag.decode("ascii", "replace").upper()
                if len(_SCHEME_NAMES) < 256:
                    _SCHEME_NAMES[tag] = scheme
            return scheme, stored[end + 1 :]
    return None, stored


_SCHEME_NAMES: dict[bytes, str] = {}  # b"ssha" -> "SSHA": the few spellings seen


def is_hashed(value: bytes) -> bool:
    """True when ``value`` carries a ``{SCHEME}`` prefix Oba knows (so it is stored as given)."""
    scheme, _ = split_scheme(value)
    return scheme is not None and scheme in SUPPORTED_SCHEMES


def verify(password: bytes, stored: bytes) -> bool:
    """Check ``password`` against one stored ``userPassword`` value."""
    scheme, rest = split_scheme(stored)
    if scheme is None or scheme == "CLEARTEXT":
        return hmac.compare_digest(password, rest if scheme else stored)
    if scheme == "ARGON2":
        try:
            return bool(_argon2.verify(rest.decode("ascii"), password))
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError,
                UnicodeDecodeError):
            return False
    digest = _DIGESTS.get(scheme)
    if digest is None:
        return False
    algo, salted = digest
    try:
        raw = binascii.a2b_base64(rest)  # what b64decode(validate=False) does
    except ValueError:
        return False
    size = _SIZES[algo]
    if salted:
        if len(raw) <= size:
            return False
        want, salt = raw[:size], raw[size:]
    else:
        if len(raw) != size:
            return False
        want, salt = raw, b""
    got = _NEW[algo](password + salt).digest()
    return hmac.compare_digest(got, want)


def hash_password(password: bytes, scheme: str = "ARGON2", salt: bytes | None = None) -> bytes:
    """Hash ``password`` into a ``{SCHEME}...`` value."""
    scheme = scheme.strip("{}").upper()
    if scheme == "CLEARTEXT":
        return password
    if scheme == "ARGON2":
        if salt is None:
            return b"{ARGON2}" + _argon2.hash(password).encode("ascii")
        return b"{ARGON2}" + _argon2.hash(password, salt=salt).encode("ascii")
    digest = _DIGESTS.get(scheme)
    if digest is None:
        raise ValueError(f"unsupported password scheme {{{scheme}}}")
    algo, salted = digest
    if salted:
        salt = salt if salt is not None else os.urandom(8)
    else:
        salt = b""
    raw = hashlib.new(algo, password + salt).digest() + salt
    return b"{" + scheme.encode("ascii") + b"}" + base64.b64encode(raw)


def dummy_hash(scheme: str) -> bytes:
    """The hash of a random password that nobody knows, made exactly as ``hash_password``
    makes a new password's with ``scheme`` (same parameters, so verifying against it costs
    what verifying against a real one does)."""
    return hash_password(base64.b64encode(os.urandom(18)), scheme)
