"""Audit records in the node's LMDB store: the apply handlers and the indexed read side.

Layout (auxiliary sub-databases of the node's store; every index is an ordinary sorted
database, scanned by prefix):
- ``audit_rec``: id (8 bytes big-endian) -> msgpack record
- ``audit_users``: id block (id >> ``BLOCK_BITS``, 8 bytes) + lower-case user + NUL + id ->
  b"" (one key per record). Grouping by block keeps a batch's inserts in the newest part of
  the tree (a few pages written per commit, not one page per record); a lookup by user seeks
  once per block.
- ``audit_lruns`` / ``audit_sruns`` (level, source): lower-case value + NUL + first id + last
  id -> b"": every id in ``[first, last]`` holds that value. Runs of one value never overlap;
  consecutive records with the same value share one run (extended batch after batch).
- ``audit_truns`` (time): second since the epoch (8 bytes) + first id + last id -> b"": the
  records ``[first, last]`` were stamped within that second (a candidate set: readers check
  the exact time of each record).
- ``audit_meta``: ``next`` -> next id, ``count`` -> number of records held, ``format`` ->
  ``FORMAT`` once the run indexes cover every record (older stores kept one index key per
  record and value; ``open_dbs`` rebuilds them as runs; a store without the mark is read by
  scanning the records).

Rules for this module: the handlers of ``audit.append``, ``audit.retain`` and ``audit.clear``
are deterministic (ids come from the replicated counter, content and times from the command),
validate before writing and write only through the apply transaction. ``audit.retain`` hands
the records it drops to the node-local archiver (``set_archiver``) before they are deleted, and
trims the runs so that counts by level and source stay exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import lmdb
import msgpack

from oba.directory.apply import ApplyContext, ApplyResult, register_system
from oba.directory.commands import SystemCommand
from oba.storage.lmdbstore import ReadTxn, Store, WriteTxn

REC, TIME, LEVEL, SOURCE, USER, META = (
    b"audit_rec", b"audit_truns", b"audit_lruns", b"audit_sruns", b"audit_users", b"audit_meta")
ALL_DBS = (REC, TIME, LEVEL, SOURCE, USER, META)
RUNS = (TIME, LEVEL, SOURCE)
# the per-record indexes of format 1, replaced by the runs (dropped by ``open_dbs``)
OLD_DBS = (b"audit_time", b"audit_level", b"audit_source", b"audit_user")
BLOCK_BITS = 12  # the user index is grouped by blocks of 4096 ids
FORMAT = 2
LEVELS = ("debug", "info", "warn", "error")
SOURCES = ("ldap", "rest", "raft", "system", "cli")
UNWILLING = 53

Record = dict[str, Any]
Archiver = Callable[[list[Record], str], None]


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _from_u64(b: bytes) -> int:
    return int.from_bytes(b[-8:], "big")


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time (``Z`` or an offset), or None."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def time_ms(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 time (0 when unreadable). The store's own
    stamps (``YYYY-MM-DDTHH:MM:SS.mmmZ``) take a fast path with the date part parsed once per
    second; it computes exactly what the general path computes (same float steps)."""
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and text[20:23].isdigit():
        head = text[:19]
        sec = _SECONDS.get(head)
        if sec is None:
            dt = parse_time(head + "Z")
            if dt is None:
                return 0
            sec = (dt - _EPOCH) // _ONE_SECOND
            if len(_SECONDS) >= 4096:
                _SECONDS.clear()
            _SECONDS[head] = sec
        # datetime.timestamp(): (seconds * 10**6 + microseconds) / 10**6, then * 1000
        return max(0, int((sec * 1_000_000 + int(text[20:23]) * 1000) / 1_000_000 * 1000))
    dt = parse_time(text)
    return max(0, int(dt.timestamp() * 1000)) if dt is not None else 0


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
_SECONDS: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> seconds since the epoch


