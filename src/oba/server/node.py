"""What every connection of a node shares: config, schema, store, replicator, policy, counters.

Rules for this module: state that outlives a connection lives here; per-connection state lives in
``connection.py``. Nothing here does I/O.
"""

from __future__ import annotations

import time
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

SUBSCHEMA_DN = "cn=Subschema"
SUBSCHEMA_NDN = "cn=subschema"


@dataclass
class Stats:
    started: float = field(default_factory=time.time)
    connections: int = 0
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

    def observe(self, op: str, code: int, seconds: float) -> None:
        """Record one answered operation: its type, result code and duration."""
        self.op_results[(op, code)] += 1
        counts = self.latency_counts.get(op)
        if counts is None:
            counts = self.latency_counts[op] = [0] * (len(self.latency_buckets) + 1)
        i = 0
        for bound in self.latency_buckets:
            if seconds <= bound:
                break
            i += 1
        counts[i] += 1
        self.latency_sums[op] = self.latency_sums.get(op, 0.0) + seconds


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

    def __post_init__(self) -> None:
        schema = self.schema

        @lru_cache(maxsize=4096)
        def is_operational(attr: str) -> bool:
            at = schema.attribute(attr)
            if at is None:
                return False
            return bool(at.operational or at.no_user_modification)

        self.is_operational = is_operational
