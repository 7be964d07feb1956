"""apply(): LDAP write semantics and result codes (as observed on OpenLDAP slapd back-mdb)."""

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
from oba.schema import Schema
from oba.storage import Store

T0 = "20240101120000Z"
T1 = "20240202120000Z"
ADMIN = "cn=admin,dc=example,dc=com"
BASE = "dc=example,dc=com"
PEOPLE = "ou=people,dc=example,dc=com"
ALICE = "uid=alice,ou=people,dc=example,dc=com"
_n = 0


def _uuid() -> str:
    global _n
    _n += 1
    return f"00000000-0000-4000-8000-{_n:012d}"


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


def person(dn: str, uid: str, **extra: list[str]) -> AddCommand:
    attrs = [
        ("objectClass", ["inetOrgPerson"]),
        ("uid", [uid]),
        ("cn", [uid.title()]),
        ("sn", ["Jones"]),
    ]
    attrs += list(extra.items())
    return add(dn, *attrs)


class Dir:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.ctx = ApplyContext(Schema.default(), ("dc=example,dc=com",))

    def run(self, cmd: Command) -> ApplyResult:
        with self.store.write() as w:
            return apply(w, cmd, self.ctx)

    def get(self, dn: str) -> Entry | None:
        with self.store.read() as r:
            return r.get_by_ndn(self.ctx.schema.normalize_dn(dn))


@pytest.fixture()
def d(tmp_path: Path) -> Iterator[Dir]:
    store = Store(tmp_path / "db", Schema.default(), map_size=1 << 24)
    dd = Dir(store)
    assert dd.run(add(BASE, ("objectClass", ["domain"]), ("dc", ["example"]))).code == 0
    assert (
        dd.run(add(PEOPLE, ("objectClass", ["organizationalUnit"]), ("ou", ["people"]))).code == 0
    )
    assert dd.run(person(ALICE, "alice")).code == 0
    yield dd
    store.close()


# ----------------------------------------------------------------------------- add


def test_add_sets_operational_attributes(d: Dir) -> None:
    e = d.get(ALICE)
    assert e is not None
    assert e.attrs["entryUUID"][0].startswith(b"00000000-")
    assert e.attrs["createTimestamp"] == [T0.encode()] == e.attrs["modifyTimestamp"]
    assert e.attrs["creatorsName"] == [ADMIN.encode()] == e.attrs["modifiersName"]
    assert e.attrs["structuralObjectClass"] == [b"inetOrgPerson"]
    assert e.dn == ALICE


