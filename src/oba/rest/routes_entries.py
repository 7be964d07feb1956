"""Directory routes: entries CRUD, move, disable/enable, lock status, search, stream, bulk, compare.

Rules for this module: every read and write goes through ``oba.operations`` with the caller's
``Identity`` (so LDAP's access decisions and Command path apply); an ``OpError`` escapes to the
app's handler, which maps its result code to HTTP. DNs in paths are URL-encoded. Lockout state
is the entry's draft-behera attributes (``pwdFailureTime``, ``pwdAccountLockedTime``): read by
``lock-status``, cleared by ``unlock`` through the Command path (root DN, or whoever the ACL
lets write ``pwdAccountLockedTime``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from oba.directory.entry import Entry
from oba.operations import Identity, OpError
from oba.protocol.dn import DNError, format_dn, parse_dn
from oba.protocol.filter import FilterError, parse_filter
from oba.protocol.messages import Filter, ModOp, Scope
from oba.rest import models as m
from oba.rest.auth import State, Who
from oba.rest.errors import ERROR_RESPONSES, ApiError, from_op_error
from oba.rest.state import RestState, close_iter, decode_values, entry_json

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
YIELD_EVERY = 256
ScopeName = Literal["base", "one", "onelevel", "sub", "subtree"]
_SCOPES = {"base": Scope.BASE, "one": Scope.ONE, "onelevel": Scope.ONE,
           "sub": Scope.SUB, "subtree": Scope.SUB}
_MODOPS = {"add": ModOp.ADD, "delete": ModOp.DELETE, "replace": ModOp.REPLACE}
_TRUE = (b"TRUE", b"1", b"YES")


def location(dn: str) -> str:
    return "/api/v1/entries/" + quote(dn, safe="")


def wanted_attrs(attributes: str | None) -> set[str] | None:
    """Selection from a comma-separated list: None = all user and operational attributes."""
    if attributes is None or not attributes.strip():
        return None
    return {a.strip().lower() for a in attributes.split(",") if a.strip()}


def render(state: RestState, entry: Entry, wanted: set[str] | None) -> dict[str, Any]:
    return entry_json(entry, wanted, state.node.is_operational)


def attribute_list(attributes: dict[str, list[str]]) -> list[tuple[str, list[bytes]]]:
    return [decode_values(name, values) for name, values in attributes.items()]


def change_list(changes: list[m.Change]) -> list[tuple[int, str, list[bytes]]]:
    out: list[tuple[int, str, list[bytes]]] = []
    for ch in changes:
        name, values = decode_values(ch.attribute, ch.values)
        out.append((_MODOPS[ch.operation], name, values))
    return out


def parse_search_filter(text: str) -> Filter:
    try:
        return parse_filter(text)
    except FilterError as exc:
        raise ApiError(400, "invalid_filter", f"invalid filter {text!r}: {exc}") from None


# ------------------------------------------------------------------ entries

@router.get("/entries/{dn:path}/lock-status", response_model=m.LockStatusResponse,
            tags=["entries"], summary="Whether the account is locked out")
async def lock_status(dn: str, state: State, who: Who) -> dict[str, Any]:
    status = state.ops.lock_status(who, dn)
    return {"dn": status["dn"], "locked": status["locked"]}


@router.post("/entries/{dn:path}/unlock", response_model=m.UnlockResponse, tags=["entries"],
             summary="Clear a lockout (failed-bind count and lock)")
async def unlock(dn: str, state: State, who: Who) -> dict[str, Any]:
    await state.ops.unlock(who, dn)
    return {"success": True, "locked": False}


@router.post("/entries/{dn:path}/disable", response_model=m.DisableResponse, tags=["entries"],
             summary="Disable the account (obaDisabled: TRUE)")
async def disable(dn: str, state: State, who: Who) -> dict[str, Any]:
    entry = state.ops.get_entry(who, dn)
    changes: list[tuple[int, str, list[bytes]]] = []
    if "obaaccount" not in entry.object_classes():
        changes.append((ModOp.ADD, "objectClass", [b"obaAccount"]))
    changes.append((ModOp.REPLACE, "obaDisabled", [b"TRUE"]))
    await state.ops.modify(who, entry.dn, changes)
    state.operations["modifies"] += 1
    return {"success": True, "disabled": True}


@router.post("/entries/{dn:path}/enable", response_model=m.DisableResponse, tags=["entries"],
             summary="Enable the account (removes obaDisabled)")
async def enable(dn: str, state: State, who: Who) -> dict[str, Any]:
    entry = state.ops.get_entry(who, dn)
    await state.ops.modify(who, entry.dn, [(ModOp.REPLACE, "obaDisabled", [])])
    state.operations["modifies"] += 1
    return {"success": True, "disabled": False}


@router.post("/entries/{dn:path}/move", response_model=m.EntryModel, tags=["entries"],
             summary="Rename or move an entry (ModifyDN)")
async def move(dn: str, req: m.MoveRequest, state: State, who: Who,
               response: Response) -> dict[str, Any]:
    try:
        parsed = parse_dn(dn)
        new_rdn = parse_dn(req.newRDN)
        if req.newSuperior:
            parse_dn(req.newSuperior)
    except DNError as exc:
        raise ApiError(400, "invalid_dn", f"invalid DN: {exc}", 34) from None
    if len(new_rdn) != 1:
        raise ApiError(400, "invalid_dn", "newRDN must be a single RDN such as cn=new", 34)
    await state.ops.modify_dn(who, dn, req.newRDN, req.deleteOldRDN, req.newSuperior or None)
    state.operations["modifies"] += 1
    parent = req.newSuperior if req.newSuperior else format_dn(parsed[1:])
    new_dn = f"{req.newRDN},{parent}" if parent else req.newRDN
    response.headers["Location"] = location(new_dn)
    return render(state, state.ops.get_entry(who, new_dn), None)


@router.get("/entries/{dn:path}", response_model=m.EntryModel, tags=["entries"],
            summary="Read one entry")
async def get_entry(
    dn: str, state: State, who: Who,
    attributes: Annotated[str | None, Query(description="Comma-separated; * user, + operational")]
    = None,
) -> dict[str, Any]:
    state.operations["searches"] += 1
    return render(state, state.ops.get_entry(who, dn), wanted_attrs(attributes))


@router.post("/entries", status_code=201, response_model=m.EntryModel, tags=["entries"],
             summary="Add an entry")
async def add_entry(req: m.EntryCreate, state: State, who: Who,
                    response: Response) -> dict[str, Any]:
    await state.ops.add(who, req.dn, attribute_list(req.attributes))
    state.operations["adds"] += 1
    response.headers["Location"] = location(req.dn)
    return render(state, state.ops.get_entry(who, req.dn), None)


async def _modify(dn: str, req: m.ModifyRequest, state: RestState,
                  who: Identity) -> dict[str, Any]:
    await state.ops.modify(who, dn, change_list(req.changes))
    state.operations["modifies"] += 1
    return render(state, state.ops.get_entry(who, dn), None)


@router.put("/entries/{dn:path}", response_model=m.EntryModel, tags=["entries"],
            summary="Modify an entry")
async def put_entry(dn: str, req: m.ModifyRequest, state: State, who: Who) -> dict[str, Any]:
    return await _modify(dn, req, state, who)


@router.patch("/entries/{dn:path}", response_model=m.EntryModel, tags=["entries"],
              summary="Modify an entry (same as PUT)")
async def patch_entry(dn: str, req: m.ModifyRequest, state: State, who: Who) -> dict[str, Any]:
    return await _modify(dn, req, state, who)


@router.delete("/entries/{dn:path}", status_code=204, response_class=Response, tags=["entries"],
               summary="Delete a leaf entry")
async def delete_entry(dn: str, state: State, who: Who) -> Response:
    await state.ops.delete(who, dn)
    state.operations["deletes"] += 1
    return Response(status_code=204)


# ------------------------------------------------------------------ search

BaseQ = Annotated[str | None, Query(description="Search base (default: the server's baseDN).")]
ScopeQ = Annotated[ScopeName, Query(description="base, one or sub.")]
FilterQ = Annotated[str, Query(max_length=10000, description="RFC 4515 filter.")]
AttrsQ = Annotated[str | None, Query(description="Comma-separated attributes; * user, + "
                                     "operational; default all.")]


def _start_search(state: RestState, who: Identity, base: str | None, scope: str, flt: str,
                  time_limit: float = 0) -> Iterator[Entry]:
    parsed = parse_search_filter(flt)
    state.operations["searches"] += 1
    return state.ops.search(who, state.node.base_dn if base is None else base, _SCOPES[scope],
                            parsed, time_limit=time_limit)


@router.get("/search", response_model=m.SearchResponse, tags=["search"],
            summary="Search with offset paging")
async def search(
    state: State, who: Who, baseDN: BaseQ = None, scope: ScopeQ = "sub",
    filter: FilterQ = "(objectClass=*)", attributes: AttrsQ = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    timeLimit: Annotated[int, Query(ge=0, le=3600, description="Seconds; 0: none.")] = 0,
) -> dict[str, Any]:
    it = _start_search(state, who, baseDN, scope, filter, timeLimit)
    wanted = wanted_attrs(attributes)
    page: list[dict[str, Any]] = []
    total = 0
    try:
        for entry in it:
            if offset <= total < offset + limit:
                page.append(render(state, entry, wanted))
            total += 1
            if total % YIELD_EVERY == 0:
                await asyncio.sleep(0)
    finally:
        close_iter(it)
    return {"entries": page, "totalCount": total, "offset": offset, "limit": limit,
            "hasMore": offset + len(page) < total}


@router.get("/search/stream", tags=["search"], summary="Search, streamed as NDJSON",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                             "description": "One entry per line, then {\"done\": true, "
                             "\"count\": N}."}})
async def search_stream(
    state: State, who: Who, baseDN: BaseQ = None, scope: ScopeQ = "sub",
    filter: FilterQ = "(objectClass=*)", attributes: AttrsQ = None,
) -> StreamingResponse:
    it = _start_search(state, who, baseDN, scope, filter)
    wanted = wanted_attrs(attributes)
    try:
        first = next(it, None)  # errors on the base surface as a proper HTTP status
    except BaseException:
        close_iter(it)
        raise

    async def lines() -> AsyncIterator[bytes]:
        count = 0
        try:
            entry = first
            while entry is not None:
                count += 1
                yield json.dumps(render(state, entry, wanted)).encode() + b"\n"
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a fast client must not starve other tasks
                entry = next(it, None)
        except OpError as exc:
            err = from_op_error(exc)
            yield json.dumps({"error": err.error, "code": err.status, "message": err.message,
                              "resultCode": err.result_code}).encode() + b"\n"
            return
        finally:
            close_iter(it)
        yield json.dumps({"done": True, "count": count}).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


# ------------------------------------------------------------------ bulk, compare

@router.post("/bulk", response_model=m.BulkResponse, tags=["entries"],
             responses={207: {"model": m.BulkResponse, "description": "Some operations failed"}},
             summary="Several operations in order (not atomic)")
async def bulk(req: m.BulkRequest, state: State, who: Who, response: Response) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    ok = failed = 0
    for i, op in enumerate(req.operations):
        result: dict[str, Any] = {"index": i, "dn": op.dn, "operation": op.operation}
        try:
            if op.operation == "add":
                if op.attributes is None:
                    raise ApiError(400, "invalid_request", "add needs attributes")
                await state.ops.add(who, op.dn, attribute_list(op.attributes))
                state.operations["adds"] += 1
            elif op.operation == "modify":
                if not op.changes:
                    raise ApiError(400, "invalid_request", "modify needs changes")
                await state.ops.modify(who, op.dn, change_list(op.changes))
                state.operations["modifies"] += 1
            else:
                await state.ops.delete(who, op.dn)
                state.operations["deletes"] += 1
            result["success"] = True
            ok += 1
        except (OpError, ApiError) as exc:
            err = from_op_error(exc) if isinstance(exc, OpError) else exc
            result.update(success=False, error=err.error, message=err.message,
                          resultCode=err.result_code)
            failed += 1
        results.append(result)
        if failed and req.stopOnError:
            break
    response.status_code = 200 if failed == 0 else (400 if ok == 0 else 207)
    return {"success": failed == 0, "totalCount": len(req.operations), "succeeded": ok,
            "failed": failed, "results": results}


@router.post("/compare", response_model=m.CompareResponse, tags=["entries"],
             summary="Compare an attribute value (the attribute's matching rule)")
async def compare(req: m.CompareRequest, state: State, who: Who) -> dict[str, Any]:
    name, values = decode_values(req.attribute, [req.value])
    state.operations["compares"] += 1
    return {"match": state.ops.compare(who, req.dn, name, values[0])}
