"""Audit records in the node's LMDB store: the apply handlers and the indexed read side.

Layout (auxiliary sub-databases of the node's store; composite keys so that every index is an
ordinary sorted database, scanned by prefix):
- ``audit_rec``: id (8 bytes big-endian) -> msgpack record
- ``audit_time``: milliseconds since the epoch (8 bytes) + id -> b""
- ``audit_level`` / ``audit_source`` / ``audit_user``: lower-case value + NUL + id -> b""
- ``audit_meta``: ``next`` -> next id, ``count`` -> number of records held

Rules for this module: the handlers of ``audit.append``, ``audit.retain`` and ``audit.clear``
are deterministic (ids come from the replicated counter, content and times from the command),
validate before writing and write only through the apply transaction. ``audit.retain`` hands
the records it drops to the node-local archiver (``set_archiver``) before they are deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgpack

from oba.directory.apply import ApplyContext, ApplyResult, register_system
from oba.directory.commands import SystemCommand
from oba.storage.lmdbstore import ReadTxn, Store, WriteTxn

REC, TIME, LEVEL, SOURCE, USER, META = (
    b"audit_rec", b"audit_time", b"audit_level", b"audit_source", b"audit_user", b"audit_meta")
ALL_DBS = (REC, TIME, LEVEL, SOURCE, USER, META)
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
    dt = parse_time(text)
    return max(0, int(dt.timestamp() * 1000)) if dt is not None else 0


def now_rfc3339() -> str:
    """Now, RFC 3339 in UTC with milliseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ------------------------------------------------------------------ sub-databases


def _cache(store: Store) -> dict[bytes, Any]:
    cache: dict[bytes, Any] = vars(store).setdefault("_aux_dbs", {})
    return cache


def open_dbs(store: Store) -> None:
    """Open every audit sub-database; call when no write transaction is open (start-up)."""
    for name in ALL_DBS:
        store.aux_db(name)


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


def _index_keys(rec: Record) -> list[tuple[bytes, bytes]]:
    rid = _u64(int(rec["id"]))
    keys = [(TIME, _u64(time_ms(str(rec["timestamp"]))) + rid)]
    for db, name in ((LEVEL, "level"), (SOURCE, "source"), (USER, "user")):
        keys.append((db, str(rec[name]).lower().encode("utf-8") + b"\0" + rid))
    return keys


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
    rec_db = _db(txn, REC)
    for rec in records:
        rec["id"] = nxt
        nxt += 1
        t.put(_u64(rec["id"]), msgpack.packb(rec, use_bin_type=True), db=rec_db)
        for name, key in _index_keys(rec):
            t.put(key, b"", db=_db(txn, name))
    count += len(records)
    t.put(b"next", _u64(nxt), db=_db(txn, META))
    t.put(b"count", _u64(count), db=_db(txn, META))
    return ApplyResult(0)


def _delete(txn: WriteTxn, rec: Record) -> None:
    t = _raw(txn)
    t.delete(_u64(int(rec["id"])), db=_db(txn, REC))
    for name, key in _index_keys(rec):
        t.delete(key, db=_db(txn, name))


def _retain(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
    keep = cmd.payload.get("keep")
    if not isinstance(keep, int) or keep < 0:
        return ApplyResult(UNWILLING, message="audit.retain needs keep >= 0")
    count = _meta(txn, b"count", 0)
    excess = count - keep
    if excess <= 0:
        return ApplyResult(0)
    dropped: list[Record] = []
    cur = _raw(txn).cursor(db=_db(txn, REC))
    for _, value in cur.iternext(keys=True, values=True):
        dropped.append(msgpack.unpackb(value, raw=False))
        if len(dropped) >= excess:
            break
    archiver: Archiver | None = vars(txn.store).get("_audit_archiver")
    if archiver is not None and dropped:
        archiver(dropped, str(cmd.payload.get("at") or cmd.time))
    for rec in dropped:
        _delete(txn, rec)
    _raw(txn).put(b"count", _u64(count - len(dropped)), db=_db(txn, META))
    return ApplyResult(0)


def _clear(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
    t = _raw(txn)
    for name in (REC, TIME, LEVEL, SOURCE, USER):
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


def _reverse_prefix(txn: ReadTxn, name: bytes, prefix: bytes) -> Iterator[int]:
    """Ids under ``prefix`` in an index, highest first."""
    cur = _raw(txn).cursor(db=_db(txn, name))
    upper = prefix + b"\xff" * 9
    if cur.set_range(upper):
        if not cur.prev():
            return
    elif not cur.last():
        return
    while True:
        key = bytes(cur.key())
        if not key.startswith(prefix):
            return
        yield _from_u64(key)
        if not cur.prev():
            return


def _all_ids(txn: ReadTxn) -> Iterator[int]:
    cur = _raw(txn).cursor(db=_db(txn, REC))
    if not cur.last():
        return
    while True:
        yield _from_u64(bytes(cur.key()))
        if not cur.prev():
            return


def _time_ids(txn: ReadTxn, start_ms: int | None, end_ms: int | None) -> Iterator[int]:
    cur = _raw(txn).cursor(db=_db(txn, TIME))
    if end_ms is not None:
        if cur.set_range(_u64(end_ms + 1)):
            if not cur.prev():
                return
        elif not cur.last():
            return
    elif not cur.last():
        return
    while True:
        key = bytes(cur.key())
        if start_ms is not None and int.from_bytes(key[:8], "big") < start_ms:
            return
        yield _from_u64(key)
        if not cur.prev():
            return


def candidate_ids(txn: ReadTxn, level: str | None, source: str | None, user: str | None,
                  start_ms: int | None, end_ms: int | None) -> Iterator[int]:
    """Ids to look at, newest first, from the most selective index a filter allows."""
    if user:
        return _reverse_prefix(txn, USER, user.lower().encode("utf-8") + b"\0")
    if level:
        return _reverse_prefix(txn, LEVEL, level.lower().encode("utf-8") + b"\0")
    if source:
        return _reverse_prefix(txn, SOURCE, source.lower().encode("utf-8") + b"\0")
    if start_ms is not None or end_ms is not None:
        return _time_ids(txn, start_ms, end_ms)
    return _all_ids(txn)


def oldest_newest(txn: ReadTxn) -> tuple[Record | None, Record | None]:
    cur = _raw(txn).cursor(db=_db(txn, REC))
    first = msgpack.unpackb(cur.value(), raw=False) if cur.first() else None
    last = msgpack.unpackb(cur.value(), raw=False) if cur.last() else None
    return first, last


def count_by(txn: ReadTxn, name: bytes) -> dict[str, int]:
    """Records per value of an index (level, source, user)."""
    out: dict[str, int] = {}
    cur = _raw(txn).cursor(db=_db(txn, name))
    for key in cur.iternext(keys=True, values=False):
        value = bytes(key)[:-9].decode("utf-8", "replace")
        out[value] = out.get(value, 0) + 1
    return out
