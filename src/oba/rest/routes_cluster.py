"""Cluster routes: status, health (a leader probe), readiness and the current leader.

Rules for this module: standalone nodes answer with fixed documents; in cluster mode the answers
come from ``node.cluster`` through ``cluster_status()`` (a dict of the reference's fields),
``is_leader()``, ``leader()`` (None, an ``(id, addr)`` pair, a mapping or an object with
``id``/``addr``) and ``ready()``. ``health`` is 200 only on the leader; ``ready`` 200 only when
ready. Status and leader need authentication; health and ready are public (load balancers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from oba.rest import models as m
from oba.rest.auth import State, Who
from oba.rest.errors import ERROR_RESPONSES, ApiError

router = APIRouter(prefix="/api/v1/cluster", responses=ERROR_RESPONSES, tags=["cluster"])
_STANDALONE = {"status": "ok", "mode": "standalone"}


def _leader(cluster: Any) -> tuple[Any, str] | None:
    found = cluster.leader()
    if found is None:
        return None
    if isinstance(found, tuple | list) and len(found) == 2:
        leader_id, addr = found
    elif isinstance(found, Mapping):
        leader_id = found.get("leaderId", found.get("id"))
        addr = found.get("leaderAddr", found.get("addr", ""))
    else:
        leader_id = getattr(found, "id", found)
        addr = getattr(found, "addr", "")
    if leader_id in (None, 0, ""):
        return None
    return leader_id, str(addr or "")


def _status(cluster: Any) -> dict[str, Any]:
    return dict(cluster.cluster_status())


@router.get("/status", response_model=m.ClusterStatus, summary="Cluster membership and state")
async def status(state: State, who: Who) -> dict[str, Any]:
    cluster = state.node.cluster
    if cluster is None:
        return {"enabled": False, "mode": "standalone"}
    return {"enabled": True, "mode": "cluster", **_status(cluster)}


@router.get("/health", response_model=m.ClusterHealth, summary="Leader probe (200 on the leader)",
            responses={503: {"model": m.ClusterHealth, "description": "Not the leader"}})
async def health(state: State) -> Any:
    cluster = state.node.cluster
    if cluster is None:
        return dict(_STANDALONE)
    st = _status(cluster)
    is_leader = bool(cluster.is_leader())
    out = {"status": "ok", "mode": "cluster", "nodeId": st.get("nodeId"),
           "state": st.get("state"), "isLeader": is_leader, "leaderId": st.get("leaderId")}
    return JSONResponse(out, status_code=200 if is_leader else 503)


@router.get("/ready", response_model=m.ClusterReady, summary="Readiness (200 when ready)",
            responses={503: {"model": m.ClusterReady, "description": "Not ready"}})
async def ready(state: State) -> Any:
    cluster = state.node.cluster
    if cluster is None:
        return {**_STANDALONE, "ready": True}
    st = _status(cluster)
    is_leader = bool(cluster.is_leader())
    commit = st.get("commitIndex", 0)
    applied = st.get("lastApplied", 0)
    ok = bool(cluster.ready())
    out = {"status": "ok" if ok else "not_ready", "mode": "cluster", "nodeId": st.get("nodeId"),
           "state": st.get("state"), "isLeader": is_leader, "leaderId": st.get("leaderId"),
           "commitIndex": commit, "lastApplied": applied,
           "caughtUp": applied >= commit, "ready": ok}
    return JSONResponse(out, status_code=200 if ok else 503)


@router.get("/leader", response_model=m.ClusterLeader, summary="The current leader")
async def leader(state: State, who: Who) -> dict[str, Any]:
    cluster = state.node.cluster
    if cluster is None:
        raise ApiError(400, "not_cluster_mode", "this node runs standalone (cluster.enabled is "
                       "false)")
    found = _leader(cluster)
    if found is None:
        raise ApiError(503, "no_leader", "the cluster has no leader at the moment")
    leader_id, addr = found
    return {"leaderId": leader_id, "leaderAddr": addr, "isLeader": bool(cluster.is_leader())}
