"""Unit tests of the audit store: apply handlers (ids, indexes, retention with archives, clear),
queries through the indexes, the sink's bounded retry buffer and its suppression of
self-auditing.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oba.audit import db
from oba.audit import query as q
from oba.audit.archive import Archiver
from oba.audit.store import MAX_BUFFERED, AuditStore
from oba.config import Config
from oba.directory.apply import ApplyContext, ApplyResult, apply
from oba.directory.commands import SystemCommand, decode, encode
from oba.schema import Schema
from oba.storage import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "db", Schema.default(), map_size=1 << 24)
    db.open_dbs(s)
    return s


def run(store: Store, kind: str, payload: dict[str, Any], time: str = "20240101000000Z"
        ) -> ApplyResult:
    cmd = decode(encode(SystemCommand(kind, payload, "rid", "", time)))
    ctx = ApplyContext(Schema.default(), ())
    with store.write() as txn:
        return apply(txn, cmd, ctx)


def rec(i: int, level: str = "info", user: str = "cn=a", source: str = "ldap") -> dict[str, Any]:
    return {"timestamp": f"2024-01-01T00:00:{i:02d}.000Z", "level": level, "message": f"m{i}",
            "source": source, "user": user, "requestId": f"r{i}", "nodeId": 2,
            "fields": {"n": i}}


def test_append_assigns_ids_and_indexes(store: Store) -> None:
    assert run(store, "audit.append", {"records": [rec(1), rec(2, "warn", "cn=B")]}).code == 0
    assert run(store, "audit.append", {"records": [rec(3, source="rest")]}).code == 0
    page, total = q.query(store, q.LogFilter(), 0, 10)
    assert total == 3 and [r["id"] for r in page] == [3, 2, 1]
    assert page[2]["nodeId"] == 2 and page[2]["fields"] == {"n": 1}
    assert [r["id"] for r in q.query(store, q.LogFilter(level="warn"), 0, 10)[0]] == [2]
    assert [r["id"] for r in q.query(store, q.LogFilter(user="cn=b"), 0, 10)[0]] == [2]
    assert [r["id"] for r in q.query(store, q.LogFilter(source="rest"), 0, 10)[0]] == [3]
    ranged = q.LogFilter(start_ms=db.time_ms("2024-01-01T00:00:02Z"),
                         end_ms=db.time_ms("2024-01-01T00:00:02.500Z"))
    assert [r["id"] for r in q.query(store, ranged, 0, 10)[0]] == [2]
    assert q.query(store, q.LogFilter(search="M3"), 0, 10)[1] == 1
    assert q.query(store, q.LogFilter(source="ldap"), 1, 1)[0][0]["id"] == 1
    st = q.stats(store)
    assert st["by_level"] == {"info": 2, "warn": 1} and st["total_entries"] == 3
    assert run(store, "audit.append", {"records": "nope"}).code == 53


def test_retain_archives_deterministically_and_clear_keeps_ids(store: Store,
                                                               tmp_path: Path) -> None:
    archiver = Archiver(str(tmp_path / "arch"), compress=True)
    db.set_archiver(store, archiver)
    run(store, "audit.append", {"records": [rec(i) for i in range(1, 8)]})
    assert run(store, "audit.retain", {"keep": 3, "at": "2024-02-03T04:05:06.789Z"}).code == 0
    page, total = q.query(store, q.LogFilter(), 0, 10)
    assert total == 3 and [r["id"] for r in page] == [7, 6, 5]
    assert q.query(store, q.LogFilter(user="cn=a"), 0, 10)[1] == 3  # indexes trimmed too
    files = list((tmp_path / "arch").iterdir())
    assert [f.name for f in files] == ["audit_20240203T040506789Z_1-4.jsonl.gz"]
    first = files[0].read_bytes()
    lines = gzip.decompress(first).decode().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [1, 2, 3, 4]
    info = archiver.files()[0]
    assert info["count"] == 4 and info["start_time"] == "2024-01-01T00:00:01.000Z"
    assert run(store, "audit.clear", {}).code == 0
    assert q.query(store, q.LogFilter(), 0, 10)[1] == 0
    run(store, "audit.append", {"records": [rec(9)]})
    assert q.query(store, q.LogFilter(), 0, 10)[0][0]["id"] == 8


def test_recent_activities(store: Store) -> None:
    run(store, "audit.append", {"records": [rec(1), rec(2, "warn")]})
    out = q.recent_activities(SimpleNamespace(store=store), 1)
    assert out == {"activities": [{"timestamp": "2024-01-01T00:00:02.000Z", "type": "warn",
                                   "user": "cn=a", "message": "m2", "source": "ldap"}],
                   "count": 1}


class _FailingReplicator:
    def __init__(self) -> None:
        self.calls = 0
        self.ok = False
        self.commands: list[SystemCommand] = []

    async def submit(self, cmd: SystemCommand) -> ApplyResult:
        self.calls += 1
        self.commands.append(cmd)
        node.audit.record("info", "recursion attempt", "system")  # must be suppressed
        return ApplyResult(0 if self.ok else 52)


node: Any = None


def test_sink_buffers_retries_and_bounds(store: Store) -> None:
    global node
    repl = _FailingReplicator()
    node = SimpleNamespace(config=Config(), store=store, replicator=repl, cluster=None,
                           events=None)
    sink = AuditStore(node)
    node.audit = sink

    async def main() -> None:
        sink.start()
        for i in range(MAX_BUFFERED + 5):
            sink.record("info", f"m{i}", "ldap", "cn=x", password_never="no", blob=b"\x00")
        assert sink.buffered() == MAX_BUFFERED and sink.dropped == 5
        for _ in range(200):
            if repl.calls >= 2:
                break
            await asyncio.sleep(0.02)
        assert repl.calls >= 2 and sink.stats()["retry_running"]
        rids = {c.request_id for c in repl.commands}
        assert len(rids) == 1  # the same batch, retried under its request id
        repl.ok = True
        for _ in range(500):
            if sink.buffered() == 0:
                break
            await asyncio.sleep(0.05)
        assert sink.buffered() == 0 and sink.committed == MAX_BUFFERED
        await sink.stop()

    asyncio.run(main())
    sent = [r for c in repl.commands for r in c.payload["records"]]
    assert not any(r["message"] == "recursion attempt" for r in sent)
    assert sent[0]["message"] == "m5" and sent[0]["fields"]["blob"] == "b'\\x00'"


def test_worker_records_are_stamped_queued_and_bad_ones_counted(store: Store) -> None:
    global node
    node = SimpleNamespace(config=Config(), store=store, replicator=_FailingReplicator(),
                           cluster=None, events=None)
    sink = AuditStore(node)
    sink.add_records([
        ["INFO", "bind uid=a: success", "LDAP", "uid=a", "req-1", {"dn": "uid=a", "n": [1]}],
        ["warn", "modify x: no_such_object", "ldap", "", "req-2", "not a dict"],
        ["too", "short"],
        None,
    ])
    assert sink.dropped == 2
    got = list(sink.queue)
    assert [(r["level"], r["source"], r["user"], r["requestId"], r["fields"]) for r in got] == [
        ("info", "ldap", "uid=a", "req-1", {"dn": "uid=a", "n": [1]}),
        ("warn", "ldap", "", "req-2", {})]
    assert all(db.time_ms(r["timestamp"]) > 0 and r["nodeId"] == 0 for r in got)
