"""No existence oracle through the "nearest existing entry" (REST 404s, LDAP matchedDN, the
base of a persistent search).

Rules: one real Oba process (RestServer: LDAP and REST on real sockets, python-ldap and httpx)
under an ACL file. alice may read everything but ``ou=groups`` (the whole subtree), the entry
``ou=vault`` itself (its child ``cn=open`` stays readable) and ``ou=inbox``, where she may add,
write and delete without reading (a drop box). For every route and LDAP operation that can say
"no such object", a DN below a hidden entry and a DN below a missing one must get the same
answer, naming the nearest entry she may read, hidden entries in between or not (OpenLDAP's
``disclose``); the root DN still gets the nearest existing entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ldap
import pytest
from ldap.controls.psearch import PersistentSearchControl

from integration._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from integration.rest_support import RestServer, quote_dn

PEOPLE = f"ou=people,{BASE_DN}"
GROUPS = f"ou=groups,{BASE_DN}"
VAULT = f"ou=vault,{BASE_DN}"
INBOX = f"ou=inbox,{BASE_DN}"
ALICE = f"uid=alice,{PEOPLE}"
ALICE_PW = "alice-pw-1"
NEAREST = f"(nearest existing entry: {BASE_DN})"

ACL = f"""\
version: 1
defaultPolicy: deny
rules:
  - {{target: "{GROUPS}", subject: "*", rights: [all], deny: true}}
  - {{target: "{VAULT}", scope: base, subject: "*", rights: [all], deny: true}}
  - {{target: "{INBOX}", subject: "{ALICE}", rights: [add, write, delete]}}
  - {{target: "{INBOX}", subject: "*", rights: [all], deny: true}}
  - {{target: "*", subject: authenticated, rights: [read, search, compare]}}
