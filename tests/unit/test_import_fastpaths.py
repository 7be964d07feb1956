"""The import's fast paths give exactly what the general paths give: ``Schema.normalizer`` and
apply's value normalisation against ``Schema.normalize`` value by value (results and
failures), and the plain-chunk LDIF parser against reading the same lines in one pass."""

from __future__ import annotations

import io
import itertools
import re
from pathlib import Path
from typing import Any

import pytest

from oba.directory import apply
from oba.directory.apply import ApplyContext
from oba.directory.commands import AddCommand
from oba.ldif import LDIFRecord
from oba.schema import Schema
from oba.schema.matching import InvalidValue
from oba.storage import Store
from oba.storage.indexes import DEFAULT_INDEXES
from oba.storage.lmdbstore import parent_ndn
from oba.tools import bulk, fastload, importworkers
from oba.tools.fastload import BulkLoad
from oba.tools.fastschema import CachedSchema

VALUES = [b"", b" ", b"  ", b"a", b"A", b"Hello  World", b"  padded  ", b"MiXeD Case 42",
          b"0", b"-1", b"007", b"+5", b" 12 ", b"123456789012345678901234567890", b"-0",
          b"TRUE", b"false", b"x@Example.COM", b"user1@example.com", b"/home/user1",
          b"uid=Alice,ou=People,dc=Example,dc=com", b"cn=a\\,b,dc=x", b"not a dn,,",
          b"20260101120000Z", b"2026010112Z", b"bad time",
          b"123e4567-e89b-12d3-a456-426614174000", b"123E4567-E89B-12D3-A456-42661417400",
          "Jürgen Müller".encode(), "straße".encode(),
          "\uff21\uff22\uff23\u3000\uff44\uff45\uff46".encode(),  # full width "ABC def"
          b"\xff\xfe not utf-8", b"tab\there", b"line\nbreak", b"+1 555 0100",
          b"{SSHA}ngVuWpEQCPbXWJRkM7J5mcup8NKQO7E+3lYkOQ==", b"1.2.3.4", b"person"]


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # the kind of failure must agree too
        return "error", type(exc)


def test_normalizer_is_normalize_for_every_attribute_and_value() -> None:
    schema = Schema.default()
    checked = 0
    for at in schema.attribute_types():
        fn = schema.normalizer(at.name)
        for value in VALUES:
            assert _outcome(fn, value) == _outcome(schema.normalize, at.name, value), \
                (at.name, value)
            checked += 1
    assert checked > 1000


def _old_normalised(schema: Any, name: str, canon: str, values: list[bytes]
                    ) -> list[bytes]:
    """apply's value check before the fast path (the reference)."""
    out: list[bytes] = []
    seen: set[bytes] = set()
    for i, v in enumerate(values):
        if canon == "objectClass" and schema.object_class(v.decode("utf-8", "replace")) is None:
            raise apply._Fail(apply.INVALID_SYNTAX, f"{name}: value #{i} invalid per syntax")
        try:
            n = apply._norm(schema, canon, v)
        except Exception as exc:
            raise apply._Fail(apply.INVALID_SYNTAX,
                              f"{name}: value #{i} invalid per syntax") from exc
        if n in seen:
            raise apply._Fail(apply.TYPE_OR_VALUE_EXISTS,
                              f"{name}: value #{i} provided more than once")
        seen.add(n)
        out.append(n)
    return out


