"""Prometheus metrics of one node, collected at scrape time from the node's own state.

Rules for this module:
- Nothing is counted here: a ``NodeCollector`` reads ``Node.all_stats()`` (LDAP counters, latency
  histograms), the store (entries, size, applied index), the cluster runtime
  (``cluster_status()``) and optional counters other parts expose (``replicator.forwarded``,
  ``replicator.snapshots`` / ``snapshot_seconds``, ``audit.records``) when present; a metric
  whose source does not exist is simply absent.
- One ``CollectorRegistry`` per REST app (never the global one), with the process collector.
- Metric names are the contract of deploy/grafana-dashboard.json and docs: change both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from oba.server.node import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RAFT_STATES = ("leader", "follower", "candidate")

# LDAP protocol op class name -> the short label Grafana shows
OP_LABELS = {
    "BindRequest": "bind", "UnbindRequest": "unbind", "SearchRequest": "search",
    "ModifyRequest": "modify", "AddRequest": "add", "DelRequest": "delete",
    "ModifyDNRequest": "modrdn", "CompareRequest": "compare", "AbandonRequest": "abandon",
    "ExtendedRequest": "extended",
}


def op_label(name: str) -> str:
    return OP_LABELS.get(name, name.removesuffix("Request").lower())


def _number(obj: Any, *names: str) -> float | None:
    for name in names:
        value = getattr(obj, name, None)
        if callable(value):
            value = value()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


class NodeCollector(Collector):
    def __init__(self, node: Node, rest_requests: Callable[[], int] | None = None) -> None:
        self.node = node
        self.rest_requests = rest_requests

    def collect(self) -> Iterable[Metric]:
        yield from self._ldap()
        yield from self._store()
        yield from self._cluster()
        yield from self._extras()

    def _ldap(self) -> Iterable[Metric]:
        st = self.node.all_stats()
        ops = CounterMetricFamily("oba_ldap_operations", "LDAP requests received, by type.",
                                  labels=["type"])
        for name, n in sorted(st.operations.items()):
            ops.add_metric([op_label(name)], n)
        yield ops
        res = CounterMetricFamily("oba_ldap_results", "LDAP results sent, by result code.",
                                  labels=["code"])
        for code, n in sorted(st.results.items()):
            res.add_metric([str(code)], n)
        yield res
        both = CounterMetricFamily("oba_ldap_operation_results",
                                   "Answered LDAP operations by type and result code.",
                                   labels=["type", "code"])
        for (name, code), n in sorted(st.op_results.items()):
            both.add_metric([op_label(name), str(code)], n)
        yield both
        hist = HistogramMetricFamily("oba_ldap_operation_duration_seconds",
                                     "Time from request to final response, by type.",
                                     labels=["type"])
        for name, counts in sorted(st.latency_counts.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*st.latency_buckets, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            hist.add_metric([op_label(name)], buckets, st.latency_sums.get(name, 0.0))
        yield hist
        yield GaugeMetricFamily("oba_ldap_connections", "Open LDAP connections.",
                                value=st.connections)
        yield CounterMetricFamily("oba_ldap_connections_accepted", "LDAP connections accepted.",
                                  value=st.total_connections)
        yield CounterMetricFamily("oba_ldap_requests", "LDAP messages received.",
                                  value=st.requests)
        if self.rest_requests is not None:
            yield CounterMetricFamily("oba_rest_requests", "REST API requests.",
                                      value=self.rest_requests())
        yield CounterMetricFamily("oba_event_loop_stalls",
                                  "Event-loop wake-ups later than the election timeout.",
                                  value=st.loop_stalls)
        yield CounterMetricFamily("oba_event_loop_stalled_seconds",
                                  "Total lateness of those wake-ups.",
                                  value=st.loop_stalled_seconds)
        yield GaugeMetricFamily("oba_event_loop_lag_max_seconds",
                                "Largest event-loop wake-up lateness since the node started.",
                                value=st.loop_lag_max)
        yield GaugeMetricFamily("oba_uptime_seconds", "Seconds since the node started.",
                                value=max(0.0, time.time() - st.started))
        yield _info(self.node.version)

    def _store(self) -> Iterable[Metric]:
        store = self.node.store
        with store.read() as txn:
            entries, applied = txn.count(), txn.applied_index()
        info = store.env.info()
        stat = store.env.stat()
        used = (int(info["last_pgno"]) + 1) * int(stat["psize"])
        yield GaugeMetricFamily("oba_entries", "Directory entries stored.", value=entries)
        yield GaugeMetricFamily("oba_db_size_bytes", "Pages in use in the LMDB data file.",
                                value=used)
        yield GaugeMetricFamily("oba_db_map_size_bytes", "LMDB map size (the size limit).",
                                value=int(info["map_size"]))
        yield GaugeMetricFamily("oba_db_readers", "LMDB reader slots in use.",
                                value=int(info["num_readers"]))
        yield GaugeMetricFamily("oba_applied_index",
                                "Last write command applied to the store.", value=applied)

    def _cluster(self) -> Iterable[Metric]:
        cluster = self.node.cluster
        if cluster is None:
            return
        st: dict[str, Any] = cluster.cluster_status()
        commit, applied = int(st.get("commitIndex", 0)), int(st.get("lastApplied", 0))
        yield GaugeMetricFamily("oba_raft_term", "Current Raft term.", value=st.get("term", 0))
        state = GaugeMetricFamily("oba_raft_state", "1 for this node's Raft role.",
                                  labels=["state"])
        for name in RAFT_STATES:
            state.add_metric([name], 1 if st.get("state") == name else 0)
        yield state
        yield GaugeMetricFamily("oba_raft_commit_index", "Raft commit index.", value=commit)
        yield GaugeMetricFamily("oba_raft_applied_index", "Raft last applied index.",
                                value=applied)
        yield GaugeMetricFamily("oba_raft_last_index", "Last index in the Raft log.",
                                value=st.get("lastIndex", 0))
        yield GaugeMetricFamily("oba_raft_apply_lag", "Committed entries not yet applied.",
                                value=max(0, commit - applied))
        yield GaugeMetricFamily("oba_raft_peers_connected", "Peers with a live connection.",
                                value=len(st.get("connected", ())))
        yield GaugeMetricFamily("oba_raft_leader_id", "Node id of the known leader (0: none).",
                                value=st.get("leaderId", 0))

    def _extras(self) -> Iterable[Metric]:
        rep = self.node.replicator
        forwarded = _number(rep, "forwarded", "forwarded_writes")
        if forwarded is not None:
            yield CounterMetricFamily("oba_forwarded_writes",
                                      "Writes forwarded from this follower to the leader.",
                                      value=forwarded)
        snaps = _number(rep, "snapshots", "snapshot_count")
        if snaps is not None:
            yield CounterMetricFamily("oba_raft_snapshots", "Raft snapshots taken.",
                                      value=snaps)
        snap_s = _number(rep, "snapshot_seconds", "last_snapshot_seconds")
        if snap_s is not None:
            yield GaugeMetricFamily("oba_raft_snapshot_duration_seconds",
                                    "Duration of the last Raft snapshot.", value=snap_s)
        commits = _number(rep, "commits")
        if commits is not None:
            yield CounterMetricFamily("oba_write_transactions",
                                      "LMDB write transactions committed by the writer.",
                                      value=commits)
        audit = _number(self.node.audit, "records", "count", "written")
        if audit is not None:
            yield CounterMetricFamily("oba_audit_records", "Audit records written.",
                                      value=audit)


def _info(version: str) -> GaugeMetricFamily:
    g = GaugeMetricFamily("oba_info", "Constant 1 labelled with the Oba version.",
                          labels=["version"])
    g.add_metric([version], 1)
    return g


def registry_for(node: Node, rest_requests: Callable[[], int] | None = None
                 ) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node, rest_requests))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
