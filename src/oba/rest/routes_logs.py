"""Audit log routes: /api/v1/logs, /logs/stats, /logs/export, /logs/archives, /logs/archive.

Rules for this module: every route needs an authenticated identity. ``/logs`` and
``/logs/export`` answer everyone, through ``oba.audit.visibility.Viewer``: the administrator
gets every record, anyone else only their own records naming entries they may read (the one
rule shared with ``/activities`` and ``/events``). The trail as a whole is the
administrator's: statistics, the archive list, archiving now and clearing need the
administrator (the original let any user clear it and list archives). Archive files are named,
never given by their path on the server. JSON field names are the original's (``entries,
total_count, offset, limit, has_more``...); a record is ``{id, timestamp, level, message,
source, user, requestId, nodeId, fields}``. Queries use the audit indexes
(``oba.audit.query``); exports stream.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from oba.audit import query as q
from oba.audit.archive import Archiver
from oba.audit.db import parse_time
from oba.audit.store import audit_store
from oba.audit.visibility import Viewer
from oba.rest.auth import Admin, State, Who
from oba.rest.errors import ERROR_RESPONSES, ApiError
from oba.rest.state import RestState

router = APIRouter(prefix="/api/v1", tags=["logs"], responses=ERROR_RESPONSES)


class LogEntry(BaseModel):
    id: int
    timestamp: str = Field(description="RFC 3339 with milliseconds, set by the proposing node.")
    level: str = Field(description="debug | info | warn | error")
    message: str
    source: str = Field(description="ldap | rest | raft | system | cli")
    user: str = Field(description="Bind DN of the actor ('' when anonymous).")
    requestId: str
    nodeId: int = Field(description="The node that made the record (0: standalone).")
    fields: dict[str, Any]


class LogsResponse(BaseModel):
    entries: list[LogEntry]
    total_count: int
    offset: int
    limit: int
    has_more: bool


class LogStatsResponse(BaseModel):
    enabled: bool
    total_entries: int
    max_entries: int
    by_level: dict[str, int]
    by_source: dict[str, int]
    oldest_entry: str | None
    newest_entry: str | None
    pending_entries: int
    retry_buffer_size: int
    retry_running: bool
    dropped_entries: int
    cluster_mode: bool
    writer_ready: bool
    node_id: int


class ArchiveInfo(BaseModel):
    name: str = Field(description="File name in logging.store.archiveDir (no server path).")
    size: int
    start_time: str | None
    end_time: str | None
    count: int
    compressed: bool


class ArchivesResponse(BaseModel):
    archives: list[ArchiveInfo]
    count: int


class ArchiveNowResponse(BaseModel):
    success: bool
    archive: ArchiveInfo | None = None
    message: str


class MessageResponse(BaseModel):
    message: str


def _ms(value: str | None, name: str) -> int | None:
    if not value:
        return None
    dt = parse_time(value)
    if dt is None:
        raise ApiError(400, "invalid_time", f"{name}: not an RFC 3339 time: {value!r}")
    return int(dt.timestamp() * 1000)


def _filter(level: str | None, source: str | None, user: str | None, request_id: str | None,
            search: str | None, start_time: str | None, end_time: str | None) -> q.LogFilter:
    return q.LogFilter(level=level or None, source=source or None, user=user or None,
                       request_id=request_id or None, search=search or None,
                       start_ms=_ms(start_time, "start_time"), end_ms=_ms(end_time, "end_time"))


Level = Annotated[str | None, Query(description="debug | info | warn | error")]
Source = Annotated[str | None, Query(description="ldap | rest | raft | system | cli")]
User = Annotated[str | None, Query(description="Bind DN (exact, case-insensitive).")]
ReqId = Annotated[str | None, Query(description="Request id.")]
Search = Annotated[str | None, Query(description="Text in message, user or fields.")]
Start = Annotated[str | None, Query(description="RFC 3339: records at or after.")]
End = Annotated[str | None, Query(description="RFC 3339: records at or before.")]


@router.get("/logs", response_model=LogsResponse, summary="Search the audit trail (newest first)")
def list_logs(
    state: State, who: Who, level: Level = None, source: Source = None, user: User = None,
    request_id: ReqId = None, search: Search = None, start_time: Start = None,
    end_time: End = None, offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=q.MAX_LIMIT)] = 100,
) -> dict[str, Any]:
    flt = _filter(level, source, user, request_id, search, start_time, end_time)
    page, total = q.query(state.node.store, flt, offset, limit, Viewer(state.ops, who))
    return {"entries": page, "total_count": total, "offset": offset, "limit": limit,
            "has_more": offset + len(page) < total}


@router.get("/logs/stats", response_model=LogStatsResponse,
            summary="Audit trail statistics (admin only)")
def log_stats(state: State, who: Admin) -> dict[str, Any]:
    out = q.stats(state.node.store)
    sink = audit_store(state.node)
    if sink is not None:
        out.update(sink.stats())
        out["enabled"] = True
    else:
        out.update({"enabled": False, "max_entries": int(
            state.node.config.logging.store.maxEntries), "pending_entries": 0,
            "retry_buffer_size": 0, "retry_running": False, "dropped_entries": 0,
            "cluster_mode": bool(state.node.config.cluster.enabled), "writer_ready": False,
            "node_id": 0})
    return out


def _export_lines(state: RestState, flt: q.LogFilter, fmt: str,
                  viewer: Viewer) -> Iterator[str]:
    records = q.iter_all_chunked(state.node.store, flt, viewer=viewer)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(q.CSV_COLUMNS)
        for rec in records:
            writer.writerow(q.csv_row(rec))
            if buf.tell() > 65536:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()
    elif fmt == "ndjson":
        for rec in records:
            yield json.dumps(rec, default=str) + "\n"
    else:
        yield "["
        sep = ""
        for rec in records:
            yield sep + json.dumps(rec, default=str)
            sep = ","
        yield "]\n"


_MEDIA = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}


@router.get("/logs/export", summary="Download the matching records (streamed attachment)",
            response_class=StreamingResponse,
            responses={200: {"content": {t: {} for t in _MEDIA.values()},
                             "description": "The records, newest first."}})
def export_logs(
    state: State, who: Who,
    format: Annotated[Literal["json", "ndjson", "jsonl", "csv"], Query()] = "json",
    level: Level = None, source: Source = None, user: User = None, request_id: ReqId = None,
    search: Search = None, start_time: Start = None, end_time: End = None,
) -> StreamingResponse:
    fmt = "ndjson" if format == "jsonl" else format
    flt = _filter(level, source, user, request_id, search, start_time, end_time)
    name = f"audit-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{fmt}"
    return StreamingResponse(_export_lines(state, flt, fmt, Viewer(state.ops, who)),
                             media_type=_MEDIA[fmt],
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _archiver(state: RestState) -> Archiver:
    sink = audit_store(state.node)
    if sink is not None:
        return sink.archiver
    cfg = state.node.config.logging.store
    return Archiver(str(cfg.archiveDir or ""), bool(cfg.compress))


def _archive_info(info: dict[str, Any]) -> dict[str, Any]:
    """An archive as the API shows it: by name, without its path on the server."""
    return {k: v for k, v in info.items() if k != "path"}


@router.get("/logs/archives", response_model=ArchivesResponse,
            summary="Archive files on this node (admin only)")
def list_archives(state: State, who: Admin) -> dict[str, Any]:
    files = [_archive_info(a) for a in _archiver(state).files()]
    return {"archives": files, "count": len(files)}


@router.post("/logs/archive", response_model=ArchiveNowResponse,
             summary="Archive every record now (replicated; admin only)")
async def archive_now(state: State, who: Admin) -> dict[str, Any]:
    sink = audit_store(state.node)
    if sink is None:
        raise ApiError(503, "audit_disabled", "the audit store is disabled")
    if not sink.archiver.dir:
        raise ApiError(409, "no_archive_dir", "logging.store.archiveDir is not set")
    before = {a["name"] for a in sink.archiver.files()}
    if not await sink.archive_now(0):
        raise ApiError(503, "unavailable", "the archive command could not be committed")
    new = [a for a in sink.archiver.files() if a["name"] not in before]
    if not new:
        return {"success": True, "archive": None, "message": "nothing to archive"}
    return {"success": True, "archive": _archive_info(new[0]),
            "message": f"archived to {new[0]['name']}"}


@router.delete("/logs", response_model=MessageResponse,
               summary="Clear the audit trail on every node (admin only; archives kept)")
async def clear_logs(state: State, who: Admin) -> dict[str, Any]:
    sink = audit_store(state.node)
    if sink is None:
        raise ApiError(503, "audit_disabled", "the audit store is disabled")
    if not await sink.clear():
        raise ApiError(503, "unavailable", "the clear command could not be committed")
    sink.record("warn", "audit log cleared", "rest", who.dn, "")
    return {"message": "audit log cleared"}
