"""ObaDB: the directory's LMDB environment (layout after OpenLDAP back-mdb).

Rules:
- Layout (docs/architecture.md): ``id2entry`` (8-byte big-endian id -> msgpack
  ``{"dn", "a"}``), ``dn2id`` (normalised DN -> id), ``children`` (parent id -> child id,
  dupsort/dupfixed, the root's parent is 0), ``idx:<attr>`` (index key -> id, dupsort/dupfixed),
  ``meta`` (``next_id``, ``applied_index``, ``index_config``, ``format_version``).
- One writer at a time (the writer thread); readers never block. A transaction object is used
  only in the thread that created it, inside its ``with`` block.
- ``put_entry`` keeps dn2id, children and every index consistent by diffing old vs new keys;
  ``delete_entry`` requires a leaf. Nothing here checks LDAP semantics: that is ``apply``'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from oba.directory.entry import Entry
from oba.storage import indexes as ix
from oba.storage.schemaapi import SchemaLike

FORMAT_VERSION = 1
_ID2ENTRY = b"id2entry"
_DN2ID = b"dn2id"
_CHILDREN = b"children"
_META = b"meta"
_IDX_PREFIX = "idx:"


def id_bytes(i: int) -> bytes:
    return i.to_bytes(8, "big")


def bytes_id(b: bytes) -> int:
    return int.from_bytes(b, "big")


def parent_ndn(ndn: str) -> str:
    """The parent of a normalised (RFC 4514-escaped) DN; "" for a one-RDN DN."""
    i = 0
    n = len(ndn)
    while i < n:
        c = ndn[i]
        if c == "\\":
            i += 2
            continue
        if c == ",":
            return ndn[i + 1 :]
        i += 1
    return ""


def _encode_entry(entry: Entry) -> bytes:
    data: bytes = msgpack.packb({"dn": entry.dn, "a": entry.attrs}, use_bin_type=True)
    return data


def _decode_entry(eid: int, raw: bytes) -> Entry:
    obj = msgpack.unpackb(raw, raw=False)
    return Entry(eid, obj["dn"], obj["a"])


class ReadTxn:
    """Read access within one LMDB transaction."""

    def __init__(self, store: Store, txn: Any) -> None:
        self._store = store
        self._txn = txn

    @property
    def store(self) -> Store:
        return self._store

    # -- entries
    def id_for_ndn(self, ndn: str) -> int | None:
        raw = self._txn.get(ndn.encode("utf-8"), db=self._store._dn2id)
        return None if raw is None else bytes_id(raw)

    def get(self, eid: int) -> Entry | None:
        raw = self._txn.get(id_bytes(eid), db=self._store._id2entry)
        return None if raw is None else _decode_entry(eid, raw)

    def get_by_ndn(self, ndn: str) -> Entry | None:
        eid = self.id_for_ndn(ndn)
        return None if eid is None else self.get(eid)

    def children(self, eid: int) -> list[int]:
        cur = self._txn.cursor(db=self._store._children)
        key = id_bytes(eid)
        if not cur.set_key(key):
            return []
        return [bytes_id(v) for v in cur.iternext_dup(keys=False, values=True)]

    def has_children(self, eid: int) -> bool:
        cur = self._txn.cursor(db=self._store._children)
        return bool(cur.set_key(id_bytes(eid)))

    def count(self) -> int:
        """Number of entries."""
        n: int = self._txn.stat(self._store._id2entry)["entries"]
        return n

    def iter_ids(self) -> Iterator[int]:
        cur = self._txn.cursor(db=self._store._id2entry)
        for k in cur.iternext(keys=True, values=False):
            yield bytes_id(k)

    # -- indexes
    def has_index(self, attr: str, kind: str) -> bool:
        return kind in self._store.index_config.get(attr, ())

    def _ids_for_key(self, attr: str, key: bytes) -> list[int]:
        cur = self._txn.cursor(db=self._store._idx[attr])
        if not cur.set_key(key):
            return []
        return [bytes_id(v) for v in cur.iternext_dup(keys=False, values=True)]

    def eq(self, attr: str, norm: bytes) -> list[int] | None:
        """Sorted ids whose ``attr`` has equality-normalised value ``norm``; None if unindexed."""
        if not self.has_index(attr, "eq"):
            return None
        return self._ids_for_key(attr, ix.eq_key(norm))

    def pres(self, attr: str) -> list[int] | None:
        if not self.has_index(attr, "pres"):
            return None
        return self._ids_for_key(attr, ix.PRESENCE_KEY)

    def sub(
        self, attr: str, initial: bytes | None, any_: Iterable[bytes], final: bytes | None
    ) -> list[int] | None:
        """Candidate ids (a superset of the matches) from normalised components, or None."""
        if not self.has_index(attr, "sub"):
            return None
        keys = ix.substring_query_keys(initial, any_, final)
        if not keys:
            return None
        result: set[int] | None = None
        for key in keys:
            ids = set(self._ids_for_key(attr, ix.fit_key(key)))
            result = ids if result is None else result & ids
            if not result:
                return []
        return sorted(result or ())

    # -- meta
    def applied_index(self) -> int:
        raw = self._txn.get(b"applied_index", db=self._store._meta)
        return 0 if raw is None else bytes_id(raw)


class WriteTxn(ReadTxn):
    """Read + write access; the only kind of transaction that changes the store."""

    def next_id(self) -> int:
        raw = self._txn.get(b"next_id", db=self._store._meta)
        nid = 1 if raw is None else bytes_id(raw)
        self._txn.put(b"next_id", id_bytes(nid + 1), db=self._store._meta)
        return nid

    def set_applied_index(self, index: int) -> None:
        self._txn.put(b"applied_index", id_bytes(index), db=self._store._meta)

    def _parent_id(self, ndn: str) -> int:
        if not ndn:
            return 0
        pid = self.id_for_ndn(parent_ndn(ndn))
        return 0 if pid is None else pid

    def put_entry(self, entry: Entry, old: Entry | None = None, keep_parent: bool = False) -> None:
        """Insert ``entry`` (old None) or replace ``old`` (same id) with it, keeping all
        secondary databases in step. ``keep_parent`` says the parent did not change even
        though the DN did (a descendant of a renamed entry): ``children`` is left alone."""
        store = self._store
        key = id_bytes(entry.id)
        ndn = store.schema.normalize_dn(entry.dn)
        old_attrs: Mapping[str, list[bytes]] = {}
        if old is None:
            self._txn.put(ndn.encode("utf-8"), key, db=store._dn2id)
            self._txn.put(id_bytes(self._parent_id(ndn)), key, db=store._children, dupdata=True)
        else:
            old_attrs = old.attrs
            old_ndn = store.schema.normalize_dn(old.dn)
            if old_ndn != ndn:
                self._txn.delete(old_ndn.encode("utf-8"), db=store._dn2id)
                self._txn.put(ndn.encode("utf-8"), key, db=store._dn2id)
                old_pid = self._parent_id(old_ndn)
                new_pid = self._parent_id(ndn)
                if not keep_parent and old_pid != new_pid:
                    self._txn.delete(id_bytes(old_pid), key, db=store._children)
                    self._txn.put(id_bytes(new_pid), key, db=store._children, dupdata=True)
        self._txn.put(key, _encode_entry(entry), db=store._id2entry)
        for attr, kinds in store.index_config.items():
            old_keys = ix.keys_for_values(store.schema, attr, kinds, old_attrs.get(attr, ()))
            new_keys = ix.keys_for_values(store.schema, attr, kinds, entry.attrs.get(attr, ()))
            db = store._idx[attr]
            for k in old_keys - new_keys:
                self._txn.delete(k, key, db=db)
            for k in new_keys - old_keys:
                self._txn.put(k, key, db=db, dupdata=True)

    def delete_entry(self, entry: Entry) -> None:
        """Remove a leaf entry (as currently stored) and all its index keys."""
        store = self._store
        key = id_bytes(entry.id)
        ndn = store.schema.normalize_dn(entry.dn)
        self._txn.delete(ndn.encode("utf-8"), db=store._dn2id)
        self._txn.delete(id_bytes(self._parent_id(ndn)), key, db=store._children)
        self._txn.delete(key, db=store._id2entry)
        for attr, kinds in store.index_config.items():
            db = store._idx[attr]
            for k in ix.keys_for_values(store.schema, attr, kinds, entry.attrs.get(attr, ())):
                self._txn.delete(k, key, db=db)


class Store:
    """The LMDB environment with its named databases opened once."""

    def __init__(
        self,
        path: str | Path,
        schema: SchemaLike,
        indexes: Mapping[str, Iterable[str]] | None = None,
        map_size: int = 1 << 34,
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.index_config = ix.normalize_config(
            schema, ix.DEFAULT_INDEXES if indexes is None else indexes
        )
        self.env = lmdb.open(
            str(self.path),
            max_dbs=64 + 2 * len(self.index_config),
            map_size=map_size,
            subdir=True,
            sync=True,
            metasync=True,
            writemap=False,
            readahead=False,
            lock=True,
            max_readers=256,
        )
        env = self.env
        self._id2entry = env.open_db(_ID2ENTRY)
        self._dn2id = env.open_db(_DN2ID)
        self._children = env.open_db(_CHILDREN, dupsort=True, dupfixed=True)
        self._meta = env.open_db(_META)
        self._idx: dict[str, Any] = {}
        for attr in self.index_config:
            self._idx[attr] = env.open_db(
                (_IDX_PREFIX + attr).encode("utf-8"), dupsort=True, dupfixed=True
            )
        self._sync_indexes()

    def _sync_indexes(self) -> None:
        """Rebuild changed index databases and drop removed ones, in one transaction."""
        with self.env.begin(write=True) as txn:
            raw = txn.get(b"index_config", db=self._meta)
            stored: dict[str, list[str]] = {} if raw is None else msgpack.unpackb(raw)
            if txn.get(b"format_version", db=self._meta) is None:
                txn.put(b"format_version", id_bytes(FORMAT_VERSION), db=self._meta)
            if stored == self.index_config:
                return
            for attr in stored:
                if attr not in self.index_config:
                    db = self.env.open_db(
                        (_IDX_PREFIX + attr).encode("utf-8"), txn=txn, dupsort=True, dupfixed=True
                    )
                    txn.drop(db, delete=True)
            changed = [a for a, k in self.index_config.items() if stored.get(a) != k]
            for attr in changed:
                txn.drop(self._idx[attr], delete=False)
            if changed:
                cur = txn.cursor(db=self._id2entry)
                for k, v in cur.iternext(keys=True, values=True):
                    entry = _decode_entry(bytes_id(k), v)
                    for attr in changed:
                        values = entry.attrs.get(attr, ())
                        kinds = self.index_config[attr]
                        for ikey in ix.keys_for_values(self.schema, attr, kinds, values):
                            txn.put(ikey, k, db=self._idx[attr], dupdata=True)
            txn.put(b"index_config", msgpack.packb(self.index_config), db=self._meta)

    @contextmanager
    def read(self) -> Iterator[ReadTxn]:
        with self.env.begin(write=False, buffers=False) as txn:
            yield ReadTxn(self, txn)

    @contextmanager
    def write(self) -> Iterator[WriteTxn]:
        """Commits on clean exit, aborts on exception (the exception propagates)."""
        txn = self.env.begin(write=True)
        try:
            yield WriteTxn(self, txn)
        except BaseException:
            txn.abort()
            raise
        txn.commit()

    def close(self) -> None:
        self.env.close()