"""

# (hidden, missing): the same place in the tree, below a hidden entry / below a missing one
PAIRS = {
    "below a hidden subtree": (f"cn=x,{GROUPS}", f"cn=x,ou=nothere,{BASE_DN}"),
    "the hidden entry itself": (GROUPS, f"ou=nothere,{BASE_DN}"),
    "two levels below": (f"cn=y,cn=admins,{GROUPS}", f"cn=y,cn=x,ou=nothere,{BASE_DN}"),
    "missing below a hidden entry": (f"cn=y,cn=gone,{GROUPS}", f"cn=y,cn=gone,ou=no,{BASE_DN}"),
    "below a hidden-only-itself entry": (f"cn=gone,{VAULT}", f"cn=gone,ou=nothere,{BASE_DN}"),
    "a drop box": (f"cn=missing,{INBOX}", f"cn=missing,ou=nothere,{BASE_DN}"),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    work = Path(tmp_path_factory.mktemp("existence-oracle"))
    (work / "acl.yaml").write_text(ACL)
    server = RestServer("oba", work, rest_extra=f'aclFile: "{work / "acl.yaml"}"\n')
    server.start()
    try:
        root = connect(server.url, ROOT_DN, ROOT_PW)
        try:
            for name in ("people", "groups", "vault", "inbox"):
                root.add_s(f"ou={name},{BASE_DN}", [("objectClass", [b"organizationalUnit"]),
                                                     ("ou", [name.encode()])])
            root.add_s(ALICE, [("objectClass", [b"inetOrgPerson"]), ("uid", [b"alice"]),
                               ("cn", [b"Alice"]), ("sn", [b"A"]),
                               ("userPassword", [ALICE_PW.encode()])])
            for dn in (f"cn=admins,{GROUPS}", f"cn=open,{VAULT}", f"cn=letter,{INBOX}"):
                root.add_s(dn, [("objectClass", [b"applicationProcess"]),
                                ("cn", [dn.split(",")[0][3:].encode()])])
        finally:
            root.unbind_s()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def alice(srv: RestServer) -> Iterator[httpx.Client]:
    """alice over REST, with a token (one bind rather than one per request)."""
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as anon:
        resp = anon.post("/auth/bind", json={"dn": ALICE, "password": ALICE_PW})
    assert resp.status_code == 200, resp.text
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {resp.json()['token']}"}) as c:
        yield c


@pytest.fixture(scope="module")
def alice_ldap(srv: RestServer) -> Iterator[ldap.ldapobject.LDAPObject]:
    conn = connect(srv.url, ALICE, ALICE_PW)
    yield conn
    conn.unbind_s()


# ------------------------------------------------------------------ REST

def rest_calls(dn: str) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    """Every REST route that looks an entry up by DN, for ``dn``."""
    q = quote_dn(dn)
    return {
        "GET /entries": lambda c: c.get(f"/entries/{q}"),
        "GET lock-status": lambda c: c.get(f"/entries/{q}/lock-status"),
        "POST unlock": lambda c: c.post(f"/entries/{q}/unlock"),
        "POST disable": lambda c: c.post(f"/entries/{q}/disable"),
        "POST enable": lambda c: c.post(f"/entries/{q}/enable"),
        "POST compare": lambda c: c.post("/compare", json={"dn": dn, "attribute": "cn",
                                                           "value": "x"}),
        "GET search": lambda c: c.get("/search", params={"baseDN": dn}),
        "GET search/stream": lambda c: c.get("/search/stream", params={"baseDN": dn}),
        "PATCH /entries": lambda c: c.patch(f"/entries/{q}", json={"changes": [
            {"operation": "replace", "attribute": "description", "values": ["x"]}]}),
        "DELETE /entries": lambda c: c.delete(f"/entries/{q}"),
        "POST move": lambda c: c.post(f"/entries/{q}/move", json={"newRDN": "cn=moved"}),
    }


def answer(resp: httpx.Response) -> tuple[int, Any]:
    return resp.status_code, resp.json()


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_rest_hidden_and_missing_get_the_same_answer(alice: httpx.Client, case: str) -> None:
    hidden, missing = PAIRS[case]
    hidden_calls, missing_calls = rest_calls(hidden), rest_calls(missing)
    for route, call in hidden_calls.items():
        got_hidden = answer(call(alice))
        got_missing = answer(missing_calls[route](alice))
        assert got_hidden == got_missing, (route, got_hidden, got_missing)
        status, body = got_hidden
        assert status == 404 and body["message"] == f"no such object {NEAREST}", (route, body)
        assert "groups" not in str(body) and "vault" not in str(body), (route, body)
        assert "inbox" not in str(body), (route, body)


def test_rest_names_the_nearest_readable_entry_below_a_hidden_one(alice: httpx.Client) -> None:
    # ou=vault is hidden but cn=open below it is readable: that is the nearest one to name
    resp = alice.get(f"/entries/{quote_dn(f'cn=x,cn=open,{VAULT}')}")
    assert answer(resp) == (404, {"error": "not_found", "code": 404, "resultCode": 32,
                                  "message": "no such object (nearest existing entry: "
                                             f"cn=open,{VAULT})"})


def test_the_root_dn_still_gets_the_nearest_existing_entry(srv: RestServer) -> None:
    with srv.client() as root:
        resp = root.get(f"/entries/{quote_dn(f'cn=x,{GROUPS}')}")
    assert resp.status_code == 404
    assert resp.json()["message"] == f"no such object (nearest existing entry: {GROUPS})"


# ------------------------------------------------------------------ LDAP

def ldap_answer(work: Callable[[], object]) -> tuple[str, str]:
    """(result name, matchedDN) of an LDAP operation that is expected to fail."""
    try:
        work()
    except ldap.LDAPError as exc:
        info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        return type(exc).__name__, str(info.get("matched", ""))
    raise AssertionError("the operation succeeded")


def ldap_calls(conn: ldap.ldapobject.LDAPObject, dn: str) -> dict[str, Callable[[], object]]:
    return {
        "search": lambda: conn.search_s(dn, ldap.SCOPE_BASE),
        "search subtree": lambda: conn.search_s(dn, ldap.SCOPE_SUBTREE, "(cn=*)"),
        "compare": lambda: conn.compare_s(dn, "cn", b"x"),
        "modify": lambda: conn.modify_s(dn, [(ldap.MOD_REPLACE, "description", [b"x"])]),
        "delete": lambda: conn.delete_s(dn),
        "modrdn": lambda: conn.rename_s(dn, "cn=moved"),
        "persistent search": lambda: conn.result4(conn.search_ext(
            dn, ldap.SCOPE_SUBTREE, serverctrls=[PersistentSearchControl(
                criticality=True, changeTypes=["add"], changesOnly=False, returnECs=True)]),
            all=1, timeout=15),
    }


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_ldap_hidden_and_missing_get_the_same_matched_dn(
        alice_ldap: ldap.ldapobject.LDAPObject, case: str) -> None:
    hidden, missing = PAIRS[case]
    hidden_calls, missing_calls = ldap_calls(alice_ldap, hidden), ldap_calls(alice_ldap, missing)
    for op, call in hidden_calls.items():
        got_hidden, got_missing = ldap_answer(call), ldap_answer(missing_calls[op])
        assert got_hidden == got_missing == ("NO_SUCH_OBJECT", BASE_DN), (op, got_hidden,
                                                                          got_missing)


def test_ldap_add_below_a_missing_parent_in_a_drop_box(
        alice_ldap: ldap.ldapobject.LDAPObject) -> None:
    # alice may add anywhere under ou=inbox but not read it: the write path's matchedDN
    # (ou=inbox, the nearest existing ancestor) is narrowed to what she may read
    attrs = [("objectClass", [b"applicationProcess"]), ("cn", [b"y"])]
    got = ldap_answer(lambda: alice_ldap.add_s(f"cn=y,cn=missing,{INBOX}", attrs))
    assert got == ("NO_SUCH_OBJECT", BASE_DN)


def test_ldap_walks_past_hidden_entries_to_a_readable_one(
        alice_ldap: ldap.ldapobject.LDAPObject, srv: RestServer) -> None:
    got = ldap_answer(lambda: alice_ldap.search_s(f"cn=x,cn=open,{VAULT}", ldap.SCOPE_BASE))
    assert got == ("NO_SUCH_OBJECT", f"cn=open,{VAULT}")
    root = connect(srv.url, ROOT_DN, ROOT_PW)
    try:
        got = ldap_answer(lambda: root.search_s(f"cn=x,{GROUPS}", ldap.SCOPE_BASE))
    finally:
        root.unbind_s()
    assert got == ("NO_SUCH_OBJECT", GROUPS)
