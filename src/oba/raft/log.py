"""Durable Raft state: hard state, log entries and snapshot metadata in their own LMDB env.

Rules for this module:
- Layout (sub-databases of one environment under ``cluster.dataDir``):
  ``state`` (``b"hs"`` -> msgpack ``[term, vote, commit]``, ``b"snap"`` -> msgpack
  ``[index, term, [voters], [[id, addr]...]]``, ``b"first"`` -> first stored index, 8-byte
  big-endian, ``b"conf"`` -> msgpack ``[index, [[id, addr]...]]``: the membership after the
  CONF_CHANGE entry ``index`` was applied; the newer of it and the snapshot's wins on load),
  ``entries`` (index as 8-byte big-endian -> msgpack ``[term, type, data]``).
- Every write returns only after its transaction is fsynced (``sync=True``). ``save`` writes one
  Ready's snapshot metadata, hard state and entries in ONE transaction (one fsync per Ready).
- ``append`` truncates every stored entry with index >= ``entries[0].index`` in the same
  transaction (a new leader may overwrite an uncommitted suffix).
- Not thread-safe: the node calls it from one thread at a time (its persist worker).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from oba.raft.types import Entry, EntryType, HardState, SnapshotMeta

_HS = b"hs"
_SNAP = b"snap"
_FIRST = b"first"
_CONF = b"conf"


def _key(index: int) -> bytes:
    return index.to_bytes(8, "big")


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def snapshot_meta_to(snap: SnapshotMeta) -> list[Any]:
    """The msgpack form ``[index, term, [voters], [[id, addr]...]]`` of a snapshot's meta."""
    return [snap.index, snap.term, list(snap.voters), [[i, a] for i, a in snap.addrs]]


def snapshot_meta_from(raw: Any) -> SnapshotMeta:
    """Inverse of ``snapshot_meta_to`` (also reads the older 3-element form)."""
    index, term, voters = raw[0], raw[1], raw[2]
    addrs = tuple((int(i), str(a)) for i, a in (raw[3] if len(raw) > 3 else ()))
    return SnapshotMeta(int(index), int(term), tuple(int(v) for v in voters), addrs)


