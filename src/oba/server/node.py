"""What every connection of a node shares: config, schema, store, replicator, policy, counters.

Rules for this module: state that outlives a connection lives here; per-connection state lives in
``connection.py``. Nothing here does I/O.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from oba import __version__
from oba.audit.sink import AuditSink, NullAudit
from oba.cluster.replicator import Replicator
from oba.config import Config
from oba.directory.access import AccessPolicy
from oba.schema import Schema
from oba.storage import Store

if TYPE_CHECKING:
    from oba.events import ChangeHub
    from oba.server.board import ConnectionBoard

SUBSCHEMA_DN = "cn=Subschema"
SUBSCHEMA_NDN = "cn=subschema"


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    total_connections: int = 0
    requests: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    results: Counter[int] = field(default_factory=Counter)
    # added for oba.metrics (H9): per (operation, result code) counts and latency histograms,
    # filled by ``observe`` (the LDAP connection calls it when it answers a request)
    op_results: Counter[tuple[str, int]] = field(default_factory=Counter)
    latency_buckets: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    latency_counts: dict[str, list[int]] = field(default_factory=dict)
    latency_sums: dict[str, float] = field(default_factory=dict)
    # event-loop stalls, measured by the runtime (``NodeRuntime.watch_loop``): wake-ups later
    # than the election timeout, their total lateness, and the largest lateness seen
    loop_stalls: int = 0
    loop_stalled_seconds: float = 0.0
    loop_lag_max: float = 0.0
    _open: int = 0
    # with listener workers: every process's open connections (``server.workers``)
    board: ConnectionBoard | None = field(default=None, repr=False)

    @property
    def connections(self) -> int:
        """Open LDAP connections of this process."""
        return self._open

    @connections.setter
    def connections(self, value: int) -> None:
        self._open = value
        if self.board is not None:
            self.board.publish(value)

    def open_connections(self) -> int:
        """Open LDAP connections of the whole node (every listener process)."""
        return self.board.total() if self.board is not None else self._open

    def observe(self, op: str, code: int, seconds: float) -> None:
        """Record one answered operation: its type, result code and duration."""
        self.op_results[(op, code)] += 1
        counts = self.latency_counts.get(op)
        if counts is None:
            counts = self.latency_counts[op] = [0] * (len(self.latency_buckets) + 1)
        counts[bisect_left(self.latency_buckets, seconds)] += 1  # first bound >= seconds
        self.latency_sums[op] = self.latency_sums.get(op, 0.0) + seconds

    def observe_loop_lag(self, late: float, threshold: float) -> bool:
        """Record one wake-up of the loop watcher ``late`` seconds late; True (a stall) when
        that is over ``threshold``."""
        self.loop_lag_max = max(self.loop_lag_max, late)
        if late <= threshold:
            return False
        self.loop_stalls += 1
        self.loop_stalled_seconds += late
        return True

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain data (a listener worker sends them to the writer)."""
        return {"connections": self.connections, "total": self.total_connections,
                "requests": self.requests, "operations": dict(self.operations),
                "results": dict(self.results),
                "op_results": [[op, code, n] for (op, code), n in self.op_results.items()],
                "latency_counts": self.latency_counts, "latency_sums": self.latency_sums}

    def merged(self, snapshots: list[dict[str, Any]]) -> Stats:
        """These counters plus the workers' ``snapshot``s (a new object)."""
        out = Stats(started=self.started, _open=self.connections,
                    total_connections=self.total_connections, requests=self.requests,
                    operations=Counter(self.operations), results=Counter(self.results),
                    op_results=Counter(self.op_results),
                    latency_counts={k: list(v) for k, v in self.latency_counts.items()},
                    latency_sums=dict(self.latency_sums), loop_stalls=self.loop_stalls,
                    loop_stalled_seconds=self.loop_stalled_seconds,
                    loop_lag_max=self.loop_lag_max)
        for snap in snapshots:
            out._open += int(snap["connections"])
            out.total_connections += int(snap["total"])
            out.requests += int(snap["requests"])
            out.operations.update({str(k): int(v) for k, v in snap["operations"].items()})
            out.results.update({int(k): int(v) for k, v in snap["results"].items()})
            for op, code, n in snap["op_results"]:
                out.op_results[(str(op), int(code))] += int(n)
            for op, counts in snap["latency_counts"].items():
                mine = out.latency_counts.setdefault(
                    op, [0] * (len(out.latency_buckets) + 1))
                for i, n in enumerate(counts):
                    mine[i] += int(n)
            for op, total in snap["latency_sums"].items():
                out.latency_sums[op] = out.latency_sums.get(op, 0.0) + float(total)
        return out


@dataclass
class Node:
    config: Config
    schema: Schema
    store: Store
    replicator: Replicator
    access: AccessPolicy
    base_dn: str
    base_ndn: str
    root_dn: str
    root_ndn: str
    root_password: bytes
    stats: Stats = field(default_factory=Stats)
    version: str = __version__
    events: ChangeHub | None = None  # set by the runtime once the loop runs
    cluster: Any = None  # cluster.runtime.ClusterRuntime in cluster mode, else None
    audit: AuditSink = field(default_factory=NullAudit)  # replaced by the audit store
    workers: Any = None  # oba.server.workers.WorkerPool in the writer when server.workers > 1

    def __post_init__(self) -> None:
        schema = self.schema

        @lru_cache(maxsize=4096)
        def is_operational(attr: str) -> bool:
            at = schema.attribute(attr)
            if at is None:
                return False
            return bool(at.operational or at.no_user_modification)

        self.is_operational = is_operational

    def all_stats(self) -> Stats:
        """This process's counters, plus the listener workers' (``server.workers``)."""
        if self.workers is None:
            return self.stats
        return self.stats.merged(self.workers.stats_snapshots())
