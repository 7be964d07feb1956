"""Online backup route (root DN only): ``GET /api/v1/backup?format=native|ldif``.

Rules for this module: the copy is taken in a worker thread inside one LMDB read transaction
(``oba.tools.backup``), so writes continue; the file is written to a private temporary
directory first (the header needs the checksum), then streamed and deleted. The response
carries the metadata also as headers (``X-Oba-Applied-Index``, ``X-Oba-Raft-Term``,
``X-Oba-Sha256``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from oba.rest.auth import Admin, State
from oba.rest.errors import ERROR_RESPONSES
from oba.tools import backup as bk

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)


def _raft_term(cluster: object) -> int:
    if cluster is None:
        return 0
    status = getattr(cluster, "cluster_status", None)
    return int(status().get("term", 0)) if status is not None else 0


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(bk.CHUNK):
            yield block


@router.get("/backup", tags=["admin"], summary="A consistent online backup of the directory",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {},
                                         "text/plain": {}},
                             "description": "The native backup file, or LDIF."}})
async def get_backup(
    state: State, who: Admin,
    format: Annotated[Literal["native", "ldif"], Query(description="native or ldif")] = "native",
) -> StreamingResponse:
    node = state.node
    work = Path(tempfile.mkdtemp(prefix="oba-backup-"))
    term = _raft_term(node.cluster)
    try:
        if format == "native":
            snap = await asyncio.to_thread(bk.snapshot_store, node.store, work, term)
            body: Iterator[bytes] = bk.stream_native(snap)
            media = "application/octet-stream"
        else:
            snap = await asyncio.to_thread(bk.ldif_snapshot, node.store, work, term)
            body = _file_chunks(snap.path)
            media = "text/plain; charset=us-ascii"
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    headers = {"X-Oba-Applied-Index": str(snap.meta["appliedIndex"]),
               "X-Oba-Raft-Term": str(term),
               "X-Oba-Entries": str(snap.meta["entries"])}
    if "sha256" in snap.meta:
        headers["X-Oba-Sha256"] = str(snap.meta["sha256"])
    return StreamingResponse(body, media_type=media, headers=headers,
                             background=BackgroundTask(shutil.rmtree, work, True))
