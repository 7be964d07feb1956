"""LDIF import/export: a lossless 10,000-entry round trip, bad records, online import."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

from oba.ldif import parse_ldif

from ._support import BASE_DN, REPO, ROOT_DN, ROOT_PW, connect
from .ops_support import oba
from .rest_support import RestServer

PHOTO = bytes(range(256)) * 4


def _datagen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("datagen", REPO / "bench" / "datagen.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("datagen", mod)
    spec.loader.exec_module(mod)
    return mod


def _extra() -> str:
    photo = base64.b64encode(PHOTO).decode()
    cn = base64.b64encode("Jürgen Müller 東京".encode()).decode()
    return (f"dn: uid=bin,ou=users,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: bin\n"
            f"cn:: {cn}\nsn: M\njpegPhoto:: {photo}\ndescription:: IGxlYWRpbmcgc3BhY2U=\n\n")


def _user_view(ldif: str) -> set[tuple[str, str, bytes]]:
    skip = {"entryuuid", "creatorsname", "createtimestamp", "modifiersname", "modifytimestamp"}
    return {(r.dn.lower(), a.lower(), v) for r in parse_ldif(ldif) for a, v in r.attributes
            if a.lower() not in skip}


def test_ten_thousand_entry_round_trip_is_lossless(tmp_path: Path) -> None:
    source = tmp_path / "tree.ldif"
    dg = _datagen()
    dg.write_ldif(str(source), users=10_000, groups=50, seed=7)
    with source.open("a") as fh:
        fh.write(_extra())
    started = time.monotonic()
    run = oba("import", str(source), "--data-dir", str(tmp_path / "a"), "--json")
    import_seconds = time.monotonic() - started
    assert run.rc == 0, run.err
    assert json.loads(run.out)["added"] == 10_000 + 50 + 3 + 1
    assert import_seconds < 90
    first = oba("export", "--data-dir", str(tmp_path / "a"), "--output", str(tmp_path / "1.ldif"))
    assert first.rc == 0, first.err
    text1 = (tmp_path / "1.ldif").read_text()
    view = _user_view(text1)
    original = _user_view(source.read_text())
    assert original <= view  # every original value, binary and UTF-8 included
    assert (f"uid=bin,ou=users,{BASE_DN}".lower(), "jpegphoto", PHOTO) in view
    extra = {t for t in view - original if t[1] not in ("structuralobjectclass", "memberof")}
    assert extra == set()
    run = oba("import", str(tmp_path / "1.ldif"), "--data-dir", str(tmp_path / "b"))
    assert run.rc == 0, run.err
    second = oba("export", "--data-dir", str(tmp_path / "b"))
    assert second.rc == 0
    assert second.out == text1  # byte-identical, operational attributes included


def test_bad_records_are_reported_with_line_numbers(tmp_path: Path) -> None:
    ldif = (f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n"
            "o: x\n\n"
            f"dn: ou=a,{BASE_DN}\nobjectClass: organizationalUnit\nou: a\n\n"
            f"dn: ou=b,{BASE_DN}\nobjectClass: organizationalUnit\nbogus line\n\n"
            f"dn: cn=x,ou=missing,{BASE_DN}\nobjectClass: device\ncn: x\n\n"
            f"dn: ou=c,{BASE_DN}\nobjectClass: organizationalUnit\nou: c\n\n")
    path = tmp_path / "bad.ldif"
    path.write_text(ldif)
    stop = oba("import", str(path), "--data-dir", str(tmp_path / "s"))
    assert stop.rc == 1
    assert "bad.ldif: line 13 (ou=b" in stop.err
    assert "line 15" not in stop.err  # stopped at the first error
    go = oba("import", str(path), "--data-dir", str(tmp_path / "c"), "--continue-on-error",
             "--json")
    assert go.rc == 1
    report = json.loads(go.out)
    assert report["added"] == 3
    assert [e["line"] for e in report["errors"]] == [13, 15]
    assert "line 15 (cn=x,ou=missing" in go.err
    again = oba("import", str(path), "--data-dir", str(tmp_path / "c"))
    assert again.rc == 1 and "empty data directory" in again.err


def test_online_import_and_filtered_export(tmp_path: Path) -> None:
    srv = RestServer("oba", tmp_path / "srv")
    srv.start()
    try:
        path = tmp_path / "small.ldif"
        lines = [f"dn: ou=users,{BASE_DN}\nobjectClass: organizationalUnit\nou: users\n\n"]
        lines += [f"dn: uid=u{i},ou=users,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: u{i}\n"
                  f"cn: U {i}\nsn: S\n\n" for i in range(1, 1201)]
        path.write_text("".join(lines) + _extra())
        auth = ["--url", srv.base_url, "--dn", ROOT_DN, "--password", ROOT_PW]
        run = oba("import", str(path), *auth, "--json")
        assert run.rc == 0, run.err
        assert json.loads(run.out)["added"] == 1202
        conn = connect(srv.url, ROOT_DN, ROOT_PW)
        hits = conn.search_s(f"uid=bin,ou=users,{BASE_DN}", 0, "(objectClass=*)", ["jpegPhoto"])
        conn.unbind_s()
        assert hits[0][1]["jpegPhoto"] == [PHOTO]
        out = oba("export", *auth, "--base", f"ou=users,{BASE_DN}", "--filter", "(uid=u12*)")
        assert out.rc == 0, out.err
        dns = [r.dn for r in parse_ldif(out.out)]
        assert sorted(dns) == sorted(f"uid=u{i},ou=users,{BASE_DN}"
                                     for i in (12, *range(120, 130), *range(1200, 1201)))
        dup = oba("import", str(path), *auth)
        assert dup.rc == 1 and "line 1 " in dup.err
    finally:
        srv.stop()


def test_online_import_of_large_entries_stays_under_the_body_limit(tmp_path: Path) -> None:
    """Entries with photos: batches are cut by size, so no request passes rest.maxBodySize
    (8 MiB by default) however many entries a batch could hold."""
    srv = RestServer("oba", tmp_path / "srv")
    srv.start()
    try:
        photo = base64.b64encode(bytes(range(256)) * 4096).decode()  # 1 MiB each
        path = tmp_path / "photos.ldif"
        path.write_text("".join(
            f"dn: uid=p{i},{BASE_DN}\nobjectClass: inetOrgPerson\nuid: p{i}\ncn: P\nsn: S\n"
            f"jpegPhoto:: {photo}\n\n" for i in range(12)))
        run = oba("import", str(path), "--url", srv.base_url, "--dn", ROOT_DN,
                  "--password", ROOT_PW, "--json")
        assert run.rc == 0, run.err
        assert json.loads(run.out)["added"] == 12
    finally:
        srv.stop()
