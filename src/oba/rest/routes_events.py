"""Server-Sent Events: GET /api/v1/events streams directory changes and audit records.

Rules for this module: each event carries ``id:`` = the applied (Raft) index of its command.
``event: change`` data is ``{index, type (add|delete|modify|moddn), dn, previousDN?, actor}``;
``event: audit`` data is one audit record plus ``index``. Every event that names entries goes
through ``oba.audit.visibility.Viewer`` (the rule shared with ``/logs`` and ``/activities``), a
fresh one per event so an ACL change counts at once: the administrator gets everything; anyone
else gets a change only when they may read the entry (a delete: as it was; a rename they see
from one side only comes as an ``add`` or a ``delete``), and only their own audit records about
entries they may read. A ``Last-Event-ID``
header resumes: changes after it are replayed from the ChangeHub when it still holds them,
otherwise ``event: reset`` tells the client to resync (audit records are not replayed: read
``/logs``). A comment line is sent every ``HEARTBEAT`` seconds. The stream ends when the client
disconnects or the node stops; a client too slow to drain its queue gets ``event: reset`` and
the stream ends. The stream follows its account (``Operations.account_valid``, checked before
every event and every ``RECHECK`` seconds): once the entry it authenticated as is deleted (or
renamed, or replaced by another entry at that DN), disabled, or its credential epoch moves (a
password change, a lock), it gets ``event: end`` and ends, as its other requests get 401.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from oba.audit.store import audit_store
from oba.audit.visibility import Viewer
from oba.events import ADD, DELETE, MODDN, MODIFY, ChangeEvent, ChangeHub, SystemEvent
from oba.operations import Identity
from oba.rest.auth import State, Who
from oba.rest.errors import ERROR_RESPONSES, ApiError
from oba.rest.state import RestState

router = APIRouter(prefix="/api/v1", tags=["events"], responses=ERROR_RESPONSES)

HEARTBEAT = 15.0
RECHECK = 1.0  # seconds between checks of the stream's account while no event comes
QUEUE_MAX = 4096
_TYPES = {ADD: "add", DELETE: "delete", MODIFY: "modify", MODDN: "moddn"}


def _frame(event: str, index: int | None, data: dict[str, Any]) -> str:
    head = f"id: {index}\n" if index is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


_END = _frame("end", None, {"reason": "the account this stream authenticated as is no longer "
                             "valid (deleted, disabled, locked or its password changed); "
                             "bind again"})


def _change_frame(state: RestState, who: Identity, ev: ChangeEvent) -> str | None:
    data: dict[str, Any] = {"index": ev.index, "type": _TYPES.get(ev.change_type, "modify"),
                            "dn": ev.dn, "actor": ev.actor}
    if ev.previous_dn:
        data["previousDN"] = ev.previous_dn
    seen = Viewer(state.ops, who).change(data)
    return None if seen is None else _frame("change", ev.index, seen)


def _audit_frames(state: RestState, who: Identity, ev: SystemEvent) -> list[str]:
    records = ev.payload.get("records")
    if ev.kind != "audit.append" or not isinstance(records, list):
        return []
    viewer = Viewer(state.ops, who)
    out = []
    for r in records:
        seen = viewer.record(r) if isinstance(r, dict) else None
        if seen is not None:
            out.append(_frame("audit", ev.index, {**seen, "index": ev.index}))
    return out


def _replay(state: RestState, hub: ChangeHub, last: int) -> list[ChangeEvent] | None:
    """Changes after ``last`` still held, or None when the client must resync."""
    sink = audit_store(state.node)
    floor = sink.events_floor if sink is not None else None
    if floor is None or last < floor:
        return None
    with state.node.store.read() as txn:
        if last > txn.applied_index():
            return None
    recent = hub.recent
    if recent.maxlen is not None and len(recent) >= recent.maxlen and \
            recent[0].index > last + 1:
        return None
    return [e for e in recent if e.index > last]


DESCRIPTION = """\
A Server-Sent Events stream (`text/event-stream`) of directory changes and audit records; it
needs a login (Bearer token or Basic) and never ends on its own. Each event's `id:` is the
applied (Raft) index of its change; send it back as `Last-Event-ID` to resume.

