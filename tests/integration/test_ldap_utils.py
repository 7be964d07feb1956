"""Debian ldap-utils against the target: exit codes are LDAP result codes.

Rules: this module writes only under ``ou=people`` and ``ou=utils`` of the base; expected codes,
matched DNs and messages are what OpenLDAP's slapd answers for the same request.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, LdifEntry, parse_ldif, run_tool

PEOPLE = f"ou=people,{BASE_DN}"
UTILS = f"ou=utils,{BASE_DN}"
PHOTO = bytes(range(256)) + b"\xff\xd8\xff\xe0JFIF\x00binary\x00photo"
USER_PW = "userpass1"


def _person(
    uid: str, cn: str, sn: str, number: int, mail: bool = True, parent: str = PEOPLE
) -> str:
    lines = [
        f"dn: uid={uid},{parent}",
        "objectClass: inetOrgPerson",
        "objectClass: posixAccount",
        f"uid: {uid}",
        f"cn: {cn}",
        f"sn: {sn}",
        f"uidNumber: {number}",
        "gidNumber: 100",
        f"homeDirectory: /home/{uid}",
        f"userPassword: {USER_PW}",
    ]
    if mail:
        lines.append(f"mail: {uid}@example.com")
    return "\n".join(lines) + "\n"


def _tree_ldif(photo: Path) -> str:
    parts = [
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        _person("jmueller", "Jürgen Müller", "Müller", 1001)
        + f"givenName: Jürgen\njpegPhoto:< file://{photo}\n",
        _person("asmith", "Alice Smith", "Smith", 1002),
        _person("bjones", "Bob Jones", "Jones", 1003)
        + "jpegPhoto:: "
        + base64.b64encode(PHOTO[::-1]).decode()
        + "\n",
        _person("cdoe", "Carol Doe", "Doe", 1004, mail=False),
        f"dn: ou=admins,{PEOPLE}\nobjectClass: organizationalUnit\nou: admins\n",
        _person("root1", "Root One", "One", 1005, parent=f"ou=admins,{PEOPLE}"),
        f"dn: {UTILS}\nobjectClass: organizationalUnit\nou: utils\n",
    ]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def tree(url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Add the small tree with ldapadd (the add itself is asserted here)."""
    photo = tmp_path_factory.mktemp("photo") / "photo.jpg"
    photo.write_bytes(PHOTO)
    res = run_tool("ldapadd", url, [], stdin=_tree_ldif(photo))
    assert res.rc == 0, res.stderr
    assert res.stdout.count("adding new entry") == 8
    return url


def search(url: str, base: str, *args: str, rc: int = 0, bind: bool = True) -> list[LdifEntry]:
    res = run_tool(
        "ldapsearch",
        url,
        ["-LLL", "-o", "ldif-wrap=no", "-b", base, *args],
        bind=(ROOT_DN, ROOT_PW) if bind else None,
    )
    assert res.rc == rc, f"ldapsearch {args}: rc={res.rc} {res.stderr}"
    return parse_ldif(res.stdout)


def dns(entries: list[LdifEntry]) -> set[str]:
    return {e.dn.lower() for e in entries}


def uids(entries: list[LdifEntry]) -> set[str]:
    return {e.dn.split(",")[0].split("=")[1] for e in entries}


def test_utf8_values_round_trip(tree: str) -> None:
    [entry] = search(tree, f"uid=jmueller,{PEOPLE}", "-s", "base", "cn", "givenName", "sn")
    assert entry.get("cn") == ["Jürgen Müller"]
    assert entry.get("givenName") == ["Jürgen"]
    assert entry.get("sn") == ["Müller"]


def test_binary_photo_from_file_and_base64(tree: str) -> None:
    [jm] = search(tree, f"uid=jmueller,{PEOPLE}", "-s", "base", "jpegPhoto")
    assert jm.attrs["jpegphoto"] == [PHOTO]
    [bj] = search(tree, f"uid=bjones,{PEOPLE}", "-s", "base", "jpegPhoto")
    assert bj.attrs["jpegphoto"] == [PHOTO[::-1]]


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("base", {"people"}),
        ("one", {"jmueller", "asmith", "bjones", "cdoe", "admins"}),
        ("sub", {"people", "jmueller", "asmith", "bjones", "cdoe", "admins", "root1"}),
        ("children", {"jmueller", "asmith", "bjones", "cdoe", "admins", "root1"}),
    ],
)
def test_scopes(tree: str, scope: str, expected: set[str]) -> None:
    assert uids(search(tree, PEOPLE, "-s", scope, "(objectClass=*)", "1.1")) == expected


