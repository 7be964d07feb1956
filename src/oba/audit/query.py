"""Searching the audit trail: filters, paging, export rows, stats and recent activity.

Rules for this module: read-only; newest first; an indexed filter (user, level, source, time
range) picks the index to scan, the other filters are checked per record. Each call holds one
read transaction for its whole scan (exports are chunked by the caller). With a ``viewer``
(``oba.audit.visibility``: every REST route passes one) a record is replaced by the caller's
view of it before the filters run, records the caller may not see are skipped and not counted,
and a non-administrator's scan is limited to their own records through the user index.
Without one, every record is returned as stored (internal callers, tests).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oba.audit import db
from oba.storage.lmdbstore import ReadTxn, Store

if TYPE_CHECKING:
    from oba.audit.visibility import Viewer

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


def _newest_first(streams: Iterable[Iterator[int]]) -> Iterator[int]:
    """Ids of several newest-first streams, merged newest first, each id once."""
    last: int | None = None
    for rid in heapq.merge(*streams, key=lambda i: -i):
        if rid != last:
            yield rid
            last = rid


def _candidates(txn: ReadTxn, flt: LogFilter,
                viewer: Viewer | None) -> tuple[LogFilter, Iterator[int]]:
    """The filter left to check per record and the ids to look at."""
    spellings = viewer.user_spellings() if viewer is not None else None
    if spellings is None:
        return flt, db.candidate_ids(txn, flt.level, flt.source, flt.user, flt.start_ms,
                                     flt.end_ms)
    assert viewer is not None
    if flt.user:
        if not viewer.is_self(flt.user):
            return flt, iter(())
        flt = dataclasses.replace(flt, user=None)  # the view keeps the caller's records only
    return flt, _newest_first(db.candidate_ids(txn, None, None, name, None, None)
                              for name in spellings)


def iter_matching(store: Store, flt: LogFilter, after_id: int | None = None,
                  chunk: int = 0, viewer: Viewer | None = None) -> Iterator[db.Record]:
    """Matching records, newest first; with ``after_id`` only records with a lower id (used to
    resume a chunked scan); at most ``chunk`` records when ``chunk`` > 0; as ``viewer`` may
    see them when given."""
    n = 0
    with store.read() as txn:
        check, ids = _candidates(txn, flt, viewer)
        for rid in ids:
            if after_id is not None and rid >= after_id:
                continue
            rec = db.get(txn, rid)
            if rec is not None and viewer is not None:
                rec = viewer.record(rec)
            if rec is None or not check.matches(rec):
                continue
            yield rec
            n += 1
            if chunk and n >= chunk:
                return


def iter_all_chunked(store: Store, flt: LogFilter, chunk: int = 500,
                     viewer: Viewer | None = None) -> Iterator[db.Record]:
    """Every matching record, newest first, one short read transaction per ``chunk``."""
    after: int | None = None
    while True:
        got = list(iter_matching(store, flt, after, chunk, viewer))
        yield from got
        if len(got) < chunk:
            return
        after = int(got[-1]["id"])


def query(store: Store, flt: LogFilter, offset: int, limit: int,
          viewer: Viewer | None = None) -> tuple[list[db.Record], int]:
    """One page of matching records (newest first) and the total number that match."""
    limit = max(1, min(limit, MAX_LIMIT))
    page: list[db.Record] = []
    total = 0
    if flt == LogFilter() and (viewer is None or viewer.admin):
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
    for rec in iter_matching(store, flt, viewer=viewer):
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


def recent_activities(node: Any, limit: int = 10,
                      viewer: Viewer | None = None) -> dict[str, Any]:
    """``{activities:[{timestamp,type,user,message,source}], count}``: the dashboard's recent
    activity, newest first (``type`` is the record's level), as ``viewer`` may see it."""
    recs = iter_matching(node.store, LogFilter(), chunk=max(1, min(int(limit), 100)),
                         viewer=viewer)
    acts = [{"timestamp": r["timestamp"], "type": r["level"], "user": r["user"],
             "message": r["message"], "source": r["source"]} for r in recs]
    return {"activities": acts, "count": len(acts)}


def csv_row(rec: db.Record) -> list[str]:
    return [str(rec["id"]), str(rec["timestamp"]), str(rec["level"]), str(rec["source"]),
            str(rec["user"]), str(rec.get("requestId", "")), str(rec.get("nodeId", 0)),
            str(rec["message"])]
