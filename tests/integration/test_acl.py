"""ACL enforcement over real LDAP and REST connections (aclFile rules, every subject kind).

The module's server starts with an ACL file (below) and a small tree; each test asserts one
rule family: group/DN/pattern/self/anonymous/authenticated subjects, deny rules, attribute-level
read and write, search filtering without existence leaks, compare per attribute, and filters on
attributes without ``search`` right evaluating Undefined.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ldap
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from .rest_support import RestServer, assert_error, quote_dn

PEOPLE = f"ou=people,{BASE_DN}"
GROUPS = f"ou=groups,{BASE_DN}"
SECRET = f"ou=secret,{BASE_DN}"
SERVICES = f"ou=services,{BASE_DN}"
ADMINS = f"cn=admins,{GROUPS}"
ALICE, BOB, CAROL = (f"uid={u},{PEOPLE}" for u in ("alice", "bob", "carol"))
SVC = f"cn=svc,{SERVICES}"
HIDDEN = f"cn=hidden,{SECRET}"
PW = "Passw0rd!"

ACL = f"""
version: 1
defaultPolicy: deny
rules:
  - {{target: "{SECRET}", subject: "group:{ADMINS}", rights: [all]}}
  - {{target: "{SECRET}", subject: "*", rights: [all], deny: true}}
  - {{target: "{PEOPLE}", subject: "{CAROL}", rights: [all]}}
  - {{target: "*", subject: self, rights: [write], attributes: [mail, userPassword]}}
  - {{target: "*", subject: "*", rights: [compare], attributes: [employeeNumber], deny: true}}
  - {{target: "{PEOPLE}", scope: one, subject: "uid=*,{PEOPLE}", rights: [read, search],
     attributes: [telephoneNumber]}}
  - {{target: "*", subject: "*", rights: [read, search, compare], attributes: [telephoneNumber],
     deny: true}}
  - {{target: "*", subject: anonymous, rights: [search], attributes: [mail], deny: true}}
  - {{target: "*", subject: anonymous, rights: [read, search, compare]}}
  - {{target: "*", subject: authenticated, rights: [read, search, compare]}}
