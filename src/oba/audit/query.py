"""Searching the audit trail: filters, paging, export rows, stats and recent activity.

Rules for this module: read-only; newest first; an indexed filter (user, level, source, time
range) picks the index to scan, the other filters are checked per record. Each call holds one
read transaction for its whole scan (exports are chunked by the caller).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from oba.audit import db
from oba.storage.lmdbstore import Store

MAX_LIMIT = 1000
CSV_COLUMNS = ("id", "timestamp", "level", "source", "user", "request_id", "node_id", "message")


@dataclass(frozen=True, slots=True)
class LogFilter:
    level: str | None = None
    source: str | None = None
    user: str | None = None
    request_id: str | None = None
    search: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def matches(self, rec: db.Record) -> bool:
        if self.level and str(rec["level"]).lower() != self.level.lower():
            return False
        if self.source and str(rec["source"]).lower() != self.source.lower():
            return False
        if self.user and str(rec["user"]).lower() != self.user.lower():
            return False
        if self.request_id and rec.get("requestId") != self.request_id:
            return False
        if self.start_ms is not None or self.end_ms is not None:
            ms = db.time_ms(str(rec["timestamp"]))
            if self.start_ms is not None and ms < self.start_ms:
                return False
            if self.end_ms is not None and ms > self.end_ms:
                return False
        if self.search:
            needle = self.search.lower()
            hay = (str(rec["message"]), str(rec["user"]),
                   json.dumps(rec.get("fields", {}), sort_keys=True, default=str))
            if not any(needle in h.lower() for h in hay):
                return False
        return True


def iter_matching(store: Store, flt: LogFilter, after_id: int | None = None,
                  chunk: int = 0) -> Iterator[db.Record]:
    """Matching records, newest first; with ``after_id`` only records with a lower id (used to
    resume a chunked scan); at most ``chunk`` records when ``chunk`` > 0."""
    n = 0
    with store.read() as txn:
        for rid in db.candidate_ids(txn, flt.level, flt.source, flt.user, flt.start_ms,
                                    flt.end_ms):
            if after_id is not None and rid >= after_id:
                continue
            rec = db.get(txn, rid)
            if rec is None or not flt.matches(rec):
                continue
            yield rec
            n += 1
            if chunk and n >= chunk:
                return


def iter_all_chunked(store: Store, flt: LogFilter, chunk: int = 500) -> Iterator[db.Record]:
    """Every matching record, newest first, one short read transaction per ``chunk``."""
    after: int | None = None
    while True:
        got = list(iter_matching(store, flt, after, chunk))
        yield from got
        if len(got) < chunk:
            return
        after = int(got[-1]["id"])


def query(store: Store, flt: LogFilter, offset: int, limit: int) -> tuple[list[db.Record], int]:
    """One page of matching records (newest first) and the total number that match."""
    limit = max(1, min(limit, MAX_LIMIT))
    page: list[db.Record] = []
    total = 0
    if flt == LogFilter():
        with store.read() as txn:
            total = db.count(txn)
            for i, rid in enumerate(db.candidate_ids(txn, None, None, None, None, None)):
                if i < offset:
                    continue
                if len(page) >= limit:
                    break
                rec = db.get(txn, rid)
                if rec is not None:
                    page.append(rec)
        return page, total
    for rec in iter_matching(store, flt):
        if offset <= total < offset + limit:
            page.append(rec)
        total += 1
    return page, total


def stats(store: Store) -> dict[str, Any]:
    with store.read() as txn:
        oldest, newest = db.oldest_newest(txn)
        return {
            "total_entries": db.count(txn),
            "by_level": db.count_by(txn, db.LEVEL),
            "by_source": db.count_by(txn, db.SOURCE),
            "oldest_entry": oldest["timestamp"] if oldest else None,
            "newest_entry": newest["timestamp"] if newest else None,
        }


def recent_activities(node: Any, limit: int = 10) -> dict[str, Any]:
    """``{activities:[{timestamp,type,user,message,source}], count}``: the dashboard's recent
    activity, newest first (``type`` is the record's level)."""
    recs, _ = query(node.store, LogFilter(), 0, max(1, min(int(limit), 100)))
    acts = [{"timestamp": r["timestamp"], "type": r["level"], "user": r["user"],
             "message": r["message"], "source": r["source"]} for r in recs]
    return {"activities": acts, "count": len(acts)}


def csv_row(rec: db.Record) -> list[str]:
    return [str(rec["id"]), str(rec["timestamp"]), str(rec["level"]), str(rec["source"]),
            str(rec["user"]), str(rec.get("requestId", "")), str(rec.get("nodeId", 0)),
            str(rec["message"])]