@pytest.mark.parametrize(
    ("cmd", "code", "matched", "message"),
    [
        (add("uid=x,,dc=example", ("objectClass", ["account"])), 34, "", "invalid DN"),
        (add("foo=x," + PEOPLE, ("objectClass", ["account"])), 34, "", "invalid DN"),
        (
            add("dc=other,dc=org", ("objectClass", ["domain"]), ("dc", ["other"])),
            53,
            "",
            "no global superior knowledge",
        ),
        (
            add(
                "uid=x,ou=a,ou=nope,dc=example,dc=com", ("objectClass", ["account"]), ("uid", ["x"])
            ),
            32,
            BASE,
            "",
        ),
        (
            add("uid=x," + PEOPLE, ("objectClass", ["account"]), ("uid", ["x"]), ("foo", ["bar"])),
            17,
            "",
            "foo: attribute type undefined",
        ),
        (
            add("uid=x," + PEOPLE, ("objectClass", ["account"]), ("uid", ["x", "X"])),
            20,
            "",
            "uid: value #1 provided more than once",
        ),
        (add("uid=x," + PEOPLE, ("uid", ["x"])), 65, "", "no objectClass attribute"),
        (
            add(
                "uid=x," + PEOPLE,
                ("objectClass", ["account"]),
                ("uid", ["x"]),
                ("entryUUID", ["6b1e0d44-3f3e-4a8e-9a53-0e1f6c7a3c11"]),
            ),
            19,
            "",
            "entryUUID: no user modification allowed",
        ),
        (
            add(
                "uid=x," + PEOPLE,
                ("objectClass", ["account"]),
                ("uid", ["x"]),
                ("createTimestamp", ["20200101000000Z"]),
            ),
            19,
            "",
            "createTimestamp: no user modification allowed",
        ),
        (
            add(
                "uid=x," + PEOPLE,
                ("objectClass", ["account"]),
                ("uid", ["x"]),
                ("description", [""]),
            ),
            21,
            "",
            "description: value #0 invalid per syntax",
        ),
        (
            add("uid=x," + PEOPLE, ("objectClass", ["fooClass"]), ("uid", ["x"])),
            21,
            "",
            "objectClass: value #0 invalid per syntax",
        ),
        (
            add("cn=x," + PEOPLE, ("objectClass", ["person"]), ("cn", ["x"])),
            65,
            "",
            "object class 'person' requires attribute 'sn'",
        ),
        (
            add("uid=x," + PEOPLE, ("objectClass", ["account"]), ("uid", ["x"]), ("mail", ["a@b"])),
            65,
            "",
            "attribute 'mail' not allowed",
        ),
        (
            add("uid=x," + PEOPLE, ("objectClass", ["uidObject"]), ("uid", ["x"])),
            65,
            "",
            "no structural object class provided",
        ),
        (add(ALICE, ("objectClass", ["account"]), ("uid", ["alice"])), 68, "", ""),
        (
            add(
                "uid=x," + PEOPLE,
                ("objectClass", ["account"]),
                ("uid", ["x"]),
                ("description", []),
            ),
            2,
            "",
            "description: no values for attribute type",
        ),
    ],
)
def test_add_errors(d: Dir, cmd: AddCommand, code: int, matched: str, message: str) -> None:
    res = d.run(cmd)
    assert (res.code, res.matched_dn, res.message) == (code, matched, message)
    assert res.entry is None


def test_add_puts_missing_rdn_value_in_entry(d: Dir) -> None:
    assert d.run(add("uid=x," + PEOPLE, ("objectClass", ["account"]), ("uid", ["y"]))).code == 0
    e = d.get("uid=x," + PEOPLE)
    assert e is not None and e.attrs["uid"] == [b"y", b"x"]


def test_add_suffix_entry_and_single_value(tmp_path: Path) -> None:
    dd = Dir(Store(tmp_path / "db2", Schema.default(), map_size=1 << 24))
    assert dd.run(add(BASE, ("objectClass", ["domain"]), ("dc", ["example"]))).code == 0
    res = dd.run(person("uid=z," + BASE, "z", displayName=["a", "b"]))
    assert res.code == 19
    dd.store.close()


def test_failed_add_changes_nothing(d: Dir) -> None:
    with d.store.read() as r:
        before = r.count()
    assert d.run(add("uid=x," + PEOPLE, ("uid", ["x"]))).code == 65
    with d.store.read() as r:
        assert r.count() == before
        assert r.eq("uid", b"x") == []


