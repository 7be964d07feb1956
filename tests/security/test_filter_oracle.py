"""No search-filter oracle on attributes the caller may not search (userPassword above all).

Rules: real Oba processes (``server.workers: 2``, so LDAP connections are served by the writer
and by a listener worker process) with an equality and presence index on ``userPassword``, one
under the built-in policy and one under an ACL file; python-ldap and httpx clients. frank's
password is stored as ``{CLEARTEXT}Summer2024`` (set by the root DN; ``security.rehashOnBind``
off, so his binds leave it so), henry has none. A filter
item on an attribute the caller may not search is Undefined (RFC 4511 4.5.1.7) and Undefined
propagates (NOT Undefined = Undefined): the answer never depends on the hidden values, so a
right and a wrong guess, or an entry with and without a password, look the same.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap
import pytest
from ldap.controls import SimplePagedResultsControl
from ldap.controls.psearch import PersistentSearchControl

from integration._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from integration.rest_support import RestServer

PEOPLE = f"ou=people,{BASE_DN}"
FRANK, GRACE, HENRY = (f"uid={u},{PEOPLE}" for u in ("frank", "grace", "henry"))
FRANK_PW, GRACE_PW = "Summer2024", "Gr4ce-pass"
RIGHT = "{CLEARTEXT}Summer2024"
WRONG = "{CLEARTEXT}Winter2024"
INDEXES = ("  indexes:\n"
           "    objectClass: [eq]\n"
           "    uid: [eq, pres]\n"
           "    cn: [eq, sub]\n"
           "    userPassword: [eq, pres]\n")
ACL = """\
version: 1
defaultPolicy: deny
rules:
  - {target: "*", subject: anonymous, rights: [search], attributes: [cn], deny: true}
  - {target: "*", subject: "*", rights: [read, search, compare]}
