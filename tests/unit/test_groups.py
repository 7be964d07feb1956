"""Group semantics inside apply(): memberOf and referential integrity (behaviour checked
against slapd 2.5 with the memberof and refint overlays on member/uniqueMember)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oba.directory.apply import ApplyContext, ApplyResult, apply
from oba.directory.commands import (
    AddCommand,
    Command,
    DeleteCommand,
    ModifyCommand,
    ModifyDNCommand,
)
from oba.directory.entry import Entry
from oba.directory.groups import REFINT_ACTOR
from oba.schema import Schema
from oba.storage import Store

T0 = "20240101120000Z"
T1 = "20240202120000Z"
ADMIN = "cn=admin,dc=example,dc=com"
BASE = "dc=example,dc=com"
PEOPLE = "ou=people,dc=example,dc=com"
GROUPS = "ou=groups,dc=example,dc=com"
ALICE = "uid=alice,ou=people,dc=example,dc=com"
BOB = "uid=bob,ou=people,dc=example,dc=com"
G1 = "cn=g1,ou=groups,dc=example,dc=com"
G2 = "cn=g2,ou=groups,dc=example,dc=com"
U1 = "cn=u1,ou=groups,dc=example,dc=com"
_n = 0


def _uuid() -> str:
    global _n
    _n += 1
    return f"00000000-0000-4000-9000-{_n:012d}"


def add(dn: str, *attrs: tuple[str, list[str]]) -> AddCommand:
    return AddCommand(
        dn, tuple((a, tuple(v.encode() for v in vs)) for a, vs in attrs), "r", ADMIN, T0, _uuid()
    )


def mod(dn: str, *changes: tuple[int, str, list[str]]) -> ModifyCommand:
    return ModifyCommand(
        dn, tuple((op, a, tuple(v.encode() for v in vs)) for op, a, vs in changes), "r", ADMIN, T1
    )


def rename(dn: str, rdn: str, delete_old: bool, sup: str | None = None) -> ModifyDNCommand:
    return ModifyDNCommand(dn, rdn, delete_old, sup, "r", ADMIN, T1)


def delete(dn: str) -> DeleteCommand:
    return DeleteCommand(dn, "r", ADMIN, T1)


def person(dn: str, uid: str) -> AddCommand:
    return add(dn, ("objectClass", ["inetOrgPerson"]), ("uid", [uid]), ("cn", [uid]), ("sn", ["J"]))


def group(dn: str, *members: str) -> AddCommand:
    cn = dn.split(",")[0].split("=")[1]
    return add(dn, ("objectClass", ["groupOfNames"]), ("cn", [cn]), ("member", list(members)))


def ugroup(dn: str, *members: str) -> AddCommand:
    cn = dn.split(",")[0].split("=")[1]
    return add(
        dn, ("objectClass", ["groupOfUniqueNames"]), ("cn", [cn]), ("uniqueMember", list(members))
    )


class Dir:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.ctx = ApplyContext(Schema.default(), (BASE,))

    def run(self, cmd: Command) -> ApplyResult:
        with self.store.write() as w:
            return apply(w, cmd, self.ctx)

    def ok(self, cmd: Command) -> ApplyResult:
        r = self.run(cmd)
        assert r.code == 0, (r.code, r.message)
        return r

    def get(self, dn: str) -> Entry | None:
        with self.store.read() as r:
            return r.get_by_ndn(self.ctx.schema.normalize_dn(dn))

    def vals(self, dn: str, attr: str) -> list[str]:
        e = self.get(dn)
        assert e is not None, dn
        return [v.decode() for v in e.attrs.get(attr, [])]


@pytest.fixture()
def d(tmp_path: Path) -> Iterator[Dir]:
    store = Store(tmp_path / "db", Schema.default(), map_size=1 << 24)
    dd = Dir(store)
    dd.ok(add(BASE, ("objectClass", ["domain"]), ("dc", ["example"])))
    dd.ok(add(PEOPLE, ("objectClass", ["organizationalUnit"]), ("ou", ["people"])))
    dd.ok(add(GROUPS, ("objectClass", ["organizationalUnit"]), ("ou", ["groups"])))
    dd.ok(person(ALICE, "alice"))
    dd.ok(person(BOB, "bob"))
    yield dd
    store.close()


# ----------------------------------------------------------------------------- memberOf


def test_group_add_sets_member_of_and_ignores_missing_members(d: Dir) -> None:
    r = d.ok(group(G1, ALICE, "UID=Bob,OU=People,DC=example,DC=com", "uid=ghost," + PEOPLE))
    assert d.vals(ALICE, "memberOf") == [G1]
    assert d.vals(BOB, "memberOf") == [G1]
    assert sorted(e.dn for e in r.side_effects) == sorted([ALICE, BOB])
    d.ok(ugroup(U1, ALICE))
    assert d.vals(ALICE, "memberOf") == [G1, U1]
    # memberOf changes leave the member's modification stamps alone
    alice = d.get(ALICE)
    assert alice is not None and alice.attrs["modifyTimestamp"] == [T0.encode()]


def test_unique_member_uid_suffix_is_ignored_for_membership(d: Dir) -> None:
    d.ok(ugroup(U1, ALICE + "#'0101'B"))
    assert d.vals(ALICE, "memberOf") == [U1]


def test_non_group_with_member_attribute_does_not_set_member_of(d: Dir) -> None:
    d.ok(
        add(
            "cn=x," + GROUPS,
            ("objectClass", ["organizationalRole", "extensibleObject"]),
            ("cn", ["x"]),
            ("member", [ALICE]),
        )
    )
    assert d.vals(ALICE, "memberOf") == []


def test_member_created_after_group_is_not_backfilled(d: Dir) -> None:
    carol = "uid=carol," + PEOPLE
    d.ok(group(G1, ALICE, carol))
    d.ok(person(carol, "carol"))
    assert d.vals(carol, "memberOf") == []
    # the next write of the member values brings it in
    d.ok(mod(G1, (0, "member", [BOB])))
    assert d.vals(carol, "memberOf") == []
    d.ok(mod(G1, (2, "member", [ALICE, carol])))
    assert d.vals(carol, "memberOf") == [G1]


def test_modify_members_add_delete_replace(d: Dir) -> None:
    d.ok(group(G1, ALICE))
    d.ok(mod(G1, (0, "member", [BOB])))
    assert d.vals(BOB, "memberOf") == [G1]
    d.ok(mod(G1, (1, "member", [ALICE])))
    assert d.vals(ALICE, "memberOf") == []
    alice = d.get(ALICE)
    assert alice is not None and "memberOf" not in alice.attrs
    d.ok(mod(G1, (2, "member", [ALICE])))
    assert d.vals(ALICE, "memberOf") == [G1]
    assert d.vals(BOB, "memberOf") == []
    # a modify that does not touch members leaves memberOf as it is
    d.ok(mod(G1, (0, "description", ["hello"])))
    assert d.vals(ALICE, "memberOf") == [G1]


def test_failed_group_modify_changes_no_member(d: Dir) -> None:
    d.ok(group(G1, ALICE))
    r = d.run(mod(G1, (0, "member", [BOB]), (0, "foo", ["x"])))
    assert r.code == 17
    assert d.vals(BOB, "memberOf") == []


def test_group_delete_removes_member_of(d: Dir) -> None:
    d.ok(group(G1, ALICE, BOB))
    d.ok(group(G2, ALICE))
    d.ok(delete(G1))
    assert d.vals(ALICE, "memberOf") == [G2]
    assert d.vals(BOB, "memberOf") == []


def test_group_rename_and_move_rewrite_member_of(d: Dir) -> None:
    d.ok(group(G1, ALICE, BOB))
    r = d.ok(rename(G1, "cn=staff", True))
    staff = "cn=staff," + GROUPS
    assert d.vals(ALICE, "memberOf") == [staff]
    assert d.vals(BOB, "memberOf") == [staff]
    assert {e.dn for e in r.side_effects} == {ALICE, BOB}
    d.ok(rename(staff, "cn=staff", False, BASE))
    assert d.vals(ALICE, "memberOf") == ["cn=staff," + BASE]


def test_self_member_group(d: Dir) -> None:
    r = d.ok(group(G1, G1))
    assert r.entry is not None and r.entry.attrs["memberOf"] == [G1.encode()]
    assert d.vals(G1, "memberOf") == [G1]


@pytest.mark.parametrize(
    "changes",
    [
        ((0, "memberOf", [G1]),),
        ((2, "memberOf", [G1]),),
        ((1, "memberOf", []),),
        ((0, "memberof", [G1]),),
    ],
)
def test_member_of_not_writable_by_modify(
    d: Dir, changes: tuple[tuple[int, str, list[str]]]
) -> None:
    d.ok(group(G1, ALICE))
    r = d.run(mod(ALICE, *changes))
    assert r.code == 19
    assert r.message == f"{changes[0][1]}: no user modification allowed"
    assert d.vals(ALICE, "memberOf") == [G1]


def test_member_of_not_writable_by_add(d: Dir) -> None:
    r = d.run(
        add(
            "uid=x," + PEOPLE,
            ("objectClass", ["account"]),
            ("uid", ["x"]),
            ("memberOf", [G1]),
        )
    )
    assert (r.code, r.message) == (19, "memberOf: no user modification allowed")


def test_member_of_as_rdn_is_a_naming_violation(d: Dir) -> None:
    r = d.run(rename(ALICE, "memberOf=cn\\=x", False))
    assert (r.code, r.message) == (64, "naming attribute 'memberOf' is operational")
    r = d.run(add("createTimestamp=20200101000000Z," + BASE, ("objectClass", ["person"])))
    assert (r.code, r.message) == (64, "naming attribute 'createTimestamp' is operational")


# ----------------------------------------------------------------------------- refint


def test_delete_removes_member_values_and_stamps_group(d: Dir) -> None:
    d.ok(group(G1, ALICE, BOB))
    d.ok(ugroup(U1, BOB, ALICE))
    r = d.ok(delete(BOB))
    assert d.vals(G1, "member") == [ALICE]
    assert d.vals(U1, "uniqueMember") == [ALICE]
    g1 = d.get(G1)
    assert g1 is not None
    assert g1.attrs["modifiersName"] == [REFINT_ACTOR.encode()]
    assert g1.attrs["modifyTimestamp"] == [T1.encode()]
    assert {e.dn for e in r.side_effects} == {G1, U1}
    assert d.vals(ALICE, "memberOf") == [G1, U1]


def test_delete_of_last_member_keeps_stale_value(d: Dir) -> None:
    """slapd's refint without refint_nothing: the group's modify fails (MUST member), the
    delete succeeds and the group keeps the value."""
    d.ok(group(G1, ALICE))
    d.ok(group(G2, ALICE, BOB))
    r = d.ok(delete(ALICE))
    assert d.vals(G1, "member") == [ALICE]
    assert d.vals(G2, "member") == [BOB]
    assert {e.dn for e in r.side_effects} == {G2}
    g1 = d.get(G1)
    assert g1 is not None and g1.attrs["modifiersName"] == [ADMIN.encode()]


def test_delete_unreferenced_entry_touches_nothing(d: Dir) -> None:
    d.ok(group(G1, ALICE))
    r = d.ok(delete(BOB))
    assert r.side_effects == []
    assert d.vals(G1, "member") == [ALICE]


def test_rename_member_rewrites_groups_and_keeps_member_of(d: Dir) -> None:
    d.ok(group(G1, ALICE, BOB))
    d.ok(ugroup(U1, "uid=ALICE,ou=People,dc=example,dc=com"))
    d.ok(rename(ALICE, "uid=alicia", False))
    alicia = "uid=alicia," + PEOPLE
    assert d.vals(G1, "member") == [alicia, BOB]
    assert d.vals(U1, "uniqueMember") == [alicia]
    assert d.vals(alicia, "memberOf") == [G1, U1]


def test_subtree_move_rewrites_every_descendant_reference(d: Dir) -> None:
    d.ok(group(G1, ALICE, BOB))
    d.ok(group(G2, PEOPLE))
    d.ok(add("ou=staff," + BASE, ("objectClass", ["organizationalUnit"]), ("ou", ["staff"])))
    d.ok(rename(PEOPLE, "ou=folk", True, "ou=staff," + BASE))
    folk = "ou=folk,ou=staff," + BASE
    assert d.vals(G1, "member") == ["uid=alice," + folk, "uid=bob," + folk]
    assert d.vals(G2, "member") == [folk]
    assert d.vals("uid=alice," + folk, "memberOf") == [G1]
    assert d.vals(folk, "memberOf") == [G2]


def test_subtree_rename_with_groups_inside(d: Dir) -> None:
    """Groups and members move together: member values and memberOf both follow."""
    d.ok(group("cn=team," + PEOPLE, ALICE, BOB))
    d.ok(group(G1, "cn=team," + PEOPLE))
    d.ok(rename(PEOPLE, "ou=users", True))
    users = "ou=users," + BASE
    team = "cn=team," + users
    assert d.vals(team, "member") == ["uid=alice," + users, "uid=bob," + users]
    assert d.vals("uid=alice," + users, "memberOf") == [team]
    assert d.vals("uid=bob," + users, "memberOf") == [team]
    assert d.vals(G1, "member") == [team]
    assert d.vals(team, "memberOf") == [G1]


def test_refint_without_member_index_falls_back_to_reading(tmp_path: Path) -> None:
    store = Store(
        tmp_path / "db", Schema.default(), indexes={"objectClass": {"eq"}}, map_size=1 << 24
    )
    dd = Dir(store)
    try:
        dd.ok(add(BASE, ("objectClass", ["domain"]), ("dc", ["example"])))
        dd.ok(person("uid=a," + BASE, "a"))
        dd.ok(person("uid=b," + BASE, "b"))
        dd.ok(group("cn=g," + BASE, "uid=a," + BASE, "uid=b," + BASE))
        dd.ok(delete("uid=a," + BASE))
        assert dd.vals("cn=g," + BASE, "member") == ["uid=b," + BASE]
    finally:
        store.close()
