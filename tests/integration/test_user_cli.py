"""``oba user`` against a running node: add, list, passwd, lock/unlock, delete; exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import ldap
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from .ops_support import Run, oba
from .rest_support import RestServer

USER = f"uid=alice,{BASE_DN}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    srv = RestServer("oba", tmp_path_factory.mktemp("user-cli"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def user(srv: RestServer, *args: str) -> Run:
    env = {"OBA_ADMIN_DN": ROOT_DN, "OBA_ADMIN_PASSWORD": ROOT_PW}
    return oba("user", *args, "--url", srv.base_url, env=env)


def _binds(srv: RestServer, password: str) -> bool:
    try:
        connect(srv.url, USER, password).unbind_s()
    except ldap.INVALID_CREDENTIALS:
        return False
    except ldap.LDAPError:
        return False
    return True


def test_user_lifecycle(server: RestServer) -> None:
    r = user(server, "add", USER, "--user-password", "first-pw", "--attr", "mail=a@x.org",
             "--json")
    assert r.rc == 0, r.err
    assert json.loads(r.out)["success"] is True
    assert _binds(server, "first-pw")
    listed = json.loads(user(server, "list", "--json").out)
    assert listed["total"] == 1
    assert listed["users"][0] == {"dn": USER, "uid": "alice", "cn": "alice",
                                  "mail": "a@x.org", "locked": False}
    table = user(server, "list")
    assert table.rc == 0 and "alice" in table.out and "\x1b[" not in table.out  # no TTY
    assert user(server, "passwd", USER, "--user-password", "second-pw").rc == 0
    assert _binds(server, "second-pw") and not _binds(server, "first-pw")
    assert user(server, "lock", USER).rc == 0
    assert not _binds(server, "second-pw")
    assert json.loads(user(server, "list", "--json").out)["users"][0]["locked"] is True
    assert user(server, "unlock", USER).rc == 0
    assert _binds(server, "second-pw")
    dup = user(server, "add", USER, "--user-password", "x")
    assert dup.rc == 1 and "already" in dup.err.lower()
    assert user(server, "delete", USER).rc == 0
    gone = user(server, "delete", USER)
    assert gone.rc == 1


def test_exit_codes(server: RestServer, tmp_path: Path) -> None:
    assert oba("user", "list").rc == 2  # no credentials
    assert oba("user", "bogus").rc == 2
    wrong = oba("user", "list", "--url", server.base_url, "--dn", ROOT_DN, "--password", "no")
    assert wrong.rc == 4, wrong.err
    down = oba("user", "list", "--url", "http://127.0.0.1:9", "--dn", ROOT_DN,
               "--password", ROOT_PW)
    assert down.rc == 3, down.err
    live = oba("user", "list", "--data-dir", str(server.workdir / "data"))
    assert live.rc == 1 and "in use by a running Oba server" in live.err


def test_offline_list_of_a_stopped_data_dir(tmp_path: Path) -> None:
    ldif = (f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n"
            f"o: x\n\ndn: {USER}\nobjectClass: inetOrgPerson\nuid: alice\ncn: A\nsn: B\n\n")
    src = tmp_path / "u.ldif"
    src.write_text(ldif)
    assert oba("import", str(src), "--data-dir", str(tmp_path / "d")).rc == 0
    r = oba("user", "list", "--data-dir", str(tmp_path / "d"), "--json")
    assert r.rc == 0, r.err
    assert [u["dn"] for u in json.loads(r.out)["users"]] == [USER]