"""


@dataclass
class OracleServer(RestServer):
    """A RestServer with a listener worker process and an index on userPassword."""

    def command(self) -> list[str]:
        cmd = super().command()
        text = self.config_path.read_text(encoding="utf-8")
        text = text.replace("server:\n", "server:\n  workers: 2\n", 1)
        text = text.replace("storage:\n", "storage:\n" + INDEXES, 1)
        # the stored {CLEARTEXT} values are what the filters probe: not re-made on bind
        text += "security:\n  rehashOnBind: false\n"
        self.config_path.write_text(text, encoding="utf-8")
        return cmd


def person(uid: str, password: str | None) -> list[tuple[str, list[bytes]]]:
    attrs = [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
             ("cn", [uid.title().encode()]), ("sn", [b"S"])]
    if password is not None:
        attrs.append(("userPassword", [password.encode()]))
    return attrs


def populate(url: str) -> None:
    root = connect(url, ROOT_DN, ROOT_PW)
    root.add_s(PEOPLE, [("objectClass", [b"organizationalUnit"]), ("ou", [b"people"])])
    root.add_s(FRANK, person("frank", RIGHT))  # pre-hashed values: root DN only
    root.add_s(GRACE, person("grace", "{CLEARTEXT}" + GRACE_PW))
    root.add_s(HENRY, person("henry", None))
    root.unbind_s()


def start(work: Path, acl: str | None) -> OracleServer:
    extra = ""
    if acl is not None:
        path = work / "acl.yaml"
        path.write_text(acl)
        extra = f'aclFile: "{path}"\n'
    srv = OracleServer("oba", work / "srv", rest_extra=extra)
    srv.start()
    try:
        populate(srv.url)
    except BaseException:
        srv.stop()
        raise
    return srv


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OracleServer]:
    srv = start(Path(tmp_path_factory.mktemp("oracle-builtin")), None)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def ruled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OracleServer]:
    srv = start(Path(tmp_path_factory.mktemp("oracle-acl")), ACL)
    try:
        yield srv
    finally:
        srv.stop()


def ldap_dns(srv: RestServer, flt: str, who: tuple[str, str] | None = None,
             base: str = PEOPLE) -> set[str]:
    """DNs found by a one-level search, asked on four fresh connections (the writer and the
    worker process share them): every connection must give the same answer."""
    answers = []
    for _ in range(4):
        conn = connect(srv.url, *who) if who else connect(srv.url)
        try:
            found = conn.search_s(base, ldap.SCOPE_ONELEVEL, flt, ["uid"])
        finally:
            conn.unbind_s()
        answers.append({dn.lower() for dn, _ in found if dn})
    assert all(a == answers[0] for a in answers), answers
    return answers[0]


def rest_dns(srv: RestServer, flt: str, who: tuple[str, str]) -> tuple[set[str], set[str]]:
    """(GET /search, GET /search/stream) DNs for the filter, as ``who``."""
    with srv.client(who) as client:
        r = client.get("/search", params={"baseDN": PEOPLE, "scope": "one", "filter": flt})
        assert r.status_code == 200, r.text
        paged = {e["dn"].lower() for e in r.json()["entries"]}
        r = client.get("/search/stream", params={"baseDN": PEOPLE, "scope": "one",
                                                 "filter": flt})
        assert r.status_code == 200, r.text
        lines = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    assert lines and lines[-1].get("done") is True, lines
    streamed = {e["dn"].lower() for e in lines[:-1]}
    return paged, streamed


def guess(flt_value: str) -> str:
    return f"(&(uid=frank)(!(userPassword={flt_value})))"


# ---------------------------------------------------------------- the built-in policy


def test_builtin_presence_is_undefined_for_anonymous(builtin: OracleServer) -> None:
    # was: exactly the entries without a password (henry)
    assert ldap_dns(builtin, "(!(userPassword=*))") == set()
    assert ldap_dns(builtin, "(userPassword=*)") == set()
    assert ldap_dns(builtin, "(&(objectClass=*)(!(userPassword=*)))") == set()
    # OR with a searchable item: only the searchable part decides
    assert ldap_dns(builtin, "(|(!(userPassword=*))(uid=grace))") == {GRACE.lower()}


def test_builtin_password_guess_is_no_oracle_over_ldap(builtin: OracleServer) -> None:
    # was: nothing for the right guess, frank for a wrong one
    assert ldap_dns(builtin, guess(RIGHT)) == set()
    assert ldap_dns(builtin, guess(WRONG)) == set()
    grace = (GRACE, GRACE_PW)
    assert ldap_dns(builtin, guess(RIGHT), grace) == ldap_dns(builtin, guess(WRONG), grace) \
        == set()
    # other filter forms on userPassword, negated
    for flt in (f"(!(userPassword:octetStringMatch:={RIGHT}))",
                f"(!(userPassword>={RIGHT}))", f"(!(userPassword<={RIGHT}))",
                f"(!(userPassword~={RIGHT}))"):
        assert ldap_dns(builtin, flt) == set(), flt


def test_builtin_password_guess_is_no_oracle_over_rest(builtin: OracleServer) -> None:
    grace = (GRACE, GRACE_PW)
    for value in (RIGHT, WRONG):
        assert rest_dns(builtin, guess(value), grace) == (set(), set()), value
    assert rest_dns(builtin, "(!(userPassword=*))", grace) == (set(), set())


def test_only_root_dn_searches_userpassword(builtin: OracleServer, ruled: OracleServer) -> None:
    """userPassword is searchable by the root DN only: not even by its owner (was: frank's
    own search answered his guesses)."""
    frank = (FRANK, FRANK_PW)
    root = (ROOT_DN, ROOT_PW)
    for srv in (builtin, ruled):
        assert ldap_dns(srv, f"(userPassword={RIGHT})", frank) == set()
        assert ldap_dns(srv, guess(RIGHT), frank) == ldap_dns(srv, guess(WRONG), frank) \
            == set()
        assert ldap_dns(srv, f"(userPassword={RIGHT})", root) == {FRANK.lower()}
        assert ldap_dns(srv, f"(userPassword={WRONG})", root) == set()
        assert ldap_dns(srv, "(!(userPassword=*))", root) == {HENRY.lower()}
        assert ldap_dns(srv, guess(WRONG), root) == {FRANK.lower()}
        assert ldap_dns(srv, f"(:octetStringMatch:={RIGHT})", root) == {FRANK.lower()}
    with builtin.client() as client:
        r = client.get("/search", params={"baseDN": PEOPLE, "scope": "one",
                                          "filter": f"(userPassword={RIGHT})"})
        assert [e["dn"].lower() for e in r.json()["entries"]] == [FRANK.lower()]


def test_extensible_match_without_type_skips_hidden_attributes(
        builtin: OracleServer, ruled: OracleServer) -> None:
    """``(:rule:=value)`` compares every attribute the caller may search, never userPassword
    (was: frank for the right guess, under both policies); when nothing it may search
    matches it is Undefined, not False, so its negation shows nothing either (neither the
    value nor the presence of a hidden attribute)."""
    for srv in (builtin, ruled):
        for rule in ("caseExactMatch", "octetStringMatch", "caseIgnoreMatch"):
            for value in (RIGHT, WRONG):
                assert ldap_dns(srv, f"(:{rule}:={value})") == set(), (srv, rule)
                assert ldap_dns(srv, f"(!(:{rule}:={value}))") == set(), (srv, rule)
        # searchable attributes still match through an extensible filter
        assert ldap_dns(srv, "(:caseIgnoreMatch:=frank)") == {FRANK.lower()}
        assert ldap_dns(srv, "(|(:caseIgnoreMatch:=frank)(uid=henry))") \
            == {FRANK.lower(), HENRY.lower()}
    # under the ACL anonymous may not search cn: an extensible match does not compare it
    assert ldap_dns(ruled, "(:caseIgnoreMatch:=Frank)") == {FRANK.lower()}  # uid matches
    assert ldap_dns(ruled, "(:caseExactMatch:=Frank)") == set()  # only cn would


def test_index_on_userpassword_neither_narrows_nor_widens(builtin: OracleServer) -> None:
    for value in (RIGHT, WRONG):
        # OR: the userPassword item is never True, the uid item decides
        assert ldap_dns(builtin, f"(|(userPassword={value})(uid=henry))") == {HENRY.lower()}
        assert ldap_dns(builtin, f"(|(userPassword={value})(uid=frank))") == {FRANK.lower()}
        # AND with an Undefined item is never True
        assert ldap_dns(builtin, f"(&(uid=frank)(userPassword={value}))") == set()
        # negated: still Undefined, so only uid=henry decides (was: frank and grace too)
        assert ldap_dns(builtin, f"(|(uid=henry)(!(userPassword={value})))") == {HENRY.lower()}
    assert ldap_dns(builtin, "(|(userPassword=*)(uid=grace))") == {GRACE.lower()}


def test_paged_search_is_no_oracle(builtin: OracleServer) -> None:
    def paged(flt: str) -> set[str]:
        conn = connect(builtin.url)
        found: set[str] = set()
        ctl = SimplePagedResultsControl(True, size=1, cookie=b"")
        try:
            while True:
                mid = conn.search_ext(PEOPLE, ldap.SCOPE_ONELEVEL, flt, ["uid"],
                                      serverctrls=[ctl])
                _, data, _, ctrls = conn.result3(mid)
                found |= {dn.lower() for dn, _ in data if dn}
                cookie = next((c.cookie for c in ctrls
                               if c.controlType == SimplePagedResultsControl.controlType), b"")
                if not cookie:
                    return found
                ctl.cookie = cookie
        finally:
            conn.unbind_s()

    assert paged("(!(userPassword=*))") == set()
    assert paged(guess(RIGHT)) == paged(guess(WRONG)) == set()
    assert paged("(|(!(userPassword=*))(uid=*))") == {FRANK.lower(), GRACE.lower(),
                                                       HENRY.lower()}


# ---------------------------------------------------------------- under an ACL file


def test_acl_supertype_filter_does_not_read_unsearchable_subtype(ruled: OracleServer) -> None:
    """Anonymous may not search ``cn``: an item on ``name`` (cn is one of its subtypes) would
    compare cn's values, so it is Undefined too. Was: frank for ``(name=Frank)``."""
    assert ldap_dns(ruled, "(cn=Frank)") == set()
    assert ldap_dns(ruled, "(name=Frank)") == set()
    assert ldap_dns(ruled, "(!(name=Frank))") == ldap_dns(ruled, "(!(name=Nobody))") == set()
    assert ldap_dns(ruled, "(|(name=Frank)(uid=henry))") == {HENRY.lower()}
    grace = (GRACE, GRACE_PW)
    assert ldap_dns(ruled, "(name=Frank)", grace) == {FRANK.lower()}
    assert ldap_dns(ruled, "(!(name=Frank))", grace) == {GRACE.lower(), HENRY.lower()}


