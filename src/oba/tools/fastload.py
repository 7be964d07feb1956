"""Bulk-load transaction for an offline import into a fresh, empty store.

Rules for this module:
- ``BulkLoad`` owns the in-memory state of one import: normalised DN -> id, parent id ->
  child ids, and every (index key, id) pair per indexed attribute. ``BulkTxn`` is a
  ``WriteTxn`` whose lookups (``id_for_ndn``, ``children``, ``next_id``) answer from that
  state, so ``oba.directory.apply`` runs unchanged (same checks as the server) without an
  LMDB lookup per check.
- ``id2entry`` rows are written as they come (ids only grow: LMDB append); a later rewrite of
  an entry (memberOf set by a group added after its members) overwrites its row and moves its
  index pairs in memory. ``dn2id``, ``children`` and every ``idx:`` database are written once,
  by ``BulkLoad.finish``, in sorted key order with cursor appends (MDB_APPEND/APPENDDUP).
  A very large import flushes the index pairs whenever ``MAX_HELD`` are held (the caller
  checks after each batch); flushes after the first are ordinary sorted puts.
- The on-disk result is the same as entries added one by one by the server: same keys, same
  values, same ``meta`` (``next_id``, ``applied_index``, ``index_config``).
- The importer may compute an entry's normalised DN, index keys (``keys_of``) and encoded row
  ahead, in a worker process, and hand them over in ``BulkTxn.pending`` for the next new
  entry; that entry's ``attrs`` need not be filled then (only group work reads them). Index
  keys come from the values (or from apply's normalised values, ``keys_of(attrs, norms)``:
  the same keys), per attribute plan: presence, the equality rule's function, the substring
  rule's (the equality form reused when it is the same function).
- Only inserts and rewrites of entries are supported: ``delete_entry`` and the index readers
  raise/answer "unindexed" (apply's add path never deletes; refint would scan).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from itertools import chain, repeat
from typing import Any, cast

import msgpack

from oba.directory.entry import Entry
from oba.storage import indexes as ix
from oba.storage.lmdbstore import (
    Store,
    WriteTxn,
    _encode_entry,
    bytes_id,
    dn_key,
    id_bytes,
    parent_ndn,
)

EntryKeys = list[tuple[str, tuple[bytes, ...]]]  # (indexed attribute, its keys) of one entry
Pending = tuple[str, EntryKeys, str, bytes]  # see BulkTxn.pending

_KEY_CACHE_LIMIT = 400_000
_MULTI_LIMIT = 4096  # value lists whose keys are remembered
_CACHE_PROBE = 20_000  # cache misses after which an attribute's cache is judged
MAX_HELD = 15_000_000  # index pairs held in memory before a flush (about 1 GB)


def _normalizer(schema: Any, attr: str) -> Any:
    """``schema.normalize(attr, .)`` as one function (looked up once per attribute)."""
    get = getattr(schema, "normalizer", None)
    if get is not None:
        try:
            return get(attr)
        except Exception:  # an unknown type: normalize raises it per value (key skipped)
            pass
    return partial(schema.normalize, attr)


def _rule_function(rule: Any) -> Any:
    """``rule.normalize`` as the function it calls, when the rule exposes it."""
    return getattr(rule, "normalizer", None) or rule.normalize


def _parent(ndn: str) -> str:
    """``parent_ndn(ndn)``, without its character loop when no escape precedes the first
    comma (a bulk load's DNs rarely hold one)."""
    i = ndn.find(",")
    if i < 0:
        return ""
    if "\\" in ndn[:i]:
        return parent_ndn(ndn)
    return ndn[i + 1 :]


class BulkLoad:
    """In-memory state of one bulk load into ``store`` (which must be empty)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dn2id: dict[str, bytes] = {}
        self.children: dict[bytes, list[bytes]] = {}
        self.next_id = 1
        self.held = 0  # index pairs held in memory (roughly: removals are not counted)
        self._flushed = False
        self.deleted: list[tuple[str, bytes, bytes]] = []  # flushed pairs to delete
        self.stored_dns: dict[str, str] = {}
        self.pairs: dict[str, dict[bytes, list[bytes]]] = {a: {} for a in store.index_config}
        self.unsorted: dict[str, set[bytes]] = {a: set() for a in store.index_config}
        self._kinds = {a: tuple(k) for a, k in store.index_config.items()}
        self._key_cache: dict[str, dict[bytes, tuple[bytes, ...]]] = {
            a: {} for a in store.index_config}
        self._misses = {a: 0 for a in store.index_config}
        self._multi: dict[tuple[str, tuple[bytes, ...]], tuple[bytes, ...]] = {}
        self._plans: dict[str, tuple[bool, Any, Any]] = {}
        for attr, kinds in store.index_config.items():
            if attr != "objectClass":
                eq = _normalizer(store.schema, attr) if "eq" in kinds else None
                sub = store.schema.substr(attr) if "sub" in kinds else None
                self._plans[attr] = ("pres" in kinds, eq,
                                     None if sub is None else _rule_function(sub))

    # -- index keys: ``ix.keys_for_values`` of one value, cached per attribute and value while
    #    the values of that attribute repeat (objectClass, gidNumber, sn...); an attribute whose
    #    values are mostly unique (uid, mail, entryUUID) stops being cached.
    def value_keys(self, attr: str, value: bytes) -> tuple[bytes, ...]:
        cache = self._key_cache.get(attr)
        if cache is None:
            return self._compute_keys(attr, value)
        keys = cache.get(value)
        if keys is None:
            keys = cache[value] = self._compute_keys(attr, value)
            if len(cache) >= _KEY_CACHE_LIMIT:
                cache.clear()
            misses = self._misses[attr] = self._misses[attr] + 1
            if misses == _CACHE_PROBE:
                if len(cache) > _CACHE_PROBE * 0.8:  # few repeats: not worth the memory
                    del self._key_cache[attr]
        return keys

    def _compute_keys(self, attr: str, value: bytes) -> tuple[bytes, ...]:
        """``ix.keys_for_values(schema, attr, kinds, [value])``, without its set-up cost for
        the plain eq/pres/sub cases (objectClass, with its superclass closure, goes there)."""
        plan = self._plans.get(attr)
        if plan is None:
            return tuple(ix.keys_for_values(self.store.schema, attr, self._kinds[attr],
                                            (value,)))
        pres, eq, sub = plan
        if eq is not None:
            try:
                norm = eq(value)
            except Exception:  # an unindexable value gets no eq key (as keys_for_values)
                pass
            else:
                return self._normed_keys(attr, value, norm)
        keys: list[bytes] = [ix.PRESENCE_KEY] if pres else []
        if sub is not None and sub is not eq:  # one function: it failed for eq already
            try:
                keys.extend(ix.sub_keys(sub(value)))
            except Exception:  # an unindexable value is skipped
                pass
        return tuple(keys)

    def _normed_keys(self, attr: str, value: bytes, norm: bytes) -> tuple[bytes, ...]:
        """``_compute_keys(attr, value)`` when ``norm`` is the value's equality form."""
        pres, eq, sub = self._plans[attr]
        keys: list[bytes] = [ix.PRESENCE_KEY] if pres else []
        if eq is not None:
            keys.append(ix.eq_key(norm))
            if sub is eq:
                keys.extend(ix.sub_keys(norm))
                return tuple(keys)
        if sub is not None:
            try:
                keys.extend(ix.sub_keys(sub(value)))
            except Exception:  # an unindexable value is skipped
                pass
        return tuple(keys)

    def entry_keys(self, attr: str, values: Iterable[bytes]) -> set[bytes]:
        out: set[bytes] = set()
        for v in values:
            out.update(self.value_keys(attr, v))
        return out

    def keys_of(self, attrs: dict[str, list[bytes]],
                norms: dict[str, list[bytes]] | None = None) -> EntryKeys:
        """The index keys of an entry per indexed attribute (pure: a worker may compute
        them; ``add_keys`` records them). ``norms``: equality-normalised values known for
        some attributes (``PreparedAdd.norms``), value for value."""
        out: EntryKeys = []
        plans = self._plans
        tagged = ix.tagged_keys(attrs)  # cn;lang-en values are indexed under cn
        for attr in self.pairs:
            values = attrs.get(attr)
            if tagged:
                values = list(ix.values_for_index(attrs, attr, tagged)) or None
            if not values:
                continue
            if len(values) == 1:
                normed = None
                if norms is not None and attr not in self._key_cache and attr in plans:
                    normed = norms.get(attr)
                if normed is None:
                    out.append((attr, self.value_keys(attr, values[0])))
                else:
                    out.append((attr, self._normed_keys(attr, values[0], normed[0])))
                continue
            key = (attr, tuple(values))  # value lists repeat too (objectClass)
            keys = self._multi.get(key)
            if keys is None:
                keys = tuple(self.entry_keys(attr, values))
                if len(self._multi) >= _MULTI_LIMIT:
                    self._multi.clear()
                self._multi[key] = keys
            out.append((attr, keys))
        return out

    def add_keys(self, keys: EntryKeys, idb: bytes) -> None:
        """Record the index pairs of a new entry (its id is the highest so far)."""
        held = 0
        pairs = self.pairs
        for attr, attr_keys in keys:
            table = pairs[attr]
            for k in attr_keys:
                ids = table.get(k)
                if ids is None:
                    table[k] = [idb]
                else:
                    ids.append(idb)
            held += len(attr_keys)
        self.held += held

    def add_grouped(self, grouped: dict[str, dict[bytes, list[int]]],
                    idbs: list[bytes | None]) -> None:
        """Record index pairs given per key as indexes into ``idbs`` (the ids of a run of new
        entries, None for a record that was not added), all above the ids recorded so far."""
        held = 0
        pairs = self.pairs
        complete = None not in idbs
        pick = cast("Callable[[int], bytes]", idbs.__getitem__)
        for attr, keys in grouped.items():
            table = pairs[attr]
            get = table.get
            if complete:  # the usual case: every record of the run was added
                for k, where in keys.items():
                    at = get(k)
                    if at is None:
                        table[k] = list(map(pick, where))
                    else:
                        at.extend(map(pick, where))
                held += sum(map(len, keys.values()))
                continue
            for k, where in keys.items():
                ids = [i for i in (idbs[j] for j in where) if i is not None]
                if not ids:
                    continue
                at = get(k)
                if at is None:
                    table[k] = ids
                else:
                    at.extend(ids)
                held += len(ids)
        self.held += held

    def add_entry(self, attrs: dict[str, list[bytes]], idb: bytes) -> None:
        """Every index pair of a new entry (its id is the highest so far)."""
        self.add_keys(self.keys_of(attrs), idb)

    def add_pairs_unordered(self, attr: str, keys: Iterable[bytes], idb: bytes) -> None:
        """Pairs of a rewritten entry (its id may be below others): sorted at the end."""
        unsorted = self.unsorted[attr]
        for k in keys:
            unsorted.add(k)
            self.pairs[attr].setdefault(k, []).append(idb)

    def remove_pairs(self, attr: str, keys: Iterable[bytes], idb: bytes) -> None:
        """Drop pairs of a rewritten entry: from memory, or (already flushed) at the next
        flush."""
        table = self.pairs[attr]
        for k in keys:
            ids = table.get(k)
            if ids is not None and idb in ids:
                ids.remove(idb)
                if not ids:
                    del table[k]
            elif self._flushed:
                self.deleted.append((attr, k, idb))

    # -- the final write
    def finish(self, applied_index: int) -> None:
        """Write dn2id, children, every index and the meta counters (own transaction)."""
        store = self.store
        env = store.env
        with env.begin(write=True) as txn:
            cur = txn.cursor(db=store._dn2id)
            cur.putmulti(sorted((dn_key(n), i) for n, i in self.dn2id.items()),
                         dupdata=False, overwrite=True, append=True)
            cur = txn.cursor(db=store._children)
            for parent in sorted(self.children):
                kids = self.children[parent]
                cur.putmulti(zip(repeat(parent), sorted(kids)), dupdata=True, append=True)
            txn.put(b"next_id", id_bytes(self.next_id), db=store._meta)
            txn.put(b"applied_index", id_bytes(applied_index), db=store._meta)
        self.dn2id.clear()
        self.children.clear()
        self.flush_indexes()

    def flush_indexes(self) -> None:
        """Write the index pairs held so far (one transaction per index) and forget them. The
        first flush appends to empty databases; a later one (a very large import that passed
        ``MAX_HELD``) merges with ordinary sorted puts."""
        env = self.store.env
        append = not self._flushed
        if self.deleted:
            with env.begin(write=True) as txn:
                for attr, k, idb in self.deleted:
                    txn.delete(k, idb, db=self.store._idx[attr])
            self.deleted.clear()
        for attr, table in self.pairs.items():
            unsorted = self.unsorted[attr]
            for k in unsorted:
                if k in table:
                    table[k] = sorted(set(table[k]))
            unsorted.clear()
            with env.begin(write=True) as txn:
                cur = txn.cursor(db=self.store._idx[attr])
                cur.putmulti(chain.from_iterable(zip(repeat(k), table[k]) for k in sorted(table)),
                             dupdata=True, append=append)
            table.clear()
        self.held = 0
        self._flushed = True


class BulkTxn(WriteTxn):
    """A write transaction of a bulk load (see the module rules)."""

    def __init__(self, store: Store, txn: Any, load: BulkLoad) -> None:
        super().__init__(store, txn)
        self._load = load
        self._id_cursor = txn.cursor(db=store._id2entry)
        # The next new entry as computed ahead by the importer: (normalised DN, index keys,
        # the DN it was encoded with, its encoded row); its ``attrs`` may then be left empty.
        self.pending: Pending | None = None

    def id_for_ndn(self, ndn: str) -> int | None:
        if not ndn:
            return None
        raw = self._load.dn2id.get(ndn)
        return None if raw is None else bytes_id(raw)

    def stored_dn(self, ndn: str) -> str | None:
        """Parents are asked for again and again: their stored DNs are remembered (a DN
        never changes during a bulk load)."""
        dns = self._load.stored_dns
        dn = dns.get(ndn)
        if dn is None:
            dn = super().stored_dn(ndn)
            if dn is not None:
                if len(dns) >= _KEY_CACHE_LIMIT:
                    dns.clear()
                dns[ndn] = dn
        return dn

    def children(self, eid: int) -> list[int]:
        return [bytes_id(c) for c in self._load.children.get(id_bytes(eid), ())]

    def has_children(self, eid: int) -> bool:
        return id_bytes(eid) in self._load.children

    def count(self) -> int:
        return self._load.next_id - 1

    def next_id(self) -> int:
        nid = self._load.next_id
        self._load.next_id = nid + 1
        return nid

    def eq(self, attr: str, norm: bytes) -> list[int] | None:
        return None

    def pres(self, attr: str) -> list[int] | None:
        return None

    def sub(self, attr: str, initial: bytes | None, any_: Iterable[bytes],
            final: bytes | None) -> list[int] | None:
        return None

    def put_entry(self, entry: Entry, old: Entry | None = None, keep_parent: bool = False) -> None:
        load = self._load
        store = self._store
        idb = id_bytes(entry.id)
        if old is None:
            pending = self.pending
            self.pending = None
            ndn = store.schema.normalize_dn(entry.dn) if pending is None else pending[0]
            if ndn in load.dn2id:
                raise ValueError(f"bulk load: {entry.dn} stored twice")
            load.dn2id[ndn] = idb
            parent = _parent(ndn)
            pid = load.dn2id.get(parent, b"\0" * 8) if parent else b"\0" * 8
            load.children.setdefault(pid, []).append(idb)
            if pending is None:
                row = _encode_entry(entry)
            elif pending[2] == entry.dn:
                row = pending[3]
            else:  # stored below a parent spelled otherwise: the row names the entry anew
                attrs = msgpack.unpackb(pending[3], raw=False)["a"]
                row = _encode_entry(Entry(entry.id, entry.dn, attrs))
            if not self._id_cursor.put(idb, row, append=True):
                raise ValueError(f"bulk load: id {entry.id} is not the highest")
            if pending is None:
                load.add_entry(entry.attrs, idb)
            else:
                load.add_keys(pending[1], idb)
            return
        if old.dn != entry.dn and \
                store.schema.normalize_dn(old.dn) != store.schema.normalize_dn(entry.dn):
            raise ValueError("bulk load: entries cannot be renamed")
        self._txn.put(idb, _encode_entry(entry), db=store._id2entry)
        for attr in load.pairs:
            before = old.attrs.get(attr)
            after = entry.attrs.get(attr)
            if before == after:
                continue
            old_keys = load.entry_keys(attr, before or ())
            new_keys = load.entry_keys(attr, after or ())
            load.remove_pairs(attr, old_keys - new_keys, idb)
            load.add_pairs_unordered(attr, new_keys - old_keys, idb)

    def delete_entry(self, entry: Entry) -> None:
        raise ValueError("bulk load: entries cannot be deleted")
