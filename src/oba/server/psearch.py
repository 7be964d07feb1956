"""Persistent Search (draft-ietf-ldapext-psearch) with Entry Change Notification controls.

Rules for this module: a persistent search subscribes to the node's change hub (fed from the
apply path, so it sees every committed change whichever node took the write) *before* it sends
the initial result set, so no change falls in between. Each change whose type is in the
request's ``changeTypes`` mask is sent when the changed entry (the entry after the change; the
removed entry, as it was, for a delete) is within the search's base and scope, matches its
filter and is visible to the searcher, with the attributes the search asked for. With
``returnECs`` each entry carries an Entry Change Notification control (change type, previous DN
for a modDN, change number = the applied index). A modDN is sent as one only when the searcher
may read the entry at both its previous and its new DN; when they may not read the previous DN
it is sent as an ``add`` (no previous DN: the hidden name is never told), when they may not
read the new DN nothing is sent (as for an entry that leaves the search's scope). Decisions use
the ACL in force when the change is sent, so an ACL change counts from the next change.
The search follows its bind (``Operations.account_valid``, checked before every change and
every ``RECHECK`` seconds): once the entry the connection bound as is deleted or renamed,
disabled, or its credential epoch moves (password change, lock), the search ends with
strongerAuthRequired (8), and a new one on that bind is refused so at once. Otherwise it never
ends by itself: abandon, unbind or close end it silently (the task is cancelled). A consumer
that falls ``MAX_BACKLOG`` changes behind is ended with ``adminLimitExceeded``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from oba.directory.entry import Entry
from oba.events import ADD, MODDN, ChangeEvent
from oba.operations import OpError
from oba.protocol.controls import (
    OID_ENTRY_CHANGE_NOTIFICATION,
    EntryChangeNotification,
    PersistentSearch,
)
from oba.protocol.dn import DNError, parse_dn
from oba.protocol.messages import Control, Scope, SearchRequest
from oba.protocol.resultcodes import ResultCode
from oba.schema import InvalidValue, UndefinedAttribute

if TYPE_CHECKING:
    from oba.server.connection import AttributeSelector, LDAPConnection

MAX_BACKLOG = 10000
RECHECK = 1.0  # seconds between checks of the bound account while no change comes
STALE_BIND = "the bound identity is no longer valid (deleted, disabled, locked or its " \
    "password changed): bind again"
_OVERFLOW = None  # queue marker: the consumer fell behind


class PersistentSearchJob:
    def __init__(self, conn: LDAPConnection, mid: int, op: SearchRequest,
                 request: PersistentSearch, selector: AttributeSelector) -> None:
        self.conn = conn
        self.mid = mid
        self.op = op
        self.request = request
        self.selector = selector
        self.schema = conn.node.schema
        self.base_ndn = conn.ops.normalize_dn(op.base)
        self.scope = int(op.scope)
        # items on attributes the client may not search are Undefined, as in a search
        self.matcher = conn.ops.matcher_for(conn.identity, op.filter)
        self.queue: asyncio.Queue[ChangeEvent | None] = asyncio.Queue()
        self.behind = False

    def start(self) -> asyncio.Task[None]:
        """Subscribe now (synchronously) and return the task that serves the search."""
        hub = self.conn.node.events
        if hub is None:
            raise OpError(ResultCode.UNWILLING_TO_PERFORM, "change events are not available")
        unsubscribe = hub.subscribe(self._on_event)
        return asyncio.ensure_future(self._run(unsubscribe))

    def _on_event(self, event: ChangeEvent) -> None:
        if self.behind:
            return
        if self.queue.qsize() >= MAX_BACKLOG:
            self.behind = True
            self.queue.put_nowait(_OVERFLOW)
            return
        self.queue.put_nowait(event)

    def _account_valid(self) -> bool:
        conn = self.conn
        return conn.ops.account_valid(conn.identity, conn.account)

    async def _run(self, unsubscribe: object) -> None:
        conn = self.conn
        try:
            if not self._account_valid():
                conn.answer(self.mid, self.op, ResultCode.STRONGER_AUTH_REQUIRED, STALE_BIND)
                return
            if not self.request.changes_only:
                try:
                    await conn.stream_entries(self.mid, self.op, self.selector)
                except OpError as err:  # a missing or hidden base, a limit
                    conn.answer_error(self.mid, self.op, err)
                    return
            while True:
                idle = False
                try:
                    event = await asyncio.wait_for(self.queue.get(), RECHECK)
                except TimeoutError:
                    idle = True
                if not self._account_valid():  # before anything more is sent
                    conn.answer(self.mid, self.op, ResultCode.STRONGER_AUTH_REQUIRED,
                                STALE_BIND)
                    return
                if idle:
                    continue
                if event is None:
                    conn.answer(self.mid, self.op, ResultCode.ADMIN_LIMIT_EXCEEDED,
                                "persistent search fell behind the change stream")
                    return
                await conn.wait_writable()
                self._deliver(event)
        finally:
            if callable(unsubscribe):
                unsubscribe()

    def _deliver(self, event: ChangeEvent) -> None:
        entry = event.entry
        if not isinstance(entry, Entry) or not self._in_scope(entry.dn):
            return
        conn = self.conn
        seen = conn.ops.readable(conn.identity, entry)
        if seen is None:
            return
        change_type, previous = event.change_type, event.previous_dn
        if change_type == MODDN and previous and not self._may_read(previous):
            change_type, previous = ADD, None  # came into view: the old name stays hidden
        if not change_type & self.request.change_types or not self.matcher(entry):
            return
        controls: tuple[Control, ...] = ()
        if self.request.return_ecs:
            ecn = EntryChangeNotification(change_type, previous, event.index)
            controls = (Control(OID_ENTRY_CHANGE_NOTIFICATION, False, ecn.encode()),)
        with conn.node.store.read() as txn:
            conn.send(self.selector.encode(self.mid, seen, txn, controls))

    def _may_read(self, dn: str) -> bool:
        """May the searcher read the entry at ``dn`` (whether or not it is still there)?"""
        conn = self.conn
        access = conn.node.access
        if access.builtin or access.is_root(conn.identity.ndn):
            return True
        try:
            ndn = conn.ops.normalize_dn(dn)
        except OpError:
            return False
        return access.decide(conn.identity.ndn, ndn, "read").allowed

    def _in_scope(self, dn: str) -> bool:
        try:
            parsed = parse_dn(dn)
            ndn = self.schema.normalize_dn(parsed)
        except (DNError, InvalidValue, UndefinedAttribute):
            return False
        base = self.base_ndn
        if self.scope == Scope.BASE:
            return ndn == base
        if self.scope == Scope.ONE:
            if not parsed:
                return False
            try:
                return self.schema.normalize_dn(parsed[1:]) == base
            except (DNError, InvalidValue, UndefinedAttribute):
                return False
        below = not base or ndn.endswith("," + base)
        if self.scope == Scope.SUBORDINATE:
            return below and ndn != base
        return below or ndn == base