# ----------------------------------------------------------------------------- modify


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ([(0, "cn", ["alice"])], 20, "modify/add: cn: value #0 already exists"),
        ([(1, "cn", ["bob"])], 16, "modify/delete: cn: no such value"),
        ([(1, "description", [])], 16, "modify/delete: description: no such attribute"),
        ([(3, "uidNumber", ["1"])], 16, "modify/increment: uidNumber: no such attribute"),
        ([(3, "cn", ["1"])], 19, "cn: attribute syntax inappropriate for increment"),
        ([(2, "uid", ["bob"])], 64, "value of naming attribute 'uid' is not present in entry"),
        ([(1, "uid", [])], 64, "naming attribute 'uid' is not present in entry"),
        ([(0, "displayName", ["a", "b"])], 19, "displayName: multiple values provided"),
        (
            [(0, "displayName", ["a"]), (0, "displayName", ["b"])],
            19,
            "attribute 'displayName' cannot have multiple values",
        ),
        (
            [(2, "modifyTimestamp", ["20200101000000Z"])],
            19,
            "modifyTimestamp: no user modification allowed",
        ),
        ([(0, "foo", ["x"])], 17, "foo: attribute type undefined"),
        (
            [(0, "description", ["d1"]), (1, "cn", ["nothere"])],
            16,
            "modify/delete: cn: no such value",
        ),
        ([(1, "objectClass", [])], 65, "no objectClass attribute"),
        ([(0, "uidNumber", ["5"])], 65, "attribute 'uidNumber' not allowed"),
        ([(0, "description", ["q", "Q"])], 20, "description: value #1 provided more than once"),
        ([(1, "sn", [])], 65, "object class 'inetOrgPerson' requires attribute 'sn'"),
        ([(2, "sn", [])], 65, "object class 'inetOrgPerson' requires attribute 'sn'"),
    ],
)
def test_modify_errors(
    d: Dir, changes: list[tuple[int, str, list[str]]], code: int, message: str
) -> None:
    before = d.get(ALICE)
    res = d.run(mod(ALICE, *changes))
    assert (res.code, res.message) == (code, message)
    assert d.get(ALICE) == before  # atomic: nothing changed


def test_modify_missing_entry(d: Dir) -> None:
    res = d.run(mod("uid=zz," + PEOPLE, (2, "cn", ["x"])))
    assert (res.code, res.matched_dn) == (32, PEOPLE)


def test_modify_success_paths(d: Dir) -> None:
    res = d.run(
        mod(
            ALICE,
            (0, "description", ["d1", "d2"]),
            (1, "description", ["D1"]),
            (0, "mail", ["a@example.com"]),
            (2, "telephoneNumber", []),
            (0, "cn", ["Alice Jones"]),
        )
    )
    assert res.code == 0, res.message
    e = d.get(ALICE)
    assert e is not None
    assert e.attrs["description"] == [b"d2"]
    assert e.attrs["cn"] == [b"Alice", b"Alice Jones"]
    assert "telephoneNumber" not in e.attrs
    assert e.attrs["modifyTimestamp"] == [T1.encode()]
    assert e.attrs["createTimestamp"] == [T0.encode()]
    with d.store.read() as r:
        assert r.eq("mail", b"a@example.com") == [e.id]
        assert r.eq("cn", b"alice jones") == [e.id]
    assert d.run(mod(ALICE, (1, "description", []), (2, "mail", []))).code == 0
    e = d.get(ALICE)
    assert e is not None and "description" not in e.attrs and "mail" not in e.attrs
    with d.store.read() as r:
        assert r.eq("mail", b"a@example.com") == []


def test_modify_increment(d: Dir) -> None:
    dn = "uid=p," + PEOPLE
    assert (
        d.run(
            add(
                dn,
                ("objectClass", ["account", "posixAccount"]),
                ("uid", ["p"]),
                ("cn", ["p"]),
                ("uidNumber", ["10"]),
                ("gidNumber", ["1"]),
                ("homeDirectory", ["/p"]),
            )
        ).code
        == 0
    )
    assert d.run(mod(dn, (3, "uidNumber", ["5"]))).code == 0
    assert d.run(mod(dn, (3, "uidNumber", ["-2"]))).code == 0
    e = d.get(dn)
    assert e is not None and e.attrs["uidNumber"] == [b"13"]
    assert d.run(mod(dn, (3, "uidNumber", ["abc"]))).code == 21
    with d.store.read() as r:
        assert r.eq("uidNumber", b"13") == [e.id]
        assert r.eq("uidNumber", b"10") == []


# ----------------------------------------------------------------------------- delete


