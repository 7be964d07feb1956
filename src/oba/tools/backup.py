"""Backups: the native file format, consistent copies of a live store, restore and verify.

Rules for this module:
- Native format: ``MAGIC`` (8 bytes), a 4-byte big-endian header length, a UTF-8 JSON header
  (``format, formatVersion, appliedIndex, raftTerm, created, obaVersion, sha256, size,
  entries``), then exactly ``size`` bytes: an LMDB ``data.mdb``. ``sha256`` covers
  those bytes. A compressed backup is that whole stream gzipped (recognised by the gzip magic).
- A copy is LMDB's own copy (``copyfd``), made inside one read transaction of its own
  (writers are never blocked); the applied index and entry count are read back from the copy,
  so metadata and data agree. Not the compacting copy: with py-lmdb 3.0 (LMDB 0.9.36)
  ``compact=True`` segfaults on Oba's databases (dupsort/dupfixed), with or without ``txn``.
- Restore writes into a data directory no server holds, replacing ``data.mdb`` atomically and
  removing a stale ``lock.mdb`` (and the marker of an interrupted import). ``for_cluster``
  resets the stored applied index to 0 and drops the request-id tables, so a brand-new Raft
  log (empty raft dir) starts at index 1 on top of the restored data on every node (see
  docs/backup-restore.md).
- Timestamped names follow the original: ``-YYYYMMDD-HHMMSS`` before the extension unless the
  name already holds 8 consecutive digits.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import lmdb

from oba import __version__
from oba.ldif import write_ldif
from oba.storage import Store
from oba.storage.lmdbstore import IMPORT_MARKER
from oba.tools import offline

MAGIC = b"OBABKP1\n"
FORMAT_VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20
_DIGITS = re.compile(r"\d{8}")


class BackupError(RuntimeError):
    """A backup file that cannot be read, verified or restored."""


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy on disk plus what it reflects."""

    path: Path
    meta: dict[str, Any]


