"""Password policy (security.passwordPolicy) over LDAP Add/Modify/Password Modify and REST:
each quality rule with its message, pre-hashed values, history, pwdChangedTime and maxAge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ldap
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, wait_until
from .rest_support import RestServer, quote_dn

POLICY = """security:
  passwordPolicy:
    enabled: true
    minLength: 8
    requireUppercase: true
    requireLowercase: true
    requireDigit: true
    requireSpecial: true
    historyCount: 2
    maxAge: "{max_age}"
"""
GOOD = "Good-pass1"


def person(uid: str, password: str) -> list[tuple[str, list[bytes]]]:
    return [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]), ("cn", [b"P"]),
            ("sn", [b"P"]), ("userPassword", [password.encode()])]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    server = RestServer("oba", Path(tmp_path_factory.mktemp("policy")),
                        rest_extra=POLICY.format(max_age="1h"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def info(exc: pytest.ExceptionInfo[ldap.LDAPError]) -> str:
    return str(exc.value.args[0].get("info", ""))


@pytest.mark.parametrize(("password", "rule"), [
    ("Sh0rt!", "minLength"), ("lower-case1", "requireUppercase"),
    ("UPPER-CASE1", "requireLowercase"), ("No-digits-here", "requireDigit"),
    ("NoSpecial123", "requireSpecial"),
])
def test_each_rule_on_add_modify_and_password_modify(srv: RestServer, password: str,
                                                     rule: str) -> None:
    root = connect(srv.url, ROOT_DN, ROOT_PW)
    dn = f"uid=q-{rule.lower()},{BASE_DN}"
    with pytest.raises(ldap.CONSTRAINT_VIOLATION) as exc:
        root.add_s(dn, person(f"q-{rule.lower()}", password))
    assert f"password policy: {rule}" in info(exc)
    root.add_s(dn, person(f"q-{rule.lower()}", GOOD))
    with pytest.raises(ldap.CONSTRAINT_VIOLATION) as exc:
        root.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [password.encode()])])
    assert f"password policy: {rule}" in info(exc)
    user = connect(srv.url, dn, GOOD)
    with pytest.raises(ldap.CONSTRAINT_VIOLATION) as exc:
        user.passwd_s(dn, GOOD, password)
    assert f"password policy: {rule}" in info(exc)
    with srv.client() as rest:
        r = rest.patch(f"/entries/{quote_dn(dn)}", json={"changes": [
            {"operation": "replace", "attribute": "userPassword", "values": [password]}]})
        assert r.status_code == 400 and rule in r.json()["message"], r.text


def test_prehashed_only_for_root(srv: RestServer) -> None:
    root = connect(srv.url, ROOT_DN, ROOT_PW)
    dn = f"uid=hashed,{BASE_DN}"
    root.add_s(dn, person("hashed", "{SSHA}MTIzNDU2Nzg5MDEyMzQ1Njc4OTA="))
    root.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [GOOD.encode()])])
    user = connect(srv.url, dn, GOOD)
    with pytest.raises(ldap.CONSTRAINT_VIOLATION) as exc:
        user.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [b"{CLEARTEXT}x"])])
    assert "pre-hashed" in info(exc)


def test_history_and_changed_time(srv: RestServer) -> None:
    root = connect(srv.url, ROOT_DN, ROOT_PW)
    dn = f"uid=hist,{BASE_DN}"
    root.add_s(dn, person("hist", "First-pass1"))
    [(_, attrs)] = root.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["pwdChangedTime"])
    assert attrs["pwdChangedTime"][0].endswith(b"Z")
    user = connect(srv.url, dn, "First-pass1")
    user.passwd_s(dn, "First-pass1", "Second-pass2")
    user = connect(srv.url, dn, "Second-pass2")
    for reused in ("First-pass1", "Second-pass2"):
        with pytest.raises(ldap.CONSTRAINT_VIOLATION) as exc:
            user.passwd_s(dn, "Second-pass2", reused)
        assert "historyCount" in info(exc)
    user.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [b"Third-pass3"])])
    [(_, attrs)] = root.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["pwdHistory"])
    assert len(attrs["pwdHistory"]) == 2
    assert all(b"#1.3.6.1.4.1.1466.115.121.1.40#" in v for v in attrs["pwdHistory"])
    # historyCount 2 (plus the current one): after one more change the first may come back
    connect(srv.url, dn, "Third-pass3").passwd_s(dn, "Third-pass3", "Fourth-pass4")
    connect(srv.url, dn, "Fourth-pass4").passwd_s(dn, "Fourth-pass4", "First-pass1")
    connect(srv.url, dn, "First-pass1").unbind_s()


def test_generated_password_meets_the_policy(srv: RestServer) -> None:
    root = connect(srv.url, ROOT_DN, ROOT_PW)
    dn = f"uid=gen,{BASE_DN}"
    root.add_s(dn, person("gen", GOOD))
    _, generated = root.passwd_s(dn, None, None, extract_newpw=True)
    connect(srv.url, dn, generated.genPasswd.decode()).unbind_s()


def test_max_age_expires_passwords(tmp_path: Path) -> None:
    srv = RestServer("oba", tmp_path, rest_extra=POLICY.format(max_age="2s"))
    srv.start()
    try:
        dn = f"uid=old,{BASE_DN}"
        connect(srv.url, ROOT_DN, ROOT_PW).add_s(dn, person("old", GOOD))
        connect(srv.url, dn, GOOD).unbind_s()

        def expired() -> bool:
            try:
                connect(srv.url, dn, GOOD).unbind_s()
            except ldap.INVALID_CREDENTIALS as exc:
                assert "password expired" in str(exc.args[0].get("info", ""))
                return True
            return False

        wait_until(expired, 10, "the password to expire")
    finally:
        srv.stop()
