"""Operational attributes: present with ``+`` (or by name), absent with ``*``; kept current.

Rules: entries live under ``ou=opattrs``; the modify is made by the entry itself (changing its own
userPassword, the one write the default policy grants a user) so modifiersName must change.
"""

from __future__ import annotations

import re
import time
import uuid

import ldap

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, wait_until

OU = f"ou=opattrs,{BASE_DN}"
OPERATIONAL = [
    "entryUUID",
    "createTimestamp",
    "modifyTimestamp",
    "creatorsName",
    "modifiersName",
    "entryDN",
    "structuralObjectClass",
    "hasSubordinates",
    "subschemaSubentry",
]
GENERALIZED = re.compile(r"^\d{14}Z$")


def _read(conn: ldap.ldapobject.LDAPObject, dn: str, attrs: list[str]) -> dict[str, list[str]]:
    [(_, raw)] = conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", attrs)
    return {k.lower(): [v.decode() for v in vals] for k, vals in raw.items()}


def test_operational_attributes(url: str) -> None:
    root = connect(url, ROOT_DN, ROOT_PW)
    root.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"opattrs"])])
    dn = f"cn=op1,{OU}"
    root.add_s(
        dn,
        [
            ("objectClass", [b"top", b"person"]),
            ("cn", [b"op1"]),
            ("sn", [b"one"]),
            ("userPassword", [b"op1pass"]),
        ],
    )
    plus = _read(root, dn, ["+"])
    for name in OPERATIONAL:
        assert name.lower() in plus, f"{name} missing from '+'"
    assert "cn" not in plus
    uuid.UUID(plus["entryuuid"][0])
    assert GENERALIZED.match(plus["createtimestamp"][0])
    assert plus["createtimestamp"] == plus["modifytimestamp"]
    assert plus["creatorsname"] == [ROOT_DN] and plus["modifiersname"] == [ROOT_DN]
    assert plus["entrydn"] == [dn]
    assert plus["structuralobjectclass"] == ["person"]
    assert plus["hassubordinates"] == ["FALSE"]
    assert plus["subschemasubentry"] == ["cn=Subschema"]

    star = _read(root, dn, ["*"])
    assert "cn" in star
    assert not {n.lower() for n in OPERATIONAL} & set(star)
    named = _read(root, dn, ["entryUUID", "CREATETIMESTAMP"])
    assert set(named) == {"entryuuid", "createtimestamp"}
    assert _read(root, OU, ["hasSubordinates"])["hassubordinates"] == ["TRUE"]

    created = plus["createtimestamp"][0]
    wait_until(
        lambda: time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "Z" > created,
        5.0,
        "the clock to pass the creation second",
    )
    me = connect(url, dn, "op1pass")
    me.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [b"op1pass-new"])])
    after = _read(root, dn, ["+"])
    assert after["modifytimestamp"][0] > created
    assert after["createtimestamp"] == [created]
    assert after["modifiersname"] == [dn]
    assert after["creatorsname"] == [ROOT_DN]
    assert after["entryuuid"] == plus["entryuuid"]
    me.unbind_s()
    root.unbind_s()
