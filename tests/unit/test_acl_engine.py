"""The ACL evaluator and the access facade, without a server: first match wins, subjects,
scopes, attribute coverage, the default policy, the root bypass and the built-in default."""

from __future__ import annotations

import pytest

from oba.acl.document import AclError, parse_acl
from oba.acl.engine import AclEngine
from oba.directory.access import AccessPolicy
from oba.schema import Schema

BASE = "dc=example,dc=com"
ALICE = f"uid=alice,ou=people,{BASE}"
BOB = f"uid=bob,ou=people,{BASE}"
GROUP = f"cn=staff,ou=groups,{BASE}"
SCHEMA = Schema.default()


def engine(text: str) -> AclEngine:
    return AclEngine(parse_acl(text, SCHEMA), SCHEMA)


def n(dn: str) -> str:
    return SCHEMA.normalize_dn(dn)


def test_first_match_wins_and_default_policy() -> None:
    e = engine(f"""version: 1
defaultPolicy: deny
rules:
  - {{target: "{ALICE}", scope: base, subject: "*", rights: [read], deny: true}}
  - {{target: "ou=people,{BASE}", subject: "*", rights: [read]}}
""")
    assert not e.decide(n(BOB), n(ALICE), "read").allowed
    d = e.decide(n(ALICE), n(BOB), "read")
    assert d.allowed and d.rule_index == 1
    d = e.decide(n(ALICE), n(BOB), "write")
    assert not d.allowed and d.rule_index is None and "defaultPolicy deny" in d.reason


@pytest.mark.parametrize(("subject", "who", "target", "expected"), [
    ("anonymous", "", BOB, True), ("anonymous", ALICE, BOB, False),
    ("authenticated", ALICE, BOB, True), ("authenticated", "", BOB, False),
    ("self", BOB, BOB, True), ("self", ALICE, BOB, False), ("*", "", BOB, True),
    (ALICE.upper(), ALICE, BOB, True), (f"uid=*,ou=people,{BASE}", ALICE, BOB, True),
    (f"uid=*,ou=people,{BASE}", f"cn=x,ou=people,{BASE}", BOB, False),
    (f"uid=*,ou=other,{BASE}", ALICE, BOB, False),
])
def test_subjects(subject: str, who: str, target: str, expected: bool) -> None:
    e = engine(f"""version: 1
defaultPolicy: deny
rules:
  - {{target: "*", subject: "{subject}", rights: [read]}}
""")
    assert e.decide(n(who) if who else "", n(target), "read").allowed is expected


def test_group_subject_uses_the_resolver() -> None:
    e = engine(f"""version: 1
defaultPolicy: deny
rules:
  - {{target: "*", subject: "group:{GROUP}", rights: [all]}}
""")
    members = {n(GROUP): frozenset({n(ALICE)})}
    assert e.decide(n(ALICE), n(BOB), "delete", None, lambda g: members.get(g, frozenset()))
    assert not e.decide(n(BOB), n(BOB), "delete", None,
                        lambda g: members.get(g, frozenset())).allowed


def test_scopes_and_attribute_coverage() -> None:
    e = engine(f"""version: 1
defaultPolicy: deny
rules:
  - {{target: "ou=people,{BASE}", scope: one, subject: "*", rights: [read],
     attributes: [commonName]}}
  - {{target: "ou=people,{BASE}", scope: base, subject: "*", rights: [search]}}
""")
    assert e.decide("", n(ALICE), "read", "cn").allowed
    assert not e.decide("", n(ALICE), "read", "sn").allowed
    assert not e.decide("", n(ALICE), "read").allowed  # attribute rules never cover the entry
    assert e.decide("", n(f"ou=people,{BASE}"), "search").allowed
    assert not e.decide("", n(ALICE), "search").allowed


def test_group_subject_validation() -> None:
    with pytest.raises(AclError) as info:
        parse_acl("version: 1\nrules:\n  - {target: '*', subject: 'group:not a dn', "
                  "rights: [read]}\n", SCHEMA)
    assert "rules[0].subject" in str(info.value)


def test_access_policy_root_builtin_and_password_cap() -> None:
    access = AccessPolicy(n(f"cn=admin,{BASE}"))
    assert access.decide(n(f"cn=admin,{BASE}"), n(BOB), "delete").allowed
    assert access.decide("", n(BOB), "read", "cn").allowed
    assert not access.decide("", n(BOB), "read", "userPassword").allowed
    assert access.decide(n(BOB), n(BOB), "write", "userPassword").allowed
    denied = access.check_write("", n(BOB), None)
    assert denied is not None and denied.code == 8
    access.set_document(parse_acl("version: 1\ndefaultPolicy: allow\n", SCHEMA))
    assert access.decide(n(ALICE), n(BOB), "write", "cn").allowed
    assert not access.decide(n(ALICE), n(BOB), "read", "userPassword").allowed
    access.set_document(None)
    assert access.builtin
