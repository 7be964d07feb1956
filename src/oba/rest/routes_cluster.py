"""Cluster routes: status, health (a leader probe), readiness and the current leader.

Rules for this module: standalone nodes answer with fixed documents; in cluster mode the answers
come from ``node.cluster`` through ``cluster_status()`` (a dict of the reference's fields),
``is_leader()``, ``leader()`` (None, an ``(id, addr)`` pair, a mapping or an object with
``id``/``addr``) and ``ready()``. ``health`` is 200 only on the leader; ``ready`` 200 only when
ready. Health and ready are always public (load balancers). Status and leader are public too,
as the spec's ``curl http://localhost:8080/api/v1/cluster/status`` expects: they carry node
ids, Raft states, terms, log indexes and Raft addresses, no secret and no directory data;
``rest.clusterStatusAuth: true`` makes them ask for credentials like any other route (checked
per request, so a ``PATCH /config/rest`` takes effect at once).

Administration (root DN only, any node: a follower forwards to the leader over Raft):
``POST /members {id, addr}`` and ``DELETE /members/{id}`` (single-server changes, one at a
time) answer ``{op, id, index, peers[{id, addr}]}`` once the change is applied on the leader;
``POST /transfer-leadership {to?}`` answers ``{leaderId, leaderAddr, previousLeaderId,
elapsedMs}`` once the new leader is known. Refused -> 409 ``membership_refused``; no leader or
not done within the bound -> 503 ``no_leader`` / ``timeout``; standalone -> 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasicCredentials
from pydantic import BaseModel, Field

from oba.operations import Identity
from oba.rest import models as m
from oba.rest.auth import Admin, State, basic_scheme, bearer_scheme, current_identity
from oba.rest.errors import ERROR_RESPONSES, ApiError
from oba.rest.state import get_state

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


async def status_reader(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    basic: Annotated[HTTPBasicCredentials | None, Security(basic_scheme)],
) -> Identity | None:
    """Who reads ``/status`` and ``/leader``: nobody needs to say (None) unless
    ``rest.clusterStatusAuth`` is on, then the request's identity as on every other route."""
    if not get_state(request).node.config.rest.clusterStatusAuth:
        return None
    return await current_identity(request, bearer, basic)


StatusReader = Annotated[Identity | None, Depends(status_reader)]


def _status(cluster: Any) -> dict[str, Any]:
    return dict(cluster.cluster_status())


@router.get("/status", response_model=m.ClusterStatus, summary="Cluster membership and state")
async def status(state: State, who: StatusReader) -> dict[str, Any]:
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
async def leader(state: State, who: StatusReader) -> dict[str, Any]:
    cluster = state.node.cluster
    if cluster is None:
        raise ApiError(400, "not_cluster_mode", "this node runs standalone (cluster.enabled is "
                       "false)")
    found = _leader(cluster)
    if found is None:
        raise ApiError(503, "no_leader", "the cluster has no leader at the moment")
    leader_id, addr = found
    return {"leaderId": leader_id, "leaderAddr": addr, "isLeader": bool(cluster.is_leader())}


# ---------------------------------------------------------------- administration


class MemberIn(BaseModel):
    id: int = Field(gt=0, description="The new member's node id.")
    addr: str = Field(min_length=3, description="Its Raft address HOST:PORT.")


class TransferIn(BaseModel):
    to: int | None = Field(default=None, description="Target node id; absent: the most "
                           "up-to-date follower.")


def _cluster_or_400(state: State) -> Any:
    cluster = state.node.cluster
    if cluster is None:
        raise ApiError(400, "not_cluster_mode", "this node runs standalone (cluster.enabled is "
                       "false)")
    attach = getattr(cluster, "attach_node", None)
    if attach is not None and getattr(cluster, "server_node", None) is None:
        attach(state.node)
    return cluster


async def _run_admin(call: Any) -> dict[str, Any]:
    from oba.cluster.runtime import MembershipError, NotLeader

    try:
        return dict(await call)
    except MembershipError as exc:
        raise ApiError(409, "membership_refused", str(exc)) from None
    except NotLeader:
        raise ApiError(503, "no_leader", "the cluster has no leader at the moment") from None
    except TimeoutError as exc:
        raise ApiError(503, "timeout", str(exc) or "the cluster did not answer in time"
                       ) from None


@router.post("/members", summary="Add a voting member (single-server change)")
async def add_member(body: MemberIn, state: State, who: Admin) -> dict[str, Any]:
    cluster = _cluster_or_400(state)
    return await _run_admin(cluster.add_member(body.id, body.addr))


@router.delete("/members/{node_id}", summary="Remove a member (single-server change)")
async def remove_member(node_id: int, state: State, who: Admin) -> dict[str, Any]:
    cluster = _cluster_or_400(state)
    return await _run_admin(cluster.remove_member(node_id))


@router.post("/transfer-leadership", summary="Hand leadership to another member")
async def transfer_leadership(state: State, who: Admin, body: TransferIn | None = None
                              ) -> dict[str, Any]:
    cluster = _cluster_or_400(state)
    to = body.to if body is not None and body.to else 0
    return await _run_admin(cluster.transfer_leadership(to))
