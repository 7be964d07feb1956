"""Password policy (``security.passwordPolicy``): quality rules, history and expiry.

Rules for this module: pure functions over cleartext passwords, stored values and times, no
I/O. Quality is checked on the cleartext before hashing; every refusal names the rule in its
message (``password policy: minLength: ...``). History values follow draft-behera's
``pwdHistory`` form ``<GeneralizedTime>#<syntax OID>#<length>#<stored value>``; times are
GeneralizedTime (``YYYYmmddHHMMSS[.ffffff]Z``, UTC).
"""

from __future__ import annotations

import calendar
import secrets
import string
import time
from collections.abc import Sequence

from oba.config import PasswordPolicyConfig

OCTET_STRING_OID = "1.3.6.1.4.1.1466.115.121.1.40"
PREFIX = "password policy: "


def quality_problem(policy: PasswordPolicyConfig, password: bytes) -> str | None:
    """The first rule ``password`` breaks, as a message naming it; None when it passes."""
    text = password.decode("utf-8", "replace")
    if len(text) < policy.minLength:
        return f"{PREFIX}minLength: the password must have at least {policy.minLength} characters"
    if policy.requireUppercase and not any(c.isupper() for c in text):
        return f"{PREFIX}requireUppercase: the password needs an upper-case letter"
    if policy.requireLowercase and not any(c.islower() for c in text):
        return f"{PREFIX}requireLowercase: the password needs a lower-case letter"
    if policy.requireDigit and not any(c.isdigit() for c in text):
        return f"{PREFIX}requireDigit: the password needs a digit"
    if policy.requireSpecial and all(c.isalnum() for c in text):
        return f"{PREFIX}requireSpecial: the password needs a character that is neither a " \
               "letter nor a digit"
    return None


def generate(policy: PasswordPolicyConfig | None, length: int = 8) -> bytes:
    """A random password that meets ``policy`` (letters and digits, a special if required)."""
    size = max(length, policy.minLength if policy is not None and policy.enabled else 0, 4)
    alphabet = string.ascii_letters + string.digits
    while True:
        chars = [secrets.choice(alphabet) for _ in range(size)]
        if policy is not None and policy.enabled and policy.requireSpecial:
            chars[secrets.randbelow(size)] = secrets.choice("!#%+-.:=@_")
        out = "".join(chars).encode()
        if policy is None or not policy.enabled or quality_problem(policy, out) is None:
            return out


def history_value(when: str, stored: bytes) -> bytes:
    return f"{when}#{OCTET_STRING_OID}#{len(stored)}#".encode() + stored


def history_stored(value: bytes) -> bytes:
    """The stored password inside a ``pwdHistory`` value (the value itself if not that form)."""
    parts = value.split(b"#", 3)
    return parts[3] if len(parts) == 4 else value


def new_history(policy: PasswordPolicyConfig, when: str, current: Sequence[bytes],
                history: Sequence[bytes]) -> list[bytes]:
    """``pwdHistory`` after a change: the replaced values first, at most ``historyCount``."""
    if policy.historyCount <= 0:
        return []
    fresh = [history_value(when, v) for v in current]
    return (fresh + list(history))[: policy.historyCount]


def parse_time(value: bytes | str) -> float | None:
    """Seconds since the epoch of a UTC GeneralizedTime, or None when it is not one."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if not text.endswith("Z"):
        return None
    body = text[:-1]
    whole, _, frac = body.partition(".")
    try:
        base = calendar.timegm(time.strptime(whole, "%Y%m%d%H%M%S"))
        return base + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return None


def format_time(now: float, fraction: bool = False) -> str:
    whole = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
    if fraction:
        return f"{whole}.{int((now % 1) * 1_000_000):06d}Z"
    return whole + "Z"


def expired(policy: PasswordPolicyConfig, changed: Sequence[bytes], now: float) -> bool:
    """Is the password older than ``maxAge`` (``changed``: the pwdChangedTime values)?"""
    if not changed or not policy.enabled:  # checked on every bind: cheapest tests first
        return False
    max_age = policy.maxAge.total_seconds()
    if max_age <= 0:
        return False
    when = parse_time(changed[0])
    return when is not None and now - when > max_age
