"""The request id of the operation being handled, shared by logs, Commands and audit records.

Rules for this module: a front end sets the id once per request (LDAP: per PDU in the
connection's dispatch; REST: per HTTP request, from ``X-Request-ID`` when the client sends a
sane one); everything that runs for that request — log lines, the Command's ``request_id``,
the audit record's ``requestId`` — reads it from here. asyncio tasks inherit it, so work
spawned for a request keeps its id. Outside a request the id is "".
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar

from oba import ids

_current: ContextVar[str] = ContextVar("oba_request_id", default="")
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
# ids are a random per-process prefix and a counter (``oba.ids``): unique, and cheap on the
# request path
new_id = ids.request_id


def current() -> str:
    """The id of the request being handled, or ""."""
    return _current.get()


def begin(given: str | None = None) -> str:
    """Start a request: use ``given`` when it is a sane id, else a fresh one; returns it."""
    rid = given if given and _SANE.match(given) else new_id()
    _current.set(rid)
    return rid


def current_or_new() -> str:
    """The current request's id, or a fresh one for work that belongs to no request."""
    return _current.get() or new_id()


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's id, or "-") to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get() or "-"
        return True
