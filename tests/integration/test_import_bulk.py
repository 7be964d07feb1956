"""The bulk import path (oba.tools.fastload) against a store built entry by entry.

A store is built the way the server builds it (``apply`` of AddCommands through ordinary write
transactions, indexes maintained per entry), exported, and the export imported offline: every
LMDB database of the two stores holds the same rows, export after import equals the source
byte for byte, and indexed searches answer the same. An interrupted import (marker left) is
refused by ``Store`` and thrown away by the next import.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import lmdb
import pytest

from oba.config import Config, load_config
from oba.directory.apply import SUCCESS, ApplyContext, apply
from oba.directory.search import SearchContext, search
from oba.ldif import parse_ldif
from oba.protocol.filter import parse_filter
from oba.protocol.messages import Scope
from oba.storage.indexes import DEFAULT_INDEXES
from oba.storage.lmdbstore import IMPORT_MARKER, IncompleteImport
from oba.tools import backup, bulk, importworkers, offline

from ._support import BASE_DN, REPO


def _datagen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("datagen", REPO / "bench" / "datagen.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("datagen", mod)
    spec.loader.exec_module(mod)
    return mod


PHOTO = bytes(range(256)) * 2


def _source_ldif() -> bytes:
    text = io.StringIO()
    datagen = _datagen()
    for record in datagen.to_ldif(datagen.generate(600, 12, 3)):
        text.write(record)
    cn = base64.b64encode("Jürgen Müller 東京".encode()).decode()
    text.write(f"dn: uid=bin,ou=users,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: bin\n"
               f"cn:: {cn}\nsn: M\njpegPhoto:: {base64.b64encode(PHOTO).decode()}\n"
               # tagged descriptions: their values are indexed under cn and sn
               "cn;lang-de: Juergen Mueller\nsn;lang-de: Mueller\n\n")
    # a group naming members added after it (no memberOf backfill, as slapd)
    text.write(f"dn: cn=early,{BASE_DN}\nobjectClass: groupOfNames\ncn: early\n"
               f"member: uid=late,{BASE_DN}\n\n")
    text.write(f"dn: uid=late,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: late\ncn: Late\n"
               "sn: Comer\n\n")
    return text.getvalue().encode("utf-8")


INDEXES: dict[str, list[str]] = {
    **{k: sorted(v) for k, v in DEFAULT_INDEXES.items()},
    "memberOf": ["eq", "pres"],  # rewritten by groups added after their members
    "description": ["eq", "sub"],
}


def _config(data_dir: Path) -> Config:
    return load_config(None, {"storage.dataDir": str(data_dir), "storage.indexes": INDEXES})


def _online_store(data_dir: Path, source: bytes) -> None:
    """Entry by entry through apply + WriteTxn.put_entry (the server's write path)."""
    config = _config(data_dir)
    store = offline.open_store(config)
    try:
        ctx = ApplyContext(store.schema, (store.schema.normalize_dn(BASE_DN),))
        with store.write() as txn:
            for n, rec in enumerate(parse_ldif(source), start=1):
                cmd, kept = bulk.add_command(rec, now="20260101000000Z")
                result = apply(txn, cmd, ctx)
                assert result.code == SUCCESS, (rec.dn, result)
                assert not kept
                txn.set_applied_index(n)
    finally:
        store.close()


def _reference_import(data_dir: Path, ldif: bytes) -> None:
    """The export loaded entry by entry through ordinary write transactions (per-entry
    index maintenance in ``WriteTxn.put_entry``): what a server building the store online
    would write, the reference for the bulk path."""
    config = _config(data_dir)
    store = offline.open_store(config)
    try:
        ctx = ApplyContext(store.schema, ())
        ctx.suffixes = ()
        with store.write() as txn:
            for n, item in enumerate(bulk.read_records(io.BytesIO(ldif)), start=1):
                assert bulk._import_one(txn, item, ctx, "20270101000000Z") is None
                txn.set_applied_index(n)
    finally:
        store.close()


def _rows(data_dir: Path) -> dict[bytes, list[tuple[bytes, bytes]]]:
    env = lmdb.open(str(data_dir), max_dbs=128, readonly=True, lock=False)
    out: dict[bytes, list[tuple[bytes, bytes]]] = {}
    try:
        with env.begin() as txn:
            names = [k for k, _ in txn.cursor()]
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                out[name] = list(txn.cursor(db=db))
    finally:
        env.close()
    return out


def _export(data_dir: Path) -> str:
    store = offline.open_store(_config(data_dir))
    try:
        out = io.StringIO()
        bulk.export_store(store, out)
        return out.getvalue()
    finally:
        store.close()


def _import(data_dir: Path, ldif: bytes, **kw: Any) -> bulk.ImportReport:
    return bulk.import_offline(io.BytesIO(ldif), _config(data_dir), **kw)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(reference store, bulk-imported store, their common LDIF source). The source is the
    export of a store built from datagen output: groups after their members, so memberOf is
    written by rewriting members (and the indexed memberOf pairs move)."""
    root = tmp_path_factory.mktemp("bulk")
    online = root / "online"
    _online_store(online, _source_ldif())
    exported = _export(online)
    reference = root / "reference"
    _reference_import(reference, exported.encode("utf-8"))
    imported = root / "imported"
    report = _import(imported, exported.encode("utf-8"), batch=97)  # many batches
    assert report.failed == [] and report.added == exported.count("\ndn: ")
    return reference, imported, exported


def test_bulk_import_writes_the_same_databases(stores: tuple[Path, Path, str]) -> None:
    online, imported, _ = stores
    a, b = _rows(online), _rows(imported)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name
    assert len(a[b"id2entry"]) == 600 + 12 + 3 + 3
    assert not (imported / IMPORT_MARKER).exists()


def test_index_flushes_of_a_large_import_give_the_same_databases(
        stores: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference, _, exported = stores
    monkeypatch.setattr(bulk, "MAX_HELD", 2000)  # flush the index pairs many times
    flushed = tmp_path / "flushed"
    report = _import(flushed, exported.encode("utf-8"), batch=40)
    assert report.failed == []
    a, b = _rows(reference), _rows(flushed)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name
    assert any(k.startswith(b"=cn=group1,") for k, _ in a[b"idx:memberOf"])


def test_export_after_import_equals_the_source(stores: tuple[Path, Path, str]) -> None:
    _, imported, exported = stores
    assert _export(imported) == exported


@pytest.mark.parametrize("text", [
    "(uid=user17)", "(cn=*son*)", "(sn=Smi*)", "(mail=*@example.com)", "(objectClass=person)",
    "(&(objectClass=posixAccount)(gidNumber=10003))", "(uid=*)", "(member=uid=user5,*)",
    "(memberOf=cn=group1,ou=groups,dc=example,dc=com)", "(|(givenName=Mary)(cn=early))",
])
def test_indexed_searches_answer_the_same(stores: tuple[Path, Path, str], text: str) -> None:
    online, imported, _ = stores
    flt = parse_filter(text)
    found: list[list[tuple[int, str]]] = []
    for data_dir in (online, imported):
        store = offline.open_store(_config(data_dir))
        try:
            with store.read() as txn:
                ndn = store.schema.normalize_dn(BASE_DN)
                found.append(sorted((e.id, e.dn) for e in search(
                    txn, SearchContext(store.schema), ndn, Scope.SUB, flt)))
        finally:
            store.close()
    assert found[0] == found[1]
    if text in ("(uid=user17)", "(objectClass=person)", "(uid=*)"):
        assert found[0]


def test_interrupted_import_is_refused_then_redone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    source = _source_ldif()

    class Boom(Exception):
        pass

    def crash(n: int) -> None:
        raise Boom

    with pytest.raises(Boom):
        _import(data_dir, source, batch=100, progress=crash)
    assert (data_dir / IMPORT_MARKER).exists()
    with pytest.raises(IncompleteImport):
        offline.open_store(_config(data_dir))
    report = _import(data_dir, source)
    assert report.failed == [] and report.added == 600 + 12 + 3 + 3
    assert not (data_dir / IMPORT_MARKER).exists()
    # a restore replaces the whole database: it also clears an interrupted import's marker
    backup_file = tmp_path / "good.bak"
    snap = backup.snapshot_data_dir(data_dir, tmp_path / "work")
    backup.write_file(backup.stream_native(snap), backup_file, False)
    broken = tmp_path / "broken"
    with pytest.raises(Boom):
        _import(broken, source, batch=100, progress=crash)
    backup.restore(backup_file, broken)
    assert not (broken / IMPORT_MARKER).exists()
    offline.open_store(_config(broken)).close()
    store = offline.open_store(_config(data_dir))
    try:
        with store.read() as txn:
            assert txn.count() == report.added
    finally:
        store.close()


# --------------------------------------------------------------------------- parallel path


def test_parallel_import_writes_the_same_databases(
        stores: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes prepare the records (many small chunks), this process writes: the
    rows are those of the in-process import and of the entry-by-entry reference."""
    reference, imported, exported = stores
    monkeypatch.setattr(importworkers, "CHUNK_BYTES", 3000)
    source = tmp_path / "source.ldif"
    source.write_bytes(exported.encode("utf-8"))
    parallel = tmp_path / "parallel"
    seen: list[int] = []
    with source.open("rb") as fh:  # a real file: the workers share its mmap
        report = bulk.import_offline(fh, _config(parallel), batch=97, workers=2,
                                     progress=seen.append)
    assert report.failed == [] and report.added == exported.count("\ndn: ")
    assert sum(seen) == report.added
    rows = _rows(parallel)
    for other in (reference, imported):
        expected = _rows(other)
        assert sorted(expected) == sorted(rows)
        for name in expected:
            if name != b"id2entry":
                assert expected[name] == rows[name], name
    # entryUUID and the time stamps come from the export, so even id2entry is identical
    assert _rows(reference)[b"id2entry"] == rows[b"id2entry"]
    assert _export(parallel) == exported


def _numbered_source(users: int) -> tuple[bytes, int]:
    """An LDIF of a tree and ``users`` users, and the line of a bad record's ``dn:`` in the
    middle (its uidNumber is not an integer)."""
    lines = [f"dn: {BASE_DN}", "objectClass: dcObject", "objectClass: organization",
             "dc: example", "o: Example", "", f"dn: ou=users,{BASE_DN}",
             "objectClass: organizationalUnit", "ou: users", ""]
    bad_line = 0
    for n in range(users):
        if n == users // 2:
            bad_line = len(lines) + 1
        number = "many" if n == users // 2 else str(1000 + n)
        lines += [f"dn: uid=u{n},ou=users,{BASE_DN}", "objectClass: posixAccount",
                  "objectClass: inetOrgPerson", f"uid: u{n}", f"cn: User {n}", "sn: Doe",
                  "# a comment line", f"uidNumber: {number}", "gidNumber: 100",
                  f"homeDirectory: /home/u{n}", ""]
    return "\n".join(lines).encode("utf-8"), bad_line


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_record_in_the_middle_keeps_its_line_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    monkeypatch.setattr(importworkers, "CHUNK_BYTES", 2000)
    ldif, bad_line = _numbered_source(400)
    report = _import(tmp_path / "go-on", ldif, workers=workers, continue_on_error=True)
    assert report.added == 401 and not report.stopped
    assert [(b.line, b.dn) for b in report.failed] == [(bad_line, f"uid=u200,ou=users,{BASE_DN}")]
    assert "uidNumber" in report.failed[0].message and "LDAP result 21" in report.failed[0].message
    stop = _import(tmp_path / "stop", ldif, workers=workers, batch=50)
    assert stop.stopped and stop.added == 2 + 200
    assert [b.line for b in stop.failed] == [bad_line]
    store = offline.open_store(_config(tmp_path / "stop"))
    try:
        with store.read() as txn:
            assert txn.count() == 202
    finally:
        store.close()


def test_parallel_import_from_a_file_reports_duplicates_and_orphans(tmp_path: Path) -> None:
    """Existence checks run in this process against everything loaded before, whichever
    worker prepared the record."""
    ldif, _ = _numbered_source(300)
    extra = (f"\n\ndn: uid=u7,ou=users,{BASE_DN}\nobjectClass: account\nuid: u7\n\n"
             f"dn: uid=x,ou=nowhere,{BASE_DN}\nobjectClass: account\nuid: x\n").encode()
    path = tmp_path / "in.ldif"
    path.write_bytes(ldif + extra)
    with path.open("rb") as fh:
        report = bulk.import_offline(fh, _config(tmp_path / "d"), workers=2,
                                     continue_on_error=True)
    codes = [b.message.rsplit("LDAP result ", 1)[1] for b in report.failed]
    assert codes == ["21)", "68)", "32)"]
    total_lines = (ldif + extra).count(b"\n") + 1
    assert [b.line for b in report.failed][1:] == [total_lines - 7, total_lines - 3]


def test_workers_are_stopped_when_the_import_fails(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    monkeypatch.setattr(importworkers, "CHUNK_BYTES", 2000)
    ldif, _ = _numbered_source(300)

    class Boom(Exception):
        pass

    def crash(n: int) -> None:
        raise Boom

    before = set(multiprocessing.active_children())
    with pytest.raises(Boom):
        _import(tmp_path / "d", ldif, workers=2, batch=100, progress=crash)
    assert set(multiprocessing.active_children()) == before
    assert (tmp_path / "d" / IMPORT_MARKER).exists()


def test_parallel_entry_below_a_parent_spelled_otherwise(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker encodes an entry with its DN as written; when the parent is stored with
    another spelling the row is re-encoded with the parent's stored form (as back-mdb)."""
    monkeypatch.setattr(importworkers, "CHUNK_BYTES", 2000)
    ldif, _ = _numbered_source(40)
    odd = (f"\n\ndn: uid=odd,OU=Users,{BASE_DN.upper()}\nobjectClass: account\n"
           "uid: odd\ndescription: spelled otherwise\n").encode()
    found: list[tuple[str, dict[str, list[bytes]]]] = []
    for workers in (0, 2):
        data_dir = tmp_path / f"w{workers}"
        report = _import(data_dir, ldif + odd, workers=workers, continue_on_error=True)
        assert report.added == 2 + 39 + 1 and len(report.failed) == 1  # uid=u20 is bad
        store = offline.open_store(_config(data_dir))
        try:
            with store.read() as txn:
                entry = txn.get_by_ndn(store.schema.normalize_dn(f"uid=odd,ou=users,{BASE_DN}"))
                assert entry is not None
                found.append((entry.dn, {k: v for k, v in entry.attrs.items()
                                         if k not in ("entryUUID", "createTimestamp",
                                                      "modifyTimestamp")}))
        finally:
            store.close()
    assert found[0] == found[1]
    assert found[0][0] == f"uid=odd,ou=users,{BASE_DN}"
    assert found[0][1]["description"] == [b"spelled otherwise"]
