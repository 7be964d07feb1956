"""Change events: every applied write, fanned out on the event loop to its subscribers.

Rules for this module: events come only from the apply path (the replicator's change
listeners), so every node of a cluster sees every committed change, whichever node took the
write. The replicator calls ``publish`` from its writer thread; subscribers are called on the
event loop, in applied-index order. A subscriber must not block; a slow consumer keeps its own
bounded queue (see ``Subscription``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from oba.cluster.replicator import Change
from oba.directory.commands import (
    AddCommand,
    DeleteCommand,
    ModifyCommand,
    ModifyDNCommand,
    SystemCommand,
)

log = logging.getLogger("oba.events")

ADD, DELETE, MODIFY, MODDN = 1, 2, 4, 8  # persistent-search changeType bits


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    index: int  # applied index (the Raft index in cluster mode): the change number
    change_type: int  # ADD | DELETE | MODIFY | MODDN
    dn: str  # the entry's DN after the change (before, for a delete)
    previous_dn: str | None  # for MODDN
    entry: object | None  # the entry after the change (None for a delete)
    actor: str
    request_id: str


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """A committed SystemCommand (ACL change, audit record, lockout...)."""

    index: int
    kind: str
    payload: dict[str, object]
    actor: str
    request_id: str


def event_from_change(change: Change) -> ChangeEvent | SystemEvent:
    cmd = change.command
    if isinstance(cmd, SystemCommand):
        return SystemEvent(change.index, cmd.kind, cmd.payload, cmd.actor, cmd.request_id)
    res = change.result
    entry = res.entry
    if isinstance(cmd, AddCommand):
        kind, prev = ADD, None
    elif isinstance(cmd, DeleteCommand):
        kind, prev = DELETE, None
    elif isinstance(cmd, ModifyCommand):
        kind, prev = MODIFY, None
    elif isinstance(cmd, ModifyDNCommand):
        kind, prev = MODDN, res.old_dn or cmd.dn
    else:  # pragma: no cover - every Command type is listed above
        raise TypeError(type(cmd).__name__)
    dn = getattr(entry, "dn", None) or cmd.dn
    return ChangeEvent(change.index, kind, dn, prev, entry, cmd.actor, cmd.request_id)


Subscriber = Callable[[ChangeEvent], None]
SystemSubscriber = Callable[[SystemEvent], None]


class ChangeHub:
    """Receives Changes from the writer thread and calls subscribers on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, history: int = 4096) -> None:
        self.loop = loop
        self.subscribers: list[Subscriber] = []
        self.system_subscribers: list[SystemSubscriber] = []
        self.recent: deque[ChangeEvent] = deque(maxlen=history)

    def publish(self, change: Change) -> None:
        """Called by the replicator (any thread) after a change is durable."""
        self.loop.call_soon_threadsafe(self._deliver, event_from_change(change))

    def _deliver(self, event: ChangeEvent | SystemEvent) -> None:
        if isinstance(event, SystemEvent):
            for ssub in list(self.system_subscribers):
                try:
                    ssub(event)
                except Exception:
                    log.exception("system event subscriber failed")
            return
        self.recent.append(event)
        for sub in list(self.subscribers):
            try:
                sub(event)
            except Exception:
                log.exception("change subscriber failed")

    def subscribe(self, sub: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it."""
        self.subscribers.append(sub)

        def unsubscribe() -> None:
            if sub in self.subscribers:
                self.subscribers.remove(sub)

        return unsubscribe

    def subscribe_system(self, sub: SystemSubscriber) -> Callable[[], None]:
        """Add a subscriber for committed SystemCommands; returns its remover."""
        self.system_subscribers.append(sub)

        def unsubscribe() -> None:
            if sub in self.system_subscribers:
                self.system_subscribers.remove(sub)

        return unsubscribe

    def since(self, index: int) -> list[ChangeEvent] | None:
        """Events after ``index`` still in memory, or None when some are no longer held."""
        if self.recent and self.recent[0].index > index + 1:
            return None
        return [e for e in self.recent if e.index > index]
