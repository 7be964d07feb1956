"""Cheap unique ids for the write path.

``command_id()`` names one Command (the Raft layer uses it to answer a retried proposal
with the first result): a random per-process prefix and a counter, 32 hex digits like
``uuid4().hex``. ``request_id()`` is the shorter id of a request in logs and audit records
(``reqctx``): part of the same prefix and its own counter. ``new_uuid()`` is a random
RFC 4122 version-4 UUID (as ``str(uuid.uuid4())``), the ``entryUUID`` of a new entry, made
4096 at a time from one ``os.urandom`` read. A forked child starts with a fresh prefix and
an empty pool, so parent and child never hand out the same id.
"""

from __future__ import annotations

import itertools
import os

_POOL: list[str] = []
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_prefix = os.urandom(8).hex()
_counter = itertools.count(1)
_requests = itertools.count(1)


def command_id() -> str:
    return f"{_prefix}{next(_counter):016x}"


def request_id() -> str:
    return f"{_prefix[:12]}-{next(_requests):x}"


def new_uuid() -> str:
    if not _POOL:
        raw = os.urandom(16 * 4096).hex()
        _POOL.extend(
            f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"
            for h in (raw[i : i + 32] for i in range(0, len(raw), 32)))
    return _POOL.pop()


def forget() -> None:
    """Drop what a forked child inherited (also run by ``os.register_at_fork``)."""
    global _prefix, _counter, _requests
    _POOL.clear()
    _prefix = os.urandom(8).hex()
    _counter = itertools.count(1)
    _requests = itertools.count(1)


os.register_at_fork(after_in_child=forget)