def test_delete(d: Dir) -> None:
    res = d.run(DeleteCommand("uid=zz,ou=x," + BASE, "r", ADMIN, T1))
    assert (res.code, res.matched_dn) == (32, BASE)
    res = d.run(DeleteCommand(PEOPLE, "r", ADMIN, T1))
    assert (res.code, res.message) == (66, "subordinate objects must be deleted first")
    res = d.run(DeleteCommand("dc=foo", "r", ADMIN, T1))
    assert res.code == 53
    res = d.run(DeleteCommand(ALICE, "r", ADMIN, T1))
    assert res.code == 0 and res.entry is not None and res.entry.dn == ALICE
    assert d.get(ALICE) is None
    assert d.run(DeleteCommand(PEOPLE, "r", ADMIN, T1)).code == 0


# ----------------------------------------------------------------------------- modify DN


def test_modify_dn_errors(d: Dir) -> None:
    assert d.run(add("uid=x," + PEOPLE, ("objectClass", ["account"]), ("uid", ["x"]))).code == 0
    cases = [
        (rename("uid=zz," + PEOPLE, "uid=yy", True), 32, "", PEOPLE),
        (rename("uid=x," + PEOPLE, "uid=alice", True), 68, "", ""),
        (
            rename("uid=x," + PEOPLE, "uid=x", True, "ou=nope," + BASE),
            32,
            "new superior not found",
            "",
        ),
        (rename(PEOPLE, "ou=p2", True, ALICE), 53, "cannot place an entry below itself", ""),
        (rename(PEOPLE, "ou=p2", True, PEOPLE), 53, "cannot place an entry below itself", ""),
        (rename("uid=x," + PEOPLE, "foo=x", True), 34, "invalid new RDN", ""),
        (rename("uid=x," + PEOPLE, "mail=x@y", False), 65, "attribute 'mail' not allowed", ""),
        (
            rename("uid=x," + PEOPLE, "uid=x", True, "dc=other"),
            71,
            "cannot rename between DSAs",
            "",
        ),
        (rename(BASE, "dc=ex2", False), 71, "cannot rename between DSAs", ""),
    ]
    for cmd, code, message, matched in cases:
        res = d.run(cmd)
        assert (res.code, res.message, res.matched_dn) == (code, message, matched), cmd


def test_modify_dn_keeps_or_deletes_old_rdn(d: Dir) -> None:
    assert d.run(add("uid=x," + PEOPLE, ("objectClass", ["account"]), ("uid", ["y"]))).code == 0
    res = d.run(rename("uid=x," + PEOPLE, "uid=x2", False))
    assert res.code == 0 and res.old_dn == "uid=x," + PEOPLE
    e = d.get("uid=x2," + PEOPLE)
    assert e is not None and e.attrs["uid"] == [b"y", b"x", b"x2"]
    assert e.attrs["modifiersName"] == [ADMIN.encode()]
    assert d.run(rename("uid=x2," + PEOPLE, "uid=y", True)).code == 0
    e = d.get("uid=y," + PEOPLE)
    assert e is not None and e.attrs["uid"] == [b"y", b"x"]
    assert d.get("uid=x2," + PEOPLE) is None
    with d.store.read() as r:
        assert r.eq("uid", b"x2") == []


def test_modify_dn_single_value_violation(d: Dir) -> None:
    assert d.run(mod(ALICE, (0, "displayName", ["d1"]))).code == 0
    res = d.run(rename(ALICE, "displayName=d2", False))
    assert (res.code, res.message) == (19, "attribute 'displayName' cannot have multiple values")


