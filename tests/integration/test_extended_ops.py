"""Extended operations with real clients: ldappasswd, ldapwhoami and python-ldap's passwd_s.

Rules: entries live under ``ou=extop``; result codes are what slapd answers (ldappasswd exits 1
on any failure, so the code is read from its ``Result: ... (N)`` line).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import ldap
import ldap.extop
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, run_tool

OU = f"ou=extop,{BASE_DN}"


def _dn(uid: str) -> str:
    return f"uid={uid},{OU}"


@pytest.fixture(scope="module")
def users(url: str) -> Iterator[str]:
    conn = connect(url, ROOT_DN, ROOT_PW)
    conn.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"extop"])])
    for uid in ("alice", "bob", "carl", "dora", "erin"):
        attrs = [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
                 ("cn", [uid.encode()]), ("sn", [b"x"])]
        if uid != "carl":
            attrs.append(("userPassword", [f"{uid}pw".encode()]))
        conn.add_s(_dn(uid), attrs)
    conn.unbind_s()
    yield url


def _code(out: str) -> int | None:
    m = re.search(r"Result: .*\((\d+)\)", out)
    return int(m.group(1)) if m else None


def _can_bind(url: str, dn: str, pw: str) -> bool:
    try:
        connect(url, dn, pw).unbind_s()
    except ldap.INVALID_CREDENTIALS:
        return False
    return True


def test_whoami(users: str) -> None:
    res = run_tool("ldapwhoami", users, [], bind=(_dn("alice"), "alicepw"))
    assert res.rc == 0, res.stderr
    assert res.stdout.strip() == f"dn:{_dn('alice')}"
    anon = run_tool("ldapwhoami", users, [], bind=None)
    assert anon.rc == 0 and anon.stdout.strip() == "anonymous"


def test_self_change_with_old_password(users: str, tmp_path: Path) -> None:
    res = run_tool("ldappasswd", users, ["-a", "bobpw", "-s", "bobpw2"],
                   bind=(_dn("bob"), "bobpw"))
    assert res.rc == 0, res.stdout + res.stderr
    assert _can_bind(users, _dn("bob"), "bobpw2")
    assert not _can_bind(users, _dn("bob"), "bobpw")
    # -t / -T: old and new password read from files (the non-interactive -A / -S)
    (tmp_path / "old").write_text("bobpw2")
    (tmp_path / "new").write_text("bobpw3")
    res = run_tool("ldappasswd", users, ["-t", str(tmp_path / "old"), "-T", str(tmp_path / "new")],
                   bind=(_dn("bob"), "bobpw2"))
    assert res.rc == 0, res.stdout + res.stderr
    assert _can_bind(users, _dn("bob"), "bobpw3")


def test_wrong_old_password_unwilling(users: str) -> None:
    res = run_tool("ldappasswd", users, ["-a", "wrong", "-s", "new"],
                   bind=(_dn("dora"), "dorapw"))
    assert res.rc != 0
    assert _code(res.stdout + res.stderr) == 53
    assert _can_bind(users, _dn("dora"), "dorapw")


def test_old_password_on_entry_without_password(users: str) -> None:
    res = run_tool("ldappasswd", users, ["-a", "foo", "-s", "new", _dn("carl")])
    assert _code(res.stdout + res.stderr) == 53


def test_anonymous_needs_authentication(users: str) -> None:
    res = run_tool("ldappasswd", users, ["-s", "x", _dn("dora")], bind=None)
    assert _code(res.stdout + res.stderr) == 8


def test_other_user_insufficient_access(users: str) -> None:
    res = run_tool("ldappasswd", users, ["-s", "x", _dn("dora")], bind=(_dn("erin"), "erinpw"))
    assert _code(res.stdout + res.stderr) == 50
    assert _can_bind(users, _dn("dora"), "dorapw")


def test_root_nonexistent_user(users: str) -> None:
    res = run_tool("ldappasswd", users, ["-s", "x", _dn("nobody")])
    assert _code(res.stdout + res.stderr) == 32
    # the root DN has no entry: with no user identity there is nothing to change
    res = run_tool("ldappasswd", users, ["-s", "x"])
    assert _code(res.stdout + res.stderr) == 32


def test_root_sets_and_generates(users: str) -> None:
    res = run_tool("ldappasswd", users, ["-s", "rootset", _dn("erin")])
    assert res.rc == 0, res.stdout + res.stderr
    assert _can_bind(users, _dn("erin"), "rootset")
    res = run_tool("ldappasswd", users, [_dn("erin")])
    assert res.rc == 0, res.stdout + res.stderr
    m = re.search(r"New password: (\S+)", res.stdout)
    assert m, res.stdout
    assert _can_bind(users, _dn("erin"), m.group(1))
    assert not _can_bind(users, _dn("erin"), "rootset")


def test_python_ldap_generated_for_bound_user(users: str) -> None:
    conn = connect(users, _dn("alice"), "alicepw")
    _, resp = conn.passwd_s(None, "alicepw", None, extract_newpw=True)
    conn.unbind_s()
    new = resp.genPasswd
    assert isinstance(new, bytes) and len(new) >= 8
    assert _can_bind(users, _dn("alice"), new.decode())


def test_whoami_python_ldap(users: str) -> None:
    conn = connect(users, ROOT_DN, ROOT_PW)
    assert conn.whoami_s() == f"dn:{ROOT_DN}"
    conn.unbind_s()
