"""Attribute supertypes and tagged descriptions (issue 19; RFC 4512 2.5, RFC 4511 4.5.1.8):
requesting ``name`` returns cn, sn, givenName, ou...; requesting ``cn`` returns ``cn;lang-en``;
filters on a supertype match the subtypes' values. python-ldap and ldapsearch against the target
(the same requests are cases of the differential harness: differential/cases/supertypes.yaml).

Rules: this module writes only under ``ou=supertypes`` of the base.
"""

from __future__ import annotations

from collections.abc import Iterator

import ldap
import ldap.modlist
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, parse_ldif, run_tool

OU = f"ou=supertypes,{BASE_DN}"
ALICE = f"uid=alice,{OU}"


@pytest.fixture(scope="module")
def tree(url: str) -> Iterator[ldap.ldapobject.LDAPObject]:
    conn = connect(url, ROOT_DN, ROOT_PW)
    conn.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"supertypes"])])
    conn.add_s(ALICE, [
        ("objectClass", [b"inetOrgPerson"]), ("uid", [b"alice"]), ("cn", [b"Alice Liddell"]),
        ("cn;lang-en", [b"Alice L"]), ("cn;lang-FR", ["Alicé".encode()]),
        ("sn", [b"Liddell"]), ("givenName", [b"Alice"]), ("title", [b"Queen"]),
        ("mail", [b"alice@example.com"]),
    ])
    try:
        yield conn
    finally:
        for dn in (ALICE, OU):
            conn.delete_s(dn)
        conn.unbind_s()


def _attrs(conn: ldap.ldapobject.LDAPObject, base: str, attrs: list[str]) -> dict[str, list[bytes]]:
    [(_, found)] = conn.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", attrs)
    return {k.lower(): v for k, v in found.items()}


def test_requesting_a_supertype_returns_its_subtypes(tree: ldap.ldapobject.LDAPObject) -> None:
    got = _attrs(tree, ALICE, ["name"])
    assert got == {"cn": [b"Alice Liddell"], "cn;lang-en": [b"Alice L"],
                   "cn;lang-fr": ["Alicé".encode()], "sn": [b"Liddell"],
                   "givenname": [b"Alice"], "title": [b"Queen"]}
    assert _attrs(tree, OU, ["name"]) == {"ou": [b"supertypes"]}


def test_requesting_a_type_returns_its_tagged_descriptions(
        tree: ldap.ldapobject.LDAPObject) -> None:
    assert _attrs(tree, ALICE, ["cn"]) == {"cn": [b"Alice Liddell"], "cn;lang-en": [b"Alice L"],
                                          "cn;lang-fr": ["Alicé".encode()]}
    assert _attrs(tree, ALICE, ["cn;lang-en"]) == {"cn;lang-en": [b"Alice L"]}
    assert _attrs(tree, ALICE, ["name;LANG-FR"]) == {"cn;lang-fr": ["Alicé".encode()]}
    assert _attrs(tree, ALICE, ["cn;x-unknown", "cn;binary"]) == {}


def test_ldapsearch_sees_the_same(url: str, tree: ldap.ldapobject.LDAPObject) -> None:
    res = run_tool("ldapsearch", url, ["-LLL", "-b", OU, "(name=alice l*)", "name"], bind=None)
    assert res.rc == 0, res.stderr
    [entry] = parse_ldif(res.stdout)
    assert entry.dn == ALICE
    assert entry.get("cn;lang-en") == ["Alice L"] and entry.get("sn") == ["Liddell"]
    assert entry.get("title") == ["Queen"] and not entry.has("mail")


@pytest.mark.parametrize(("flt", "found"), [
    ("(name=Alice*)", True),            # cn through its supertype
    ("(name=liddell)", True),           # sn
    ("(name=queen)", True),             # title
    ("(name;lang-en=alice l)", True),   # a tagged subtype's value
    ("(cn=alice l)", True),             # cn reads cn;lang-en
    ("(cn;lang-en=Alice L)", True),
    ("(cn;lang-en=Alice Liddell)", False),  # ... but cn;lang-en not cn
    ("(cn;lang-de=*)", False),
    ("(name~=lidel)", True),
    ("(cn;x-unknown=*)", False),        # an unknown option: undefined
    ("(!(name=nobody))", True),
])
def test_filters_on_supertypes_and_tags(tree: ldap.ldapobject.LDAPObject, flt: str,
                                        found: bool) -> None:
    hits = tree.search_s(OU, ldap.SCOPE_SUBTREE, f"(&(uid=alice){flt})", ["1.1"])
    assert [dn for dn, _ in hits] == ([ALICE] if found else [])


def test_compare_reads_subtypes_and_tags(tree: ldap.ldapobject.LDAPObject) -> None:
    assert tree.compare_s(ALICE, "name", b"Alice L") is True
    assert tree.compare_s(ALICE, "cn;lang-en", b"Alice Liddell") is False
    with pytest.raises(ldap.NO_SUCH_ATTRIBUTE):
        tree.compare_s(ALICE, "cn;lang-de", b"Alice L")
    with pytest.raises(ldap.UNDEFINED_TYPE):
        tree.compare_s(ALICE, "cn;x-unknown", b"Alice L")


def test_tagged_descriptions_are_attributes_of_their_own(
        tree: ldap.ldapobject.LDAPObject) -> None:
    """SINGLE-VALUE and duplicates count per description; unknown options are 17."""
    tree.modify_s(ALICE, [(ldap.MOD_ADD, "displayName", [b"Alice"]),
                          (ldap.MOD_ADD, "displayName;lang-en", [b"Alice"]),
                          (ldap.MOD_ADD, "displayName;lang-de", [b"Alicia"])])
    with pytest.raises(ldap.CONSTRAINT_VIOLATION):
        tree.modify_s(ALICE, [(ldap.MOD_ADD, "displayName;lang-en", [b"Ali"])])
    with pytest.raises(ldap.UNDEFINED_TYPE):
        tree.modify_s(ALICE, [(ldap.MOD_ADD, "cn;x-unknown", [b"x"])])
    with pytest.raises(ldap.UNDEFINED_TYPE):
        tree.modify_s(ALICE, [(ldap.MOD_ADD, "cn;binary", [b"x"])])
    tree.modify_s(ALICE, [(ldap.MOD_DELETE, "displayName", None)])
    assert _attrs(tree, ALICE, ["displayName"]) == {"displayname;lang-en": [b"Alice"],
                                                    "displayname;lang-de": [b"Alicia"]}
    tree.modify_s(ALICE, [(ldap.MOD_DELETE, "displayName;lang-en", None),
                          (ldap.MOD_DELETE, "displayName;lang-de", None)])
