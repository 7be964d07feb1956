"""Snapshot files of the directory database, kept under ``<cluster.dataDir>/snapshots``.

Rules for this module:
- A snapshot is a directory ``snap-<index>`` holding ``data.mdb`` (a compacted ``env.copy`` of
  the directory LMDB, whose ``meta.applied_index`` equals ``<index>``) and ``meta`` (msgpack
  ``[index, term, [voters], [[id, addr]...]]``, see ``log.snapshot_meta_to``). It is built in
  ``tmp-*`` and renamed into place, so a
  ``snap-*`` directory is always complete.
- Only the newest ``KEEP`` snapshots are kept, and the one the Raft log is compacted to
  (``protect``): the leader sends that one to a lagging follower. Received snapshots are
  first written by the transport to ``incoming/`` and adopted here (copied: installing
  consumes the file).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import msgpack

from oba.raft.log import snapshot_meta_from, snapshot_meta_to
from oba.raft.types import SnapshotMeta
from oba.storage import Store

KEEP = 2


class SnapshotStore:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.incoming = self.dir / "incoming"
        self.protect = 0  # the snapshot the Raft log is compacted to (set by the node)
        self.incoming.mkdir(exist_ok=True)
        for stale in self.dir.glob("tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.incoming.iterdir():
            stale.unlink(missing_ok=True)

    def _all(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.dir.glob("snap-*"):
            try:
                out.append((int(p.name[5:]), p))
            except ValueError:
                continue
        return sorted(out)

    def latest(self) -> tuple[SnapshotMeta, Path] | None:
        """The newest snapshot's metadata and its ``data.mdb`` path."""
        snaps = self._all()
        if not snaps:
            return None
        _, path = snaps[-1]
        return snapshot_meta_from(msgpack.unpackb((path / "meta").read_bytes())), path / "data.mdb"

    def create(self, store: Store, meta: SnapshotMeta) -> Path:
        """Copy ``store`` (whose applied index is ``meta.index``) into a new snapshot."""
        tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=self.dir))
        store.copy_to(tmp)
        return self._seal(tmp, meta)

    def adopt(self, data_file: Path, meta: SnapshotMeta) -> Path:
        """Keep a copy of a received ``data.mdb`` as this node's snapshot ``meta``."""
        tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=self.dir))
        shutil.copyfile(data_file, tmp / "data.mdb")
        return self._seal(tmp, meta)

    def _seal(self, tmp: Path, meta: SnapshotMeta) -> Path:
        (tmp / "meta").write_bytes(msgpack.packb(snapshot_meta_to(meta)))
        with open(tmp / "data.mdb", "rb") as fh:
            os.fsync(fh.fileno())
        final = self.dir / f"snap-{meta.index}"
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for index, old in self._all()[:-KEEP]:
            if index != self.protect:  # never the one the log is compacted to
                shutil.rmtree(old, ignore_errors=True)
        return final / "data.mdb"
