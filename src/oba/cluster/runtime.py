"""Cluster mode wiring for one node: Raft log, transport, node and RaftReplicator, plus status.

Rules for this module: construction, lifecycle and read-only status; no Raft logic here.

API used by the REST layer and the LDAP server (all on the node's event loop):

- ``ClusterRuntime(config, store, apply_ctx)``; ``.replicator`` is the node's ``Replicator``.
- ``await start(bootstrap)`` / ``await stop()``: ``bootstrap`` (the app's "create the base
  entry" coroutine) runs once this node is the leader and has applied its whole log.
- ``cluster_status() -> dict``: exactly the spec's fields ``enabled, mode, nodeId, state, term,
  leaderId, leaderAddr, commitIndex, lastApplied, peers[{id, addr}]`` (``state`` is
  ``leader|follower|candidate``; ``leaderId`` 0 and ``leaderAddr`` "" when there is none), plus
  ``lastIndex`` and ``connected`` (peer ids with a live outbound connection).
- ``is_leader() -> bool`` (``GET /cluster/health``: 200 only when true).
- ``leader() -> tuple[int, str] | None`` (``GET /cluster/leader``; None -> 503).
- ``ready() -> bool``: leader and ``lastApplied >= commitIndex`` (``GET /cluster/ready``).
- ``<raft dataDir>/status.json``: ``cluster_status()`` (plus ``pid``), rewritten atomically
  within ``STATUS_PERIOD`` of any change (for ``oba cluster status`` and the process tests).
- ``await read_barrier()``: linearizable reads on the leader (ReadIndex); raises
  ``NotLeader`` on a follower and ``TimeoutError``; call it before a search when wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from oba.cluster.raft_replicator import RaftReplicator
from oba.config import Config
from oba.directory.apply import ApplyContext
from oba.raft.node import NodeConfig, NotLeader, RaftNode
from oba.raft.transport import make_ssl_contexts
from oba.raft.types import Role
from oba.storage import Store

log = logging.getLogger("oba.raft")

STATUS_PERIOD = 0.02

__all__ = ["ClusterRuntime", "NotLeader", "raft_data_dir"]


def raft_data_dir(config: Config) -> Path:
    c = config.cluster
    return Path(c.dataDir) if c.dataDir else Path(config.storage.dataDir) / "raft"


class ClusterRuntime:
    def __init__(self, config: Config, store: Store, apply_ctx: ApplyContext) -> None:
        c = config.cluster
        self.config = config
        server_ssl = client_ssl = None
        if c.raftTLSCert and c.raftTLSKey:
            server_ssl, client_ssl = make_ssl_contexts(c.raftTLSCert, c.raftTLSKey, c.raftTLSCA)
        self.peers = {p.id: p.addr for p in c.peers}
        self.replicator = RaftReplicator(
            store, apply_ctx, proposal_timeout=c.proposalTimeout.total_seconds(),
            snapshot_interval=c.snapshotInterval)
        self.node = RaftNode(
            NodeConfig(
                node_id=c.nodeID, raft_addr=c.raftAddr, peers=self.peers,
                data_dir=raft_data_dir(config),
                election_timeout=c.electionTimeout.total_seconds(),
                heartbeat_timeout=c.heartbeatTimeout.total_seconds(),
                server_ssl=server_ssl, client_ssl=client_ssl),
            self.replicator)
        self.replicator.attach(self.node)
        self._bootstrap: asyncio.Task[None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self.status_file = raft_data_dir(config) / "status.json"

    async def start(self, bootstrap: Callable[[], Awaitable[None]] | None = None) -> None:
        self.replicator.start()
        await self.node.start()
        self._status_task = asyncio.ensure_future(self._write_status())
        if bootstrap is not None:
            self._bootstrap = asyncio.ensure_future(self._bootstrap_when_leader(bootstrap))

    async def stop(self) -> None:
        for task in (self._bootstrap, self._status_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self.node.stop()
        await self.replicator.stop()

    async def _bootstrap_when_leader(self, bootstrap: Callable[[], Awaitable[None]]) -> None:
        while True:
            if self.ready():
                try:
                    await bootstrap()
                    return
                except Exception as exc:  # e.g. lost leadership half-way: try again
                    log.warning("bootstrap not done yet: %s", exc)
                    await asyncio.sleep(0.2)
            await asyncio.sleep(0.05)

    async def _write_status(self) -> None:
        """Keep ``<raft dir>/status.json`` current (read by ``oba cluster status`` and tests)."""
        last: dict[str, Any] | None = None
        tmp = self.status_file.with_suffix(".tmp")
        while True:
            st = self.cluster_status()
            if st != last:
                st["pid"] = os.getpid()
                tmp.write_text(json.dumps(st))
                os.replace(tmp, self.status_file)
                st.pop("pid")
                last = st
            await asyncio.sleep(STATUS_PERIOD)

    # ------------------------------------------------------------------ status

    def is_leader(self) -> bool:
        return self.node.is_leader()

    def leader(self) -> tuple[int, str] | None:
        lead = self.node.leader_id()
        if not lead:
            return None
        return lead, self.node.peers.get(lead, "")

    def ready(self) -> bool:
        st = self.node.status()
        return st.role == Role.LEADER and self.node.applied >= st.commit

    async def read_barrier(self, timeout: float | None = None) -> None:
        t = self.config.cluster.proposalTimeout.total_seconds() if timeout is None else timeout
        await self.node.read_barrier(t)

    def cluster_status(self) -> dict[str, Any]:
        st = self.node.status()
        lead = self.leader()
        return {
            "enabled": True,
            "mode": "cluster",
            "nodeId": st.node_id,
            "state": st.role.label,
            "term": st.term,
            "leaderId": lead[0] if lead else 0,
            "leaderAddr": lead[1] if lead else "",
            "commitIndex": st.commit,
            "lastApplied": self.node.applied,
            "peers": [{"id": pid, "addr": addr} for pid, addr in sorted(self.node.peers.items())],
            "lastIndex": st.last_index,
            "connected": sorted(p for p in self.node.peers if self.node.transport.connected(p)),
        }


def standalone_status(config: Config) -> dict[str, Any]:
    """What ``/cluster/status`` answers on a node that is not in cluster mode."""
    return {"enabled": False, "mode": "standalone", "nodeId": 0, "state": "leader", "term": 0,
            "leaderId": 0, "leaderAddr": "", "commitIndex": 0, "lastApplied": 0, "peers": []}
