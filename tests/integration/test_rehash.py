"""Rehash on bind (security.rehashOnBind): a stored password made with another scheme or other
Argon2 parameters still verifies, and after the first successful bind it is stored again with
the configured scheme and ``security.argon2`` parameters: through the write path (one
``password.rehash`` command, replicated in a cluster), one audit record, and no password change
(the credential epoch does not move, so a token issued before still works; ``pwdChangedTime``,
``pwdHistory`` and the modifiers stay).

Rules: real servers over real sockets; the root DN sets the old values pre-hashed (Argon2 with
argon2-cffi's own defaults and with OpenLDAP's module's Argon2i, ``{SSHA}``, ``{CLEARTEXT}``);
the configured parameters are small (t=2, m=2048 KiB) so that a test hash is quick and
recognisable; every wait polls against a deadline.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import argon2
import argon2.low_level
import httpx
import ldap
import pytest
import yaml

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, wait_until
from .rest_support import quote_dn
from .test_audit_support import AuditServer, wait_logs

PW = "Rehash-me-42"
CONFIGURED = b"{ARGON2}$argon2id$v=19$m=2048,t=2,p=1$"
SECURITY = """security:
  argon2:
    iterations: 2
    memoryKiB: 2048
    parallelism: 1
  passwordPolicy:
    enabled: true
    historyCount: 3
