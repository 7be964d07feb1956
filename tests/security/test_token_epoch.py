"""A REST token dies with the credentials it was issued for (security issue, item 6): once the
account's password changes (whoever changes it, however), the account is locked (by failed
binds or by an administrator), disabled, or deleted and made again, a token issued before is
refused with 401, and stays refused after an unlock or re-enable. Changes that do not touch
the credentials (a mail address) leave tokens alone.

Rules: one real server per module (the password policy off, so ``pwdChangedTime`` is not
kept: the tokens must not depend on it); tokens come from ``POST /api/v1/auth/bind``; a token
"works" when ``GET /api/v1/entries/{own DN}`` answers 200 with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import ldap
import pytest

from integration._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from integration.rest_support import JWT_SECRET, RestServer, quote_dn

MAX_ATTEMPTS = 3
LOCKOUT = f"""security:
  rateLimit:
    enabled: true
    maxAttempts: {MAX_ATTEMPTS}
    lockoutDuration: "1h"
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    server = RestServer("oba", Path(tmp_path_factory.mktemp("epoch")), rest_extra=LOCKOUT)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_user(srv: RestServer, uid: str, pw: str) -> str:
    dn = f"uid={uid},{BASE_DN}"
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    try:
        conn.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
                        ("cn", [b"U"]), ("sn", [b"U"]), ("userPassword", [pw.encode()])])
    finally:
        conn.unbind_s()
    return dn


def token(srv: RestServer, dn: str, pw: str) -> str:
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as anon:
        r = anon.post("/auth/bind", json={"dn": dn, "password": pw})
    assert r.status_code == 200, r.text
    value: str = r.json()["token"]
    return value


def works(srv: RestServer, tok: str, dn: str) -> bool:
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {tok}"}) as client:
        r = client.get(f"/entries/{quote_dn(dn)}")
    assert r.status_code in (200, 401), r.text
    return r.status_code == 200


def root_modify(srv: RestServer, dn: str, changes: list[tuple[int, str, list[bytes] | None]]
                ) -> None:
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    try:
        conn.modify_s(dn, changes)
    finally:
        conn.unbind_s()


def wrong_bind(srv: RestServer, dn: str) -> None:
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        connect(srv.url, dn, "wrong")


def test_password_changes_revoke_tokens(srv: RestServer) -> None:
    dn = make_user(srv, "epoch-pw", "first-pw-1")
    t1 = token(srv, dn, "first-pw-1")
    assert works(srv, t1, dn)
    # a change that leaves the credentials alone leaves the token alone
    root_modify(srv, dn, [(ldap.MOD_REPLACE, "mail", [b"epoch@example.com"])])
    assert works(srv, t1, dn)
    # the administrator resets the password
    root_modify(srv, dn, [(ldap.MOD_REPLACE, "userPassword", [b"second-pw-2"])])
    assert not works(srv, t1, dn), "a token outlived an administrator's password reset"
    t2 = token(srv, dn, "second-pw-2")
    assert works(srv, t2, dn)
    # the user changes it (Password Modify over LDAP)
    conn = connect(srv.url, dn, "second-pw-2")
    try:
        conn.passwd_s(dn, "second-pw-2", "third-pw-3")
    finally:
        conn.unbind_s()
    assert not works(srv, t2, dn), "a token outlived a Password Modify"
    # ... or over REST, with a token of their own
    t3 = token(srv, dn, "third-pw-3")
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {t3}"}) as client:
        r = client.patch(f"/entries/{quote_dn(dn)}", json={"changes": [
            {"operation": "replace", "attribute": "userPassword", "values": ["fourth-pw-4"]}]})
    assert r.status_code == 200, r.text  # the built-in ACL: the owner may write userPassword
    assert not works(srv, t3, dn), "the token that changed the password still works"
    assert works(srv, token(srv, dn, "fourth-pw-4"), dn)


def test_a_lock_revokes_tokens_for_good(srv: RestServer) -> None:
    dn = make_user(srv, "epoch-lock", "lock-pw-1")
    before = token(srv, dn, "lock-pw-1")
    for _ in range(MAX_ATTEMPTS):
        wrong_bind(srv, dn)
    assert not works(srv, before, dn), "a token outlived the lock"
    with srv.client() as root:
        assert root.post(f"/entries/{quote_dn(dn)}/unlock").status_code == 200
    assert not works(srv, before, dn), "unlocking brought an old token back"
    after_unlock = token(srv, dn, "lock-pw-1")
    assert works(srv, after_unlock, dn)
    # an administrator's lock, an unlock and a second lock
    stamp = time.strftime("%Y%m%d%H%M%SZ", time.gmtime()).encode()
    root_modify(srv, dn, [(ldap.MOD_REPLACE, "pwdAccountLockedTime", [stamp])])
    assert not works(srv, after_unlock, dn), "a token outlived an administrator's lock"
    root_modify(srv, dn, [(ldap.MOD_DELETE, "pwdAccountLockedTime", None)])
    assert not works(srv, after_unlock, dn), "unlocking brought an old token back"
    between = token(srv, dn, "lock-pw-1")
    root_modify(srv, dn, [(ldap.MOD_REPLACE, "pwdAccountLockedTime", [stamp])])
    assert not works(srv, between, dn), "a token outlived the second lock"


def test_disable_and_recreate_revoke_tokens_for_good(srv: RestServer) -> None:
    dn = make_user(srv, "epoch-disable", "dis-pw-1")
    before = token(srv, dn, "dis-pw-1")
    with srv.client() as root:
        assert root.post(f"/entries/{quote_dn(dn)}/disable").status_code == 200
        assert not works(srv, before, dn)
        assert root.post(f"/entries/{quote_dn(dn)}/enable").status_code == 200
    assert not works(srv, before, dn), "re-enabling brought an old token back"
    again = token(srv, dn, "dis-pw-1")
    assert works(srv, again, dn)
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    try:
        conn.delete_s(dn)
    finally:
        conn.unbind_s()
    make_user(srv, "epoch-disable", "dis-pw-1")  # same DN, same password, another entry
    assert not works(srv, again, dn), "a token of a deleted entry works for its successor"


def test_a_token_without_the_epoch_is_refused(srv: RestServer) -> None:
    dn = make_user(srv, "epoch-forged", "forged-pw-1")
    good = token(srv, dn, "forged-pw-1")
    assert works(srv, good, dn)
    claims = jwt.decode(good, JWT_SECRET, algorithms=["HS256"])
    old_style = jwt.encode({"dn": dn, "iat": claims["iat"], "exp": claims["exp"]}, JWT_SECRET,
                           algorithm="HS256")
    assert not works(srv, old_style, dn), "a token without the account's epoch was accepted"


def test_a_token_of_a_deleted_account_stays_dead_when_the_dn_is_reused(srv: RestServer) -> None:
    # the reproduction of the report: a token for uid=yan, 401 once the entry is deleted,
    # worked again when the root DN made a new entry at the same DN with another password
    dn = make_user(srv, "yan", "yan-pw-1")
    old = token(srv, dn, "yan-pw-1")
    assert works(srv, old, dn)
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    try:
        conn.delete_s(dn)
    finally:
        conn.unbind_s()
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {old}"}) as client:
        assert client.get(f"/entries/{quote_dn(BASE_DN)}").status_code == 401
    make_user(srv, "yan", "yan-other-pw-2")
    assert not works(srv, old, dn), "a token of a deleted entry works for its successor"
    assert works(srv, token(srv, dn, "yan-other-pw-2"), dn)
