"""Search controls with real clients: paged results, server-side sort, unknown controls.

Rules: entries live under ``ou=ctl``; ``uidNumber`` (integerOrderingMatch) is the sort key
because ``cn`` has no ordering rule (slapd answers inappropriateMatching for it); result codes and
cookie errors are what slapd answers (protocolError for a cookie it does not know).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import ldap
import pytest
from ldap.controls import SimplePagedResultsControl
from ldap.controls.sss import SSSRequestControl, SSSResponseControl

from . import _ber
from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, run_tool

OU = f"ou=ctl,{BASE_DN}"
NUMBERS = [17, 3, 42, 8, 25, 11, 30]  # uidNumber of posix users u0..u6
PLAIN = ["w0", "w1"]  # entries without uidNumber
ALL = len(NUMBERS) + len(PLAIN)
ASCENDING = [f"u{NUMBERS.index(n)}" for n in sorted(NUMBERS)]


@pytest.fixture(scope="module")
def tree(url: str) -> Iterator[str]:
    conn = connect(url, ROOT_DN, ROOT_PW)
    conn.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"ctl"])])
    for i, number in enumerate(NUMBERS):
        conn.add_s(f"uid=u{i},{OU}", [
            ("objectClass", [b"inetOrgPerson", b"posixAccount"]), ("uid", [f"u{i}".encode()]),
            ("cn", [f"U{i}".encode()]), ("sn", [b"s"]), ("uidNumber", [str(number).encode()]),
            ("gidNumber", [b"100"]), ("homeDirectory", [f"/home/u{i}".encode()]),
        ])
    for name in PLAIN:
        conn.add_s(f"uid={name},{OU}", [
            ("objectClass", [b"inetOrgPerson"]), ("uid", [name.encode()]),
            ("cn", [name.encode()]), ("sn", [b"s"]),
        ])
    conn.unbind_s()
    yield url


def _uids(text: str) -> list[str]:
    dns = [line[4:] for line in text.splitlines() if line.startswith("dn: ")]
    return [dn.split(",", 1)[0].split("=", 1)[1] for dn in dns]


def test_ldapsearch_paged(tree: str) -> None:
    res = run_tool("ldapsearch", tree, ["-b", OU, "-s", "one", "-E", "pr=2/noprompt", "uid"])
    assert res.rc == 0, res.stderr
    assert len(_uids(res.stdout)) == ALL
    cookies = [line for line in res.stdout.splitlines() if line.startswith("pagedresults:")]
    assert len(cookies) == (ALL + 1) // 2
    assert cookies[-1].strip() == "pagedresults: cookie="


def test_ldapsearch_sort_and_reverse(tree: str) -> None:
    res = run_tool("ldapsearch", tree, ["-LLL", "-b", OU, "-s", "one", "-E", "sss=uidNumber",
                                        "uid"])
    assert res.rc == 0, res.stderr
    got = _uids(res.stdout)
    assert got[: len(NUMBERS)] == ASCENDING  # entries without a value sort last
    assert sorted(got[len(NUMBERS):]) == PLAIN
    res = run_tool("ldapsearch", tree, ["-LLL", "-b", OU, "-s", "one", "-E", "sss=-uidNumber",
                                        "uid"])
    assert res.rc == 0, res.stderr
    got = _uids(res.stdout)
    assert sorted(got[: len(PLAIN)]) == PLAIN  # reversed: they come first
    assert got[len(PLAIN):] == ASCENDING[::-1]


def test_ldapsearch_sort_errors(tree: str) -> None:
    res = run_tool("ldapsearch", tree, ["-b", OU, "-s", "one", "-E", "sss=cn", "uid"])
    assert res.rc == 18  # cn has no ordering rule
    res = run_tool("ldapsearch", tree, ["-b", OU, "-s", "one", "-E", "sss=noSuchAttr", "uid"])
    assert res.rc == 16


def test_ldapsearch_sort_with_size_limit(tree: str) -> None:
    res = run_tool("ldapsearch", tree, ["-LLL", "-b", OU, "-s", "one", "-z", "3",
                                        "-E", "sss=uidNumber", "uid"])
    assert res.rc == 4
    assert _uids(res.stdout) == ASCENDING[:3]


def test_unknown_controls(tree: str) -> None:
    res = run_tool("ldapsearch", tree, ["-b", OU, "-s", "base", "-E", "!1.2.3.4", "dn"])
    assert res.rc == 12
    res = run_tool("ldapsearch", tree, ["-b", OU, "-s", "base", "-E", "!1.2.3.4=:x", "dn"])
    assert res.rc == 12
    res = run_tool("ldapsearch", tree, ["-LLL", "-b", OU, "-s", "base", "-E", "1.2.3.4=:x", "dn"])
    assert res.rc == 0 and _uids(res.stdout) == ["ctl"]


def _page(conn: ldap.ldapobject.LDAPObject, size: int, cookie: bytes = b"",
          extra: list[ldap.controls.RequestControl] | None = None, size_limit: int = 0,
          attrs: list[str] | None = None) -> tuple[list[str], bytes, list[Any]]:
    ctl = SimplePagedResultsControl(True, size=size, cookie=cookie)
    mid = conn.search_ext(OU, ldap.SCOPE_ONELEVEL, "(objectClass=*)", attrs or ["uid"],
                          serverctrls=[ctl, *(extra or [])], sizelimit=size_limit)
    _, data, _, ctrls = conn.result3(mid)
    [resp] = [c for c in ctrls if c.controlType == SimplePagedResultsControl.controlType]
    uids = [dn.split(",", 1)[0].split("=", 1)[1] for dn, _ in data]
    return uids, resp.cookie, ctrls


def test_python_ldap_paged_walk(tree: str) -> None:
    conn = connect(tree, ROOT_DN, ROOT_PW)
    seen: list[str] = []
    cookie = b""
    pages = 0
    while True:
        uids, cookie, _ = _page(conn, 3, cookie)
        assert len(uids) <= 3
        seen += uids
        pages += 1
        if not cookie:
            break
    assert pages == 3 and len(seen) == ALL and len(set(seen)) == ALL
    conn.unbind_s()


def test_cookie_bound_to_connection(tree: str) -> None:
    first = connect(tree, ROOT_DN, ROOT_PW)
    other = connect(tree, ROOT_DN, ROOT_PW)
    _, cookie, _ = _page(first, 2)
    assert cookie
    uids, cookie2, _ = _page(first, 2, cookie)
    assert len(uids) == 2 and cookie2
    with pytest.raises(ldap.PROTOCOL_ERROR):  # a cookie is valid only where it was issued
        _page(other, 2, cookie2)
    with pytest.raises(ldap.PROTOCOL_ERROR):
        _page(other, 2, b"not a cookie")
    first.unbind_s()
    other.unbind_s()


def test_cookie_used_once(tree: str) -> None:
    conn = connect(tree, ROOT_DN, ROOT_PW)
    _, cookie, _ = _page(conn, 2)
    _page(conn, 2, cookie)
    with pytest.raises(ldap.UNWILLING_TO_PERFORM):  # slapd: "invalid or old"
        _page(conn, 2, cookie)
    conn.unbind_s()


def test_size_zero_abandons(tree: str, target: str) -> None:
    conn = connect(tree, ROOT_DN, ROOT_PW)
    _, cookie, _ = _page(conn, 2)
    mid = conn.search_ext(OU, ldap.SCOPE_ONELEVEL, "(objectClass=*)", ["uid"],
                          serverctrls=[SimplePagedResultsControl(True, size=0, cookie=cookie)])
    _, data, _, _ = conn.result3(mid)
    assert data == []
    if target == "oba":  # slapd keeps accepting the cookie; Oba has dropped its state
        with pytest.raises(ldap.UNWILLING_TO_PERFORM):
            _page(conn, 2, cookie)
    conn.unbind_s()


def test_paged_with_size_limit(tree: str) -> None:
    conn = connect(tree, ROOT_DN, ROOT_PW)
    uids, cookie, _ = _page(conn, 2, size_limit=3)
    assert len(uids) == 2 and cookie
    with pytest.raises(ldap.SIZELIMIT_EXCEEDED):
        _page(conn, 2, cookie, size_limit=3)
    conn.unbind_s()


def test_sorted_and_paged(tree: str) -> None:
    conn = connect(tree, ROOT_DN, ROOT_PW)
    sss = SSSRequestControl(criticality=True, ordering_rules=["-uidNumber"])
    seen: list[str] = []
    cookie = b""
    while True:
        uids, cookie, ctrls = _page(conn, 4, cookie, extra=[sss])
        seen += uids
        [sort_resp] = [c for c in ctrls if c.controlType == SSSResponseControl.controlType]
        assert sort_resp.result == 0
        if not cookie:
            break
    assert sorted(seen[: len(PLAIN)]) == PLAIN
    assert seen[len(PLAIN):] == ASCENDING[::-1]
    conn.unbind_s()


def test_python_ldap_sort_multiple_keys(tree: str) -> None:
    conn = connect(tree, ROOT_DN, ROOT_PW)
    sss = SSSRequestControl(criticality=True, ordering_rules=["gidNumber", "uidNumber"])
    mid = conn.search_ext(OU, ldap.SCOPE_ONELEVEL, "(uidNumber=*)", ["uid"], serverctrls=[sss])
    _, data, _, ctrls = conn.result3(mid)
    assert [dn.split(",", 1)[0][4:] for dn, _ in data] == ASCENDING
    [resp] = [c for c in ctrls if c.controlType == SSSResponseControl.controlType]
    assert resp.result == 0
    with pytest.raises(ldap.INAPPROPRIATE_MATCHING):
        conn.search_ext_s(OU, ldap.SCOPE_ONELEVEL, "(objectClass=*)", ["uid"],
                          serverctrls=[SSSRequestControl(False, ["sn"])])
    conn.unbind_s()


BIG = f"ou=big,{BASE_DN}"
BIG_COUNT = 600  # more than the server answers in one go (256) and than slapd's sizelimit 500


def test_large_result_does_not_block_others(url: str, target: str) -> None:
    conn = connect(url, ROOT_DN, ROOT_PW)
    conn.add_s(BIG, [("objectClass", [b"organizationalUnit"]), ("ou", [b"big"])])
    filler = b"x" * 400
    mids = [conn.add_ext(f"cn=b{i},{BIG}", [("objectClass", [b"organizationalRole"]),
                                               ("cn", [f"b{i}".encode()]),
                                               ("description", [filler])])
            for i in range(BIG_COUNT)]
    for mid in mids:
        conn.result(mid)
    # a reader that does not read: small receive buffer, so the server's transport pauses
    port = urlparse(url).port
    assert port is not None
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    try:
        slow.sendall(_ber.message(7, _ber.search_request(BIG.encode(), 1, _ber.present(b"cn"),
                                                         (b"*",))))
        other = connect(url, ROOT_DN, ROOT_PW)
        start = time.monotonic()
        assert other.whoami_s() == f"dn:{ROOT_DN}"
        assert time.monotonic() - start < 5.0
        other.unbind_s()
        responses: list[_ber.Response] = []
        rest = b""
        deadline = time.monotonic() + 30.0
        slow.settimeout(5.0)
        while not any(r.op_tag == 0x65 for r in responses):
            assert time.monotonic() < deadline, "search did not finish"
            chunk = slow.recv(65536)
            assert chunk, "connection closed"
            got, rest = _ber.split_messages(rest + chunk)
            responses += got
    finally:
        slow.close()
    entries = [r for r in responses if r.op_tag == 0x64]
    [done] = [r for r in responses if r.op_tag == 0x65]
    if target == "oba":
        assert (len(entries), done.result_code) == (BIG_COUNT, 0)
    else:  # slapd's sizelimit 500 applies to anonymous-style raw searches
        assert (len(entries), done.result_code) == (500, 4)
    conn.unbind_s()
