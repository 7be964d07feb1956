"""SystemCommands: encoded like every Command, applied by the handler registered for their kind."""

from __future__ import annotations

from pathlib import Path

from oba.directory.apply import (
    SYSTEM_ACTOR,
    ApplyContext,
    ApplyResult,
    apply,
    auth_epoch,
    register_system,
)
from oba.directory.commands import (
    AddCommand,
    Command,
    SystemCommand,
    decode,
    encode,
    password_rehash,
)
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


def test_password_rehash_is_a_compare_and_set_that_moves_no_epoch(tmp_path: Path) -> None:
    """``password.rehash`` replaces the value the bind verified, only while it is stored, and
    is no credential change: the epoch, pwdChangedTime, pwdHistory and the modifiers stay."""
    schema = Schema.default()
    store = Store(tmp_path / "db", schema, map_size=1 << 24)
    ctx = ApplyContext(schema, ("dc=example,dc=com",))
    dn = "uid=u,dc=example,dc=com"
    old, new = b"{SSHA}b2xkb2xkb2xkb2xkb2xkb2xkb2xk", b"{ARGON2}$argon2id$new"
    other = b"{SSHA}b3RoZXJvdGhlcm90aGVyb3RoZXI="

    def run(cmd: Command) -> ApplyResult:
        with store.write() as txn:
            return apply(txn, cmd, ctx)

    def entry() -> tuple[dict[str, list[bytes]], int]:
        with store.read() as txn:
            e = txn.get_by_ndn(dn)
            assert e is not None
            return e.attrs, auth_epoch(txn, e.id)

    assert run(AddCommand("dc=example,dc=com", (("objectClass", (b"domain",)),
                                                ("dc", (b"example",))), "r", "cn=a", "T0",
                          "00000000-0000-4000-8000-000000000001")).code == 0
    assert run(AddCommand(dn, (("objectClass", (b"inetOrgPerson",)), ("uid", (b"u",)),
                               ("cn", (b"U",)), ("sn", (b"U",)),
                               ("userPassword", (old, other))), "r", "cn=a", "20240101000000Z",
                          "00000000-0000-4000-8000-000000000002")).code == 0
    before, epoch = entry()
    cmd = password_rehash(dn, old, new, "r2", SYSTEM_ACTOR, "20250101000000Z")
    assert decode(encode(cmd)) == cmd
    assert run(cmd).code == 0
    after, epoch_after = entry()
    assert after["userPassword"] == [new, other]  # in place; the other value untouched
    assert epoch_after == epoch
    assert {k: v for k, v in after.items() if k != "userPassword"} == \
        {k: v for k, v in before.items() if k != "userPassword"}
    # the value is gone (the password changed meanwhile): nothing happens
    stale = run(password_rehash(dn, old, b"{ARGON2}$argon2id$newer", "r3", SYSTEM_ACTOR, "T"))
    assert stale.code == 16 and entry() == (after, epoch)
    # never a cleartext value
    assert run(password_rehash(dn, new, b"clear", "r4", SYSTEM_ACTOR, "T")).code == 2
    assert run(password_rehash("uid=nobody,dc=example,dc=com", new, old, "r5", SYSTEM_ACTOR,
                               "T")).code == 32
    store.close()
