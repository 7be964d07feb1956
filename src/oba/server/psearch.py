"""Persistent Search (draft-ietf-ldapext-psearch) with Entry Change Notification controls.

Rules for this module: a persistent search subscribes to the node's change hub (fed from the
apply path, so it sees every committed change whichever node took the write) *before* it sends
the initial result set, so no change falls in between. Each change whose type is in the
request's ``changeTypes`` mask is sent when the changed entry (the entry after the change; the
removed entry for a delete) is within the search's base and scope, matches its filter and is
visible to the searcher, with the attributes the search asked for. With ``returnECs`` each entry
carries an Entry Change Notification control (change type, previous DN for a modDN, change
number = the applied index). The search never ends by itself: abandon, unbind or close end it
silently (the task is cancelled). A consumer that falls ``MAX_BACKLOG`` changes behind is ended
with ``adminLimitExceeded``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from oba.directory.entry import Entry
from oba.events import ChangeEvent
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

    async def _run(self, unsubscribe: object) -> None:
        conn = self.conn
        try:
            if not self.request.changes_only:
                await conn.stream_entries(self.mid, self.op, self.selector)
            while True:
                event = await self.queue.get()
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
        if not event.change_type & self.request.change_types:
            return
        entry = event.entry
        if not isinstance(entry, Entry) or not self._in_scope(entry.dn):
            return
        conn = self.conn
        seen = conn.ops.readable(conn.identity, entry)
        if seen is None or not self.matcher(entry):
            return
        controls: tuple[Control, ...] = ()
        if self.request.return_ecs:
            ecn = EntryChangeNotification(event.change_type, event.previous_dn, event.index)
            controls = (Control(OID_ENTRY_CHANGE_NOTIFICATION, False, ecn.encode()),)
        with conn.node.store.read() as txn:
            conn.send(self.selector.encode(self.mid, seen, txn, controls))

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