def now_rfc3339() -> str:
    """Now, RFC 3339 in UTC with milliseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ------------------------------------------------------------------ sub-databases


def _cache(store: Store) -> dict[bytes, Any]:
    cache: dict[bytes, Any] = vars(store).setdefault("_aux_dbs", {})
    return cache


def open_dbs(store: Store) -> None:
    """Open every audit sub-database and bring the indexes to ``FORMAT``; call when no write
    transaction is open (start-up)."""
    for name in ALL_DBS:
        store.aux_db(name)
    with store.read() as txn:
        if _indexed(txn):
            return
    with store.write() as wtxn:
        _rebuild(wtxn)


def _indexed(txn: ReadTxn) -> bool:
    """Do the run indexes cover every record (the ``format`` mark)?"""
    return _meta(txn, b"format", 1) == FORMAT


def _rebuild(txn: WriteTxn) -> None:
    """Drop the format-1 indexes and build the runs from the records themselves."""
    t = _raw(txn)
    for name in OLD_DBS:
        try:
            old = txn.store.env.open_db(name, txn=t, create=False)
        except lmdb.NotFoundError:
            continue
        t.drop(old, delete=True)
    for name in (USER, *RUNS):
        t.drop(_db(txn, name), delete=False)
    runs: dict[bytes, dict[bytes, list[int]]] = {name: {} for name in RUNS}
    for key, value in t.cursor(db=_db(txn, REC)).iternext(keys=True, values=True):
        rec = msgpack.unpackb(value, raw=False)
        rid = _from_u64(key)
        t.put(_user_key(dict(rec, id=rid)), b"", db=_db(txn, USER))
        for name, prefix in _run_prefixes(rec):
            open_runs = runs[name]
            run = open_runs.get(prefix)
            if run is not None and run[1] == rid - 1:
                run[1] = rid
                continue
            if run is not None:
                t.put(prefix + _u64(run[0]) + _u64(run[1]), b"", db=_db(txn, name))
            open_runs[prefix] = [rid, rid]
    for name, open_runs in runs.items():
        for prefix, (first, last) in open_runs.items():
            t.put(prefix + _u64(first) + _u64(last), b"", db=_db(txn, name))
    t.put(b"format", _u64(FORMAT), db=_db(txn, META))


def _db(txn: ReadTxn, name: bytes) -> Any:
    cache = _cache(txn.store)
    db = cache.get(name)
    if db is None:
        if isinstance(txn, WriteTxn):  # e.g. after a snapshot restore: open inside this txn
            db = cache[name] = txn.store.env.open_db(name, txn=txn._txn)
        else:
            db = txn.store.aux_db(name)
    return db


def _raw(txn: ReadTxn) -> Any:
    return txn._txn


# ------------------------------------------------------------------ writes (apply)


def _clean(raw: object) -> Record | None:
    if not isinstance(raw, dict):
        return None
    level = str(raw.get("level", "info")).lower()
    fields = raw.get("fields")
    return {
        "id": 0,
        "timestamp": str(raw.get("timestamp", "")),
        "level": level if level in LEVELS else "info",
        "message": str(raw.get("message", "")),
        "source": str(raw.get("source", "system")).lower(),
        "user": str(raw.get("user", "")),
        "requestId": str(raw.get("requestId", "")),
        "nodeId": int(raw.get("nodeId", 0) or 0),
        "fields": fields if isinstance(fields, dict) else {},
    }


def _user_key(rec: Record) -> bytes:
    rid = int(rec["id"])
    return (_u64(rid >> BLOCK_BITS) + str(rec["user"]).lower().encode("utf-8") + b"\0"
            + _u64(rid))


def _run_prefixes(rec: Record) -> tuple[tuple[bytes, bytes], ...]:
    """(run database, key prefix) of a record in each run index; remembered per second,
    level and source (a store stamp's milliseconds do not change the second)."""
    ts = str(rec["timestamp"])
    level = str(rec["level"]).lower()
    source = str(rec["source"]).lower()
    second = (ts[:19] if len(ts) == 24 and ts[19] == "." and ts[23] == "Z"
              and ts[20:23].isdigit() else ts)
    key = (second, level, source)
    got = _PREFIXES.get(key)
    if got is None:
        if len(_PREFIXES) >= 4096:
            _PREFIXES.clear()
        got = _PREFIXES[key] = ((TIME, _u64(time_ms(ts) // 1000)),
                                (LEVEL, level.encode("utf-8") + b"\0"),
                                (SOURCE, source.encode("utf-8") + b"\0"))
    return got


_PREFIXES: dict[tuple[str, str, str], tuple[tuple[bytes, bytes], ...]] = {}


def _add_run(cur: Any, prefix: bytes, first: int, last: int) -> None:
    """Record that ids ``first..last`` hold ``prefix``, extending the run that ends just
    before ``first`` (the common case: the previous batch ended with the same value)."""
    size = len(prefix) + 16
    found = cur.set_range(prefix + b"\xff" * 17)
    found = cur.prev() if found else cur.last()
    if found:
        key = cur.key()
        if len(key) == size and key.startswith(prefix) and _from_u64(key) == first - 1:
            first = _from_u64(key[:-8])
            cur.delete()
    cur.put(prefix + _u64(first) + _u64(last), b"")


def _meta(txn: ReadTxn, key: bytes, default: int) -> int:
    raw = _raw(txn).get(key, db=_db(txn, META))
    return default if raw is None else _from_u64(raw)


def _append(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
    raw_records = cmd.payload.get("records")
    if not isinstance(raw_records, list):
        return ApplyResult(UNWILLING, message="audit.append needs a list of records")
    records = [r for r in (_clean(x) for x in raw_records) if r is not None]
    t = _raw(txn)
    nxt = _meta(txn, b"next", 1)
    count = _meta(txn, b"count", 0)
    # one batch: the records and the user keys go in with one putmulti call each (records
    # with MDB_APPEND: ids only grow; an out-of-order id falls back to a plain put); the run
    # indexes get one key per run of equal values
    pack = msgpack.Packer(use_bin_type=True).pack
    rows: list[tuple[bytes, bytes]] = []
    users: list[tuple[bytes, bytes]] = []
    runs: list[tuple[bytes, bytes, int, int]] = []  # (database, prefix, first, last)
    current: dict[bytes, list[Any]] = {}  # database -> the run being built [prefix, first, last]
    for rec in records:
        rid = rec["id"] = nxt
        nxt += 1
        rows.append((_u64(rid), pack(rec)))
        users.append((_user_key(rec), b""))
        for name, prefix in _run_prefixes(rec):
            run = current.get(name)
            if run is not None and run[0] == prefix:
                run[2] = rid
                continue
            if run is not None:
                runs.append((name, run[0], run[1], run[2]))
            current[name] = [prefix, rid, rid]
    if rows:
        _put_all(t, _db(txn, REC), rows, append=True)
        users.sort()
        _put_all(t, _db(txn, USER), users, append=False)
        runs.extend((name, run[0], run[1], run[2]) for name, run in current.items())
        for name in RUNS:
            with t.cursor(db=_db(txn, name)) as cur:
                for db_name, prefix, first, last in runs:
                    if db_name == name:
                        _add_run(cur, prefix, first, last)
    count += len(records)
    t.put(b"next", _u64(nxt), db=_db(txn, META))
    t.put(b"count", _u64(count), db=_db(txn, META))
    return ApplyResult(0)


def _put_all(t: Any, db: Any, items: list[tuple[bytes, bytes]], append: bool) -> None:
    with t.cursor(db=db) as cur:
        if append:
            _, added = cur.putmulti(items, append=True)
            if added == len(items):
                return
        cur.putmulti(items)


def _trim_users(txn: WriteTxn, cutoff: int) -> None:
    """Delete the user keys of every block wholly below id ``cutoff``: a cursor walk from the
    first key, no record decoded. The keys of the block that ``cutoff`` falls in stay until a
    later trim passes it (readers skip ids whose record is gone, as for the time runs)."""
    limit = _u64(cutoff >> BLOCK_BITS)
    cur = _raw(txn).cursor(db=_db(txn, USER))
    if not cur.first():
        return
    while True:
        key = cur.key()
        if not key or bytes(key[:8]) >= limit:
            return
        if not cur.delete():
            return


def _trim_runs(txn: WriteTxn, cutoff: int) -> None:
    """Cut every id below ``cutoff`` (all dropped) out of the runs. Level and source runs are
    scanned per value from its oldest run; time runs from the oldest second until a run that
    starts at or after ``cutoff`` (a run left behind by skewed clocks only names ids that no
    longer exist, which readers skip)."""
    t = _raw(txn)
    for name in RUNS:
        cur = t.cursor(db=_db(txn, name))
        changes: list[tuple[bytes, bytes | None]] = []  # (old key, new key or None)
        found = cur.first()
        while found:
            key = cur.key()
            first, last = _from_u64(key[:-8]), _from_u64(key)
            if first < cutoff:
                changes.append((key, None if last < cutoff else
                                key[:-16] + _u64(cutoff) + key[-8:]))
                if last < cutoff:
                    found = cur.next()
                    continue
            if name == TIME:
                break
            # this value is done: on to the next one
            found = cur.set_range(key[:-16] + b"\xff" * 17)
        for key, new in changes:
            t.delete(key, db=_db(txn, name))
            if new is not None:
                t.put(new, b"", db=_db(txn, name))


def _retain(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
    keep = cmd.payload.get("keep")
    if not isinstance(keep, int) or keep < 0:
        return ApplyResult(UNWILLING, message="audit.retain needs keep >= 0")
    count = _meta(txn, b"count", 0)
    excess = count - keep
    if excess <= 0:
        return ApplyResult(0)
    # the oldest ``excess`` records go with one cursor walk (delete moves to the next);
    # they are decoded only for an archiver
    archiver: Archiver | None = vars(txn.store).get("_audit_archiver")
    if not getattr(archiver, "active", True):
        archiver = None
    dropped: list[Record] = []
    gone = last = 0
    cur = _raw(txn).cursor(db=_db(txn, REC))
    found = cur.first()
    while found and gone < excess:
        key = cur.key()
        if not key:
            break
        last = _from_u64(bytes(key))
        if archiver is not None:
            dropped.append(msgpack.unpackb(cur.value(), raw=False))
        gone += 1
        found = cur.delete()
    if archiver is not None and dropped:
        archiver(dropped, str(cmd.payload.get("at") or cmd.time))
    if gone:
        if gone == count:  # nothing left: no partial block to keep either
            _raw(txn).drop(_db(txn, USER), delete=False)
        else:
            _trim_users(txn, last + 1)
        _trim_runs(txn, last + 1)
    _raw(txn).put(b"count", _u64(count - gone), db=_db(txn, META))
    return ApplyResult(0)


def _clear(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
    t = _raw(txn)
    for name in (REC, USER, *RUNS):
        t.drop(_db(txn, name), delete=False)
    t.put(b"count", _u64(0), db=_db(txn, META))  # ``next`` is kept: ids never repeat
    return ApplyResult(0)


def set_archiver(store: Store, archiver: Archiver | None) -> None:
    """The node-local function that writes records dropped by ``audit.retain``."""
    vars(store)["_audit_archiver"] = archiver


def register() -> None:
    register_system("audit.append", _append)
    register_system("audit.retain", _retain)
    register_system("audit.clear", _clear)


# ------------------------------------------------------------------ reads


def count(txn: ReadTxn) -> int:
    return _meta(txn, b"count", 0)


def get(txn: ReadTxn, rid: int) -> Record | None:
    raw = _raw(txn).get(_u64(rid), db=_db(txn, REC))
    return None if raw is None else dict(msgpack.unpackb(raw, raw=False))


def _user_ids(txn: ReadTxn, user: str) -> Iterator[int]:
    """Ids of one user's records, highest first: block by block, newest block first."""
    cur = _raw(txn).cursor(db=_db(txn, USER))
    name = user.lower().encode("utf-8") + b"\0"
    if not cur.last():
        return
    block = _from_u64(bytes(cur.key())[:8])
    while True:
        prefix = _u64(block) + name
        found = cur.set_range(prefix + b"\xff" * 9)
        found = cur.prev() if found else cur.last()
        while found:
            key = bytes(cur.key())
            if not key.startswith(prefix):
                break
            yield _from_u64(key)
            found = cur.prev()
        # on to the highest block below this one: the key just before the block's first
        found = cur.set_range(_u64(block))
        found = cur.prev() if found else cur.last()
        if not found:
            return
        below = _from_u64(bytes(cur.key())[:8])
        if below >= block:
            return
        block = below


def _run_ids(txn: ReadTxn, name: bytes, prefix: bytes) -> Iterator[int]:
    """Ids in the runs of one value, highest first (runs of a value never overlap)."""
    cur = _raw(txn).cursor(db=_db(txn, name))
    size = len(prefix) + 16
    found = cur.set_range(prefix + b"\xff" * 17)
    found = cur.prev() if found else cur.last()
    while found:
        key = bytes(cur.key())
        if not key.startswith(prefix):
            return
        if len(key) == size:
            yield from range(_from_u64(key), _from_u64(key[:-8]) - 1, -1)
        found = cur.prev()


def _all_ids(txn: ReadTxn) -> Iterator[int]:
    cur = _raw(txn).cursor(db=_db(txn, REC))
    if not cur.last():
        return
    while True:
        yield _from_u64(bytes(cur.key()))
        if not cur.prev():
            return


def _time_ids(txn: ReadTxn, start_ms: int | None, end_ms: int | None) -> Iterator[int]:
    """Ids of the records stamped in the seconds that ``[start_ms, end_ms]`` touches, highest
    first (a superset: the caller checks each record's time)."""
    low = 0 if start_ms is None else max(0, start_ms) // 1000
    high = None if end_ms is None else max(0, end_ms) // 1000
    cur = _raw(txn).cursor(db=_db(txn, TIME))
    spans: list[tuple[int, int]] = []
    found = cur.set_range(_u64(low))
    while found:
        key = bytes(cur.key())
        if high is not None and _from_u64(key[:8]) > high:
            break
        spans.append((_from_u64(key), _from_u64(key[:-8])))
        found = cur.next()
    spans.sort(reverse=True)  # runs never overlap: by last id, highest first
    for last, first in spans:
        yield from range(last, first - 1, -1)


def candidate_ids(txn: ReadTxn, level: str | None, source: str | None, user: str | None,
                  start_ms: int | None, end_ms: int | None) -> Iterator[int]:
    """Ids to look at, newest first, from the most selective index a filter allows."""
    if not _indexed(txn):  # a store whose indexes are not built yet: every record
        return _all_ids(txn)
    if user:
        return _user_ids(txn, user)
    if level:
        return _run_ids(txn, LEVEL, level.lower().encode("utf-8") + b"\0")
    if source:
        return _run_ids(txn, SOURCE, source.lower().encode("utf-8") + b"\0")
    if start_ms is not None or end_ms is not None:
        return _time_ids(txn, start_ms, end_ms)
    return _all_ids(txn)


def oldest_newest(txn: ReadTxn) -> tuple[Record | None, Record | None]:
    cur = _raw(txn).cursor(db=_db(txn, REC))
    first = msgpack.unpackb(cur.value(), raw=False) if cur.first() else None
    last = msgpack.unpackb(cur.value(), raw=False) if cur.last() else None
    return first, last


def count_by(txn: ReadTxn, name: bytes) -> dict[str, int]:
    """Records per value of a run index (level, source)."""
    out: dict[str, int] = {}
    if not _indexed(txn):
        field = "level" if name == LEVEL else "source"
        for _, value in _raw(txn).cursor(db=_db(txn, REC)).iternext(keys=True, values=True):
            got = str(msgpack.unpackb(value, raw=False).get(field, "")).lower()
            out[got] = out.get(got, 0) + 1
        return out
    cur = _raw(txn).cursor(db=_db(txn, name))
    for key in cur.iternext(keys=True, values=False):
        raw = bytes(key)
        value = raw[:-17].decode("utf-8", "replace")
        out[value] = out.get(value, 0) + _from_u64(raw) - _from_u64(raw[:-8]) + 1
    return out