"""
WATCHED = ["userPassword", "pwdChangedTime", "pwdHistory", "modifyTimestamp",
           "modifiersName"]


def _ssha(password: str) -> bytes:
    salt = b"saltsalt"
    return b"{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt)


OLD_VALUES = {
    # argon2-cffi's own defaults (t=3, m=64 MiB, p=4): what Oba stored before security.argon2
    "argon2-library": lambda: b"{ARGON2}" + argon2.PasswordHasher().hash(PW).encode(),
    # OpenLDAP's argon2 module (slappasswd -h {ARGON2}): Argon2i, t=3, m=4096, p=1
    "argon2i-slapd": lambda: b"{ARGON2}" + argon2.low_level.hash_secret(
        PW.encode(), b"0123456789abcdef", 3, 4096, 1, 32, argon2.low_level.Type.I),
    "ssha": lambda: _ssha(PW),
    "cleartext": lambda: b"{CLEARTEXT}" + PW.encode(),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    server = AuditServer("oba", Path(tmp_path_factory.mktemp("rehash")), rest_extra=SECURITY)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def add_user(url: str, uid: str, stored: bytes, root: tuple[str, str] = (ROOT_DN, ROOT_PW)
             ) -> str:
    dn = f"uid={uid},{BASE_DN}"
    conn = connect(url, *root)
    try:
        conn.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
                        ("cn", [b"U"]), ("sn", [b"U"]), ("userPassword", [stored])])
    finally:
        conn.unbind_s()
    return dn


def read(url: str, dn: str, root: tuple[str, str] = (ROOT_DN, ROOT_PW)
         ) -> dict[str, list[bytes]]:
    conn = connect(url, *root)
    try:
        [(_, attrs)] = conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", WATCHED)
    finally:
        conn.unbind_s()
    return {k: list(v) for k, v in attrs.items()}


def bind_ok(url: str, dn: str, password: str) -> bool:
    try:
        connect(url, dn, password).unbind_s()
    except ldap.INVALID_CREDENTIALS:
        return False
    return True


def rehash_records(root: httpx.Client, dn: str) -> list[dict[str, object]]:
    body = root.get("/logs", params={"search": dn, "source": "system", "limit": 1000}).json()
    return [e for e in body["entries"] if e["fields"].get("operation") == "rehash"]


@pytest.mark.parametrize("kind", sorted(OLD_VALUES))
def test_old_hashes_verify_and_are_stored_again_with_the_configured_parameters(
        srv: AuditServer, kind: str) -> None:
    old = OLD_VALUES[kind]()
    dn = add_user(srv.url, f"rehash-{kind}", old)
    before = read(srv.url, dn)
    assert before["userPassword"] == [old] and before["pwdChangedTime"]
    assert not bind_ok(srv.url, dn, PW + "x")  # a wrong password re-makes nothing
    assert read(srv.url, dn) == before

    # the bind that earns a token verifies the old value and triggers the rehash
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as anon:
        r = anon.post("/auth/bind", json={"dn": dn, "password": PW})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    wait_until(lambda: read(srv.url, dn)["userPassword"][0].startswith(CONFIGURED), 15,
               f"the {kind} value to be stored with the configured parameters")
    after = read(srv.url, dn)
    assert len(after["userPassword"]) == 1
    # not a password change: everything else as it was
    assert {k: v for k, v in after.items() if k != "userPassword"} == \
        {k: v for k, v in before.items() if k != "userPassword"}
    # the token issued before the rehash still works: the credential epoch did not move
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as user:
        assert user.get(f"/entries/{quote_dn(dn)}").status_code == 200
    # the new value verifies; later binds re-make nothing
    for _ in range(3):
        assert bind_ok(srv.url, dn, PW)
    assert not bind_ok(srv.url, dn, PW + "x")
    assert read(srv.url, dn) == after
    with srv.client() as root:
        wait_logs(root, {"search": dn, "source": "system"},
                  lambda b: any(e["fields"].get("operation") == "rehash" for e in b["entries"]),
                  what="the rehash audit record")
        [record] = rehash_records(root, dn)  # exactly one
    fields = record["fields"]
    assert isinstance(fields, dict)
    assert fields["dn"] == dn and fields["stored"] == "ARGON2 argon2id m=2048,t=2,p=1"
    assert fields["previous"] != fields["stored"]
    assert "$" not in str(fields["previous"])  # the audit trail never holds a hash


def test_a_password_changed_meanwhile_is_not_overwritten(srv: AuditServer) -> None:
    """The rehash replaces the value the bind verified only while it is stored: a password
    set at the same time wins (compare-and-set in the write path)."""
    dn = add_user(srv.url, "rehash-race", _ssha(PW))
    conn = connect(srv.url, dn, PW)  # triggers the rehash ...
    conn.modify_s(dn, [(ldap.MOD_REPLACE, "userPassword", [b"New-pass-43"])])  # ... and this
    conn.unbind_s()
    wait_until(lambda: bind_ok(srv.url, dn, "New-pass-43"), 15, "the new password")
    assert not bind_ok(srv.url, dn, PW)
    [value] = read(srv.url, dn)["userPassword"]
    assert value.startswith(CONFIGURED)


def test_rehash_replicates_across_a_cluster(tmp_path: Path) -> None:
    """A bind on a follower re-makes the value through the leader: every node stores the
    same new value, and the one audit record is made once."""
    from cluster.support import ADMIN, PASSWORD, Cluster

    c = Cluster(tmp_path)
    for nd in c.nodes:
        cfg = yaml.safe_load(nd.config.read_text())
        cfg["server"]["workers"] = 1  # three nodes share this machine's cores
        cfg["security"] = {"argon2": {"iterations": 2, "memoryKiB": 2048}}
        nd.config.write_text(yaml.safe_dump(cfg))
    try:
        c.start()
        lead = c.wait_ready(30)
        dn = add_user(lead.url, "rehash-cluster", _ssha(PW), (ADMIN, PASSWORD))
        follower = next(nd for nd in c.nodes if nd is not lead)
        wait_until(lambda: bind_ok(follower.url, dn, PW), 15, "the user on the follower")

        def stored(url: str) -> bytes:
            return read(url, dn, (ADMIN, PASSWORD))["userPassword"][0]

        for nd in c.nodes:
            wait_until(lambda nd=nd: stored(nd.url).startswith(CONFIGURED), 15,
                       f"the new value on node {nd.id}")
        assert len({stored(nd.url) for nd in c.nodes}) == 1
        for nd in c.nodes:
            assert bind_ok(nd.url, dn, PW)
    finally:
        c.close()