def test_acl_password_guess_is_no_oracle(ruled: OracleServer) -> None:
    grace, frank = (GRACE, GRACE_PW), (FRANK, FRANK_PW)
    for who in (None, grace, frank):
        assert ldap_dns(ruled, "(!(userPassword=*))", who) == set()
        assert ldap_dns(ruled, guess(RIGHT), who) == ldap_dns(ruled, guess(WRONG), who) == set()
    for value in (RIGHT, WRONG):
        assert rest_dns(ruled, guess(value), grace) == (set(), set())


# ---------------------------------------------------------------- the evaluator itself

FILTERS = ("(userPassword=*)", "(!(userPassword=*))", f"(userPassword={RIGHT})",
           f"(!(userPassword={RIGHT}))", f"(userPassword>={RIGHT})", "(userPassword~=x)",
           f"(!(userPassword:octetStringMatch:={RIGHT}))", f"(:octetStringMatch:={RIGHT})",
           f"(!(:caseExactMatch:={RIGHT}))", "(!(:caseIgnoreMatch:=frank))",
           "(:dn:caseIgnoreMatch:=people)", "(!(:caseIgnoreMatch:=nobody))",
           "(cn=Frank)", "(!(cn=Fr*))", "(name=Frank)", "(!(name=Frank))",
           "(|(uid=frank)(!(userPassword=*)))", "(&(uid=*)(!(|(cn=x)(userPassword=*))))",
           "(!(&(objectClass=person)(userPassword=*)))", "(objectClass=*)")