- `event: change`, data `{index, type, dn, previousDN?, actor}`, `type` one of `add`, `delete`,
  `modify`, `moddn`. The root DN gets every change. Anyone else only changes to entries they may
  read (a delete: the entry as it was): a rename seen from both sides is a `moddn` with
  `previousDN`; one whose old DN they may not read comes as an `add` of the new DN, one whose
  new DN they may not read as a `delete` of the old DN; `actor` is `""` unless it is the caller
  or they may read `modifiersName` on the entry.
- `event: audit`, data one audit record plus `index`: the root DN gets every record, anyone else
  only their own records that name entries they may read (see `GET /logs`).
- `event: reset`: the changes after `Last-Event-ID` are no longer held, or the client fell
  behind; reload the state (the stream ends after the latter).
- `event: end`, data `{reason}`: the account the stream authenticated as was deleted, renamed,
  disabled, locked or had its password changed; the stream ends (bind again).

A comment line (`: heartbeat`) is sent every 15 seconds. Every event follows the ACL in force
when it is sent.
"""


@router.get("/events", summary="Server-Sent Events: directory changes and audit records",
            description=DESCRIPTION, response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "An event stream (never ends on its own)."}})
async def events(
    request: Request, state: State, who: Who,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    hub = state.node.events
    if hub is None:
        raise ApiError(503, "unavailable", "the node is not running")
    queue: asyncio.Queue[ChangeEvent | SystemEvent] = asyncio.Queue(QUEUE_MAX)
    overflow = asyncio.Event()

    def push(ev: ChangeEvent | SystemEvent) -> None:
        try:
            queue.put_nowait(ev)
        except asyncio.QueueFull:
            overflow.set()

    unsubscribe = [hub.subscribe(push), hub.subscribe_system(push)]
    start: int | None = None
    if last_event_id is not None and last_event_id.strip():
        try:
            start = int(last_event_id.strip())
        except ValueError:
            start = -1
    replay = _replay(state, hub, start) if start is not None else []
    stopping: asyncio.Event | None = getattr(state.runtime, "stopping", None)
    ops = state.ops
    account = ops.account_stamp(who)  # as authenticated for this request

    async def stream() -> AsyncIterator[str]:
        sent = start if start is not None and start >= 0 else -1
        try:
            yield "retry: 2000\n: connected\n\n"
            if replay is None:
                yield _frame("reset", None, {"reason": "events after Last-Event-ID are no "
                                             "longer held; reload the state"})
            else:
                for ev in replay:
                    sent = max(sent, ev.index)
                    frame = _change_frame(state, who, ev)
                    if frame is not None:
                        yield frame
            beat = time.monotonic() + HEARTBEAT
            while True:
                if stopping is not None and stopping.is_set():
                    return
                if overflow.is_set():
                    yield _frame("reset", None, {"reason": "the client fell behind"})
                    return
                try:
                    item = await asyncio.wait_for(queue.get(), RECHECK)
                except TimeoutError:
                    if not ops.account_valid(who, account):
                        yield _END
                        return
                    if await request.is_disconnected():
                        return
                    if time.monotonic() >= beat:
                        beat = time.monotonic() + HEARTBEAT
                        yield ": heartbeat\n\n"
                    continue
                if not ops.account_valid(who, account):  # before anything more is sent
                    yield _END
                    return
                if isinstance(item, SystemEvent):
                    for frame in _audit_frames(state, who, item):
                        yield frame
                    continue
                if item.index <= sent:
                    continue  # already replayed
                sent = item.index
                change = _change_frame(state, who, item)
                if change is not None:
                    yield change
        finally:
            for unsub in unsubscribe:
                unsub()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
