"""Simple Paged Results (RFC 2696) state: cookies bound to one connection.

Rules for this module: a cookie is an opaque random token naming server-side state held by the
connection that issued it: the entry ids still to return from one search (a snapshot taken when
the search ran, after sorting) and the request that produced them. A cookie is valid once: each
page consumes it and, if entries remain, a new one is issued. As in slapd, a cookie this
connection never issued (another connection's, or garbage) is answered with ``protocolError``
(2); one it issued that is spent, abandoned or evicted, or one presented with a changed request,
with ``unwillingToPerform`` (53). At most ``MAX_COOKIES``
searches are outstanding per connection; the oldest is dropped first. All state goes with the
connection (unbind, close).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from oba.protocol.resultcodes import ResultCode

MAX_COOKIES = 16
MAX_SPENT = 256  # spent cookies remembered, to tell "old" from "never issued here"
INVALID_COOKIE = "paged results cookie is invalid"
OLD_COOKIE = "paged results cookie is invalid or old"


@dataclass(frozen=True, slots=True)
class PageState:
    """What a cookie stands for."""

    request_key: tuple[object, ...]  # the search request, minus message id and page size
    remaining: tuple[int, ...]  # entry ids still to send, in order
    sent: int  # entries sent so far by this paged search (the client size limit counts them)


class PagingError(Exception):
    def __init__(self, code: ResultCode = ResultCode.PROTOCOL_ERROR,
                 message: str = INVALID_COOKIE) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _old() -> PagingError:
    return PagingError(ResultCode.UNWILLING_TO_PERFORM, OLD_COOKIE)


class CookieJar:
    """The outstanding paged searches of one connection."""

    def __init__(self, limit: int = MAX_COOKIES) -> None:
        self.limit = limit
        self.states: OrderedDict[bytes, PageState] = OrderedDict()
        self.spent: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.states)

    def issue(self, state: PageState) -> bytes:
        cookie = secrets.token_bytes(16)
        self.states[cookie] = state
        while len(self.states) > self.limit:
            self._spend(self.states.popitem(last=False)[0])
        return cookie

    def _spend(self, cookie: bytes) -> None:
        self.spent[cookie] = None
        while len(self.spent) > MAX_SPENT:
            self.spent.popitem(last=False)

    def take(self, cookie: bytes, request_key: tuple[object, ...]) -> PageState:
        """Consume ``cookie``; raises PagingError if it is unknown or the request changed."""
        state = self.states.pop(cookie, None)
        if state is None:
            raise _old() if cookie in self.spent else PagingError()
        self._spend(cookie)
        if state.request_key != request_key:
            raise _old()
        return state

    def drop(self, cookie: bytes) -> None:
        if self.states.pop(cookie, None) is not None:
            self._spend(cookie)

    def clear(self) -> None:
        self.states.clear()
        self.spent.clear()
