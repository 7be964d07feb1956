"""Account lockout (``security.rateLimit``): decisions over draft-behera attributes.

Rules for this module: pure functions, no I/O, no clock (``now`` is always given). State lives
on the entry: ``pwdFailureTime`` (one fractional GeneralizedTime per consecutive failed bind)
and ``pwdAccountLockedTime`` (when the lock began). An account is locked while
``now < locked + lockoutDuration``; failures older than ``lockoutDuration`` no longer count;
``maxAttempts`` counted failures lock it. The changes are made inside the write path: the
``lockout.failure`` / ``lockout.success`` SystemCommands (``oba.directory.commands``) carry
``now``, ``maxAttempts`` and ``lockoutDuration`` (the ``window``, in seconds) and
``oba.directory.apply`` calls ``record_failure`` / ``reset`` on the entry as stored in the
applying transaction, so concurrent binds on any connection, process or node are counted one
after the other, never read-modify-written over each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from oba.config import RateLimitConfig
from oba.directory.policy import format_time, parse_time

FAILURES = "pwdFailureTime"
LOCKED = "pwdAccountLockedTime"
REPLACE = 2

Changes = tuple[tuple[int, str, tuple[bytes, ...]], ...]
Attrs = Mapping[str, Sequence[bytes]]


def window(rate: RateLimitConfig) -> float:
    """``lockoutDuration`` in seconds: how long a lock lasts and a failure counts."""
    return rate.lockoutDuration.total_seconds()


def lock_end(attrs: Attrs, window: float) -> float | None:
    """When the lock on an entry ends (None: not locked at all, expired or not)."""
    values = attrs.get(LOCKED, ())
    if not values:
        return None
    began = parse_time(values[0])
    if began is None:
        return None
    return began + window


def locked(attrs: Attrs, window: float, now: float) -> bool:
    until = lock_end(attrs, window)
    return until is not None and now < until


def locked_until(rate: RateLimitConfig, attrs: Attrs) -> float | None:
    return lock_end(attrs, window(rate))


def is_locked(rate: RateLimitConfig, attrs: Attrs, now: float) -> bool:
    return locked(attrs, window(rate), now)


def counted_failures(attrs: Attrs, window: float, now: float) -> int:
    """The failures that still count towards a lock (none after an expired lock)."""
    values = attrs.get(FAILURES, ())
    if not values or (attrs.get(LOCKED) and not locked(attrs, window, now)):
        return 0
    n = 0
    for value in values:
        when = parse_time(value)
        if when is not None and now - when < window:
            n += 1
    return n


def failure_stamp(now: float) -> bytes:
    """The ``pwdFailureTime`` value of a failure at ``now``."""
    return format_time(now, fraction=True).encode()


def record_failure(attrs: Attrs, now: float, max_attempts: int, window: float
                   ) -> tuple[Changes, bool]:
    """The changes recording one more failed bind, and whether they lock the account.
    Called on a locked account it changes nothing (a lock is never extended by the binds it
    refuses)."""
    if locked(attrs, window, now):
        return (), True
    expired_lock = bool(attrs.get(LOCKED))
    kept: list[bytes] = []
    if not expired_lock:
        for value in attrs.get(FAILURES, ()):
            when = parse_time(value)
            if when is not None and now - when < window:
                kept.append(value)
    stamp = failure_stamp(now)
    while stamp in kept:  # two failures in the same microsecond
        now += 0.000001
        stamp = failure_stamp(now)
    kept.append(stamp)
    changes: list[tuple[int, str, tuple[bytes, ...]]] = [(REPLACE, FAILURES, tuple(kept))]
    lock = len(kept) >= max_attempts
    if lock:
        changes.append((REPLACE, LOCKED, (format_time(now).encode(),)))
    elif expired_lock:
        changes.append((REPLACE, LOCKED, ()))
    return tuple(changes), lock


def after_failure(rate: RateLimitConfig, attrs: Attrs, now: float) -> tuple[Changes, bool]:
    return record_failure(attrs, now, rate.maxAttempts, window(rate))


def reset(attrs: Attrs) -> Changes:
    """The changes clearing failures and any lock (empty when there is nothing to clear)."""
    return tuple((REPLACE, name, ()) for name in (FAILURES, LOCKED) if attrs.get(name))
