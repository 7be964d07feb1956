"""Passwords are hashed on write (security.passwordHash, default {ARGON2}).

Rules: entries live under ``ou=pwhash``. Oba hashes cleartext ``userPassword`` values written by
Add and Modify and stores ``{SCHEME}`` values as given; slapd (no ppolicy hashing) stores what it
is sent, which is the deliberate difference asserted for the reference target. Either way the
user binds with the cleartext.
"""

from __future__ import annotations

import base64
import hashlib

import ldap

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect

OU = f"ou=pwhash,{BASE_DN}"


def _stored(conn: ldap.ldapobject.LDAPObject, dn: str) -> list[bytes]:
    [(_, attrs)] = conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["userPassword"])
    return list(attrs.get("userPassword", []))


def _ssha(password: bytes, salt: bytes) -> bytes:
    return b"{SSHA}" + base64.b64encode(hashlib.sha1(password + salt).digest() + salt)


def test_hash_on_add_and_modify(url: str, target: str) -> None:
    root = connect(url, ROOT_DN, ROOT_PW)
    root.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"pwhash"])])
    dn = f"uid=h1,{OU}"
    root.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [b"h1"]), ("cn", [b"h1"]),
                    ("sn", [b"h"]), ("userPassword", [b"clear-one"])])
    [value] = _stored(root, dn)
    if target == "oba":
        assert value.startswith(b"{ARGON2}$argon2")
    else:
        assert value == b"clear-one"
    connect(url, dn, "clear-one").unbind_s()

    root.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [b"clear-two"])])
    [value] = _stored(root, dn)
    assert value != b"clear-two" if target == "oba" else value == b"clear-two"
    connect(url, dn, "clear-two").unbind_s()

    # a value already in {SCHEME} form is stored as given
    hashed = _ssha(b"pre-hashed", b"saltsalt")
    root.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [hashed])])
    assert _stored(root, dn) == [hashed]
    connect(url, dn, "pre-hashed").unbind_s()

    # the owner changes it with a plain modify: hashed as well
    user = connect(url, dn, "pre-hashed")
    user.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [b"clear-three"])])
    user.unbind_s()
    [value] = _stored(root, dn)
    if target == "oba":
        assert value.startswith(b"{ARGON2}")
    connect(url, dn, "clear-three").unbind_s()
    root.unbind_s()


def test_password_modify_hashes(url: str, target: str) -> None:
    root = connect(url, ROOT_DN, ROOT_PW)
    dn = f"uid=h2,{BASE_DN}"
    root.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [b"h2"]), ("cn", [b"h2"]),
                    ("sn", [b"h"])])
    root.passwd_s(dn, None, "via-extop")
    [value] = _stored(root, dn)
    # slapd hashes Password Modify with its default {SSHA}; Oba with security.passwordHash
    assert value.startswith(b"{ARGON2}" if target == "oba" else b"{SSHA}")
    connect(url, dn, "via-extop").unbind_s()
    root.unbind_s()