def timestamped(name: str, now: float | None = None) -> str:
    """``backup.oba`` -> ``backup-20260101-120000.oba`` (unchanged if it has 8 digits)."""
    path = Path(name)
    if _DIGITS.search(path.name):
        return name
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    suffixes = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffixes)] if suffixes else path.name
    if not stem:  # a dot-file such as ".backup"
        stem, suffixes = path.name, ""
    return str(path.with_name(f"{stem}-{stamp}{suffixes}"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def snapshot_store(store: Store, workdir: Path, raft_term: int = 0) -> Snapshot:
    """A consistent copy of ``store`` into ``workdir/data.mdb`` (call from a worker thread:
    the copy may take a while; writers keep going)."""
    return _snapshot(store.env, workdir, raft_term)


def snapshot_data_dir(data_dir: str | Path, workdir: Path) -> Snapshot:
    """Offline (or beside a running server): open ``data_dir`` read-only and copy it."""
    path = Path(data_dir)
    if not (path / "data.mdb").exists():
        raise BackupError(f"{path} holds no Oba database (no data.mdb)")
    env = lmdb.open(str(path), readonly=True, lock=True, max_dbs=256, subdir=True,
                    map_size=1 << 34)
    try:
        return _snapshot(env, workdir, 0)
    finally:
        env.close()


def _snapshot(env: Any, workdir: Path, raft_term: int) -> Snapshot:
    """LMDB's copy runs in one read transaction of its own; the applied index and
    entry count are then read from the copy itself, so they describe exactly its contents."""
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "data.mdb"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        env.copyfd(fd, compact=False)  # see the module rules: compact copies crash
    finally:
        os.close(fd)
    applied, entries = copy_position(target)
    meta = {
        "format": "oba-native",
        "formatVersion": FORMAT_VERSION,
        "appliedIndex": applied,
        "raftTerm": raft_term,
        "entries": entries,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "obaVersion": __version__,
        "size": target.stat().st_size,
        "sha256": _sha256_file(target),
    }
    return Snapshot(target, meta)


def copy_position(data_file: Path) -> tuple[int, int]:
    """(applied index, entry count) stored in an LMDB data file."""
    env = _env(data_file, readonly=True)
    try:
        with env.begin() as txn:
            meta = env.open_db(b"meta", txn=txn, create=False)
            raw = txn.get(b"applied_index", db=meta)
            entries = int(txn.stat(env.open_db(b"id2entry", txn=txn, create=False))["entries"])
        return (0 if raw is None else int.from_bytes(raw, "big")), entries
    finally:
        env.close()


def header_bytes(meta: dict[str, Any]) -> bytes:
    raw = json.dumps(meta, sort_keys=True).encode("utf-8")
    return MAGIC + struct.pack(">I", len(raw)) + raw


def stream_native(snap: Snapshot) -> Iterator[bytes]:
    """The native backup file, in chunks."""
    yield header_bytes(snap.meta)
    with snap.path.open("rb") as fh:
        while block := fh.read(CHUNK):
            yield block


def ldif_snapshot(store: Store, workdir: Path, raft_term: int = 0) -> Snapshot:
    """Every entry as LDIF (one read transaction), headed by ``#`` metadata comments."""
    from oba.tools.bulk import entry_record, operational_test, walk

    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "backup.ldif"
    is_op = operational_test(store)
    with store.read() as txn, target.open("w", encoding="ascii") as out:
        applied = txn.applied_index()
        meta = {"format": "ldif", "appliedIndex": applied, "raftTerm": raft_term,
                "entries": txn.count(), "obaVersion": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        out.write(f"# oba backup {json.dumps(meta, sort_keys=True)}\n")
        out.write("version: 1\n\n")
        for entry in walk(txn):
            out.write(write_ldif([entry_record(entry, is_op)], version=False))
    return Snapshot(target, meta)


# --------------------------------------------------------------------------- reading files


def _open(path: Path) -> IO[bytes]:
    fh: IO[bytes] = path.open("rb")
    if fh.read(2) == GZIP_MAGIC:
        fh.close()
        return cast(IO[bytes], gzip.open(path, "rb"))
    fh.seek(0)
    return fh


def read_header(fh: IO[bytes]) -> dict[str, Any]:
    if fh.read(len(MAGIC)) != MAGIC:
        raise BackupError("not an Oba native backup (bad magic)")
    (length,) = struct.unpack(">I", fh.read(4))
    if length > 1 << 20:
        raise BackupError("corrupt backup header")
    try:
        meta: dict[str, Any] = json.loads(fh.read(length))
    except ValueError as exc:
        raise BackupError(f"corrupt backup header: {exc}") from None
    return meta


def inspect(path: str | Path) -> dict[str, Any]:
    with _open(Path(path)) as fh:
        return read_header(fh)


def verify(path: str | Path, extract_to: Path | None = None) -> dict[str, Any]:
    """Check size and SHA-256 of the data; optionally write the data to ``extract_to``."""
    with _open(Path(path)) as fh:
        meta = read_header(fh)
        h = hashlib.sha256()
        size = 0
        out = extract_to.open("wb") if extract_to is not None else None
        try:
            while block := fh.read(CHUNK):
                h.update(block)
                size += len(block)
                if out is not None:
                    out.write(block)
        except (OSError, EOFError) as exc:
            raise BackupError(f"cannot read the backup data: {exc}") from None
        finally:
            if out is not None:
                out.close()
    if size != meta.get("size"):
        raise BackupError(f"backup is truncated or padded: {size} data bytes, header says "
                          f"{meta.get('size')}")
    if h.hexdigest() != meta.get("sha256"):
        raise BackupError("checksum mismatch: the backup data is corrupt")
    return meta


def write_file(chunks: Iterator[bytes], output: Path, compress: bool) -> int:
    """Write a backup stream to ``output`` (atomically: a temp file renamed at the end)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    total = 0
    with tmp.open("wb") as raw:
        sink = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6)) \
            if compress else cast(IO[bytes], raw)
        try:
            for block in chunks:
                sink.write(block)
                total += len(block)
        finally:
            if compress:
                sink.close()
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, output)
    return total


# --------------------------------------------------------------------------- restore


def restore(path: str | Path, data_dir: str | Path, *, for_cluster: bool = False
            ) -> dict[str, Any]:
    """Verify the backup and install it as ``data_dir/data.mdb`` (no server may hold it)."""
    target = Path(data_dir)
    if target.exists():
        offline.refuse_if_live(target, "restoring into it")
    raft_dir = target / "raft"
    if raft_dir.exists() and not for_cluster:
        raise BackupError(f"{target} holds a Raft directory ({raft_dir}): this is a cluster "
                          "node; restore with --cluster (see docs/backup-restore.md)")
    target.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".restore-", dir=target)
    os.close(fd)
    tmp = Path(name)
    try:
        meta = verify(path, tmp)
        _check_lmdb(tmp)
        if for_cluster:
            _reset_for_cluster(tmp)
        with contextlib.suppress(FileNotFoundError):
            (target / "lock.mdb").unlink()
        os.replace(tmp, target / "data.mdb")
        # the whole database was replaced: an interrupted import left there is gone
        (target / IMPORT_MARKER).unlink(missing_ok=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if for_cluster and raft_dir.exists():
        shutil.rmtree(raft_dir)
    return meta


def _env(path: Path, readonly: bool) -> Any:
    return lmdb.open(str(path), subdir=False, readonly=readonly, lock=False, max_dbs=256,
                     map_size=1 << 34)


def _check_lmdb(path: Path) -> None:
    try:
        env = _env(path, readonly=True)
    except lmdb.Error as exc:
        raise BackupError(f"the backup data is not an LMDB database: {exc}") from None
    env.close()
    with contextlib.suppress(FileNotFoundError):
        Path(str(path) + "-lock").unlink()


def _reset_for_cluster(path: Path) -> None:
    """Applied index 0 and no remembered request ids: a new Raft log starts on top."""
    env = _env(path, readonly=False)
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn)
            txn.put(b"applied_index", (0).to_bytes(8, "big"), db=meta)
            for name in (b"reqids", b"reqidx"):
                if txn.get(name) is not None:
                    txn.drop(env.open_db(name, txn=txn), delete=False)
    finally:
        env.close()
    with contextlib.suppress(FileNotFoundError):
        Path(str(path) + "-lock").unlink()
