"""The audit trail's run indexes (format 2): level, source and time are indexed as runs of
consecutive ids rather than one key per record. Queries through them must give the same
answers as a scan of every record (the reference), across batches, retention and clear; a
store written with the per-record indexes of format 1 is rebuilt when opened, and a store
without the format mark is answered by scanning."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import pytest

from oba.audit import db
from oba.audit import query as q
from oba.directory.apply import ApplyContext, apply
from oba.directory.commands import SystemCommand
from oba.schema import Schema
from oba.storage import Store

LEVELS = ("info", "warn", "error")
SOURCES = ("ldap", "rest")


def _store(path: Path) -> Store:
    s = Store(path, Schema.default(), map_size=1 << 24)
    db.open_dbs(s)
    return s


def _append(store: Store, records: list[dict[str, Any]]) -> None:
    cmd = SystemCommand("audit.append", {"records": records}, "rid", "", "20240101000000Z")
    with store.write() as txn:
        assert apply(txn, cmd, ApplyContext(Schema.default(), ())).code == 0


def _retain(store: Store, keep: int) -> None:
    cmd = SystemCommand("audit.retain", {"keep": keep, "at": "2024-02-01T00:00:00.000Z"},
                        "rid", "", "20240101000000Z")
    with store.write() as txn:
        assert apply(txn, cmd, ApplyContext(Schema.default(), ())).code == 0


def _user_keys(store: Store) -> int:
    with store.read() as txn:
        return sum(1 for _ in db._raw(txn).cursor(db=db._db(txn, db.USER)).iternext())


def _rec(rng: random.Random, i: int) -> dict[str, Any]:
    # mostly increasing times with some skew (records of other nodes, retried batches)
    second = max(0, i // 3 + rng.choice((0, 0, 0, -2, 1)))
    return {"timestamp": f"2024-01-01T00:{second // 60:02d}:{second % 60:02d}."
                         f"{rng.randrange(1000):03d}Z",
            "level": rng.choice(LEVELS), "source": rng.choice(SOURCES),
            "user": f"cn=u{rng.randrange(4)}", "message": f"m{i}", "requestId": f"r{i}"}


def _reference(store: Store, flt: q.LogFilter) -> list[int]:
    with store.read() as txn:
        every = [db.get(txn, rid) for rid in db._all_ids(txn)]
    return [int(r["id"]) for r in every if r is not None and flt.matches(r)]


def _filters() -> list[q.LogFilter]:
    out = [q.LogFilter(), q.LogFilter(user="cn=U1"), q.LogFilter(user="cn=u3", level="info"),
           q.LogFilter(user="cn=nobody")]
    out += [q.LogFilter(level=lv) for lv in LEVELS]
    out += [q.LogFilter(source=s) for s in SOURCES]
    out += [q.LogFilter(level="warn", source="rest")]
    t = db.time_ms
    out += [q.LogFilter(start_ms=t("2024-01-01T00:00:10.500Z"),
                        end_ms=t("2024-01-01T00:00:20.250Z")),
            q.LogFilter(start_ms=t("2024-01-01T00:00:30Z")),
            q.LogFilter(end_ms=t("2024-01-01T00:00:05.999Z")),
            q.LogFilter(level="error", start_ms=t("2024-01-01T00:00:05Z"))]
    return out


def _check(store: Store) -> None:
    for flt in _filters():
        page, total = q.query(store, flt, 0, 1000)
        want = _reference(store, flt)
        assert [int(r["id"]) for r in page] == want, flt
        assert total == len(want), flt
    with store.read() as txn:
        every = [db.get(txn, rid) for rid in db._all_ids(txn)]
    stats = q.stats(store)
    for field, key in (("level", "by_level"), ("source", "by_source")):
        counted: dict[str, int] = {}
        for r in every:
            assert r is not None
            counted[r[field]] = counted.get(r[field], 0) + 1
        assert stats[key] == counted


@pytest.mark.parametrize("block_bits", [2, 12])
def test_runs_answer_like_a_full_scan_through_batches_and_retention(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bits: int) -> None:
    monkeypatch.setattr(db, "BLOCK_BITS", block_bits)  # 2: user lookups cross many blocks
    store = _store(tmp_path / "db")
    rng = random.Random(7)
    i = 0
    for size in (1, 1, 5, 40, 3, 60, 1, 25):
        _append(store, [_rec(rng, i + k) for k in range(size)])
        i += size
        _check(store)
    with store.read() as txn:  # consecutive equal values share runs across batches
        runs = sum(1 for _ in db._raw(txn).cursor(db=db._db(txn, db.LEVEL)).iternext())
    assert runs < i
    for keep in (120, 77, 76, 30, 1):
        _retain(store, keep)
        _check(store)
        assert q.stats(store)["total_entries"] == keep
        # retention drops the user keys of whole blocks; only the block the oldest kept
        # record is in may still hold keys of dropped records
        assert _user_keys(store) <= keep + (1 << block_bits) - 1
    _append(store, [_rec(rng, i + k) for k in range(10)])
    _check(store)
    _retain(store, 0)
    _check(store)
    assert _user_keys(store) == 0
    _append(store, [_rec(rng, i + 10 + k) for k in range(10)])
    _check(store)
    cmd = SystemCommand("audit.clear", {}, "rid", "", "20240101000000Z")
    with store.write() as txn:
        assert apply(txn, cmd, ApplyContext(Schema.default(), ())).code == 0
    assert q.stats(store)["by_level"] == {} and q.query(store, q.LogFilter(), 0, 10)[1] == 0
    _append(store, [_rec(rng, 500)])
    _check(store)


def _write_format_1(path: Path, records: list[dict[str, Any]]) -> None:
    """A store as the per-record indexes of format 1 left it (records, old index keys)."""
    store = Store(path, Schema.default(), map_size=1 << 24)
    names = (db.REC, db.META, b"audit_user", b"audit_time", b"audit_level", b"audit_source")
    handles = {name: store.env.open_db(name) for name in names}
    with store.env.begin(write=True) as t:
        for i, raw in enumerate(records, 1):
            rec = dict(raw, id=i, nodeId=0, fields={})
            rid = i.to_bytes(8, "big")
            t.put(rid, msgpack.packb(rec, use_bin_type=True), db=handles[db.REC])
            t.put(db.time_ms(rec["timestamp"]).to_bytes(8, "big") + rid, b"",
                  db=handles[b"audit_time"])
            for name, field in ((b"audit_level", "level"), (b"audit_source", "source"),
                                (b"audit_user", "user")):
                t.put(rec[field].lower().encode() + b"\0" + rid, b"", db=handles[name])
        t.put(b"next", (len(records) + 1).to_bytes(8, "big"), db=handles[db.META])
        t.put(b"count", len(records).to_bytes(8, "big"), db=handles[db.META])
    store.close()


def test_a_format_1_store_is_rebuilt_when_opened(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    monkeypatch.setattr(db, "BLOCK_BITS", 3)
    _write_format_1(tmp_path / "db", [_rec(rng, i) for i in range(50)])
    store = _store(tmp_path / "db")  # open_dbs rebuilds
    with store.read() as txn:
        assert db._indexed(txn)
    for old in db.OLD_DBS:
        with store.env.begin(write=True) as t, pytest.raises(lmdb.NotFoundError):
            store.env.open_db(old, txn=t, create=False)
    assert q.stats(store)["total_entries"] == 50
    _check(store)
    _append(store, [_rec(rng, 50 + k) for k in range(20)])
    _retain(store, 30)
    _check(store)


def test_a_store_without_the_mark_is_answered_by_scanning(tmp_path: Path) -> None:
    rng = random.Random(5)
    store = _store(tmp_path / "db")
    _append(store, [_rec(rng, i) for i in range(30)])
    with store.write() as txn:  # e.g. a snapshot installed from an older node
        db._raw(txn).delete(b"format", db=db._db(txn, db.META))
        db._raw(txn).drop(db._db(txn, db.LEVEL), delete=False)
    with store.read() as txn:
        assert not db._indexed(txn)
    _check(store)
    store.close()
    _check(_store(tmp_path / "db"))  # and the next start builds the runs


def test_time_ms_fast_path_agrees_with_the_general_parser() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        ms = rng.randrange(0, 4_102_444_800_000)
        text = f"{db.datetime.fromtimestamp(ms / 1000, db.UTC):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
        parsed = db.parse_time(text)
        assert parsed is not None
        assert db.time_ms(text) == max(0, int(parsed.timestamp() * 1000))
    assert db.time_ms("2024-01-01T00:00:00.000+01:00") == db.time_ms("2023-12-31T23:00:00Z")
    assert db.time_ms("2024-13-01T00:00:00.000Z") == 0 and db.time_ms("junk") == 0


def test_run_prefixes_memo_agrees_with_a_fresh_computation() -> None:
    rng = random.Random(3)
    stamps = ["2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.999Z", "2024-01-01T00:00:01.000Z",
              "2024-01-01T00:00:00.abcZ", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00.5+01:00",
              "not a time", ""]
    stamps += [f"2024-03-{d:02d}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"
               for d, h, m, s, ms in ((rng.randrange(1, 29), rng.randrange(24), rng.randrange(60),
                                       rng.randrange(60), rng.randrange(1000))
                                      for _ in range(300))]
    for _ in range(2):  # the second round answers from the memo
        for ts in stamps:
            for level, source in (("info", "ldap"), ("WARN", "Rest")):
                rec = {"timestamp": ts, "level": level, "source": source}
                want = ((db.TIME, db._u64(db.time_ms(ts) // 1000)),
                        (db.LEVEL, level.lower().encode() + b"\0"),
                        (db.SOURCE, source.lower().encode() + b"\0"))
                assert db._run_prefixes(rec) == want, rec
