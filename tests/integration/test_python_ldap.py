"""python-ldap (libldap) against the target: core flows, error classes, async ids, abandon.

Rules: entries live under ``ou=pyldap``; error expectations (class, matched DN) follow slapd.
"""

from __future__ import annotations

from collections.abc import Iterator

import ldap
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect

OU = f"ou=pyldap,{BASE_DN}"
COUNT = 40


def _person(name: str, number: int) -> list[tuple[str, list[bytes]]]:
    return [
        ("objectClass", [b"inetOrgPerson"]),
        ("cn", [name.encode()]),
        ("sn", [f"sn{number}".encode()]),
        ("employeeNumber", [str(number).encode()]),
        ("description", ["größe ✓".encode()]),
    ]


@pytest.fixture(scope="module")
def root(url: str) -> Iterator[ldap.ldapobject.LDAPObject]:
    conn = connect(url, ROOT_DN, ROOT_PW)
    conn.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"pyldap"])])
    for i in range(COUNT):
        conn.add_s(f"cn=p{i},{OU}", _person(f"p{i}", i))
    yield conn
    conn.unbind_s()


def test_add_search_modify_compare_delete(root: ldap.ldapobject.LDAPObject) -> None:
    dn = f"cn=flow,{OU}"
    root.add_s(dn, _person("flow", 1000))
    [(got, attrs)] = root.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["cn", "description"])
    assert got == dn
    assert attrs == {"cn": [b"flow"], "description": ["größe ✓".encode()]}
    root.modify_s(
        dn,
        [
            (ldap.MOD_ADD, "mail", [b"flow@example.com"]),
            (ldap.MOD_REPLACE, "sn", [b"changed"]),
            (ldap.MOD_DELETE, "description", None),
        ],
    )
    msgid = root.search_ext(dn, ldap.SCOPE_BASE, "(sn=changed)", ["mail", "sn", "description"])
    _, [(_, attrs)] = root.result(msgid)
    assert attrs == {"mail": [b"flow@example.com"], "sn": [b"changed"]}
    assert root.compare_s(dn, "sn", b"changed") is True
    assert root.compare_s(dn, "sn", b"other") is False
    root.delete_s(dn)
    with pytest.raises(ldap.NO_SUCH_OBJECT):
        root.search_s(dn, ldap.SCOPE_BASE)


def test_search_ext_s_attrlist_and_filter(root: ldap.ldapobject.LDAPObject) -> None:
    found = root.search_ext_s(OU, ldap.SCOPE_ONELEVEL, "(employeeNumber=7)", ["sn"])
    assert found == [(f"cn=p7,{OU}", {"sn": [b"sn7"]})]
    everyone = root.search_s(OU, ldap.SCOPE_ONELEVEL, "(cn=p*)", ["1.1"])
    assert len(everyone) == COUNT and all(attrs == {} for _, attrs in everyone)


def test_size_limit(root: ldap.ldapobject.LDAPObject) -> None:
    with pytest.raises(ldap.SIZELIMIT_EXCEEDED):
        root.search_ext_s(OU, ldap.SCOPE_ONELEVEL, "(cn=p*)", ["1.1"], sizelimit=3)


def test_error_classes(url: str, root: ldap.ldapobject.LDAPObject) -> None:
    with pytest.raises(ldap.NO_SUCH_OBJECT) as missing:
        root.search_s(f"cn=x,ou=nowhere,{OU}", ldap.SCOPE_BASE)
    assert missing.value.args[0]["matched"] == OU
    with pytest.raises(ldap.ALREADY_EXISTS):
        root.add_s(f"cn=p1,{OU}", _person("p1", 1))
    with pytest.raises(ldap.NOT_ALLOWED_ON_NONLEAF):
        root.delete_s(OU)
    with pytest.raises(ldap.NO_SUCH_ATTRIBUTE):
        root.modify_s(f"cn=p2,{OU}", [(ldap.MOD_DELETE, "mail", None)])
    with pytest.raises(ldap.TYPE_OR_VALUE_EXISTS):
        root.modify_s(f"cn=p2,{OU}", [(ldap.MOD_ADD, "sn", [b"sn2"])])
    with pytest.raises(ldap.INVALID_DN_SYNTAX):
        root.delete_s("this is not a DN")
    with pytest.raises(ldap.NO_SUCH_OBJECT) as gone:
        root.delete_s(f"cn=ghost,{OU}")
    assert gone.value.args[0]["matched"] == OU
    with pytest.raises(ldap.NO_SUCH_OBJECT):
        root.compare_s(f"cn=ghost,{OU}", "sn", b"x")
    anonymous = connect(url)
    with pytest.raises(ldap.STRONG_AUTH_REQUIRED):
        anonymous.delete_s(f"cn=p3,{OU}")
    anonymous.unbind_s()
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        connect(url, ROOT_DN, "wrong")


def test_several_outstanding_searches(root: ldap.ldapobject.LDAPObject) -> None:
    numbers = [3, 11, 17, 29, 31]
    msgids = {
        root.search(OU, ldap.SCOPE_ONELEVEL, f"(employeeNumber={n})", ["employeeNumber"]): n
        for n in numbers
    }
    assert len(msgids) == len(numbers)
    for msgid in sorted(msgids, reverse=True):
        _, data, got_id, _ = root.result3(msgid, all=1, timeout=10)
        assert got_id == msgid
        n = msgids[msgid]
        assert data == [(f"cn=p{n},{OU}", {"employeeNumber": [str(n).encode()]})]


def test_abandon_keeps_connection_usable(root: ldap.ldapobject.LDAPObject) -> None:
    for _ in range(3):
        msgid = root.search(OU, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["*", "+"])
        root.abandon(msgid)
    found = root.search_s(OU, ldap.SCOPE_ONELEVEL, "(employeeNumber=5)", ["cn"])
    assert found == [(f"cn=p5,{OU}", {"cn": [b"p5"]})]
    done = root.search(OU, ldap.SCOPE_ONELEVEL, "(cn=p*)", ["1.1"])
    _, data = root.result(done, all=1, timeout=10)
    assert len(data) == COUNT