PERSONS = {"jmueller", "asmith", "bjones", "cdoe", "root1"}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ("(uid=jmueller)", {"jmueller"}),
        ("(&(objectClass=inetOrgPerson)(sn=Smith))", {"asmith"}),
        ("(|(uid=asmith)(uid=bjones)(uid=nobody))", {"asmith", "bjones"}),
        ("(&(objectClass=inetOrgPerson)(!(uid=asmith)))", PERSONS - {"asmith"}),
        ("(cn=J*)", {"jmueller"}),
        ("(cn=*ones)", {"bjones"}),
        ("(cn=*li*)", {"asmith"}),
        ("(cn=A*ce*th)", {"asmith"}),
        ("(uidNumber>=1003)", {"bjones", "cdoe", "root1"}),
        ("(uidNumber<=1002)", {"jmueller", "asmith"}),
        ("(mail=*)", PERSONS - {"cdoe"}),
        ("(jpegPhoto=*)", {"jmueller", "bjones"}),
        ("(sn~=smith)", {"asmith"}),
        ("(cn:caseExactMatch:=Alice Smith)", {"asmith"}),
        ("(cn:caseExactMatch:=alice smith)", set()),
        ("(ou:dn:=admins)", {"admins", "root1"}),
        ("(CN=JÜRGEN MÜLLER)", {"jmueller"}),
        ("(cn=jürgen*)", {"jmueller"}),
        ("(&(objectClass=person)(createTimestamp>=19700101000000Z))", PERSONS),
        ("(createTimestamp<=19700101000000Z)", set()),
        ("(!(objectClass=*))", set()),
    ],
)
def test_filters(tree: str, flt: str, expected: set[str]) -> None:
    assert uids(search(tree, PEOPLE, "-s", "sub", flt, "1.1")) == expected


def test_dn_extensible_filter_matches_whole_subtree(tree: str) -> None:
    found = uids(search(tree, BASE_DN, "-s", "sub", "(ou:dn:=people)", "1.1"))
    assert found == PERSONS | {"people", "admins"}


def test_attribute_selection(tree: str) -> None:
    base = f"uid=asmith,{PEOPLE}"
    [user] = search(tree, base, "-s", "base", "*")
    assert user.has("cn") and user.has("objectClass") and not user.has("entryUUID")
    [oper] = search(tree, base, "-s", "base", "+")
    assert oper.has("entryUUID") and not oper.has("cn")
    [both] = search(tree, base, "-s", "base", "*", "+")
    assert both.has("cn") and both.has("entryUUID")
    [none] = search(tree, base, "-s", "base", "1.1")
    assert none.dn == base and none.attrs == {}
    [named] = search(tree, base, "-s", "base", "cn", "MAIL")
    assert set(named.attrs) == {"cn", "mail"}
    assert named.get("mail") == ["asmith@example.com"]


def test_types_only(tree: str) -> None:
    [entry] = search(tree, f"uid=asmith,{PEOPLE}", "-s", "base", "-A", "cn", "sn")
    assert set(entry.attrs) == {"cn", "sn"}
    assert entry.attrs["cn"] == [b""] and entry.attrs["sn"] == [b""]


def test_case_insensitive_attribute_names(tree: str) -> None:
    [entry] = search(tree, PEOPLE, "(UID=JMUELLER)", "SN", "gIvEnNaMe")
    assert entry.get("sn") == ["Müller"]
    assert entry.get("givenname") == ["Jürgen"]


def test_size_limit_exceeded(tree: str) -> None:
    found = search(tree, PEOPLE, "-z", "2", "(objectClass=inetOrgPerson)", "1.1", rc=4)
    assert len(found) == 2


def test_missing_base_reports_matched_dn(tree: str) -> None:
    res = run_tool("ldapsearch", tree, ["-LLL", "-b", f"uid=nobody,ou=gone,{PEOPLE}"])
    assert res.rc == 32
    assert "No such object" in res.stderr
    assert f"Matched DN: {PEOPLE}" in res.stdout + res.stderr


def test_root_dse_operational(url: str, target: str) -> None:
    [dse] = search(url, "", "-s", "base", "+")
    assert dse.dn == ""
    assert dse.get("namingContexts") == [BASE_DN]
    assert "3" in dse.get("supportedLDAPVersion")
    assert dse.has("supportedControl") and dse.has("supportedExtension")
    assert dse.get("subschemaSubentry") == ["cn=Subschema"]
    if target == "oba":
        assert dse.get("vendorName") and dse.get("vendorVersion")


def test_root_dse_user_and_operational(url: str) -> None:
    [dse] = search(url, "", "-s", "base", "*", "+")
    assert "top" in dse.get("objectClass")
    assert dse.get("namingContexts") == [BASE_DN]
    [plain] = search(url, "", "-s", "base", bind=False)
    assert not plain.has("namingContexts")


def test_compare_true_false(tree: str) -> None:
    dn = f"uid=jmueller,{PEOPLE}"
    res = run_tool("ldapcompare", tree, [dn, "sn:Müller"])
    assert (res.rc, res.stdout.strip()) == (6, "TRUE")
    res = run_tool("ldapcompare", tree, [dn, "sn:müller"])
    assert res.rc == 6
    res = run_tool("ldapcompare", tree, [dn, "sn:Smith"])
    assert (res.rc, res.stdout.strip()) == (5, "FALSE")
    res = run_tool("ldapcompare", tree, [f"uid=nobody,{PEOPLE}", "sn:x"])
    assert res.rc == 32


def _modify(url: str, ldif: str, bind: tuple[str, str] | None = (ROOT_DN, ROOT_PW)) -> int:
    res = run_tool("ldapmodify", url, [], stdin=ldif, bind=bind)
    return res.rc


