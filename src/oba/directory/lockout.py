"""Account lockout (``security.rateLimit``): decisions over draft-behera attributes.

Rules for this module: pure functions, no I/O. State lives on the entry: ``pwdFailureTime``
(one fractional GeneralizedTime per consecutive failed bind) and ``pwdAccountLockedTime``
(when the lock began). An account is locked while ``now < locked + lockoutDuration``; failures
older than ``lockoutDuration`` no longer count; ``maxAttempts`` counted failures lock it. The
caller writes the changes these functions return through the Command path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from oba.config import RateLimitConfig
from oba.directory.policy import format_time, parse_time

FAILURES = "pwdFailureTime"
LOCKED = "pwdAccountLockedTime"
REPLACE = 2

Changes = tuple[tuple[int, str, tuple[bytes, ...]], ...]


def locked_until(rate: RateLimitConfig, attrs: Mapping[str, Sequence[bytes]]) -> float | None:
    """When the lock on an entry ends (None: not locked at all, expired or not)."""
    values = attrs.get(LOCKED, ())
    if not values:
        return None
    began = parse_time(values[0])
    if began is None:
        return None
    return began + rate.lockoutDuration.total_seconds()


def is_locked(rate: RateLimitConfig, attrs: Mapping[str, Sequence[bytes]], now: float) -> bool:
    until = locked_until(rate, attrs)
    return until is not None and now < until


def after_failure(rate: RateLimitConfig, attrs: Mapping[str, Sequence[bytes]],
                  now: float) -> tuple[Changes, bool]:
    """The changes recording one more failed bind, and whether they lock the account."""
    window = rate.lockoutDuration.total_seconds()
    expired_lock = bool(attrs.get(LOCKED)) and not is_locked(rate, attrs, now)
    kept: list[bytes] = []
    if not expired_lock:
        for value in attrs.get(FAILURES, ()):
            when = parse_time(value)
            if when is not None and now - when < window:
                kept.append(value)
    stamp = format_time(now, fraction=True).encode()
    while stamp in kept:  # two failures in the same microsecond
        now += 0.000001
        stamp = format_time(now, fraction=True).encode()
    kept.append(stamp)
    changes: list[tuple[int, str, tuple[bytes, ...]]] = [(REPLACE, FAILURES, tuple(kept))]
    lock = len(kept) >= rate.maxAttempts
    if lock:
        changes.append((REPLACE, LOCKED, (format_time(now).encode(),)))
    elif expired_lock:
        changes.append((REPLACE, LOCKED, ()))
    return tuple(changes), lock


def reset(attrs: Mapping[str, Sequence[bytes]]) -> Changes:
    """The changes clearing failures and any lock (empty when there is nothing to clear)."""
    return tuple((REPLACE, name, ()) for name in (FAILURES, LOCKED) if attrs.get(name))