def test_hidden_attributes_never_change_a_result_and_hiding_is_monotone() -> None:
    """For every filter: with ``blind`` attributes the result does not depend on their values
    or presence, and hiding more attributes only ever turns a result into Undefined (so a
    search may evaluate with fewer hidden attributes first, then with the caller's own)."""
    from oba.directory.entry import Entry
    from oba.directory.evaluate import compile_filter
    from oba.protocol.filter import parse_filter
    from oba.schema import Schema

    schema = Schema.default()
    base = {"objectClass": [b"inetOrgPerson"], "uid": [b"frank"], "cn": [b"Frank"],
            "sn": [b"S"]}
    variants = [dict(base), dict(base, userPassword=[RIGHT.encode()]),
                dict(base, userPassword=[WRONG.encode()]),
                dict(base, userPassword=[b"{SSHA}x", RIGHT.encode()]),
                dict(base, cn=[b"Other"]), dict(base, cn=[b"Other"], userPassword=[b"y"]),
                {k: v for k, v in base.items() if k != "cn"}]
    entries = [Entry(i, FRANK, attrs) for i, attrs in enumerate(variants)]
    levels: tuple[frozenset[str], ...] = (frozenset(), frozenset({"userpassword"}),
                                          frozenset({"userpassword", "cn"}))
    for text in FILTERS:
        flt = parse_filter(text)
        results = [[compile_filter(flt, schema, blind)(e) for e in entries] for blind in levels]
        for fewer, more in itertools.pairwise(results):
            assert all(m is None or m == f for f, m in zip(fewer, more, strict=True)), text
        # userPassword hidden: variants 0-3 differ only in it, 4-5 likewise
        assert len(set(results[1][0:4])) == 1 and results[1][4] == results[1][5], text
        # userPassword and cn hidden: variants 0-6 differ only in them
        assert len(set(results[2])) == 1, text


# ---------------------------------------------------------------- persistent search


def _psearch_notified(srv: RestServer, flt: str) -> set[str]:
    """Entries notified to an anonymous changes-only persistent search on ``flt`` while the
    root DN changes the description of frank, grace and henry."""
    watcher = connect(srv.url)
    ctl = PersistentSearchControl(criticality=True, changeTypes=["modify"], changesOnly=True,
                                  returnECs=False)
    mid = watcher.search_ext(PEOPLE, ldap.SCOPE_ONELEVEL, flt, ["uid"], serverctrls=[ctl])
    watcher.whoami_s()  # the search is registered once a later request is answered
    root = connect(srv.url, ROOT_DN, ROOT_PW)
    stamp = str(time.monotonic_ns()).encode()
    for dn in (FRANK, GRACE, HENRY):
        root.modify_s(dn, [(ldap.MOD_REPLACE, "description", [stamp])])
    root.modify_s(GRACE, [(ldap.MOD_REPLACE, "description", [stamp + b"-end"])])
    root.unbind_s()
    got: set[str] = set()
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            try:
                data: Any = watcher.result4(mid, all=0, timeout=0.5)[1]
            except ldap.TIMEOUT:
                continue
            names = {dn.lower() for dn, _ in data or [] if dn}
            got |= names
            if GRACE.lower() in names:  # the marker change: everything before it is in
                break
        watcher.abandon(mid)
    finally:
        watcher.unbind_s()
    return got - {GRACE.lower()}


def test_persistent_search_filter_is_undefined(builtin: OracleServer) -> None:
    assert _psearch_notified(builtin, "(|(uid=grace)(!(userPassword=*)))") == set()
