"""Password storage schemes ({SSHA}, {SSHA256}, {SSHA512}, {SHA}, {SHA256}, {SHA512}, {ARGON2}).

Rules for this module: verification is constant-time where the scheme allows it; hashing takes
its salt from the caller-supplied ``salt`` (or os.urandom) so that proposers, not ``apply``, pick
randomness. Cleartext values (no ``{SCHEME}`` prefix, or ``{CLEARTEXT}``) verify by comparison.
Every function here may be slow (Argon2: milliseconds to hundreds of milliseconds, as its
parameters say): callers on the event loop run them in the bounded hashing pool
(``oba.directory.hashpool``). New ``{ARGON2}`` values are Argon2id with the ``Argon2Params``
given (``security.argon2``); a stored one verifies whatever its type (2i, 2id) and parameters,
which it carries itself. ``needs_rehash`` says when a stored value is not what the configured
scheme and parameters would make now (and the configured one is no weaker). ``dummy_hash``
gives what a bind for an unknown, locked or disabled account verifies against, so that it costs
what a wrong password costs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from functools import lru_cache

import argon2
from argon2.low_level import ARGON2_VERSION

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

# How hard a scheme is to attack offline, to decide whether a stored value should be re-made in
# the configured scheme (never from a stronger to a weaker one): cleartext, unsalted digests,
# salted digests, Argon2; within a kind, by digest size.
_STRENGTH: dict[str, int] = {
    "CLEARTEXT": 0,
    "MD5": 1, "SHA": 2, "SHA256": 3, "SHA384": 4, "SHA512": 5,
    "SMD5": 6, "SSHA": 7, "SSHA256": 8, "SSHA384": 9, "SSHA512": 10,
    "ARGON2": 11,
}


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """Argon2id cost parameters (``security.argon2``): passes over memory (t), memory in KiB
    (m) and lanes (p). The default is OpenLDAP's argon2 module's (slappw-argon2(5)):
    t=3, m=4096 KiB, p=1 (about 6 ms of CPU per hash on a 2020s server core)."""

    iterations: int = 3
    memory_kib: int = 4096
    parallelism: int = 1


DEFAULT_ARGON2 = Argon2Params()

_argon2 = argon2.PasswordHasher()  # verifies any {ARGON2} value: its parameters are in it


@lru_cache(maxsize=8)
def _hasher(params: Argon2Params) -> argon2.PasswordHasher:
    return argon2.PasswordHasher(time_cost=params.iterations, memory_cost=params.memory_kib,
                                 parallelism=params.parallelism, type=argon2.Type.ID)

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


def costly(value: bytes) -> bool:
    """Does verifying against the stored ``value`` cost real CPU ({ARGON2})? Digests and
    cleartext take microseconds (an unknown scheme fails at once)."""
    return value[:8].upper() == b"{ARGON2}"


def costly_scheme(scheme: str) -> bool:
    """Does hashing with ``scheme`` cost real CPU ({ARGON2})?"""
    return scheme.strip("{}").upper() == "ARGON2"


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


def hash_password(password: bytes, scheme: str = "ARGON2", salt: bytes | None = None,
                  argon2_params: Argon2Params = DEFAULT_ARGON2) -> bytes:
    """Hash ``password`` into a ``{SCHEME}...`` value (``{ARGON2}``: Argon2id with
    ``argon2_params``)."""
    scheme = scheme.strip("{}").upper()
    if scheme == "CLEARTEXT":
        return password
    if scheme == "ARGON2":
        hasher = _hasher(argon2_params)
        if salt is None:
            return b"{ARGON2}" + hasher.hash(password).encode("ascii")
        return b"{ARGON2}" + hasher.hash(password, salt=salt).encode("ascii")
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


def dummy_hash(scheme: str, argon2_params: Argon2Params = DEFAULT_ARGON2) -> bytes:
    """The hash of a random password that nobody knows, made exactly as ``hash_password``
    makes a new password's with ``scheme`` and ``argon2_params`` (same parameters, so
    verifying against it costs what verifying against a real one does)."""
    return hash_password(base64.b64encode(os.urandom(18)), scheme, argon2_params=argon2_params)


_REHASH_MEMO: dict[tuple[bytes, str, Argon2Params], bool] = {}
REHASH_MEMO_SIZE = 16384  # stored values remembered (every bind asks about its user's)


def needs_rehash(stored: bytes, scheme: str,
                 argon2_params: Argon2Params = DEFAULT_ARGON2) -> bool:
    """``_needs_rehash``, remembered per stored value (a bind asks on every attempt)."""
    key = (stored, scheme, argon2_params)
    known = _REHASH_MEMO.get(key)
    if known is None:
        if len(_REHASH_MEMO) >= REHASH_MEMO_SIZE:
            _REHASH_MEMO.clear()
        known = _REHASH_MEMO[key] = _needs_rehash(stored, scheme, argon2_params)
    return known


def _needs_rehash(stored: bytes, scheme: str, argon2_params: Argon2Params) -> bool:
    """Should ``stored`` (a value a password just verified against) be made again with
    ``scheme`` / ``argon2_params``? True when ``scheme`` is stronger than the stored one
    (cleartext < unsalted digests < salted digests < Argon2, larger digests above smaller
    ones), and for an ``{ARGON2}`` value whose type (2i, 2d) or cost parameters differ from
    the configured ones, more costly or less: they are the cost per bind the administrator
    chose. Never to a weaker scheme (``{SSHA}`` configured leaves ``{ARGON2}`` values alone);
    an unknown scheme or an unreadable value is left alone too."""
    want = scheme.strip("{}").upper()
    have, rest = split_scheme(stored)
    have = "CLEARTEXT" if have is None else have
    if have not in _STRENGTH or want not in _STRENGTH:
        return False
    if have != want:
        return _STRENGTH[want] > _STRENGTH[have]
    if want != "ARGON2":
        return False
    try:
        got = argon2.extract_parameters(rest.decode("ascii"))
    except (argon2.exceptions.InvalidHashError, UnicodeDecodeError, ValueError):
        return False
    return (got.type is not argon2.Type.ID or got.version != ARGON2_VERSION
            or got.time_cost != argon2_params.iterations
            or got.memory_cost != argon2_params.memory_kib
            or got.parallelism != argon2_params.parallelism)


def describe(stored: bytes) -> str:
    """A stored value's scheme and, for Argon2, its type and parameters, for the audit trail
    and logs (``ARGON2 argon2id m=4096,t=3,p=1``; ``SSHA``; ``CLEARTEXT``): never the hash."""
    scheme, rest = split_scheme(stored)
    if scheme is None:
        return "CLEARTEXT"
    if scheme != "ARGON2":
        return scheme
    try:
        got = argon2.extract_parameters(rest.decode("ascii"))
    except (argon2.exceptions.InvalidHashError, UnicodeDecodeError, ValueError):
        return scheme
    return (f"ARGON2 argon2{got.type.name.lower()} m={got.memory_cost},t={got.time_cost},"
            f"p={got.parallelism}")
