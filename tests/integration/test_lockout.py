"""Account lockout (security.rateLimit) over LDAP and REST: N failed binds lock the account
(draft-behera attributes written through the Command path), success resets the count, the lock
survives a restart, REST shows and clears it; obaDisabled accounts cannot bind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ldap
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from .rest_support import RestServer, quote_dn

LOCKOUT = """security:
  rateLimit:
    enabled: true
    maxAttempts: 3
    lockoutDuration: "1h"
"""
PW = "Right-pass1"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    server = RestServer("oba", Path(tmp_path_factory.mktemp("lockout")), rest_extra=LOCKOUT)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# A locked account's bind, even with the right password, gets what any refused bind gets: 49
# with no diagnostic (the reason is in the audit trail only; tests/security/test_bind_oracle.py)
REFUSED = "invalid credentials"


def make_user(srv: RestServer, uid: str) -> str:
    dn = f"uid={uid},{BASE_DN}"
    connect(srv.url, ROOT_DN, ROOT_PW).add_s(dn, [
        ("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]), ("cn", [b"U"]),
        ("sn", [b"U"]), ("userPassword", [PW.encode()])])
    return dn


def ldap_bind(srv: RestServer, dn: str, password: str) -> str:
    """"" on success, else the diagnostic message of invalidCredentials."""
    try:
        connect(srv.url, dn, password).unbind_s()
    except ldap.INVALID_CREDENTIALS as exc:
        return str(exc.args[0].get("info", "")) or "invalid credentials"
    return ""


def state(srv: RestServer, dn: str) -> dict[str, list[bytes]]:
    [(_, attrs)] = connect(srv.url, ROOT_DN, ROOT_PW).search_s(
        dn, ldap.SCOPE_BASE, "(objectClass=*)", ["pwdFailureTime", "pwdAccountLockedTime"])
    return attrs


def test_ldap_failures_lock_and_rest_unlocks(srv: RestServer) -> None:
    dn = make_user(srv, "lock-ldap")
    for _ in range(3):
        assert ldap_bind(srv, dn, "wrong") == "invalid credentials"
    assert ldap_bind(srv, dn, PW) == REFUSED
    attrs = state(srv, dn)
    assert len(attrs["pwdFailureTime"]) == 3 and attrs["pwdAccountLockedTime"]
    with srv.client() as root:
        assert root.get(f"/entries/{quote_dn(dn)}/lock-status").json() == {"dn": dn,
                                                                           "locked": True}
        r = root.post(f"/entries/{quote_dn(dn)}/unlock")
        assert r.status_code == 200 and r.json() == {"success": True, "locked": False}
        assert root.get(f"/entries/{quote_dn(dn)}/lock-status").json()["locked"] is False
    assert ldap_bind(srv, dn, PW) == ""
    assert state(srv, dn) == {}


def test_success_resets_the_count(srv: RestServer) -> None:
    dn = make_user(srv, "lock-reset")
    for _ in range(2):
        ldap_bind(srv, dn, "wrong")
    assert ldap_bind(srv, dn, PW) == ""
    for _ in range(2):
        ldap_bind(srv, dn, "wrong")
    assert ldap_bind(srv, dn, PW) == ""


def test_rest_login_and_basic_failures_lock_ldap_too(srv: RestServer) -> None:
    dn = make_user(srv, "lock-rest")
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as anon:
        for _ in range(2):
            r = anon.post("/auth/bind", json={"dn": dn, "password": "wrong"})
            assert r.status_code == 401
    with srv.client((dn, "wrong")) as basic:
        assert basic.get(f"/entries/{quote_dn(dn)}").status_code == 401
    assert ldap_bind(srv, dn, PW) == REFUSED
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as anon:
        assert anon.post("/auth/bind", json={"dn": dn, "password": PW}).status_code == 401
    with srv.client((dn, PW)) as basic:
        assert basic.get(f"/entries/{quote_dn(dn)}").status_code == 401
    with srv.client((dn, PW)) as basic:  # a user may not unlock themselves
        assert basic.post(f"/entries/{quote_dn(dn)}/unlock").status_code == 401


def test_lock_survives_restart(tmp_path: Path) -> None:
    srv = RestServer("oba", tmp_path, rest_extra=LOCKOUT)
    srv.start()
    try:
        dn = make_user(srv, "lock-restart")
        for _ in range(3):
            ldap_bind(srv, dn, "wrong")
        srv.stop()
        srv.start()
        assert ldap_bind(srv, dn, PW) == REFUSED
        assert state(srv, dn)["pwdAccountLockedTime"]
    finally:
        srv.stop()


def test_disabled_account_cannot_bind(srv: RestServer) -> None:
    dn = make_user(srv, "disabled")
    with srv.client() as root:
        assert root.post(f"/entries/{quote_dn(dn)}/disable").status_code == 200
    assert ldap_bind(srv, dn, PW) == "invalid credentials"
