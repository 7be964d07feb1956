"""Modify DN with OpenLDAP's own `ldapmodrdn`: rename, deleteoldrdn, move with -s, subtree
rename, and the errors slapd gives (target exists 68, missing new superior 32)."""

from __future__ import annotations

import pytest

from ._support import BASE_DN, parse_ldif, run_tool

OU = f"ou=modrdn-tool,{BASE_DN}"


@pytest.fixture(scope="module")
def tree(url: str) -> str:
    ldif = "\n".join([
        f"dn: {OU}\nobjectClass: organizationalUnit\nou: modrdn-tool\n",
        f"dn: ou=a,{OU}\nobjectClass: organizationalUnit\nou: a\n",
        f"dn: ou=b,{OU}\nobjectClass: organizationalUnit\nou: b\n",
        f"dn: cn=one,ou=a,{OU}\nobjectClass: person\ncn: one\nsn: One\n",
        f"dn: cn=two,ou=a,{OU}\nobjectClass: person\ncn: two\nsn: Two\n",
    ])
    res = run_tool("ldapadd", url, [], stdin=ldif)
    assert res.rc == 0, res.stderr
    return url


def _entry(url: str, dn: str, *attrs: str) -> dict[str, list[str]] | None:
    res = run_tool("ldapsearch", url, ["-LLL", "-o", "ldif-wrap=no", "-s", "base", "-b", dn,
                                       "(objectClass=*)", *attrs])
    if res.rc == 32:
        return None
    assert res.rc == 0, res.stderr
    [entry] = parse_ldif(res.stdout)
    return {k.lower(): [v.decode() for v in vals] for k, vals in entry.attrs.items()}


def test_rename_keeps_or_deletes_old_rdn(tree: str) -> None:
    res = run_tool("ldapmodrdn", tree, [f"cn=one,ou=a,{OU}", "cn=uno"])
    assert res.rc == 0, res.stderr
    kept = _entry(tree, f"cn=uno,ou=a,{OU}", "cn")
    assert kept is not None and sorted(kept["cn"]) == ["one", "uno"]
    res = run_tool("ldapmodrdn", tree, ["-r", f"cn=uno,ou=a,{OU}", "cn=eins"])
    assert res.rc == 0, res.stderr
    dropped = _entry(tree, f"cn=eins,ou=a,{OU}", "cn")
    # -r removes the old RDN value ("uno"); "one" is an ordinary value by now and stays
    assert dropped is not None and sorted(dropped["cn"]) == ["eins", "one"]
    assert _entry(tree, f"cn=uno,ou=a,{OU}") is None


def test_move_with_new_superior_and_errors(tree: str) -> None:
    res = run_tool("ldapmodrdn", tree, ["-s", f"ou=b,{OU}", f"cn=two,ou=a,{OU}", "cn=two"])
    assert res.rc == 0, res.stderr
    assert _entry(tree, f"cn=two,ou=b,{OU}") is not None
    assert _entry(tree, f"cn=two,ou=a,{OU}") is None
    exists = run_tool("ldapmodrdn", tree, ["-s", f"ou=b,{OU}", f"cn=eins,ou=a,{OU}", "cn=two"])
    assert exists.rc == 68
    missing = run_tool("ldapmodrdn", tree, ["-s", f"ou=nowhere,{OU}", f"cn=eins,ou=a,{OU}",
                                            "cn=x"])
    assert missing.rc == 32


def test_subtree_rename_moves_children(tree: str) -> None:
    res = run_tool("ldapmodrdn", tree, ["-r", f"ou=b,{OU}", "ou=bee"])
    assert res.rc == 0, res.stderr
    assert _entry(tree, f"cn=two,ou=bee,{OU}") is not None
    assert _entry(tree, f"cn=two,ou=b,{OU}") is None
    found = run_tool("ldapsearch", tree, ["-LLL", "-b", OU, "(cn=two)", "1.1"])
    assert found.rc == 0 and f"cn=two,ou=bee,{OU}".lower() in found.stdout.lower()
