"""ldap3 (pure Python client) against the target: result dicts carry the right codes.

Rules: entries live under ``ou=ldap3``; no schema download (``get_info=NONE``) so only the
protocol is exercised.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

import ldap3
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW

OU = f"ou=ldap3,{BASE_DN}"


def _connect(url: str, user: str | None, password: str | None) -> ldap3.Connection:
    parsed = urlparse(url)
    server = ldap3.Server(parsed.hostname, port=parsed.port, get_info=ldap3.NONE, connect_timeout=5)
    return ldap3.Connection(
        server, user=user, password=password, auto_bind=True, receive_timeout=15
    )


@pytest.fixture(scope="module")
def conn(url: str) -> Iterator[ldap3.Connection]:
    c = _connect(url, ROOT_DN, ROOT_PW)
    assert c.bound
    assert c.add(OU, ["organizationalUnit"], {"ou": "ldap3"})
    yield c
    c.unbind()


def test_add_search_modify_compare_delete(conn: ldap3.Connection) -> None:
    dn = f"cn=Zoë Ärger,{OU}"
    assert conn.add(dn, ["inetOrgPerson"], {"cn": "Zoë Ärger", "sn": "Ärger", "uid": "zoe"})
    assert conn.result["result"] == 0 and conn.result["description"] == "success"
    assert conn.search(OU, "(uid=zoe)", ldap3.SUBTREE, attributes=["cn", "sn"])
    [entry] = conn.entries
    assert entry.entry_dn == dn
    assert entry.sn.value == "Ärger"
    assert conn.modify(
        dn,
        {
            "mail": [(ldap3.MODIFY_ADD, ["zoe@example.com"])],
            "sn": [(ldap3.MODIFY_REPLACE, ["Arger"])],
            "uid": [(ldap3.MODIFY_DELETE, [])],
        },
    )
    assert conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["mail", "sn", "uid"])
    [entry] = conn.entries
    assert entry.mail.value == "zoe@example.com" and entry.sn.value == "Arger"
    assert not entry.entry_raw_attributes.get("uid")
    assert conn.compare(dn, "sn", "arger") is True
    assert conn.result["result"] == 6
    assert conn.compare(dn, "sn", "Other") is False
    assert conn.result["result"] == 5
    assert conn.delete(dn)
    assert not conn.search(dn, "(objectClass=*)", ldap3.BASE)
    assert conn.result["result"] == 32


def test_error_results(url: str, conn: ldap3.Connection) -> None:
    assert not conn.add(OU, ["organizationalUnit"], {"ou": "ldap3"})
    assert conn.result["result"] == 68 and conn.result["description"] == "entryAlreadyExists"
    assert not conn.delete(f"cn=ghost,ou=none,{OU}")
    assert conn.result["result"] == 32 and conn.result["dn"] == OU
    assert not conn.modify(OU, {"description": [(ldap3.MODIFY_DELETE, ["absent"])]})
    assert conn.result["result"] == 16
    bad = ldap3.Connection(
        ldap3.Server(urlparse(url).hostname, port=urlparse(url).port, get_info=ldap3.NONE),
        user=ROOT_DN,
        password="wrong",
    )
    assert not bad.bind()
    assert bad.result["result"] == 49 and bad.result["description"] == "invalidCredentials"


def test_anonymous_read_and_refused_write(url: str, conn: ldap3.Connection) -> None:
    anonymous = _connect(url, None, None)
    assert anonymous.search(BASE_DN, "(ou=ldap3)", ldap3.SUBTREE, attributes=["ou"])
    assert [e.entry_dn for e in anonymous.entries] == [OU]
    assert not anonymous.add(f"cn=anon,{OU}", ["person"], {"cn": "anon", "sn": "x"})
    assert anonymous.result["result"] == 8
    anonymous.unbind()


def test_size_limit(conn: ldap3.Connection) -> None:
    for i in range(3):
        assert conn.add(f"cn=s{i},{OU}", ["person"], {"cn": f"s{i}", "sn": "s"})
    conn.search(OU, "(sn=s)", ldap3.LEVEL, attributes=["cn"], size_limit=2)
    assert conn.result["result"] == 4
    assert len(conn.entries) == 2