def _result(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except apply._Fail as fail:
        return "fail", (fail.result.code, fail.result.message)


@pytest.mark.parametrize("canon", ["cn", "uid", "mail", "uidNumber", "entryUUID", "member",
                                   "createTimestamp", "userPassword", "objectClass",
                                   "telephoneNumber", "description"])
def test_normalised_values_like_before(canon: str) -> None:
    schema = Schema.default()
    classes = [b"top", b"Person", b" inetOrgPerson ", b"nosuchclass", b"PERSON"]
    pool = VALUES + classes
    lists = [[v] for v in pool] + [[a, b] for a, b in itertools.pairwise(pool)]
    lists += [[b"a", b"A"], [b"x", b"y", b"x"], [b"1", b"01"], [b"top", b"TOP"]]
    for _ in range(2):  # the second round answers from the memo tables
        for values in lists:
            assert _result(apply._normalised, schema, "attr", canon, values) == \
                _result(_old_normalised, schema, "attr", canon, values), (canon, values)


def _plain_ldif() -> bytes:
    lines = ["version: 1", ""]
    for i in range(60):
        lines += [f"dn:  uid=u{i},ou=people,dc=example,dc=com  ", "objectClass: account",
                  f"uid:u{i}", f"description: trailing {i}  ", "cn;lang-de: Jürgen",
                  "seeAlso:", f"2.5.4.13: by oid {i}", "mail: a:b@example.com"]
        if i == 41:
            lines.append("changetype: add")  # not a plain content record
        if i == 47:
            lines.append("no colon here")
        if i == 53:
            lines.append("bad_name: x")
        lines.append("")
        if i % 7 == 0:
            lines.append("")
    return "\n".join(lines).encode("utf-8")


def _view(items: list[LDIFRecord | bulk.BadRecord]) -> list[tuple[object, ...]]:
    return [(i.line, i.dn, tuple(i.attributes)) if isinstance(i, LDIFRecord)
            else (i.line, i.dn, i.message) for i in items]


@pytest.mark.parametrize("size", [1, 97, 400, 2000])
def test_plain_chunks_parse_like_one_pass(size: int) -> None:
    buf = _plain_ldif()
    fast = refused = 0
    for start, end, line in importworkers.tasks(buf, size):
        if start == 0:
            continue
        data = buf[start:end]
        quick = bulk._fast_chunk(data, line)
        if quick is None:
            refused += 1
            continue
        fast += 1
        assert _view(list(quick)) == _view(list(bulk.read_records(io.BytesIO(data), line,
                                                                   False)))
    assert fast > 0
    assert refused > 0  # the chunks with the odd records went the general way


def test_plain_chunk_refuses_a_line_without_colon_even_for_a_known_name() -> None:
    bulk._GOOD_NAMES.add("cn")
    data = b"dn: cn=x,dc=example,dc=com\nobjectClass: device\ncn\n"
    assert bulk._fast_chunk(data, 10) is None


def test_cached_dn_normalisation_is_the_schema_one() -> None:
    schema = Schema.default()
    heads = ["uid=user1", "UID=User.Name-2", "cn=Bob", "CN=a@b.c", "mail=X@Example.COM",
             "uidNumber=0012", "uidNumber=12", "uidNumber=-0", "uidNumber=abc", "o=x_y",
             "nosuchtype=x", "uid=", "uid=a b", "uid=#41", "2.5.4.3=Bob", "OID.2.5.4.3=Bob",
             "cn=a+sn=b", "uid=é", "dc=COM", "entryUUID=123E4567-E89B-12D3-A456-426614174000",
             "x-=y", "uid=-", "cn=.", "c=US", "c=USA"]
    tails = ["ou=users,dc=example,dc=com", "OU=Users,DC=Example,DC=COM", "dc=com", "o=x"]
    for _ in range(2):  # the second round answers from the tables
        cached = CachedSchema(schema)
        for head in heads:
            for tail in tails:
                dn = f"{head},{tail}"
                assert _outcome(cached.normalize_dn, dn) == _outcome(schema.normalize_dn, dn), dn


def test_index_keys_from_known_norms_are_the_computed_ones(tmp_path: Path) -> None:
    """``keys_of`` given apply's normalised values (used once an attribute's key cache is
    dropped) lists the same keys as computing them from the values."""
    schema = Schema.default()
    indexes = {**{k: sorted(v) for k, v in DEFAULT_INDEXES.items()},
               "description": ["eq", "sub"], "telephoneNumber": ["eq", "sub", "pres"],
               "uidNumber": ["eq", "pres"]}
    store = Store(tmp_path / "db", schema, indexes, map_size=1 << 24)
    try:
        plain, known = BulkLoad(store), BulkLoad(store)
        known._key_cache.clear()  # as after the probe: every attribute's keys computed
        ctx = ApplyContext(schema, ())
        cases = [("uid=a b,dc=x", [("objectClass", [b"inetOrgPerson", b"posixAccount"]),
                                   ("cn", [b"  Ann  B\xc3\xa9 "]), ("sn", [b"B"]),
                                   ("uid", [b"a b"]), ("uidNumber", [b" 42 "]),
                                   ("gidNumber", [b"7"]), ("homeDirectory", [b"/h"]),
                                   ("mail", [b"A@X.ORG"]), ("telephoneNumber", [b"+1 555-01"]),
                                   ("description", [b"x" * 600])]),
                 ("cn=g,dc=x", [("objectClass", [b"groupOfNames"]), ("cn", [b"g", b"G2"]),
                                ("member", [b"uid=A B,DC=X", b"cn=other,dc=x"]),
                                ("description", [b"ab"])])]
        for dn, attrs in cases:
            cmd = AddCommand(dn, tuple((n, tuple(v)) for n, v in attrs), "r", "cn=t",
                             "20260101000000Z", "123e4567-e89b-12d3-a456-426614174000")
            prep = apply.prepare_add(cmd, ctx)
            assert isinstance(prep, apply.PreparedAdd) and prep.late is None, prep
            assert prep.norms is not None
            expected = {a: set(k) for a, k in plain.keys_of(prep.attrs)}
            assert {a: set(k) for a, k in known.keys_of(prep.attrs, prep.norms)} == expected
            assert "entryUUID" not in prep.norms  # set by the add: no norms
    finally:
        store.close()


@pytest.mark.parametrize("ndn", ["", "dc=com", "uid=a,dc=com", "cn=a\\,b,dc=x", "cn=a\\\\,dc=x",
                                 "cn=\\5c,o=y,c=z", "cn=x\\", "cn=a,", ",dc=x", "cn=a\\,b"])
def test_parent_without_the_loop_is_parent_ndn(ndn: str) -> None:
    assert fastload._parent(ndn) == parent_ndn(ndn)


def _old_integer(value: bytes) -> bytes:
    """The INTEGER normaliser before its canonical-digits shortcut (the reference)."""
    m = re.match(rb"\s*(0|-?[1-9][0-9]*)\s*\Z", value)
    if not m:
        raise InvalidValue("not an INTEGER")
    return str(int(m.group(1))).encode()


def test_integer_normalisation_like_before() -> None:
    values = [str(i).encode() for i in range(-1200, 1200, 7)]
    values += [b"0", b"00", b"007", b"10", b"-0", b"+1", b" 5", b"5 ", b"", b"1e3", b"12a",
               b"\xd9\xa3", b"\xef\xbc\x91", b"99999999999999999999999", b"0 ", b"-", b"1\n"]
    fn = Schema.default().normalizer("uidNumber")
    for value in values:
        assert _outcome(fn, value) == _outcome(_old_integer, value), value
