"""ObaDB storage: entries, dn2id/children, index maintenance, index rebuild, persistence."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from oba.directory.entry import Entry
from oba.storage import DEFAULT_INDEXES, Store
from oba.storage.indexes import MAX_KEY, eq_key
from oba.storage.lmdbstore import parent_ndn


class _Rule:
    name = "caseIgnoreMatch"

    def normalize(self, value: bytes) -> bytes:
        return b" ".join(value.lower().split())


class _Schema:
    """A minimal stand-in: case-insensitive names, caseIgnore values."""

    names = [
        "objectClass",
        "uid",
        "cn",
        "sn",
        "givenName",
        "mail",
        "member",
        "uniqueMember",
        "memberUid",
        "entryUUID",
        "uidNumber",
        "gidNumber",
        "description",
        "ou",
        "dc",
    ]

    def canonical(self, name: str) -> str | None:
        for n in self.names:
            if n.lower() == name.lower():
                return n
        return None

    def attribute(self, name: str) -> object:
        return self.canonical(name)

    def object_class(self, name: str) -> object:
        return None

    def equality(self, attr: str) -> _Rule:
        return _Rule()

    def ordering(self, attr: str) -> None:
        return None

    def substr(self, attr: str) -> _Rule:
        return _Rule()

    def normalize(self, attr: str, value: bytes) -> bytes:
        return _Rule().normalize(value)

    def normalize_dn(self, dn: str) -> str:
        return ",".join(p.strip().lower() for p in dn.split(",")) if dn else ""


def _person(eid: int, dn: str, uid: str, cn: str) -> Entry:
    return Entry(
        eid,
        dn,
        {"objectClass": [b"person"], "uid": [uid.encode()], "cn": [cn.encode()], "sn": [b"Smith"]},
    )


def _fill(store: Store) -> None:
    with store.write() as w:
        base = Entry(
            w.next_id(), "dc=example,dc=com", {"objectClass": [b"domain"], "dc": [b"example"]}
        )
        w.put_entry(base)
        ou = Entry(
            w.next_id(),
            "ou=people,dc=example,dc=com",
            {"objectClass": [b"organizationalUnit"], "ou": [b"people"]},
        )
        w.put_entry(ou)
        w.put_entry(
            _person(w.next_id(), "uid=alice,ou=people,dc=example,dc=com", "alice", "Alice Jones")
        )
        w.put_entry(_person(w.next_id(), "uid=bob,ou=people,dc=example,dc=com", "bob", "Bob Smith"))


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "db", _Schema(), DEFAULT_INDEXES, map_size=1 << 24)
    _fill(s)
    return s


def test_put_get_children(store: Store) -> None:
    with store.read() as r:
        assert r.count() == 4
        e = r.get_by_ndn("uid=alice,ou=people,dc=example,dc=com")
        assert e is not None and e.id == 3 and e.attrs["cn"] == [b"Alice Jones"]
        assert r.get(3) == e
        assert r.children(0) == [1]
        assert r.children(2) == [3, 4]
        assert r.has_children(2) and not r.has_children(3)
        assert r.get(99) is None and r.get_by_ndn("cn=x") is None


def test_equality_presence_substring_indexes(store: Store) -> None:
    with store.read() as r:
        assert r.eq("uid", b"alice") == [3]
        assert r.eq("objectClass", b"person") == [3, 4]
        assert r.eq("description", b"x") is None  # not indexed
        assert r.pres("uid") == [3, 4]
        assert r.pres("cn") is None  # cn has no presence index
        assert r.sub("cn", b"ali", (), None) == [3]
        assert r.sub("cn", None, (b"smi",), None) == [4]
        assert r.sub("cn", None, (), b"nes") == [3]
        assert r.sub("cn", b"al", (), None) is None  # too short to use the index
        assert r.sub("cn", None, (b"zzz",), None) == []


def test_modify_updates_indexes_incrementally(store: Store) -> None:
    with store.write() as w:
        old = w.get(3)
        assert old is not None
        new = old.copy()
        new.attrs["uid"] = [b"alice2"]
        new.attrs["mail"] = [b"a@example.com"]
        w.put_entry(new, old)
    with store.read() as r:
        assert r.eq("uid", b"alice") == []
        assert r.eq("uid", b"alice2") == [3]
        assert r.eq("mail", b"a@example.com") == [3]
        assert r.sub("mail", None, (b"example",), None) == [3]
        assert r.eq("cn", b"alice jones") == [3]


def test_delete_entry(store: Store) -> None:
    with store.write() as w:
        e = w.get(4)
        assert e is not None
        w.delete_entry(e)
    with store.read() as r:
        assert r.get(4) is None
        assert r.get_by_ndn("uid=bob,ou=people,dc=example,dc=com") is None
        assert r.children(2) == [3]
        assert r.eq("uid", b"bob") == []
        assert r.eq("objectClass", b"person") == [3]
        assert r.sub("cn", None, (b"smi",), None) == []


def test_rename_moves_children_link(store: Store) -> None:
    with store.write() as w:
        ou2 = Entry(w.next_id(), "ou=staff,dc=example,dc=com", {"ou": [b"staff"]})
        w.put_entry(ou2)
        old = w.get(3)
        assert old is not None
        new = old.copy()
        new.dn = "uid=alice,ou=staff,dc=example,dc=com"
        w.put_entry(new, old)
    with store.read() as r:
        assert r.children(2) == [4]
        assert r.children(5) == [3]
        assert r.id_for_ndn("uid=alice,ou=staff,dc=example,dc=com") == 3
        assert r.id_for_ndn("uid=alice,ou=people,dc=example,dc=com") is None


def test_abort_on_exception(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as w:
        w.put_entry(_person(w.next_id(), "uid=carol,ou=people,dc=example,dc=com", "carol", "C"))
        raise RuntimeError("boom")
    with store.read() as r:
        assert r.get_by_ndn("uid=carol,ou=people,dc=example,dc=com") is None
        assert r.eq("uid", b"carol") == []


def test_long_values_are_hashed(store: Store) -> None:
    long = b"x" * (MAX_KEY + 100)
    assert len(eq_key(long)) == 33 and eq_key(long).startswith(b"#")
    with store.write() as w:
        e = _person(w.next_id(), "uid=long,ou=people,dc=example,dc=com", "long", "Long")
        e.attrs["description"] = [long]
        e.attrs["mail"] = [long]
        w.put_entry(e)
    with store.read() as r:
        assert r.eq("mail", long) == [5]
        assert r.sub("mail", long[:3], (), None) == [5]


def test_reopen_persists_and_applied_index(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", _Schema(), DEFAULT_INDEXES, map_size=1 << 24)
    _fill(s)
    with s.write() as w:
        w.set_applied_index(42)
    s.close()
    s2 = Store(tmp_path / "db", _Schema(), DEFAULT_INDEXES, map_size=1 << 24)
    with s2.read() as r:
        assert r.applied_index() == 42
        assert r.eq("uid", b"bob") == [4]
    with s2.write() as w:
        assert w.next_id() == 5
    s2.close()


def test_index_config_change_rebuilds_and_drops(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", _Schema(), {"uid": {"eq"}, "cn": {"eq"}}, map_size=1 << 24)
    _fill(s)
    s.close()
    s2 = Store(tmp_path / "db", _Schema(), {"uid": {"eq", "pres"}, "sn": {"sub"}}, map_size=1 << 24)
    with s2.read() as r:
        assert r.pres("uid") == [3, 4]
        assert r.eq("uid", b"alice") == [3]
        assert r.sub("sn", b"smi", (), None) == [3, 4]
        assert r.eq("cn", b"bob smith") is None
    s2.close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=64, readonly=True, lock=False)
    with env.begin() as txn:
        names = {k for k, _ in txn.cursor()}
    env.close()
    assert b"idx:cn" not in names and b"idx:sn" in names and b"idx:uid" in names


def test_unknown_index_attribute_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Store(tmp_path / "db", _Schema(), {"noSuchAttr": {"eq"}}, map_size=1 << 24)


def test_parent_ndn_handles_escapes() -> None:
    assert parent_ndn("cn=a\\,b,dc=x") == "dc=x"
    assert parent_ndn("cn=a\\\\,dc=x") == "dc=x"
    assert parent_ndn("dc=x") == ""


def test_long_dns_and_one_rdn_suffixes_are_stored(tmp_path: Path) -> None:
    """LMDB keys are at most 511 bytes: a DN longer than that is still stored and found, and a
    suffix with a single RDN (``o=example``) hangs off the root."""
    from oba.schema import Schema

    schema = Schema.default()
    store = Store(tmp_path / "db", schema)
    long_value = "x" * 600
    suffix = Entry(0, "o=example", {"objectClass": [b"organization"], "o": [b"example"]})
    child = Entry(0, f"cn={long_value},o=example", {"objectClass": [b"device"],
                                                    "cn": [long_value.encode()]})
    with store.write() as txn:
        suffix.id = txn.next_id()
        txn.put_entry(suffix)
        child.id = txn.next_id()
        txn.put_entry(child)
    with store.read() as txn:
        assert txn.get_by_ndn("o=example") is not None
        found = txn.get_by_ndn(f"cn={long_value},o=example")
        assert found is not None and found.id == child.id
        assert txn.children(suffix.id) == [child.id]
        assert txn.id_for_ndn("") is None
    store.close()