def test_modify_dn_moves_whole_subtree(d: Dir) -> None:
    assert (
        d.run(
            add("ou=staff," + BASE, ("objectClass", ["organizationalUnit"]), ("ou", ["staff"]))
        ).code
        == 0
    )
    assert (
        d.run(
            add("ou=sub," + PEOPLE, ("objectClass", ["organizationalUnit"]), ("ou", ["sub"]))
        ).code
        == 0
    )
    assert d.run(person("uid=deep,ou=sub," + PEOPLE, "deep")).code == 0
    res = d.run(rename(PEOPLE, "ou=folk", True, "ou=staff," + BASE))
    assert res.code == 0, res.message
    new_base = "ou=folk,ou=staff," + BASE
    assert d.get(PEOPLE) is None and d.get(ALICE) is None
    folk = d.get(new_base)
    deep = d.get("uid=deep,ou=sub," + new_base)
    alice = d.get("uid=alice," + new_base)
    assert folk is not None and deep is not None and alice is not None
    assert deep.dn == "uid=deep,ou=sub," + new_base
    assert folk.attrs["ou"] == [b"folk"]
    staff = d.get("ou=staff," + BASE)
    assert staff is not None
    with d.store.read() as r:
        assert folk.id in r.children(staff.id)
        base = r.get_by_ndn(BASE)
        assert base is not None and folk.id not in r.children(base.id)
        assert alice.id in r.children(folk.id)
    # and the moved subtree is still fully usable
    assert d.run(DeleteCommand("uid=deep,ou=sub," + new_base, "r", ADMIN, T1)).code == 0
    assert d.run(DeleteCommand("ou=sub," + new_base, "r", ADMIN, T1)).code == 0


# ----------------------------------------------------------------------------- object classes

P1 = "cn=p1,dc=example,dc=com"


def _person_p1(d: Dir) -> None:
    assert d.run(add(P1, ("objectClass", ["person"]), ("cn", ["p1"]), ("sn", ["x"]))).code == 0


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        (
            [(0, "objectClass", ["inetOrgPerson"])],
            69,
            "structural object class modification from 'person' to 'inetOrgPerson' not allowed",
        ),
        (
            [(2, "objectClass", ["organizationalPerson"])],
            69,
            "structural object class modification from 'person' to 'organizationalPerson'"
            " not allowed",
        ),
        (
            [(2, "objectClass", ["device"])],
            69,
            "structural object class modification from 'person' to 'device' not allowed",
        ),
        (
            [(0, "objectClass", ["account"]), (0, "uid", ["p1"])],
            65,
            "invalid structural object class chain (person/account)",
        ),
        ([(2, "objectClass", ["uidObject"])], 65, "no structural object class provided"),
        ([(1, "objectClass", [])], 65, "no objectClass attribute"),
        ([(1, "objectClass", ["inetOrgPerson"])], 16, "modify/delete: objectClass: no such value"),
    ],
)
def test_structural_object_class_is_fixed(
    d: Dir, changes: list[tuple[int, str, list[str]]], code: int, message: str
) -> None:
    _person_p1(d)
    res = d.run(mod(P1, *changes))
    assert (res.code, res.message) == (code, message)
    e = d.get(P1)
    assert e is not None and e.attrs["objectClass"] == [b"person"]
    assert e.attrs["structuralObjectClass"] == [b"person"]


def test_modify_object_class_keeping_structural_class(d: Dir) -> None:
    _person_p1(d)
    res = d.run(mod(P1, (0, "objectClass", ["uidObject", "top"]), (0, "uid", ["p1"])))
    assert res.code == 0, res.message
    res = d.run(mod(P1, (2, "objectClass", ["top", "person", "uidObject"])))
    assert res.code == 0, res.message
    e = d.get(P1)
    assert e is not None and e.attrs["structuralObjectClass"] == [b"person"]
    # an entry listing its superclasses: dropping one keeps the structural class
    res = d.run(mod(ALICE, (0, "objectClass", ["person", "organizationalPerson"])))
    assert res.code == 0, res.message
    res = d.run(mod(ALICE, (1, "objectClass", ["person"])))
    assert res.code == 0, res.message
    alice = d.get(ALICE)
    assert alice is not None and alice.attrs["structuralObjectClass"] == [b"inetOrgPerson"]


def test_add_with_unrelated_structural_classes(d: Dir) -> None:
    res = d.run(
        add(
            "cn=p2," + BASE,
            ("objectClass", ["person", "account"]),
            ("cn", ["p2"]),
            ("sn", ["x"]),
            ("uid", ["p2"]),
        )
    )
    assert (res.code, res.message) == (65, "invalid structural object class chain (person/account)")


