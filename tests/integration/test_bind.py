"""Simple bind: root DN, hashed and cleartext userPassword, anonymous; userPassword visibility.

Rules: users live under ``ou=bindtest``; hashes are computed here with hashlib / argon2-cffi.
slapd is the reference with its pw-sha2 and argon2 modules loaded, so every scheme runs on both.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable

import ldap
import pytest
from argon2 import PasswordHasher

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, target_kind

OU = f"ou=bindtest,{BASE_DN}"
PASSWORD = "Pässw0rd-42"


def _salted(prefix: str, digest: Callable[[bytes], hashlib._Hash]) -> str:
    salt = os.urandom(8)
    raw = digest(PASSWORD.encode() + salt).digest() + salt
    return prefix + base64.b64encode(raw).decode()


SCHEMES: dict[str, Callable[[], str]] = {
    "ssha": lambda: _salted("{SSHA}", hashlib.sha1),
    "ssha256": lambda: _salted("{SSHA256}", hashlib.sha256),
    "ssha512": lambda: _salted("{SSHA512}", hashlib.sha512),
    "sha": lambda: "{SHA}" + base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode(),
    "argon2": lambda: "{ARGON2}" + PasswordHasher().hash(PASSWORD),
    "clear": lambda: PASSWORD,
}


def user_dn(scheme: str) -> str:
    return f"cn=user-{scheme},{OU}"


@pytest.fixture(scope="module")
def users(url: str) -> str:
    conn = connect(url, ROOT_DN, ROOT_PW)
    conn.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"bindtest"])])
    for scheme, make in SCHEMES.items():
        conn.add_s(
            user_dn(scheme),
            [
                ("objectClass", [b"person"]),
                ("cn", [f"user-{scheme}".encode()]),
                ("sn", [scheme.encode()]),
                ("userPassword", [make().encode()]),
            ],
        )
    conn.unbind_s()
    return url


def test_root_bind(url: str) -> None:
    conn = connect(url)
    rtype, _, _, _ = conn.simple_bind_s(ROOT_DN, ROOT_PW)
    assert rtype == ldap.RES_BIND
    conn.unbind_s()


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_user_bind_per_scheme(users: str, scheme: str) -> None:
    conn = connect(users)
    rtype, _, _, _ = conn.simple_bind_s(user_dn(scheme), PASSWORD)
    assert rtype == ldap.RES_BIND
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        conn.simple_bind_s(user_dn(scheme), PASSWORD + "x")
    conn.unbind_s()


def test_wrong_root_password_and_unknown_dn(url: str) -> None:
    conn = connect(url)
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        conn.simple_bind_s(ROOT_DN, "not-the-secret")
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        conn.simple_bind_s(f"cn=nobody,{OU}", PASSWORD)
    conn.unbind_s()


def test_bind_as_entry_without_password(users: str) -> None:
    conn = connect(users)
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        conn.simple_bind_s(OU, "anything")
    conn.unbind_s()


def test_anonymous_bind_and_read(users: str) -> None:
    conn = connect(users)
    rtype, _, _, _ = conn.simple_bind_s("", "")
    assert rtype == ldap.RES_BIND
    found = conn.search_s(OU, ldap.SCOPE_ONELEVEL, "(objectClass=person)", ["cn"])
    assert len(found) == len(SCHEMES)
    conn.unbind_s()


def _visible_password(conn: ldap.ldapobject.LDAPObject, dn: str) -> list[bytes]:
    [(got_dn, attrs)] = conn.search_s(
        dn, ldap.SCOPE_BASE, "(objectClass=*)", ["userPassword", "cn"]
    )
    assert got_dn == dn and attrs["cn"]
    return list(attrs.get("userPassword", []))


def test_user_password_returned_to_root_only(users: str) -> None:
    """slapd's stock ACL shows a user their own userPassword; Oba returns it to the root DN
    only (issue 6: a hash is a secret too). Owners can still change and compare it."""
    dn = user_dn("clear")
    root = connect(users, ROOT_DN, ROOT_PW)
    stored = _visible_password(root, dn)
    # slapd stores a cleartext userPassword as given; Oba hashes it on write (issue 3)
    if target_kind() == "oba":
        assert len(stored) == 1 and stored[0].startswith(b"{ARGON2}")
    else:
        assert stored == [PASSWORD.encode()]
    me = connect(users, dn, PASSWORD)
    assert _visible_password(me, dn) == ([] if target_kind() == "oba" else stored)
    assert me.compare_s(dn, "userPassword", stored[0]) is True
    other = connect(users, user_dn("ssha"), PASSWORD)
    assert _visible_password(other, dn) == []
    anonymous = connect(users)
    assert _visible_password(anonymous, dn) == []
    star = anonymous.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["*"])
    assert "userPassword" not in star[0][1]
    for conn in (root, me, other, anonymous):
        conn.unbind_s()


def test_user_password_not_usable_in_anonymous_filter(users: str) -> None:
    anonymous = connect(users)
    found = anonymous.search_s(OU, ldap.SCOPE_SUBTREE, f"(userPassword={PASSWORD})", ["1.1"])
    assert found == []
    anonymous.unbind_s()