"""


def person(uid: str) -> list[tuple[str, list[bytes]]]:
    return [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
            ("cn", [uid.title().encode()]), ("sn", [b"S"]),
            ("mail", [f"{uid}@example.com".encode()]), ("telephoneNumber", [b"+1 555 0100"]),
            ("employeeNumber", [b"42"]), ("userPassword", [PW.encode()])]


def ou(name: str) -> list[tuple[str, list[bytes]]]:
    return [("objectClass", [b"organizationalUnit"]), ("ou", [name.encode()])]


def write_tree(url: str) -> None:
    conn = connect(url, ROOT_DN, ROOT_PW)
    for name in ("people", "groups", "secret", "services"):
        conn.add_s(f"ou={name},{BASE_DN}", ou(name))
    for dn in (ALICE, BOB, CAROL):
        conn.add_s(dn, person(dn.split(",")[0][4:]))
    conn.add_s(SVC, [("objectClass", [b"applicationProcess", b"simpleSecurityObject"]),
                     ("cn", [b"svc"]), ("userPassword", [PW.encode()])])
    conn.add_s(ADMINS, [("objectClass", [b"groupOfNames"]), ("cn", [b"admins"]),
                        ("member", [ALICE.encode()])])
    conn.add_s(HIDDEN, [("objectClass", [b"applicationProcess"]), ("cn", [b"hidden"])])
    conn.unbind_s()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    work = Path(tmp_path_factory.mktemp("acl"))
    acl = work / "acl.yaml"
    acl.write_text(ACL)
    server = RestServer("oba", work, rest_extra=f'aclFile: "{acl}"\n')
    server.start()
    try:
        write_tree(server.url)
        yield server
    finally:
        server.stop()


def as_(srv: RestServer, dn: str | None) -> ldap.ldapobject.LDAPObject:
    return connect(srv.url, dn, PW) if dn else connect(srv.url)


def dns(results: list[tuple[str, dict[str, list[bytes]]]]) -> set[str]:
    return {dn.lower() for dn, _ in results if dn}


def test_group_subject_sees_secret_subtree_others_get_no_such_object(srv: RestServer) -> None:
    alice = as_(srv, ALICE)
    assert dns(alice.search_s(SECRET, ldap.SCOPE_SUBTREE)) == {SECRET.lower(), HIDDEN.lower()}
    bob = as_(srv, BOB)
    with pytest.raises(ldap.NO_SUCH_OBJECT):
        bob.search_s(SECRET, ldap.SCOPE_BASE)
    with pytest.raises(ldap.NO_SUCH_OBJECT):
        bob.search_s(HIDDEN, ldap.SCOPE_BASE)
    everything = dns(bob.search_s(BASE_DN, ldap.SCOPE_SUBTREE, "(objectClass=*)"))
    assert HIDDEN.lower() not in everything and SECRET.lower() not in everything
    assert ALICE.lower() in everything
    # no existence leak: compare and modify on a hidden entry are noSuchObject too
    with pytest.raises(ldap.NO_SUCH_OBJECT):
        bob.compare_s(HIDDEN, "cn", b"hidden")
    with pytest.raises(ldap.NO_SUCH_OBJECT):
        bob.modify_s(HIDDEN, [(ldap.MOD_REPLACE, "description", [b"x"])])
    with pytest.raises(ldap.NO_SUCH_OBJECT):
        as_(srv, None).search_s(HIDDEN, ldap.SCOPE_BASE)


def test_group_membership_change_counts_at_once(srv: RestServer) -> None:
    root = connect(srv.url, ROOT_DN, ROOT_PW)
    root.modify_s(ADMINS, [(ldap.MOD_ADD, "member", [BOB.encode()])])
    try:
        assert dns(as_(srv, BOB).search_s(SECRET, ldap.SCOPE_BASE)) == {SECRET.lower()}
    finally:
        root.modify_s(ADMINS, [(ldap.MOD_DELETE, "member", [BOB.encode()])])
    with pytest.raises(ldap.NO_SUCH_OBJECT):
        as_(srv, BOB).search_s(SECRET, ldap.SCOPE_BASE)


def test_attribute_level_read_pattern_subject_and_deny(srv: RestServer) -> None:
    # people (uid=*,ou=people pattern) see telephoneNumber of people; a service does not
    [(_, seen)] = as_(srv, BOB).search_s(ALICE, ldap.SCOPE_BASE, "(objectClass=*)", ["*"])
    assert seen["telephoneNumber"] == [b"+1 555 0100"] and seen["mail"]
    [(_, svc_view)] = as_(srv, SVC).search_s(ALICE, ldap.SCOPE_BASE)
    assert "telephoneNumber" not in svc_view and svc_view["cn"] == [b"Alice"]
    # userPassword: returned to the root DN only, whatever the rules grant (not even its owner)
    assert "userPassword" not in seen
    [(_, own)] = as_(srv, ALICE).search_s(ALICE, ldap.SCOPE_BASE)
    assert "userPassword" not in own


def test_filter_on_attribute_without_search_right_is_undefined(srv: RestServer) -> None:
    anon = as_(srv, None)
    # anonymous may read mail but not search by it: both forms match nothing
    assert anon.search_s(PEOPLE, ldap.SCOPE_ONELEVEL, "(mail=alice@example.com)") == []
    assert anon.search_s(PEOPLE, ldap.SCOPE_ONELEVEL, "(!(mail=nobody@example.com))") == []
    [(_, attrs)] = anon.search_s(PEOPLE, ldap.SCOPE_ONELEVEL, "(uid=alice)")
    assert attrs["mail"] == [b"alice@example.com"] and "telephoneNumber" not in attrs
    found = as_(srv, SVC).search_s(PEOPLE, ldap.SCOPE_ONELEVEL, "(mail=alice@example.com)")
    assert dns(found) == {ALICE.lower()}
    assert as_(srv, SVC).search_s(PEOPLE, ldap.SCOPE_ONELEVEL, "(telephoneNumber=*)") == []
    assert len(as_(srv, BOB).search_s(PEOPLE, ldap.SCOPE_ONELEVEL, "(telephoneNumber=*)")) == 3


def test_compare_per_attribute(srv: RestServer) -> None:
    bob = as_(srv, BOB)
    assert bob.compare_s(ALICE, "cn", b"Alice")
    with pytest.raises(ldap.INSUFFICIENT_ACCESS):
        bob.compare_s(ALICE, "employeeNumber", b"42")
    assert as_(srv, CAROL).compare_s(ALICE, "employeeNumber", b"42")  # DN subject: all


def test_write_rules_self_dn_anonymous(srv: RestServer) -> None:
    bob = as_(srv, BOB)
    bob.modify_s(BOB, [(ldap.MOD_REPLACE, "mail", [b"bob2@example.com"])])
    with pytest.raises(ldap.INSUFFICIENT_ACCESS):
        bob.modify_s(BOB, [(ldap.MOD_REPLACE, "cn", [b"Robert"])])
    with pytest.raises(ldap.INSUFFICIENT_ACCESS):
        bob.modify_s(ALICE, [(ldap.MOD_REPLACE, "mail", [b"x@example.com"])])
    with pytest.raises(ldap.STRONG_AUTH_REQUIRED):
        as_(srv, None).modify_s(BOB, [(ldap.MOD_REPLACE, "mail", [b"y@example.com"])])
    new = f"uid=dave,{PEOPLE}"
    with pytest.raises(ldap.INSUFFICIENT_ACCESS):
        bob.add_s(new, person("dave"))
    carol = as_(srv, CAROL)
    carol.add_s(new, person("dave"))
    carol.modify_s(ALICE, [(ldap.MOD_REPLACE, "cn", [b"Alice"])])
    with pytest.raises(ldap.INSUFFICIENT_ACCESS):
        bob.delete_s(new)
    carol.delete_s(new)
    with pytest.raises(ldap.INSUFFICIENT_ACCESS):  # carol's rule stops at ou=people
        carol.add_s(f"cn=x,{SERVICES}", [("objectClass", [b"applicationProcess"]),
                                          ("cn", [b"x"])])


def test_rest_routes_use_the_same_rules(srv: RestServer) -> None:
    with srv.client((BOB, PW)) as bob:
        assert_error(bob.get(f"/entries/{quote_dn(HIDDEN)}"), 404)
        r = bob.get(f"/entries/{quote_dn(ALICE)}")
        assert r.status_code == 200 and "userPassword" not in r.json()["attributes"]
        found = bob.get("/search", params={"base": BASE_DN, "filter": "(cn=hidden)"})
        assert found.status_code == 200 and found.json()["entries"] == []
        r = bob.patch(f"/entries/{quote_dn(ALICE)}", json={"changes": [
            {"operation": "replace", "attribute": "mail", "values": ["z@example.com"]}]})
        assert r.status_code == 403, r.text
    with srv.client((SVC, PW)) as svc:
        r = svc.get(f"/entries/{quote_dn(ALICE)}")
        assert "telephoneNumber" not in r.json()["attributes"]


def test_explain(srv: RestServer) -> None:
    with srv.client() as root:
        r = root.post("/acl/explain", json={"bindDN": BOB, "targetDN": ALICE,
                                            "right": "compare", "attribute": "employeeNumber"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["allowed"] is False and body["rule"]["index"] == 4
        assert body["rule"]["rule"]["deny"] is True and "denies compare" in body["reason"]
        r = root.post("/acl/explain", json={"bindDN": SVC, "targetDN": f"cn=x,{SERVICES}",
                                            "right": "add"})
        assert r.json() == {"allowed": False, "rule": "default",
                            "reason": "no rule matched: defaultPolicy deny"}
        r = root.post("/acl/explain", json={"bindDN": ALICE, "targetDN": HIDDEN,
                                            "right": "delete"})
        assert r.json()["allowed"] is True and r.json()["rule"]["index"] == 0
        assert_error(root.post("/acl/explain", json={"targetDN": "bad", "right": "read"}), 400)
