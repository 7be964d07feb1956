"""ACL reload paths: file change, SIGHUP (``oba reload acl``), REST reload/save, a broken file,
replicated REST changes kept across a restart, and a broken file at start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ldap
import pytest

from ._support import BASE_DN, OBA_PYTHON, ROOT_DN, ROOT_PW, connect, wait_until
from .rest_support import RestServer, assert_error

USER = f"uid=ann,{BASE_DN}"
PW = "Passw0rd!"


def doc(subject: str, deny: bool = False, default: str = "allow") -> str:
    return (f"version: 1\ndefaultPolicy: {default}\nrules:\n"
            f'  - {{target: "*", subject: "{subject}", rights: [read, search], '
            f"attributes: [description], deny: {str(deny).lower()}}}\n")


DENY_DESCRIPTION = doc("*", deny=True)
ALLOW_DESCRIPTION = doc("*", deny=False)


def start(tmp_path: Path, text: str) -> tuple[RestServer, Path]:
    acl = tmp_path / "acl.yaml"
    acl.write_text(text)
    srv = RestServer("oba", tmp_path / "srv", rest_extra=f'aclFile: "{acl}"\n')
    srv.start()
    return srv, acl


def add_user(srv: RestServer) -> None:
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    conn.add_s(USER, [("objectClass", [b"inetOrgPerson"]), ("uid", [b"ann"]), ("cn", [b"Ann"]),
                      ("sn", [b"A"]), ("description", [b"visible?"]),
                      ("userPassword", [PW.encode()])])
    conn.unbind_s()


def sees_description(srv: RestServer) -> bool:
    [(_, attrs)] = connect(srv.url).search_s(USER, ldap.SCOPE_BASE)
    return "description" in attrs


def everyone_sees_description(srv: RestServer) -> bool:
    """A file change reaches each listener process (server.workers) a moment apart: true
    once four fresh connections in a row (spread over the processes) see it."""
    return all(sees_description(srv) for _ in range(4))


@pytest.fixture
def servers() -> list[RestServer]:
    return []


@pytest.fixture(autouse=True)
def _stop(servers: list[RestServer]) -> object:
    yield None
    for srv in servers:
        srv.stop()


def test_file_change_is_picked_up_and_broken_file_keeps_old_rules(
        tmp_path: Path, servers: list[RestServer]) -> None:
    srv, acl = start(tmp_path, DENY_DESCRIPTION)
    servers.append(srv)
    add_user(srv)
    assert not sees_description(srv)
    acl.write_text(ALLOW_DESCRIPTION)
    wait_until(lambda: everyone_sees_description(srv), 10, "the changed ACL file to be enforced")
    acl.write_text("version: 1\nrules:\n  - {target: '*', subject: nobody?, rights: [fly]}\n")
    with srv.client() as root:
        r = root.post("/acl/reload")
        data = assert_error(r, 400, "invalid_acl")
        assert "previous rules stay in force" in data["message"]
        assert "rights" in data["message"] and "subject" in data["message"]
    assert sees_description(srv)
    log = srv.log_path
    wait_until(lambda: "ACL file rejected" in log.read_text(), 10, "the rejection in the log")
    assert sees_description(srv)
    acl.write_text(DENY_DESCRIPTION)
    with srv.client() as root:
        r = root.post("/acl/reload")
        assert r.status_code == 200, r.text
    assert not sees_description(srv)


def test_sighup_via_oba_reload_acl_and_rest_changes_survive_restart(
        tmp_path: Path, servers: list[RestServer]) -> None:
    srv, _ = start(tmp_path, DENY_DESCRIPTION)
    servers.append(srv)
    add_user(srv)
    with srv.client() as root:
        # a REST change (an acl.set command) wins over the unchanged file
        r = root.put("/acl/default", json={"policy": "allow"})
        assert r.status_code == 200
        r = root.put("/acl/rules/0", json={"target": "*", "subject": "*",
                                            "rights": ["read", "search"],
                                            "attributes": ["description"]})
        assert r.status_code == 200, r.text
    assert sees_description(srv)
    srv.stop()
    srv.start()  # the stored document is in force again (the file has not changed)
    assert sees_description(srv)
    with srv.client() as root:
        assert root.get("/acl").json()["rules"][0]["deny"] is False
    pid_file = tmp_path / "oba.pid"
    assert srv.proc is not None
    pid_file.write_text(f"{srv.proc.pid}\n")
    out = subprocess.run([str(OBA_PYTHON), "-m", "oba", "reload", "acl", "--pid-file",
                          str(pid_file)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "SIGHUP" in out.stdout
    wait_until(lambda: not sees_description(srv), 10, "SIGHUP to re-read the file")
    bad = subprocess.run([str(OBA_PYTHON), "-m", "oba", "reload", "acl", "--pid-file",
                          str(tmp_path / "missing.pid")], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 1 and "cannot read PID file" in bad.stderr


def test_rest_save_writes_the_file(tmp_path: Path, servers: list[RestServer]) -> None:
    srv, acl = start(tmp_path, DENY_DESCRIPTION)
    servers.append(srv)
    with srv.client() as root:
        r = root.post("/acl/rules", json={"rule": {"target": f"ou=x,{BASE_DN}",
                                                   "subject": "authenticated",
                                                   "rights": ["read"]}})
        assert r.status_code == 201
        r = root.post("/acl/save")
        assert r.status_code == 200, r.text
        assert r.json()["filePath"] == str(acl.resolve())
    assert f"ou=x,{BASE_DN}" in acl.read_text()
    with srv.client() as root:
        assert root.post("/acl/reload").status_code == 200
        assert root.get("/acl").json()["stats"]["ruleCount"] == 2


def test_broken_file_at_start_refuses_to_start(tmp_path: Path) -> None:
    acl = tmp_path / "acl.yaml"
    acl.write_text("version: 0\ndefaultPolicy: maybe\n")
    srv = RestServer("oba", tmp_path / "srv", rest_extra=f'aclFile: "{acl}"\n')
    with pytest.raises(RuntimeError) as info:
        srv.start(timeout=20)
    text = str(info.value)
    assert "cannot start" in text and "aclFile" in text and "defaultPolicy" in text
