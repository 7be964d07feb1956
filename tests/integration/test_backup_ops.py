"""Online backup under write load, restore, verify, and refusal to restore a live data dir."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from .ops_support import oba
from .rest_support import RestServer

PEOPLE = f"ou=people,{BASE_DN}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    srv = RestServer("oba", tmp_path_factory.mktemp("backup-srv"))
    srv.start()
    try:
        conn = connect(srv.url, ROOT_DN, ROOT_PW)
        conn.add_s(PEOPLE, [("objectClass", [b"organizationalUnit"]), ("ou", [b"people"])])
        conn.unbind_s()
        yield srv
    finally:
        srv.stop()


def _auth(srv: RestServer) -> list[str]:
    return ["--url", srv.base_url, "--dn", ROOT_DN, "--password", ROOT_PW]


def _dns(ldif: str) -> list[str]:
    return [line[4:] for line in ldif.splitlines() if line.startswith("dn: ")]


def test_backup_under_write_load_restores_the_state_at_its_index(
        server: RestServer, tmp_path: Path) -> None:
    acked: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        conn = connect(server.url, ROOT_DN, ROOT_PW)
        try:
            i = 0
            while not stop.is_set():
                i += 1
                dn = f"uid=w{i},{PEOPLE}"
                conn.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [f"w{i}".encode()]),
                                ("cn", [b"W"]), ("sn", [b"W"])])
                acked.append(dn)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            conn.unbind_s()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline_hits = 0
        while len(acked) < 50 and deadline_hits < 600:  # let the load build up (<= ~30 s)
            threading.Event().wait(0.05)
            deadline_hits += 1
        before = len(acked)
        out = tmp_path / "b.oba"
        run = oba("backup", "--output", str(out), "--no-timestamp", "--json", *_auth(server))
        after = len(acked)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert run.rc == 0, run.err
    meta = json.loads(run.out)
    assert after > before >= 50  # writes went on while the backup ran
    data = tmp_path / "restored"
    res = oba("restore", "--input", str(out), "--data-dir", str(data), "--json")
    assert res.rc == 0, res.err
    exported = oba("export", "--data-dir", str(data))
    assert exported.rc == 0, exported.err
    dns = _dns(exported.out)
    # a single sequential writer: the state at any index is a prefix of the acknowledged adds
    n = len(dns) - 2
    assert dns == [BASE_DN, PEOPLE, *acked[:n]]
    assert before <= n <= after, (meta, before, after)  # every add acked before the backup
    assert meta["entries"] == len(dns)
    assert json.loads(res.out)["appliedIndex"] == meta["appliedIndex"]


def test_compressed_timestamped_backup_and_verify(server: RestServer, tmp_path: Path) -> None:
    run = oba("backup", "--output", str(tmp_path / "nightly.oba"), "--compress", "--json",
              *_auth(server))
    assert run.rc == 0, run.err
    name = Path(json.loads(run.out)["file"])
    assert re.fullmatch(r"nightly-\d{8}-\d{6}\.oba\.gz", name.name)
    ok = oba("restore", "--input", str(name), "--verify")
    assert ok.rc == 0 and "checksum ok" in ok.out
    raw = tmp_path / "plain.oba"
    assert oba("backup", "--output", str(raw), "--no-timestamp", *_auth(server)).rc == 0
    blob = bytearray(raw.read_bytes())
    blob[-100] ^= 0xFF
    bad = tmp_path / "bad.oba"
    bad.write_bytes(bytes(blob))
    res = oba("restore", "--input", str(bad), "--verify")
    assert res.rc == 1 and "checksum mismatch" in res.err


def test_offline_backup_beside_a_live_server_and_ldif_format(
        server: RestServer, tmp_path: Path) -> None:
    out = tmp_path / "off-20250101.oba"  # has 8 digits: no timestamp added
    run = oba("backup", "--output", str(out), "--data-dir", str(server.workdir / "data"),
              "--json")
    assert run.rc == 0, run.err
    assert json.loads(run.out)["file"] == str(out)
    ldif = tmp_path / "b.ldif"
    run = oba("backup", "--output", str(ldif), "--format", "ldif", "--no-timestamp",
              *_auth(server))
    assert run.rc == 0, run.err
    text = ldif.read_text()
    assert text.startswith("# oba backup ") and f"dn: {PEOPLE}" in text


def test_restore_refuses_a_live_data_dir(server: RestServer, tmp_path: Path) -> None:
    out = tmp_path / "x.oba"
    assert oba("backup", "--output", str(out), "--no-timestamp", *_auth(server)).rc == 0
    res = oba("restore", "--input", str(out), "--data-dir", str(server.workdir / "data"))
    assert res.rc == 1
    assert "in use by a running Oba server" in res.err


def test_backup_exit_codes(server: RestServer, tmp_path: Path) -> None:
    out = str(tmp_path / "y.oba")
    assert oba("backup", "--output", out).rc == 2
    bad_auth = oba("backup", "--output", out, "--url", server.base_url, "--dn", ROOT_DN,
                   "--password", "wrong")
    assert bad_auth.rc == 4, bad_auth.err
    down = oba("backup", "--output", out, "--url", "http://127.0.0.1:9", "--dn", ROOT_DN,
               "--password", ROOT_PW)
    assert down.rc == 3, down.err
