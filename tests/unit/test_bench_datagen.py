"""The benchmark data set (bench/datagen.py) has the promised shape and is deterministic."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _datagen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_datagen", BENCH / "datagen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dg = _datagen()


def test_tree_shape_and_counts() -> None:
    entries = list(dg.generate(users=500, groups=10, seed=7))
    dns = [e.dn for e in entries]
    assert dns[:3] == ["dc=example,dc=com", "ou=users,dc=example,dc=com",
                       "ou=groups,dc=example,dc=com"]
    assert len(entries) == 3 + 500 + 10
    assert len(set(dns)) == len(dns)
    assert dns[3] == "uid=user1,ou=users,dc=example,dc=com"
    assert dns[-1] == "cn=group10,ou=groups,dc=example,dc=com"


def test_user_attributes_and_password() -> None:
    user = next(e for e in dg.generate(users=50, groups=1) if e.dn.startswith("uid=user42,"))
    assert "inetOrgPerson" in user.get("objectClass")
    assert user.get("uid") == ("user42",)
    assert user.get("mail") == ("user42@example.com",)
    assert user.get("uidNumber") == ("10042",)
    (cn,) = user.get("cn")
    assert cn == f"{user.get('givenName')[0]} {user.get('sn')[0]}"
    (stored,) = user.get("userPassword")
    assert stored.startswith("{SSHA}")
    raw = base64.b64decode(stored[len("{SSHA}"):])
    digest, salt = raw[:20], raw[20:]
    assert hashlib.sha1(b"password42" + salt).digest() == digest


def test_son_substring_hits_a_small_share() -> None:
    users = [e for e in dg.generate(users=2000, groups=0) if e.dn.startswith("uid=")]
    hits = [u for u in users if "son" in u.get("cn")[0].lower()]
    assert 0 < len(hits) < len(users) * 0.03


def test_groups_list_existing_members() -> None:
    entries = list(dg.generate(users=100, groups=5))
    user_dns = {e.dn for e in entries if e.dn.startswith("uid=")}
    groups = [e for e in entries if e.dn.startswith("cn=group")]
    assert len(groups) == 5
    for group in groups:
        members = group.get("member")
        assert len(members) == 20 and set(members) <= user_dns


def test_deterministic_ldif(tmp_path: Path) -> None:
    first, second = tmp_path / "a.ldif", tmp_path / "b.ldif"
    assert dg.write_ldif(str(first), users=200, groups=3) == 206
    dg.write_ldif(str(second), users=200, groups=3)
    text = first.read_text()
    assert text == second.read_text()
    assert text.count("\ndn: ") + text.startswith("dn: ") == 206
    assert "dn: uid=user200,ou=users,dc=example,dc=com\n" in text


def test_cleartext_passwords_change_nothing_else() -> None:
    hashed = list(dg.generate(users=30, groups=2, seed=5))
    clear = list(dg.generate(users=30, groups=2, seed=5, cleartext=True))
    assert [e.dn for e in hashed] == [e.dn for e in clear]
    for h, c in zip(hashed, clear, strict=True):
        assert [a for a in h.attrs if a[0] != "userPassword"] == \
            [a for a in c.attrs if a[0] != "userPassword"]
    user7 = next(e for e in clear if e.dn == dg.user_dn(7))
    assert user7.get("userPassword") == ("password7",)
