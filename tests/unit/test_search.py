"""search(): scopes, every filter type, three-valued logic, index use, and speed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from oba.directory.apply import ApplyContext, apply
from oba.directory.commands import AddCommand
from oba.directory.entry import Entry
from oba.directory.evaluate import compare, compile_filter
from oba.directory.search import SearchContext, search
from oba.protocol.messages import (
    And,
    Approx,
    Equality,
    Extensible,
    Filter,
    GreaterOrEqual,
    LessOrEqual,
    Not,
    Or,
    Present,
    Substrings,
)
from oba.schema import Schema
from oba.storage import Store
from oba.storage.lmdbstore import ReadTxn

BASE = "dc=example,dc=com"
PEOPLE = "ou=people,dc=example,dc=com"
GROUPS = "ou=groups,dc=example,dc=com"


def _add(txn: Any, ctx: ApplyContext, dn: str, **attrs: list[str]) -> None:
    cmd = AddCommand(
        dn,
        tuple((k, tuple(v.encode() for v in vs)) for k, vs in attrs.items()),
        "r",
        "cn=admin",
        "20240101000000Z",
        f"uuid-{dn}",
    )
    res = apply(txn, cmd, ctx)
    assert res.code == 0, (dn, res.message)


def _person(
    txn: Any, ctx: ApplyContext, uid: str, cn: str, sn: str, num: int, parent: str = PEOPLE
) -> None:
    _add(
        txn,
        ctx,
        f"uid={uid},{parent}",
        objectClass=["inetOrgPerson", "posixAccount"],
        uid=[uid],
        cn=[cn],
        sn=[sn],
        uidNumber=[str(num)],
        gidNumber=["100"],
        homeDirectory=[f"/home/{uid}"],
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    schema = Schema.default()
    s = Store(tmp_path_factory.mktemp("search") / "db", schema, map_size=1 << 26)
    ctx = ApplyContext(schema, (BASE,))
    with s.write() as w:
        _add(w, ctx, BASE, objectClass=["domain"], dc=["example"])
        _add(w, ctx, PEOPLE, objectClass=["organizationalUnit"], ou=["people"])
        _add(w, ctx, GROUPS, objectClass=["organizationalUnit"], ou=["groups"])
        _person(w, ctx, "alice", "Alice Jones", "Jones", 1000)
        _person(w, ctx, "bob", "Bob Smith", "Smith", 1001)
        _person(w, ctx, "carol", "Carol Smith", "Smith", 1002)
        _add(
            w,
            ctx,
            "cn=admins," + GROUPS,
            objectClass=["groupOfNames"],
            cn=["admins"],
            member=["uid=alice," + PEOPLE],
        )
        _person(w, ctx, "gadmin", "G Admin", "Admin", 2000, parent="cn=admins," + GROUPS)
        _add(w, ctx, "ou=bulk," + BASE, objectClass=["organizationalUnit"], ou=["bulk"])
        for i in range(10_000):
            _person(w, ctx, f"user{i}", f"User {i}", "Bulk", 10_000 + i, parent="ou=bulk," + BASE)
    yield s
    s.close()


def uids(store: Store, base: str, scope: int, flt: Filter, limit: int = 0) -> list[str]:
    ctx = SearchContext(Schema.default())
    with store.read() as r:
        out = [
            e.dn.split(",")[0]
            for e in search(r, ctx, ctx.schema.normalize_dn(base), scope, flt, limit)
        ]
    return out


def test_scopes(store: Store) -> None:
    oc = Present("objectClass")
    assert uids(store, PEOPLE, 0, oc) == ["ou=people"]
    assert uids(store, PEOPLE, 1, oc) == ["uid=alice", "uid=bob", "uid=carol"]
    assert uids(store, GROUPS, 2, oc) == ["ou=groups", "cn=admins", "uid=gadmin"]
    assert uids(store, GROUPS, 3, oc) == ["cn=admins", "uid=gadmin"]
    assert len(uids(store, BASE, 2, oc)) == 3 + 3 + 1 + 1 + 1 + 10_000
    assert uids(store, PEOPLE, 0, Equality("uid", b"alice")) == []


def test_indexed_subtree_scope_restriction(store: Store) -> None:
    smith = Equality("sn", b"SMITH")
    assert uids(store, BASE, 2, smith) == ["uid=bob", "uid=carol"]
    assert uids(store, GROUPS, 2, smith) == []
    assert uids(store, GROUPS, 2, Equality("uid", b"gadmin")) == ["uid=gadmin"]
    assert uids(store, GROUPS, 3, Equality("cn", b"admins")) == ["cn=admins"]
    assert uids(store, "cn=admins," + GROUPS, 3, Equality("cn", b"admins")) == []
    assert uids(store, PEOPLE, 1, smith) == ["uid=bob", "uid=carol"]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (Equality("cn", b"alice  JONES"), ["uid=alice"]),
        (Approx("cn", b"alice jones"), ["uid=alice"]),
        (Substrings("cn", b"Bo", (), None), ["uid=bob"]),
        (Substrings("cn", None, (b"SMI",), None), ["uid=bob", "uid=carol"]),
        (Substrings("cn", b"car", (b"l s",), b"ith"), ["uid=carol"]),
        (Substrings("description", None, (b"x",), None), []),
        (GreaterOrEqual("uidNumber", b"1001"), ["uid=bob", "uid=carol"]),
        (LessOrEqual("uidNumber", b"1000"), ["uid=alice"]),
        (Present("uid"), ["uid=alice", "uid=bob", "uid=carol"]),
        (Present("mail"), []),
        (And((Equality("sn", b"smith"), Not(Equality("uid", b"bob")))), ["uid=carol"]),
        (Or((Equality("uid", b"bob"), Equality("uid", b"alice"))), ["uid=alice", "uid=bob"]),
        (
            Or((Equality("uid", b"bob"), GreaterOrEqual("uidNumber", b"1002"))),
            ["uid=bob", "uid=carol"],
        ),
        (Equality("objectclass", b"INETORGPERSON"), ["uid=alice", "uid=bob", "uid=carol"]),
        (Extensible(None, "uid", b"carol"), ["uid=carol"]),
        (Extensible("caseExactMatch", "cn", b"Bob Smith"), ["uid=bob"]),
        (Extensible("caseExactMatch", "cn", b"bob smith"), []),
        (
            Extensible(None, "ou", b"people", dn_attributes=True),
            ["ou=people", "uid=alice", "uid=bob", "uid=carol"],
        ),
        # Undefined: NOT of undefined stays undefined, so nothing matches
        (Not(Equality("noSuchAttr", b"x")), []),
        (Not(GreaterOrEqual("uidNumber", b"abc")), []),
        (Or((Equality("noSuchAttr", b"x"), Equality("uid", b"bob"))), ["uid=bob"]),
        (Not(Present("noSuchAttr")), ["ou=people", "uid=alice", "uid=bob", "uid=carol"]),
        (Not(Substrings("cn", b"Bo", (), None)), ["ou=people", "uid=alice", "uid=carol"]),
    ],
)
def test_filters(store: Store, flt: Filter, expected: list[str]) -> None:
    assert uids(store, PEOPLE, 2, flt) == expected


def test_subtype_name_matches_cn(store: Store) -> None:
    assert uids(store, PEOPLE, 2, Equality("name", b"bob smith")) == ["uid=bob"]


def test_size_limit(store: Store) -> None:
    assert len(uids(store, BASE, 2, Present("uid"), limit=5)) == 5


def test_three_valued_logic_directly() -> None:
    schema = Schema.default()
    e = Entry(1, "uid=a,dc=x", {"objectClass": [b"person"], "uidNumber": [b"5"]})
    assert compile_filter(Equality("noSuchAttr", b"x"), schema)(e) is None
    assert compile_filter(Not(Equality("noSuchAttr", b"x")), schema)(e) is None
    assert compile_filter(And((Equality("noSuchAttr", b"x"), Present("cn"))), schema)(e) is False
    assert (
        compile_filter(And((Equality("noSuchAttr", b"x"), Present("uidNumber"))), schema)(e) is None
    )
    assert compile_filter(Equality("uidNumber", b"x5"), schema)(e) is None
    assert compile_filter(Equality("uidNumber", b"5"), schema)(e) is True
    assert compare(e, "uidNumber", b"5", schema) is True
    assert compare(e, "uidNumber", b"05", schema) is None  # leading zero: not an Integer
    assert compare(e, "uidNumber", b"6", schema) is False
    assert compare(e, "bogus", b"6", schema) is None


class _Spy:
    """Wraps a ReadTxn and records calls to the tree-walking methods."""

    def __init__(self, txn: ReadTxn) -> None:
        self._txn = txn
        self.children_calls = 0

    def children(self, eid: int) -> list[int]:
        self.children_calls += 1
        return self._txn.children(eid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


def test_indexed_equality_subtree_search_does_not_walk_tree(store: Store) -> None:
    ctx = SearchContext(Schema.default())
    with store.read() as r:
        spy = _Spy(r)
        found = list(search(spy, ctx, BASE, 2, Equality("uid", b"user5000")))  # type: ignore[arg-type]
        assert [e.dn for e in found] == ["uid=user5000,ou=bulk," + BASE]
        assert spy.children_calls == 0
        spy2 = _Spy(r)
        list(search(spy2, ctx, BASE, 2, GreaterOrEqual("uidNumber", b"19999")))  # type: ignore[arg-type]
        assert spy2.children_calls > 0  # unindexed: falls back to the scope walk


def test_indexed_equality_is_fast(store: Store) -> None:
    ctx = SearchContext(Schema.default())
    flt = Equality("uid", b"user5000")
    with store.read() as r:
        list(search(r, ctx, BASE, 2, flt))
        n = 200
        t0 = time.perf_counter()
        for _ in range(n):
            assert len(list(search(r, ctx, BASE, 2, flt))) == 1
        per_search = (time.perf_counter() - t0) / n
    print(f"indexed equality subtree search among 10k entries: {per_search * 1e6:.0f} us")
    assert per_search < 0.001
