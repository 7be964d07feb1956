"""Health, bind, public config, stats and activities.

Rules for this module: health, bind and config/public need no authentication; stats and
activities need any authenticated identity. Counters come from ``node.all_stats()`` (LDAP,
every listener process) plus the REST API's own. The directory-wide parts of ``/stats``
(``storage``: entry count and database size; ``security``: locked and disabled accounts;
``operations``: writes by type) count entries the caller may not read, so they go to the root
DN only, or to everyone under the built-in policy (which lets everyone read every entry);
anyone else gets the server's own fields only. Activities are audit records as
``oba.audit.visibility.Viewer`` lets the caller see them (the administrator: all; anyone else:
their own), an empty list while the audit store is off.
"""

from __future__ import annotations

import os
import platform
import resource
import threading
import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from oba.audit.query import recent_activities
from oba.audit.visibility import Viewer
from oba.config import format_duration
from oba.operations import Identity, OpError
from oba.protocol.filter import parse_filter
from oba.protocol.messages import Scope
from oba.rest import models as m
from oba.rest.auth import State, Who, issue_token, refuse_password_in_clear
from oba.rest.errors import ERROR_RESPONSES, ApiError, from_op_error
from oba.rest.state import RestState, close_iter, rfc3339

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)


def health_fields(state: RestState) -> dict[str, Any]:
    stats = state.node.all_stats()
    up = max(0, int(time.time() - stats.started))
    return {
        "status": "ok",
        "version": state.node.version,
        "uptime": format_duration(timedelta(seconds=up)),
        "uptimeSecs": up,
        "startTime": rfc3339(stats.started),
        "connections": stats.connections,
        "requests": stats.requests + state.requests,
    }


@router.get("/health", response_model=m.HealthResponse, tags=["public"],
            summary="Liveness and basic counters")
async def health(state: State) -> dict[str, Any]:
    return health_fields(state)


@router.post("/auth/bind", response_model=m.BindResponse, tags=["public"],
             summary="Check a DN and password; returns a token")
async def bind(req: m.BindRequest, state: State, request: Request) -> dict[str, Any]:
    state.operations["binds"] += 1
    refuse_password_in_clear(request, state)
    try:
        who = await state.ops.bind(req.dn, req.password.encode("utf-8"), "rest")
    except OpError as exc:
        if exc.code in (34, 49, 53):
            raise ApiError(401, "invalid_credentials", "invalid DN or password",
                           int(exc.code)) from None
        raise from_op_error(exc) from None
    token, expires = issue_token(state, who.dn)
    return {"success": True, "token": token, "expiresAt": expires}


@router.get("/config/public", response_model=m.PublicConfigResponse, tags=["public"],
            summary="What a client needs before binding")
async def public_config(state: State) -> dict[str, Any]:
    return {"baseDN": state.node.base_dn}


def _count_disabled(state: RestState) -> int:
    node = state.node
    if not node.base_dn:
        return 0
    root = Identity(node.root_dn, node.root_ndn)
    try:
        it = state.ops.search(root, node.base_dn, Scope.SUB, parse_filter("(obaDisabled=TRUE)"))
        try:
            return sum(1 for _ in it)
        finally:
            close_iter(it)
    except OpError:
        return 0


def sees_whole_tree(state: RestState, who: Identity) -> bool:
    """May ``who`` learn counts over the whole directory? The root DN; anyone under the
    built-in policy, where every entry is readable by everyone."""
    access = state.node.access
    return access.builtin or access.is_root(who.ndn)


@router.get("/stats", response_model=m.StatsResponse, response_model_exclude_none=True,
            tags=["monitoring"], summary="Server, storage and operation statistics",
            description="`storage`, `security` and `operations` count the whole directory: "
            "they are sent to the root DN only (to everyone under the built-in access policy, "
            "where every entry is readable by everyone); other callers get the other fields.")
async def stats(state: State, who: Who) -> dict[str, Any]:
    system = {
        "pid": os.getpid(),
        "python": platform.python_version(),
        "threads": threading.active_count(),
        "maxRSSBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "numCPU": os.cpu_count() or 1,
    }
    if not sees_whole_tree(state, who):
        return {**health_fields(state), "timezone": time.strftime("%Z") or "UTC",
                "system": system}
    store = state.node.store
    with store.read() as txn:
        entries = txn.count()
    info = store.env.info()
    st = store.env.stat()
    used_pages = int(info.get("last_pgno", 0)) + 1
    ops = dict(state.operations)
    for key in ("binds", "searches", "adds", "modifies", "deletes", "compares"):
        ops.setdefault(key, 0)
    for name, count in state.node.all_stats().operations.items():
        ops[f"ldap.{name}"] = int(count)
    return {
        **health_fields(state),
        "timezone": time.strftime("%Z") or "UTC",
        "storage": {
            "entryCount": entries,
            "databaseSizeBytes": used_pages * int(st["psize"]),
            "mapSizeBytes": int(info["map_size"]),
            "pageSize": int(st["psize"]),
            "usedPages": used_pages,
            "readers": int(info.get("num_readers", 0)),
            "maxReaders": int(info.get("max_readers", 0)),
        },
        "security": {
            "lockedAccounts": len(state.locked),
            "disabledAccounts": _count_disabled(state),
            "failedLogins24h": 0,
        },
        "system": system,
        "operations": ops,
    }


@router.get("/activities", response_model=m.ActivitiesResponse, tags=["monitoring"],
            summary="Recent activity from the audit log (newest first)")
async def activities(
    state: State, who: Who, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> dict[str, Any]:
    return recent_activities(state.node, limit, Viewer(state.ops, who))
