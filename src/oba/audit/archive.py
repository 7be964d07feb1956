"""Audit archive files: JSON lines of records dropped by retention, node-local.

Rules for this module: a file's content depends only on the records (sorted keys, gzip with
mtime 0), its name only on the retention command's time and the record ids, so every node of a
cluster writes the same file. Files are written to a temporary name and renamed into place.
``cleanup`` (``retainDays``) is local housekeeping by file modification time.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from oba.audit.db import Record, parse_time

_NAME = re.compile(r"^audit_(\d{8}T\d{9}Z)_(\d+)-(\d+)\.jsonl(\.gz)?$")


def _stamp(when: str) -> str:
    dt = parse_time(when)
    if dt is None:  # GeneralizedTime fallback: YYYYmmddHHMMSSZ
        digits = re.sub(r"\D", "", when)[:14].ljust(14, "0")
        return f"{digits[:8]}T{digits[8:14]}000Z"
    return dt.strftime("%Y%m%dT%H%M%S") + f"{dt.microsecond // 1000:03d}Z"


class Archiver:
    def __init__(self, directory: str, compress: bool) -> None:
        self.dir = Path(directory) if directory else None
        self.compress = compress

    @property
    def active(self) -> bool:
        """False without a directory: dropped records are not kept (nor decoded for it)."""
        return self.dir is not None

    def __call__(self, records: list[Record], when: str) -> None:
        """Write ``records`` (oldest first) to one archive file; no directory: dropped."""
        if self.dir is None or not records:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"audit_{_stamp(when)}_{records[0]['id']}-{records[-1]['id']}.jsonl"
        body = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
        data = body.encode("utf-8")
        if self.compress:
            name += ".gz"
            data = gzip.compress(data, mtime=0)
        tmp = self.dir / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.dir / name)

    def files(self) -> list[dict[str, Any]]:
        """Archive files, newest first:
        ``{name, path, size, start_time, end_time, count, compressed}``."""
        if self.dir is None or not self.dir.is_dir():
            return []
        out = []
        for path in self.dir.iterdir():
            if not _NAME.match(path.name):
                continue
            try:
                lines = read_lines(path)
                size = path.stat().st_size
            except (OSError, EOFError, ValueError):
                continue
            first = json.loads(lines[0]) if lines else {}
            last = json.loads(lines[-1]) if lines else {}
            out.append({"name": path.name, "path": str(path), "size": size,
                        "start_time": first.get("timestamp"), "end_time": last.get("timestamp"),
                        "count": len(lines), "compressed": path.name.endswith(".gz")})
        out.sort(key=lambda a: str(a["name"]), reverse=True)
        return out

    def cleanup(self, retain_days: int, now: float | None = None) -> int:
        """Delete archives older than ``retain_days`` (0 keeps all); returns how many."""
        if self.dir is None or retain_days <= 0 or not self.dir.is_dir():
            return 0
        cutoff = (time.time() if now is None else now) - retain_days * 86400
        deleted = 0
        for path in self.dir.iterdir():
            if _NAME.match(path.name) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                deleted += 1
        return deleted


def read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return [line for line in raw.decode("utf-8").splitlines() if line.strip()]
