"""``GET /api/v1/stats`` counts nothing the caller may not read.

Rules: one real Oba process (RestServer) under an ACL file hiding ``ou=secret`` from everyone but
the root DN; httpx clients. The directory-wide parts of the answer (``storage``: entry count
and database size; ``security``: locked and disabled accounts; ``operations``: writes by type)
go to the root DN only; a user gets the server's own fields, and hidden changes leave their
answer as it was (apart from the clock and the request counters every caller sees on /health).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from integration._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from integration.rest_support import RestServer

SECRET = f"ou=secret,{BASE_DN}"
PEOPLE = f"ou=people,{BASE_DN}"
ALICE, ALICE_PW = f"uid=alice,{PEOPLE}", "alice-pw-1"
DIRECTORY_WIDE = {"storage", "security", "operations"}
MOVING = {"uptime", "uptimeSecs", "connections", "requests", "system"}  # clock, counters, RSS

ACL = f"""\
version: 1
defaultPolicy: deny
rules:
  - {{target: "{SECRET}", subject: "*", rights: [all], deny: true}}
  - {{target: "*", subject: authenticated, rights: [read, search, compare]}}
"""


def person(uid: str, pw: str) -> list[tuple[str, list[bytes]]]:
    return [("objectClass", [b"inetOrgPerson", b"obaAccount"]), ("uid", [uid.encode()]),
            ("cn", [uid.encode()]), ("sn", [b"S"]), ("userPassword", [pw.encode()])]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    work = Path(tmp_path_factory.mktemp("stats-visibility"))
    (work / "acl.yaml").write_text(ACL)
    server = RestServer("oba", work, rest_extra=f'aclFile: "{work / "acl.yaml"}"\n')
    server.start()
    try:
        root = connect(server.url, ROOT_DN, ROOT_PW)
        try:
            for name in ("people", "secret"):
                root.add_s(f"ou={name},{BASE_DN}", [("objectClass", [b"organizationalUnit"]),
                                                     ("ou", [name.encode()])])
            root.add_s(ALICE, person("alice", ALICE_PW))
        finally:
            root.unbind_s()
        yield server
    finally:
        server.stop()


def hide_accounts(srv: RestServer, n: int, tag: str) -> None:
    """``n`` disabled accounts under the hidden ou=secret."""
    root = connect(srv.url, ROOT_DN, ROOT_PW)
    try:
        for i in range(n):
            attrs = [*person(f"{tag}{i}", "pw-123456"), ("obaDisabled", [b"TRUE"])]
            root.add_s(f"uid={tag}{i},{SECRET}", attrs)
    finally:
        root.unbind_s()


def stats(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/stats")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_a_user_gets_no_directory_wide_counts(srv: RestServer) -> None:
    with srv.client((ALICE, ALICE_PW)) as alice:
        before = stats(alice)
        hide_accounts(srv, 3, "hidden")
        after = stats(alice)
    # the reproduction: entryCount and disabledAccounts counted the hidden subtree
    assert not DIRECTORY_WIDE & set(before), before
    assert not DIRECTORY_WIDE & set(after), after
    assert {k: v for k, v in before.items() if k not in MOVING} == \
        {k: v for k, v in after.items() if k not in MOVING}
    assert set(after["system"]) == {"pid", "python", "threads", "maxRSSBytes", "numCPU"}


def test_the_root_dn_gets_the_whole_directory(srv: RestServer) -> None:
    with srv.client() as root:
        before = stats(root)
        hide_accounts(srv, 2, "counted")
        after = stats(root)
    assert DIRECTORY_WIDE <= set(after), after
    assert after["storage"]["entryCount"] == before["storage"]["entryCount"] + 2
    assert after["security"]["disabledAccounts"] == before["security"]["disabledAccounts"] + 2
    ops = after["operations"]
    assert ops["ldap.AddRequest"] >= before["operations"].get("ldap.AddRequest", 0) + 2
