"""ObaDB: the directory's LMDB environment (layout after OpenLDAP back-mdb).

Rules:
- Layout (docs/architecture.md): ``id2entry`` (8-byte big-endian id -> msgpack
  ``{"dn", "a"}``), ``dn2id`` (normalised DN -> id), ``children`` (parent id -> child id,
  dupsort/dupfixed, the root's parent is 0), ``idx:<attr>`` (index key -> id, dupsort/dupfixed),
  ``meta`` (``next_id``, ``applied_index``, ``index_config``, ``format_version``).
- A data directory holding ``IMPORT_MARKER`` is a bulk import that did not finish: ``Store``
  refuses to open it (``IncompleteImport``) unless the importer itself opens it.
- One writer at a time (the writer thread); readers never block. A transaction object is used
  only in the thread that created it, inside its ``with`` block.
- ``put_entry`` keeps dn2id, children and every index consistent by diffing old vs new keys;
  ``delete_entry`` requires a leaf. Nothing here checks LDAP semantics: that is ``apply``'s job.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
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
IMPORT_MARKER = "import-in-progress"


class IncompleteImport(RuntimeError):
    """The data directory holds an interrupted offline import."""


def id_bytes(i: int) -> bytes:
    return i.to_bytes(8, "big")


def bytes_id(b: bytes) -> int:
    return int.from_bytes(b, "big")


def dn_key(ndn: str) -> bytes:
    """The dn2id key of a normalised DN (LMDB keys are at most 511 bytes: long DNs hashed)."""
    raw = ndn.encode("utf-8")
    return raw if len(raw) <= 400 else ix.fit_key(raw)


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


# Decoded entries shared by readers, keyed by their stored bytes: a changed entry has new
# bytes, so a hit is always current. Entries handed out from here must not be mutated (the
# write path decodes its own copies). Bounded: cleared when full (cheap, and hot entries come
# back at once).
_ENTRY_CACHE: dict[bytes, Entry] = {}
ENTRY_CACHE_SIZE = 32768  # 10,000-user benchmark: 8192 re-decoded half the reads


def _cached_entry(eid: int, raw: bytes) -> Entry:
    entry = _ENTRY_CACHE.get(raw)
    if entry is None or entry.id != eid:
        entry = _decode_entry(eid, raw)
        if len(_ENTRY_CACHE) >= ENTRY_CACHE_SIZE:
            _ENTRY_CACHE.clear()
        _ENTRY_CACHE[raw] = entry
    return entry


class ReadTxn:
    """Read access within one LMDB transaction."""

    __slots__ = ("_store", "_txn")

    def __init__(self, store: Store, txn: Any) -> None:
        self._store = store
        self._txn = txn

    def __enter__(self) -> ReadTxn:
        self._txn = self._store.env.begin(write=False, buffers=False)
        return self

    def __exit__(self, *exc: object) -> None:
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.abort()

    @property
    def store(self) -> Store:
        return self._store

    # -- entries
    def id_for_ndn(self, ndn: str) -> int | None:
        if not ndn:
            return None
        raw = self._txn.get(dn_key(ndn), db=self._store._dn2id)
        return None if raw is None else bytes_id(raw)

    def get(self, eid: int) -> Entry | None:
        """The entry with id ``eid``: a shared object from the read cache — do not mutate it
        (``WriteTxn.get`` returns private copies)."""
        raw = self._txn.get(id_bytes(eid), db=self._store._id2entry)
        return None if raw is None else _cached_entry(eid, raw)

    def get_by_ndn(self, ndn: str) -> Entry | None:
        eid = self.id_for_ndn(ndn)
        return None if eid is None else self.get(eid)

    def stored_dn(self, ndn: str) -> str | None:
        """The DN as stored of the entry with normalised DN ``ndn`` (None when absent)."""
        entry = self.get_by_ndn(ndn)
        return None if entry is None else entry.dn

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

    def get(self, eid: int) -> Entry | None:
        """A private copy: the write path may change what it reads."""
        raw = self._txn.get(id_bytes(eid), db=self._store._id2entry)
        return None if raw is None else _decode_entry(eid, raw)

    def next_id(self) -> int:
        raw = self._txn.get(b"next_id", db=self._store._meta)
        nid = 1 if raw is None else bytes_id(raw)
        self._txn.put(b"next_id", id_bytes(nid + 1), db=self._store._meta)
        return nid

    def set_applied_index(self, index: int) -> None:
        self._txn.put(b"applied_index", id_bytes(index), db=self._store._meta)

    def _parent_id(self, ndn: str) -> int:
        parent = parent_ndn(ndn) if ndn else ""
        if not parent:  # a suffix entry with one RDN (o=example) hangs off the root
            return 0
        pid = self.id_for_ndn(parent)
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
            self._txn.put(dn_key(ndn), key, db=store._dn2id)
            self._txn.put(id_bytes(self._parent_id(ndn)), key, db=store._children, dupdata=True)
        else:
            old_attrs = old.attrs
            old_ndn = store.schema.normalize_dn(old.dn)
            if old_ndn != ndn:
                self._txn.delete(dn_key(old_ndn), db=store._dn2id)
                self._txn.put(dn_key(ndn), key, db=store._dn2id)
                old_pid = self._parent_id(old_ndn)
                new_pid = self._parent_id(ndn)
                if not keep_parent and old_pid != new_pid:
                    self._txn.delete(id_bytes(old_pid), key, db=store._children)
                    self._txn.put(id_bytes(new_pid), key, db=store._children, dupdata=True)
        self._txn.put(key, _encode_entry(entry), db=store._id2entry)
        new_attrs = entry.attrs
        old_tagged, new_tagged = ix.tagged_keys(old_attrs), ix.tagged_keys(new_attrs)
        for attr, kinds in store.index_config.items():
            old_values = ix.values_for_index(old_attrs, attr, old_tagged)
            new_values = ix.values_for_index(new_attrs, attr, new_tagged)
            if old is not None and old_values == new_values:
                continue  # unchanged values, unchanged keys (a modify touches few attributes)
            old_keys = ix.keys_for_values(store.schema, attr, kinds, old_values)
            new_keys = ix.keys_for_values(store.schema, attr, kinds, new_values)
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
        self._txn.delete(dn_key(ndn), db=store._dn2id)
        self._txn.delete(id_bytes(self._parent_id(ndn)), key, db=store._children)
        self._txn.delete(key, db=store._id2entry)
        tagged = ix.tagged_keys(entry.attrs)
        for attr, kinds in store.index_config.items():
            db = store._idx[attr]
            values = ix.values_for_index(entry.attrs, attr, tagged)
            for k in ix.keys_for_values(store.schema, attr, kinds, values):
                self._txn.delete(k, key, db=db)


    # -- request ids (cluster mode: a retried command is recognised and not applied twice)
    # Added for oba.cluster.raft_replicator: ``reqids`` (request id -> msgpack
    # ``[index, code, matched_dn, message]``) and ``reqidx`` (index -> request id, for pruning).
    def request_result(self, request_id: str) -> tuple[int, int, str, str] | None:
        """(index, code, matched_dn, message) recorded for ``request_id``, or None."""
        db = self._store.aux_db(b"reqids")
        raw = self._txn.get(request_id.encode("utf-8"), db=db)
        if raw is None:
            return None
        index, code, matched, message = msgpack.unpackb(raw, raw=False)
        return int(index), int(code), str(matched), str(message)

    def record_request(self, request_id: str, index: int, code: int, matched_dn: str,
                       message: str) -> None:
        key = request_id.encode("utf-8")
        value = msgpack.packb([index, code, matched_dn, message], use_bin_type=True)
        self._txn.put(key, value, db=self._store.aux_db(b"reqids"))
        self._txn.put(id_bytes(index), key, db=self._store.aux_db(b"reqidx"))

    def prune_requests(self, below_index: int, limit: int = 64) -> None:
        """Forget at most ``limit`` request ids recorded at an index below ``below_index``."""
        ids = self._store.aux_db(b"reqids")
        cur = self._txn.cursor(db=self._store.aux_db(b"reqidx"))
        n = 0
        while n < limit and cur.first() and bytes_id(cur.key()) < below_index:
            self._txn.delete(cur.value(), db=ids)
            cur.delete()
            n += 1


class Store:
    """The LMDB environment with its named databases opened once."""

    def __init__(
        self,
        path: str | Path,
        schema: SchemaLike,
        indexes: Mapping[str, Iterable[str]] | None = None,
        map_size: int = 1 << 34,
        *,
        durable: bool = True,
        meta_sync: bool = True,
        importing: bool = False,
    ) -> None:
        """``durable=False`` skips the fsync at each commit (bulk import: call
        ``env.sync(True)`` at the end); ``meta_sync=False`` (cluster mode) keeps the data
        fsync of each commit but not the meta page's (LMDB's MDB_NOMETASYNC): the database
        stays intact after a system crash but may lose its last commits, which a cluster node
        applies again from its Raft log; ``importing`` lets the importer open a directory
        that holds ``IMPORT_MARKER``."""
        self._durable, self._meta_sync = durable, meta_sync
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not importing and (self.path / IMPORT_MARKER).exists():
            raise IncompleteImport(
                f"{self.path} holds an interrupted offline import ({IMPORT_MARKER}): remove "
                "the directory's contents and run the import again")
        self.schema = schema
        self.index_config = ix.normalize_config(
            schema, ix.DEFAULT_INDEXES if indexes is None else indexes
        )
        self.env = lmdb.open(
            str(self.path),
            max_dbs=64 + 2 * len(self.index_config),
            map_size=map_size,
            subdir=True,
            sync=durable,
            metasync=durable and meta_sync,
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
                    tagged = ix.tagged_keys(entry.attrs)
                    for attr in changed:
                        values = ix.values_for_index(entry.attrs, attr, tagged)
                        kinds = self.index_config[attr]
                        for ikey in ix.keys_for_values(self.schema, attr, kinds, values):
                            txn.put(ikey, k, db=self._idx[attr], dupdata=True)
            txn.put(b"index_config", msgpack.packb(self.index_config), db=self._meta)

    def read(self) -> ReadTxn:
        """``with store.read() as txn``: a read transaction, ended when the block ends (a
        plain object, not a generator context manager: one is opened per request)."""
        return ReadTxn(self, None)

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

    # -- added for cluster mode (oba.cluster / oba.raft.snapshot): auxiliary databases,
    #    consistent copies and restore from a snapshot file
    def aux_db(self, name: bytes) -> Any:
        """A named database of this store, opened on first use; the first call must come
        before any write transaction is open (e.g. at start-up), else LMDB deadlocks."""
        cache: dict[bytes, Any] = vars(self).setdefault("_aux_dbs", {})
        db = cache.get(name)
        if db is None:
            db = cache[name] = self.env.open_db(name)
        return db

    def copy_to(self, directory: str | Path) -> None:
        """A consistent copy of the environment into an empty ``directory`` (call from the
        writer thread so that it reflects exactly the last commit). Not compacted: LMDB's
        compacting copy (MDB_CP_COMPACT, LMDB 0.9.36 via py-lmdb 3.0) crashes the process on
        Oba's dupsort/dupfixed databases."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.env.copy(str(directory), compact=False)

    # Set by the listener workers' pool (``server.workers``): an async context manager that
    # has every other process close the environment for the time of a ``restore_from`` (LMDB
    # must not see a replaced data file while another process holds the lock file).
    restore_guard: Callable[[], AbstractAsyncContextManager[None]] | None = None

    def restore_from(self, data_file: str | Path) -> None:
        """Replace the whole database by ``data_file`` (an LMDB ``data.mdb``, consumed):
        close, rename atomically over ``data.mdb``, reopen. No transaction may be open, in
        this process or any other (see ``restore_guard``)."""
        map_size = int(self.env.info()["map_size"])
        self.env.close()
        os.replace(data_file, self.path / "data.mdb")
        vars(self).pop("_aux_dbs", None)
        Store.__init__(self, self.path, self.schema, self.index_config, map_size,
                       durable=self._durable, meta_sync=self._meta_sync)