# ----------------------------------------------------------------------------- RDN rules


def test_modify_dn_new_rdn_must_be_allowed(d: Dir) -> None:
    _person_p1(d)
    res = d.run(rename(P1, "uid=p1", False))
    assert (res.code, res.message) == (65, "attribute 'uid' not allowed")
    res = d.run(rename(P1, "sn=y", True))
    assert (res.code, res.message) == (65, "object class 'person' requires attribute 'cn'")
    res = d.run(rename(P1, "entryUUID=6b1e0d44-3f3e-4a8e-9a53-0e1f6c7a3c11", False))
    assert (res.code, res.message) == (64, "naming attribute 'entryUUID' is operational")
    assert d.get(P1) is not None


def test_multi_valued_rdns(d: Dir) -> None:
    m = "cn=m1+sn=m2," + BASE
    res = d.run(add(m, ("objectClass", ["person"])))
    assert res.code == 0, res.message
    e = d.get("sn=M2+cn=M1," + BASE)  # AVA order and case do not matter
    assert e is not None and e.attrs["cn"] == [b"m1"] and e.attrs["sn"] == [b"m2"]
    _person_p1(d)
    assert d.run(rename(P1, "cn=p1+sn=z", False)).code == 0
    e = d.get("cn=p1+sn=z," + BASE)
    assert e is not None and e.attrs["cn"] == [b"p1"] and e.attrs["sn"] == [b"x", b"z"]
    assert d.run(rename("cn=p1+sn=z," + BASE, "sn=w+cn=p1b", True)).code == 0
    e = d.get("cn=p1b+sn=w," + BASE)
    assert e is not None and e.dn == "cn=p1b+sn=w," + BASE  # slapd sorts the AVAs
    assert e.attrs["cn"] == [b"p1b"] and e.attrs["sn"] == [b"x", b"w"]
    assert d.run(rename("cn=p1b+sn=w," + BASE, "cn=p1c", True)).code == 0
    e = d.get("cn=p1c," + BASE)
    assert e is not None and e.attrs["cn"] == [b"p1c"] and e.attrs["sn"] == [b"x"]
    # the same RDN spelled differently replaces the old spelling when deleteoldrdn is set
    assert d.run(rename(m, "cn=M1+sn=m2", True)).code == 0
    e = d.get(m)
    assert e is not None and e.dn == "cn=M1+sn=m2," + BASE
    assert e.attrs["cn"] == [b"M1"] and e.attrs["sn"] == [b"m2"]
    assert d.run(rename(m, "cn=m1+sn=M2", False)).code == 0
    e = d.get(m)
    assert e is not None and e.attrs["cn"] == [b"M1"] and e.attrs["sn"] == [b"m2"]


def test_stored_dn_is_slapds_pretty_form(d: Dir) -> None:
    """Schema names for types, sorted AVAs, and the parent part spelled as the parent is."""
    res = d.run(add("SN=k+commonName=k2," + BASE, ("objectClass", ["person"])))
    assert res.code == 0 and res.entry is not None
    assert res.entry.dn == "cn=k2+sn=k," + BASE
    res = d.run(add("UID=zz,OU=People,DC=example,DC=com", ("objectClass", ["account"])))
    assert res.code == 0 and res.entry is not None
    assert res.entry.dn == "uid=zz," + PEOPLE
    res = d.run(rename("uid=zz," + PEOPLE, "UserID=Zz", True, "DC=Example,DC=COM"))
    assert res.code == 0 and res.entry is not None
    assert res.entry.dn == "uid=Zz," + BASE
    suffix = Dir(d.store)
    suffix.ctx = ApplyContext(Schema.default(), ("dc=example,dc=com", "dc=other,dc=org"))
    res = suffix.run(add("DC=Other,DC=ORG", ("objectClass", ["domain"])))
    assert res.code == 0 and res.entry is not None
    assert res.entry.dn == "dc=Other,dc=ORG"
