"""The leader's view of one follower's log (etcd-io/raft's Progress), used only by ``core``.

Rules: ``match`` only ever grows from the follower's own durable acknowledgements; ``next`` is
where the next AppendEntries starts. PROBE sends one message per round trip, REPLICATE streams
up to ``max_inflight`` unacknowledged messages, SNAPSHOT waits for the runtime's SNAP_STATUS.
No I/O, no clock: ``last_heard`` is in core ticks.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    __slots__ = (
        "inflight",
        "last_heard",
        "match",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, now: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight: deque[int] = deque()  # last index carried by each unacked message
        self.max_inflight = max_inflight
        self.last_heard = now

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.probe_sent = False
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.probe_sent = False
        self.inflight.clear()

    def paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def sent(self, last: int, count: int) -> None:
        """Record an AppendEntries carrying ``count`` entries ending at ``last``."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last + 1
                self.inflight.append(last)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """An accepted append up to ``index``; False when it was stale."""
        updated = False
        if index > self.match:
            self.match = index
            self.probe_sent = False
            updated = True
        if index + 1 > self.next:
            self.next = index + 1
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """A rejected append at prevIndex ``rejected``; False when the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True
