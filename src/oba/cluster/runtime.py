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
- Administration (any node: a follower forwards to the leader over the Raft transport, request
  ``{"op": "admin"}``): ``await add_member(id, addr)``, ``await remove_member(id)`` (removing
  the leader itself first hands leadership to the most up-to-date follower) and ``await
  transfer_leadership(to=0)``; each returns a dict for the REST answer and raises
  ``MembershipError`` (refused), ``NotLeader`` (no leader) or ``TimeoutError``.
- Start-up: the modules the app imports on the event loop AFTER the cluster has started (REST,
  web, TLS, ACL, audit: about a second of imports) are imported first in a worker thread
  (``PRELOAD``), so they cannot freeze a running Raft node (missed heartbeats, needless
  elections right after start-up).
- ``attach_node(server_node)``: cluster events (leader/term/membership changes, snapshots) go
  to ``server_node.audit.record(level, message, "raft", "", "", **fields)``; always to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
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
from oba.raft.tls import describe_trust, make_ssl_contexts
from oba.raft.types import ConfChange, Role
from oba.storage import Store

log = logging.getLogger("oba.raft")

STATUS_PERIOD = 0.02

ADMIN_TIMEOUT = 5.0
PRELOAD = ("oba.server.tls", "oba.acl.runtime", "oba.audit.store", "oba.rest.server",
           "oba.web.server")


def _preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the app reports real import errors itself, later
            log.debug("preloading %s failed: %s", name, exc)

__all__ = ["ClusterRuntime", "MembershipError", "NotLeader", "raft_data_dir"]


class MembershipError(Exception):
    """A membership or leadership request was refused (bad id, pending change...)."""


def raft_data_dir(config: Config) -> Path:
    c = config.cluster
    return Path(c.dataDir) if c.dataDir else Path(config.storage.dataDir) / "raft"


