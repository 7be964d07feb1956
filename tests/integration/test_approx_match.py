"""Approximate matching ``~=`` (issue 19; RFC 4511 4.5.1.7.6): on directoryString and IA5 types
it is slapd's phonetic match (the Metaphone codes of the assertion's words found in the value's
words, in order), so a same-sounding surname spelt differently is found; on other types it is
the equality rule. python-ldap and ldapsearch against the target (the same requests are cases of
the differential harness, each answered as slapd answers it: differential/cases/approx.yaml).

Rules: this module writes only under ``ou=approx`` of the base.
"""

from __future__ import annotations

from collections.abc import Iterator

import ldap
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, parse_ldif, run_tool

OU = f"ou=approx,{BASE_DN}"
PEOPLE = {
    "jsmith": {"cn": "John Smith", "sn": "Smith", "givenName": "John",
               "mail": "john.smith@example.com"},
    "jsmyth": {"cn": "Jon  Smyth", "sn": "Smyth", "givenName": "Jon",
               "description": "Philip Thompson"},
    "ksmythe": {"cn": "Kate Smythe", "sn": "Smythe", "givenName": "Kate"},
    "aknight": {"cn": "Arthur Knight", "sn": "Knight", "givenName": "Arthur"},
    "kmuller": {"cn": "Käthe Müller-Straße 3rd", "sn": "Müller", "givenName": "Käthe",
                "title": "Xavier Schmidt"},
    "bsmart": {"cn": "Bob Smart", "sn": "Smart", "givenName": "Bob"},
}


@pytest.fixture(scope="module")
def tree(url: str) -> Iterator[ldap.ldapobject.LDAPObject]:
    conn = connect(url, ROOT_DN, ROOT_PW)
    conn.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"approx"])])
    for uid, attrs in PEOPLE.items():
        conn.add_s(f"uid={uid},{OU}", [
            ("objectClass", [b"inetOrgPerson", b"posixAccount"]), ("uid", [uid.encode()]),
            ("uidNumber", [str(5000 + len(uid)).encode()]), ("gidNumber", [b"5000"]),
            ("homeDirectory", [f"/home/{uid}".encode()]),
            *((k, [v.encode()]) for k, v in attrs.items())])
    try:
        yield conn
    finally:
        for uid in PEOPLE:
            conn.delete_s(f"uid={uid},{OU}")
        conn.delete_s(OU)
        conn.unbind_s()


def _uids(conn: ldap.ldapobject.LDAPObject, flt: str) -> list[str]:
    found = conn.search_s(OU, ldap.SCOPE_ONELEVEL, flt, ["uid"])
    return sorted(entry["uid"][0].decode() for _, entry in found)


@pytest.mark.parametrize(("flt", "expected"), [
    # a different spelling of a same-sounding surname
    ("(sn~=smith)", ["jsmith", "jsmyth", "ksmythe"]),
    ("(sn~=Smyth)", ["jsmith", "jsmyth", "ksmythe"]),
    ("(sn~=smart)", ["bsmart"]),
    ("(sn~=night)", ["aknight"]),                    # KN -> N, GH -> K
    ("(sn~=nite)", []),
    ("(sn~=miller)", ["kmuller"]),                   # ü -> u, then M L R
    ("(cn~=jon smith)", ["jsmith", "jsmyth"]),       # every word, in order
    ("(cn~=smith jon)", []),
    ("(cn~=kathe muller 4th)", ["kmuller"]),         # 3rd and 4th: no letters before a digit
    ("(givenName~=jhon)", []),
    ("(description~=filip)", ["jsmyth"]),            # PH -> F
    ("(description~=filip tomson)", []),             # TH -> 0
    ("(title~=zavier)", ["kmuller"]),                # X -> S
    ("(mail~=jon.smyth@example.org)", ["jsmith"]),   # IA5: a word ends at '.'
    ("(name~=smyth)", ["jsmith", "jsmyth", "ksmythe"]),  # subtypes of name
    ("(uidNumber~=5006)", ["bsmart", "jsmith", "jsmyth"]),  # INTEGER: equality
    ("(uidNumber~=5O06)", []),                       # invalid: Undefined
    ("(&(sn~=smith)(!(givenName~=john)))", ["ksmythe"]),
])
def test_approximate_filters(tree: ldap.ldapobject.LDAPObject, flt: str,
                             expected: list[str]) -> None:
    assert _uids(tree, flt) == expected


def test_ldapsearch_finds_the_other_spelling(url: str, tree: ldap.ldapobject.LDAPObject) -> None:
    res = run_tool("ldapsearch", url, ["-LLL", "-b", OU, "(sn~=Smithe)", "sn"], bind=None)
    assert res.rc == 0, res.stderr
    assert sorted(e.get("sn")[0] for e in parse_ldif(res.stdout)) == ["Smith", "Smyth", "Smythe"]
