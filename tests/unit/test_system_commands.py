"""SystemCommands: encoded like every Command, applied by the handler registered for their kind."""

from __future__ import annotations

from pathlib import Path

from oba.directory.apply import ApplyContext, ApplyResult, apply, register_system
from oba.directory.commands import SystemCommand, decode, encode
from oba.schema import Schema
from oba.storage import Store
from oba.storage.lmdbstore import WriteTxn


def test_round_trip() -> None:
    cmd = SystemCommand("acl.set", {"rules": [{"target": "*", "rights": ["read"]}], "n": 1},
                        "rid1", "cn=admin", "20260101000000Z")
    assert decode(encode(cmd)) == cmd


def test_dispatch_to_registered_handler_and_unknown_kind(tmp_path: Path) -> None:
    schema = Schema.default()
    store = Store(tmp_path / "db", schema)
    ctx = ApplyContext(schema, ("dc=example,dc=com",))
    seen: list[dict[str, object]] = []

    def handler(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
        seen.append(cmd.payload)
        return ApplyResult(0)

    register_system("test.record", handler)
    with store.write() as txn:
        ok = apply(txn, SystemCommand("test.record", {"x": 1}, "r", "a", "t"), ctx)
        unknown = apply(txn, SystemCommand("no.such", {}, "r", "a", "t"), ctx)
    assert ok.code == 0 and seen == [{"x": 1}]
    assert unknown.code == 53 and "no.such" in unknown.message
    store.close()