class RaftLog:
    """The persisted log of one node; ``load`` gives what ``RaftCore`` starts from."""

    def __init__(self, path: str | Path, map_size: int = 1 << 32) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(self.path), max_dbs=4, map_size=map_size, subdir=True,
                             sync=True, metasync=True, lock=True)
        self._state = self.env.open_db(b"state")
        self._entries = self.env.open_db(b"entries")

    # ------------------------------------------------------------------ reading

    def load(self) -> tuple[HardState, list[Entry], SnapshotMeta | None]:
        """The hard state, every entry after the snapshot (in order) and the snapshot meta."""
        with self.env.begin() as txn:
            hs = self._hard_state(txn)
            snap = self._snapshot(txn)
            entries = [self._decode(_int(k), v)
                       for k, v in txn.cursor(db=self._entries).iternext()]
        return hs, entries, snap

    def hard_state(self) -> HardState:
        with self.env.begin() as txn:
            return self._hard_state(txn)

    def snapshot(self) -> SnapshotMeta | None:
        with self.env.begin() as txn:
            return self._snapshot(txn)

    def first_index(self) -> int:
        """Index of the first stored entry (snapshot index + 1 when empty)."""
        with self.env.begin() as txn:
            raw = txn.get(_FIRST, db=self._state)
            if raw is not None:
                return _int(raw)
            snap = self._snapshot(txn)
            return 1 if snap is None else snap.index + 1

    def last_index(self) -> int:
        with self.env.begin() as txn:
            cur = txn.cursor(db=self._entries)
            if cur.last():
                return _int(cur.key())
            snap = self._snapshot(txn)
            return 0 if snap is None else snap.index

    def entry(self, index: int) -> Entry | None:
        with self.env.begin() as txn:
            raw = txn.get(_key(index), db=self._entries)
            return None if raw is None else self._decode(index, raw)

    def membership(self) -> tuple[int, dict[int, str]] | None:
        """The last recorded membership ``(conf entry index, {id: addr})``, if any."""
        with self.env.begin() as txn:
            raw = txn.get(_CONF, db=self._state)
        if raw is None:
            return None
        index, members = msgpack.unpackb(raw)
        return int(index), {int(i): str(a) for i, a in members}

    def set_membership(self, index: int, members: dict[int, str]) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(_CONF, msgpack.packb([index, [[i, a] for i, a in sorted(members.items())]]),
                    db=self._state)

    def _hard_state(self, txn: Any) -> HardState:
        raw = txn.get(_HS, db=self._state)
        if raw is None:
            return HardState()
        term, vote, commit = msgpack.unpackb(raw)
        return HardState(int(term), int(vote), int(commit))

    def _snapshot(self, txn: Any) -> SnapshotMeta | None:
        raw = txn.get(_SNAP, db=self._state)
        if raw is None:
            return None
        return snapshot_meta_from(msgpack.unpackb(raw))

    @staticmethod
    def _decode(index: int, raw: bytes) -> Entry:
        term, typ, data = msgpack.unpackb(raw, raw=False)
        return Entry(index, int(term), EntryType(int(typ)), bytes(data))

    # ------------------------------------------------------------------ writing

    def save(
        self,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Persist one Ready (snapshot meta first, then hard state and entries) in one txn."""
        if hard_state is None and not entries and snapshot is None:
            return
        with self.env.begin(write=True) as txn:
            if snapshot is not None:
                self._install_snapshot(txn, snapshot)
            if hard_state is not None:
                self._put_hard_state(txn, hard_state)
            if entries:
                self._append(txn, entries)

    def append(self, entries: Sequence[Entry]) -> None:
        if entries:
            with self.env.begin(write=True) as txn:
                self._append(txn, entries)

    def set_hard_state(self, hs: HardState) -> None:
        with self.env.begin(write=True) as txn:
            self._put_hard_state(txn, hs)

    def compact(self, index: int, term: int, voters: Sequence[int],
                addrs: tuple[tuple[int, str], ...] = ()) -> None:
        """A local snapshot covers ``index``: record it and drop the entries up to it."""
        with self.env.begin(write=True) as txn:
            old = self._snapshot(txn)
            if old is not None and old.index >= index:
                return
            self._put_snapshot(txn, SnapshotMeta(index, term, tuple(voters), addrs))
            self._delete_upto(txn, index)

    def _put_hard_state(self, txn: Any, hs: HardState) -> None:
        txn.put(_HS, msgpack.packb([hs.term, hs.vote, hs.commit]), db=self._state)

    def _put_snapshot(self, txn: Any, snap: SnapshotMeta) -> None:
        txn.put(_SNAP, msgpack.packb(snapshot_meta_to(snap)), db=self._state)
        txn.put(_FIRST, _key(snap.index + 1), db=self._state)

    def _install_snapshot(self, txn: Any, snap: SnapshotMeta) -> None:
        """A snapshot from the leader: keep our suffix only if it continues the snapshot."""
        raw = txn.get(_key(snap.index), db=self._entries)
        keep_suffix = raw is not None and self._decode(snap.index, raw).term == snap.term
        self._put_snapshot(txn, snap)
        if keep_suffix:
            self._delete_upto(txn, snap.index)
        else:
            txn.drop(self._entries, delete=False)

    def _delete_upto(self, txn: Any, index: int) -> None:
        cur = txn.cursor(db=self._entries)
        if not cur.first():
            return
        while _int(cur.key()) <= index:
            if not cur.delete():
                break
            if not cur.key():
                break

    def _append(self, txn: Any, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        cur = txn.cursor(db=self._entries)
        if cur.set_range(_key(first)):
            while cur.delete():
                if not cur.key():
                    break
        for e in entries:
            data = msgpack.packb([e.term, int(e.type), e.data], use_bin_type=True)
            txn.put(_key(e.index), data, db=self._entries, append=False)

    def close(self) -> None:
        self.env.close()