class ClusterRuntime:
    def __init__(self, config: Config, store: Store, apply_ctx: ApplyContext) -> None:
        c = config.cluster
        self.config = config
        server_ssl = client_ssl = None
        if c.raftTLSCert and c.raftTLSKey:
            # raises RaftTLSError (an OSError naming the key to fix): the node does not start
            server_ssl, client_ssl = make_ssl_contexts(c.raftTLSCert, c.raftTLSKey, c.raftTLSCA)
            log.info("raft TLS: %s", describe_trust(c.raftTLSCert, c.raftTLSCA))
        else:
            log.info("raft TLS: off (cluster.raftTLSCert/raftTLSKey not set): Raft traffic "
                     "between nodes is plain TCP")
        self.peers = {p.id: p.addr for p in c.peers}
        if len(self.peers) % 2 == 0:
            log.warning("cluster.peers lists %d members: an even number tolerates no more "
                        "failures than one member fewer; prefer 3, 5 or 7", len(self.peers))
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
        self.node.request_handlers["admin"] = self._serve_admin
        self.node.on_event = self._on_event
        self.node.on_fatal = self._on_fatal
        # set by the app: stop this process (the Raft loop died: serving on would be stale)
        self.on_fatal: Callable[[BaseException], None] | None = None
        self.server_node: Any = None
        self._bootstrap: asyncio.Task[None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self.status_file = raft_data_dir(config) / "status.json"

    async def start(self, bootstrap: Callable[[], Awaitable[None]] | None = None) -> None:
        if self.server_node is None:
            # until app.py calls attach_node(): the bootstrap coroutine is a method of the app,
            # which holds the server node (and so its audit sink)
            owner = getattr(bootstrap, "__self__", None)
            server_node = getattr(owner, "node", None)
            if server_node is not None:
                self.attach_node(server_node)
        await asyncio.to_thread(_preload)
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

    # ------------------------------------------------------------------ events

    def attach_node(self, server_node: Any) -> None:
        """Send cluster events to ``server_node.audit`` from now on."""
        self.server_node = server_node

    def _on_fatal(self, exc: BaseException) -> None:
        log.critical("the Raft loop of node %d died (%s): stopping this node", self.node.id,
                     exc)
        if self.on_fatal is not None:
            self.on_fatal(exc)

    def _on_event(self, level: str, message: str, fields: dict[str, Any]) -> None:
        audit = getattr(self.server_node, "audit", None)
        if audit is not None:
            audit.record(level, message, "raft", "", "", **fields)

    # ------------------------------------------------------------------ administration

    async def add_member(self, node_id: int, addr: str, timeout: float = ADMIN_TIMEOUT
                         ) -> dict[str, Any]:
        if node_id <= 0 or not addr or ":" not in addr:
            raise MembershipError("id must be > 0 and addr HOST:PORT")
        return await self._admin({"a": "add", "id": node_id, "addr": addr}, timeout)

    async def remove_member(self, node_id: int, timeout: float = ADMIN_TIMEOUT
                            ) -> dict[str, Any]:
        return await self._admin({"a": "remove", "id": node_id}, timeout)

    async def transfer_leadership(self, to: int = 0, timeout: float = ADMIN_TIMEOUT
                                  ) -> dict[str, Any]:
        return await self._admin({"a": "transfer", "to": to}, timeout)

    async def _admin(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run ``req`` on the leader: here, or forwarded to it (waiting for one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        node = self.node
        while (left := deadline - loop.time()) > 0:
            if node.is_leader():
                try:
                    return await self._admin_local(req, left)
                except NotLeader:
                    await node.wait_leader_change(min(left, 0.05))
                    continue
            lead = node.leader_id()
            if not lead or lead == node.id:
                await node.wait_leader_change(min(left, 0.05))
                continue
            try:
                resp = await node.transport.request(lead, {"op": "admin", "req": req}, left)
            except (ConnectionError, OSError):
                await node.wait_leader_change(min(max(0.0, deadline - loop.time()), 0.05))
                continue
            if "ok" in resp:
                return dict(resp["ok"])
            if resp.get("refused"):
                raise MembershipError(str(resp["refused"]))
            if resp.get("timeout"):
                raise TimeoutError(str(resp["timeout"]))
            await node.wait_leader_change(min(max(0.0, deadline - loop.time()), 0.05))
        if not node.leader_id():
            raise NotLeader(0)
        raise TimeoutError("the cluster did not complete the request in time")

    async def _serve_admin(self, frm: int, body: dict[str, Any]) -> dict[str, Any]:
        if not self.node.is_leader():
            return {"err": "not leader"}
        try:
            return {"ok": await self._admin_local(dict(body["req"]), ADMIN_TIMEOUT)}
        except MembershipError as exc:
            return {"refused": str(exc)}
        except TimeoutError as exc:
            return {"timeout": str(exc) or "timed out"}
        except NotLeader:
            return {"err": "not leader"}

    async def _admin_local(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        node = self.node
        action = str(req.get("a"))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if action == "transfer":
            to = int(req.get("to") or 0)
            if to and to not in node.core.voters:
                raise MembershipError(f"node {to} is not a voting member")
            if to == node.id:
                return {"leaderId": node.id, "leaderAddr": node.peers.get(node.id, ""),
                        "previousLeaderId": node.id, "elapsedMs": 0}
            try:
                lead = await node.transfer_leadership(to, timeout)
            except ValueError as exc:
                raise MembershipError(str(exc)) from None
            return {"leaderId": lead, "leaderAddr": node.peers.get(lead, ""),
                    "previousLeaderId": node.id,
                    "elapsedMs": round((loop.time() - t0) * 1000)}
        node_id = int(req.get("id") or 0)
        if action == "add":
            cc = ConfChange("add", node_id, str(req.get("addr") or ""))
            if node_id in node.core.voters:
                raise MembershipError(f"node {node_id} is already a member")
        elif action == "remove":
            cc = ConfChange("remove", node_id)
            if node_id not in node.core.voters:
                raise MembershipError(f"node {node_id} is not a member")
            if len(node.core.voters) == 1:
                raise MembershipError("cannot remove the last member")
            if node_id == node.id:
                # hand over first; the new leader then removes this node
                await node.transfer_leadership(0, timeout)
                raise NotLeader(node.leader_id())
        else:
            raise MembershipError(f"unknown request {action!r}")
        while True:
            try:
                index = await node.propose_conf_change(cc, max(0.0, t0 + timeout - loop.time()))
                break
            except ValueError as exc:
                # a new leader accepts no change before its first entry is applied: wait
                if (node.core.pending_conf_index <= node.core.applied
                        or loop.time() - t0 > timeout):
                    raise MembershipError(str(exc)) from None
                await asyncio.sleep(0.02)
        return {"op": cc.op, "id": node_id, "index": index,
                "peers": [{"id": p, "addr": a} for p, a in sorted(node.peers.items())]}

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
        """The spec's fields, plus ``lastIndex``, ``connected`` and, inside ``peers[]``,
        ``voter`` and on the leader each follower's ``state`` (probe|replicate|snapshot),
        ``matchIndex`` and ``lag`` (entries behind the leader's last index)."""
        st = self.node.status()
        lead = self.leader()
        prs = self.node.core.prs if st.role == Role.LEADER else {}
        peers: list[dict[str, Any]] = []
        for pid, addr in sorted(self.node.peers.items()):
            item: dict[str, Any] = {"id": pid, "addr": addr}
            pr = prs.get(pid)
            if pid == st.node_id and st.role == Role.LEADER:
                item.update(state="leader", matchIndex=st.last_index, lag=0)
            elif pr is not None:
                item.update(state=pr.state.name.lower(), matchIndex=pr.match,
                            lag=max(0, st.last_index - pr.match))
            peers.append(item)
        return {
            "enabled": True,
            "mode": "cluster",
            "nodeId": st.node_id,
            "state": "removed" if self.node.removed else st.role.label,
            "term": st.term,
            "leaderId": lead[0] if lead else 0,
            "leaderAddr": lead[1] if lead else "",
            "commitIndex": st.commit,
            "lastApplied": self.node.applied,
            "peers": peers,
            "lastIndex": st.last_index,
            "connected": sorted(p for p in self.node.peers if self.node.transport.connected(p)),
        }


def standalone_status(config: Config) -> dict[str, Any]:
    """What ``/cluster/status`` answers on a node that is not in cluster mode."""
    return {"enabled": False, "mode": "standalone", "nodeId": 0, "state": "leader", "term": 0,
            "leaderId": 0, "leaderAddr": "", "commitIndex": 0, "lastApplied": 0, "peers": []}
