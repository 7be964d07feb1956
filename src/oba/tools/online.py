"""Online import and export through a running node's REST API (works for clusters too).

Rules for this module: import sends ``POST /api/v1/bulk`` batches of at most ``BATCH`` adds
and about ``BATCH_BYTES`` of values (below the server's default ``rest.maxBodySize``, 8 MiB,
even for entries with photos or certificates) through the Command path (access rules,
replication); a failed add is reported with its record's line.
Operational attributes are dropped (the server sets them). Export reads
``GET /api/v1/search/stream`` and writes the same LDIF as the offline export.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import IO, Any

from oba.ldif import LDIFRecord, write_ldif
from oba.tools.bulk import COMPUTED, KEPT_OPERATIONAL, BadRecord, ImportReport, read_records
from oba.tools.client import Api

BATCH = 500
BATCH_BYTES = 4 * 1024 * 1024  # JSON with base64 stays under 8 MiB
_DROP = COMPUTED | {a.lower() for a in KEPT_OPERATIONAL}
EXPORT_ATTRS = "*," + ",".join(KEPT_OPERATIONAL)


def _attributes(rec: LDIFRecord) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in rec.attributes:
        if name.lower() in _DROP:
            continue
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            out.setdefault(name + ";base64", []).append(base64.b64encode(value).decode())
            continue
        out.setdefault(name, []).append(text)
    return out


def import_online(api: Api, source: IO[bytes], *, continue_on_error: bool = False,
                  progress: Callable[[int], None] | None = None) -> ImportReport:
    import time

    report = ImportReport()
    started = time.monotonic()
    batch: list[LDIFRecord] = []
    size = 0

    def flush() -> None:
        nonlocal size
        ops = [{"operation": "add", "dn": r.dn, "attributes": _attributes(r)} for r in batch]
        resp = api.request("POST", "/bulk", ok=(200, 207, 400),
                           json={"operations": ops, "stopOnError": not continue_on_error})
        body = resp.json()
        for res in body.get("results", []):
            rec = batch[res["index"]]
            if res.get("success"):
                report.added += 1
            else:
                report.failed.append(BadRecord(rec.line, rec.dn, f"{res.get('message') or ''} "
                                               f"(LDAP result {res.get('resultCode')})"))
        if progress is not None:
            progress(len(batch))
        batch.clear()
        size = 0

    for item in read_records(source):
        if isinstance(item, BadRecord) or item.changetype not in (None, "add"):
            bad = item if isinstance(item, BadRecord) else BadRecord(
                item.line, item.dn, f"changetype {item.changetype} is not supported by import")
            report.failed.append(bad)
        else:
            cost = len(item.dn) + sum(len(n) + len(v) for n, v in item.attributes)
            if batch and size + cost > BATCH_BYTES:
                flush()
            batch.append(item)
            size += cost
            if len(batch) >= BATCH:
                flush()
        if report.failed and not continue_on_error:
            report.stopped = True
            break
    if batch and not report.stopped:
        flush()
    if report.failed and not continue_on_error:
        report.stopped = True
    report.seconds = time.monotonic() - started
    return report


def _record(obj: dict[str, Any]) -> LDIFRecord:
    attrs: list[tuple[str, bytes]] = []
    for name, values in obj["attributes"].items():
        if name.lower().endswith(";base64"):
            attrs += [(name[: -len(";base64")], base64.b64decode(v)) for v in values]
        else:
            attrs += [(name, v.encode("utf-8")) for v in values]
    return LDIFRecord(obj["dn"], attrs)


def export_online(api: Api, out: IO[str], *, base: str | None = None,
                  flt: str | None = None) -> int:
    params = {"scope": "sub", "filter": flt or "(objectClass=*)", "attributes": EXPORT_ATTRS}
    if base:
        params["baseDN"] = base
    out.write("version: 1\n\n")
    count = 0
    for line in _lines(api.stream("/search/stream", params)):
        obj = json.loads(line)
        if "error" in obj:
            from oba.tools.client import EXIT_FAILED, ToolError

            raise ToolError(EXIT_FAILED, f"{obj['error']}: {obj.get('message', '')}")
        if obj.get("done"):
            break
        out.write(write_ldif([_record(obj)], version=False))
        count += 1
    return count


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    buf = b""
    for chunk in chunks:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        yield from (ln for ln in lines if ln.strip())
    if buf.strip():
        yield buf