def test_modify_add_delete_replace(tree: str) -> None:
    dn = f"cn=modme,{UTILS}"
    add = f"dn: {dn}\nobjectClass: person\ncn: modme\nsn: before\n"
    assert run_tool("ldapadd", tree, [], stdin=add).rc == 0
    change = (
        f"dn: {dn}\nchangetype: modify\n"
        "add: description\ndescription: one\ndescription: two\n-\n"
        "replace: sn\nsn: after\n-\n"
        "add: telephoneNumber\ntelephoneNumber: +1 555 0100\n-\n"
    )
    assert _modify(tree, change) == 0
    assert (
        _modify(tree, f"dn: {dn}\nchangetype: modify\ndelete: description\ndescription: one\n") == 0
    )
    assert _modify(tree, f"dn: {dn}\nchangetype: modify\ndelete: telephoneNumber\n") == 0
    [entry] = search(tree, dn, "-s", "base")
    assert entry.get("description") == ["two"]
    assert entry.get("sn") == ["after"]
    assert not entry.has("telephoneNumber")
    assert run_tool("ldapdelete", tree, [dn]).rc == 0
    search(tree, dn, "-s", "base", rc=32)


def test_error_entry_already_exists(tree: str) -> None:
    res = run_tool(
        "ldapadd", tree, [], stdin=f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n"
    )
    assert res.rc == 68
    assert "Already exists" in res.stderr


def test_error_no_such_object_on_delete(tree: str) -> None:
    res = run_tool("ldapdelete", tree, [f"uid=ghost,ou=gone,{PEOPLE}"])
    assert res.rc == 32
    assert f"matched DN: {PEOPLE}" in res.stderr


def test_error_add_below_missing_parent(tree: str) -> None:
    ldif = f"dn: cn=orphan,ou=gone,{UTILS}\nobjectClass: person\ncn: orphan\nsn: x\n"
    res = run_tool("ldapadd", tree, [], stdin=ldif)
    assert res.rc == 32
    assert f"matched DN: {UTILS}" in res.stderr


def test_error_not_allowed_on_non_leaf(tree: str) -> None:
    res = run_tool("ldapdelete", tree, [f"ou=admins,{PEOPLE}"])
    assert res.rc == 66


def test_error_no_such_attribute(tree: str) -> None:
    dn = f"uid=cdoe,{PEOPLE}"
    assert _modify(tree, f"dn: {dn}\nchangetype: modify\ndelete: mail\n") == 16
    assert _modify(tree, f"dn: {dn}\nchangetype: modify\ndelete: sn\nsn: NotHerName\n") == 16


def test_error_attribute_or_value_exists(tree: str) -> None:
    dn = f"uid=cdoe,{PEOPLE}"
    assert _modify(tree, f"dn: {dn}\nchangetype: modify\nadd: sn\nsn: doe\n") == 20


def test_error_invalid_credentials(tree: str) -> None:
    wrong = run_tool("ldapsearch", tree, ["-b", "", "-s", "base"], bind=(ROOT_DN, "wrong"))
    assert wrong.rc == 49
    unknown = run_tool(
        "ldapsearch", tree, ["-b", "", "-s", "base"], bind=(f"uid=ghost,{PEOPLE}", "x")
    )
    assert unknown.rc == 49
    user = run_tool(
        "ldapsearch", tree, ["-b", "", "-s", "base"], bind=(f"uid=asmith,{PEOPLE}", "bad")
    )
    assert user.rc == 49


def test_error_invalid_dn_syntax(tree: str) -> None:
    assert run_tool("ldapdelete", tree, [f"uid=x,,{PEOPLE}"]).rc == 34
    assert run_tool("ldapsearch", tree, ["-b", "not a dn", "-s", "base"]).rc == 34
    res = run_tool("ldapadd", tree, [], stdin="dn: nonsense\nobjectClass: person\ncn: x\nsn: x\n")
    assert res.rc == 34


def test_anonymous_write_needs_authentication(tree: str) -> None:
    ldif = f"dn: cn=anon,{UTILS}\nobjectClass: person\ncn: anon\nsn: x\n"
    res = run_tool("ldapadd", tree, [], stdin=ldif, bind=None)
    assert res.rc == 8
    assert "modifications require authentication" in res.stderr
    res = run_tool("ldapdelete", tree, [f"uid=cdoe,{PEOPLE}"], bind=None)
    assert res.rc == 8


def test_non_root_user_cannot_write(tree: str) -> None:
    user = (f"uid=asmith,{PEOPLE}", USER_PW)
    ldif = f"dn: cn=byuser,{UTILS}\nobjectClass: person\ncn: byuser\nsn: x\n"
    assert run_tool("ldapadd", tree, [], stdin=ldif, bind=user).rc == 50
    change = f"dn: uid=cdoe,{PEOPLE}\nchangetype: modify\nreplace: sn\nsn: Hacked\n"
    assert _modify(tree, change, bind=user) == 50
    assert run_tool("ldapdelete", tree, [f"uid=cdoe,{PEOPLE}"], bind=user).rc == 50
