"""LDIF (RFC 2849): parsing, change records, errors with line numbers, writer round trips."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from oba.ldif import (
    LDIFControl,
    LDIFError,
    LDIFModification,
    LDIFModRDN,
    LDIFRecord,
    parse_ldif,
    write_ldif,
)


def parse(text: str) -> list[LDIFRecord]:
    return list(parse_ldif(text))


def test_content_records_with_folding_comments_and_base64() -> None:
    text = (
        "version: 1\n"
        "# a comment\n"
        "#  that is folded\n"
        "dn: cn=Barbara Jensen,ou=Product Development,dc=airius,\n"
        " dc=com\n"
        "objectClass: person\n"
        "cn;lang-en: Barbara Jensen\n"
        "description:: V2hhdCBhIGNhcmVmdWwgcmVhZGVyIHlvdSBhcmUh\n"
        "telephoneNumber: +1 408 555 1212\n"
        "\n"
        "\n"
        "dn:: Y249QmrDtnJuLGRjPWV4YW1wbGU=\r\n"
        "cn: Bj\xf6rn\r\n"
        "jpegPhoto:: AAEC/w==\r\n"
    )
    first, second = parse(text)
    assert first.dn == "cn=Barbara Jensen,ou=Product Development,dc=airius,dc=com"
    assert first.line == 4
    assert first.changetype is None
    assert first.attributes == [
        ("objectClass", b"person"),
        ("cn;lang-en", b"Barbara Jensen"),
        ("description", b"What a careful reader you are!"),
        ("telephoneNumber", b"+1 408 555 1212"),
    ]
    assert second.dn == "cn=Bj\xf6rn,dc=example"
    assert second.line == 12
    assert second.get("CN") == ["Bj\xf6rn".encode()]
    assert second.get("jpegphoto") == [b"\x00\x01\x02\xff"]


def test_folding_inside_a_base64_value() -> None:
    (record,) = parse("dn: o=x\nuserCertificate:: AAEC\n A/8=\n")
    assert record.attributes == [("userCertificate", b"\x00\x01\x02\x03\xff")]


def test_empty_value_and_stream_inputs() -> None:
    text = "dn: o=x\ndescription:\no: x\n"
    expected = [("description", b""), ("o", b"x")]
    assert parse(text)[0].attributes == expected
    assert next(parse_ldif(io.StringIO(text))).attributes == expected
    assert next(parse_ldif(io.BytesIO(text.encode()))).attributes == expected
    assert next(parse_ldif(text.encode())).attributes == expected


def test_change_records() -> None:
    text = """version: 1
dn: cn=new,dc=example,dc=com
control: 1.2.840.113556.1.4.805 true
changetype: add
objectClass: person
cn: new
sn: New

dn: cn=old,dc=example,dc=com
changetype: delete

dn: cn=mod,dc=example,dc=com
changetype: modify
add: mail
mail: a@example.com
mail: b@example.com
-
delete: description
-
replace: sn
sn: Moded
-
increment: uidNumber
uidNumber: 1
-

dn: cn=mod,dc=example,dc=com
changetype: modrdn
newrdn: cn=renamed
deleteoldrdn: 1
newsuperior: ou=people,dc=example,dc=com

dn: cn=x,dc=example,dc=com
changetype: moddn
newrdn: cn=y
deleteoldrdn: 0
"""
    add, delete, modify, modrdn, moddn = parse(text)
    assert add.changetype == "add"
    assert add.controls == [LDIFControl("1.2.840.113556.1.4.805", True, None)]
    assert add.get("sn") == [b"New"]
    assert delete.changetype == "delete"
    assert delete.line == 9
    assert modify.changes == [
        LDIFModification("add", "mail", [b"a@example.com", b"b@example.com"]),
        LDIFModification("delete", "description", []),
        LDIFModification("replace", "sn", [b"Moded"]),
        LDIFModification("increment", "uidNumber", [b"1"]),
    ]
    assert modrdn.modrdn == LDIFModRDN("cn=renamed", True, "ou=people,dc=example,dc=com")
    assert moddn.changetype == "moddn"
    assert moddn.modrdn == LDIFModRDN("cn=y", False, None)


def test_control_with_value() -> None:
    (record,) = parse("dn: o=x\ncontrol: 1.2.3 false:: AAE=\nchangetype: delete\n")
    assert record.controls == [LDIFControl("1.2.3", False, b"\x00\x01")]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("dn: o=x\no: x\n\nfoo: bar\n", 4, "must start with 'dn:'"),
        ("dn: o=x\no: x\n\n o: x\n", 4, "continuation line"),
        ("dn: o=x\no: x\nbad line\n", 3, "expected 'name: value'"),
        ("dn: o=x\njpegPhoto:: !!!\n", 2, "invalid base64"),
        ("dn: o=x\no: x\n\n\ndn: o=y\nchangetype: rename\n", 6, "unknown changetype"),
        ("dn: o=x\nchangetype: modify\nadd: cn\nsn: x\n-\n", 4, "inside the add block"),
        ("dn: o=x\nchangetype: modify\nfrob: cn\n", 3, "expected add:"),
        ("dn: o=x\nchangetype: modrdn\nnewrdn: o=y\ndeleteoldrdn: maybe\n", 4, "0 or 1"),
        ("dn: o=x\nchangetype: modrdn\nnewrdn: o=y\n", 2, "needs newrdn"),
        ("dn: o=x\nchangetype: delete\ncn: y\n", 3, "no further lines"),
        ("version: 2\ndn: o=x\no: x\n", 1, "version 1"),
        ("dn: o=x\nbad_name: y\n", 2, "invalid attribute description"),
        ("dn: o=x\n", 1, "at least one attribute"),
        ("dn: o=x\nphoto:< file:///etc/hostname\n", 2, "URL values are not accepted"),
    ],
)
def test_errors_carry_line_numbers(text: str, line: int, fragment: str) -> None:
    with pytest.raises(LDIFError) as info:
        parse(text)
    assert info.value.line == line
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"line {line}: ")


def test_invalid_utf8_is_an_error_with_line() -> None:
    with pytest.raises(LDIFError) as info:
        list(parse_ldif(b"dn: o=x\ncn: \xff\xfe\n"))
    assert info.value.line == 2


def test_file_urls_when_allowed(tmp_path: Path) -> None:
    photo = tmp_path / "photo.bin"
    photo.write_bytes(b"\x89PNG\x00")
    (record,) = parse_ldif(f"dn: o=x\njpegPhoto:< file://{photo}\n", read_urls=True)
    assert record.get("jpegPhoto") == [b"\x89PNG\x00"]


def test_writer_encodes_unsafe_values_and_folds() -> None:
    long_value = b"x" * 200
    record = LDIFRecord(
        dn="cn=J\xfcrgen,dc=example,dc=com",
        attributes=[
            ("cn", "J\xfcrgen".encode()),
            ("description", long_value),
            ("a", b" leading space"),
            ("b", b"trailing space "),
            ("c", b":colon"),
            ("d", b"<angle"),
            ("e", b"line\nbreak"),
            ("f", b"\x00\x01binary"),
            ("g", b"plain value"),
            ("h", b""),
        ],
    )
    text = write_ldif([record])
    lines = text.splitlines()
    assert lines[0] == "version: 1"
    assert all(len(line) <= 76 for line in lines)
    assert all(ord(ch) < 128 for ch in text)
    assert lines[2].startswith("dn:: ")
    assert "g: plain value" in lines
    assert "h:" in lines
    for name in "abcdef":
        assert any(line.startswith(f"{name}:: ") for line in lines), name
    assert any(line.startswith(" ") for line in lines)  # the long value was folded


def test_round_trip_content_and_change_records() -> None:
    records = [
        LDIFRecord(
            dn="uid=\u00e5sa,ou=users,dc=example,dc=com",
            attributes=[
                ("objectClass", b"inetOrgPerson"),
                ("cn;lang-sv", "\u00c5sa Str\u00f6m".encode()),
                ("jpegPhoto", bytes(range(256)) * 3),
                ("description", b"word " * 40),
                ("userPassword", b"{SSHA}abc=="),
            ],
        ),
        LDIFRecord(dn="cn=gone,dc=example,dc=com", changetype="delete"),
        LDIFRecord(
            dn="cn=mod,dc=example,dc=com",
            changetype="modify",
            controls=[LDIFControl("1.2.3.4", True, b"\x00\xff")],
            changes=[
                LDIFModification("replace", "description", [b" padded ", "\u00fc".encode()]),
                LDIFModification("delete", "mail", []),
            ],
        ),
        LDIFRecord(
            dn="cn=a,dc=example,dc=com",
            changetype="modrdn",
            modrdn=LDIFModRDN("cn=b", True, "ou=x,dc=example,dc=com"),
        ),
        LDIFRecord(
            dn="cn=n,dc=example,dc=com",
            changetype="add",
            attributes=[("objectClass", b"person"), ("cn", b"n"), ("sn", b"n")],
        ),
    ]
    text = write_ldif(records)
    assert parse(text) == records
    assert write_ldif(parse(text)) == text


def test_round_trip_at_other_widths() -> None:
    record = LDIFRecord(dn="o=x", attributes=[("description", b"y" * 300)])
    for width in (10, 40, 76, 200):
        assert parse(write_ldif([record], width=width)) == [record]


def _example_ldif() -> str:
    return resources.files("oba").joinpath("data/example.ldif").read_text(encoding="utf-8")


def test_example_tree_parses() -> None:
    records = parse(_example_ldif())
    dns = [record.dn for record in records]
    assert dns[:3] == [
        "dc=example,dc=com",
        "ou=users,dc=example,dc=com",
        "ou=groups,dc=example,dc=com",
    ]
    base = records[0]
    assert set(base.get("objectClass")) == {b"top", b"dcObject", b"organization"}
    assert base.get("o") == [b"Example Inc."]
    users = [r for r in records if b"inetOrgPerson" in r.get("objectClass")]
    groups = [r for r in records if b"groupOfNames" in r.get("objectClass")]
    assert len(users) == 5 and len(groups) == 2
    for user in users:
        for attr in ("uid", "cn", "sn", "givenName", "mail", "telephoneNumber", "userPassword"):
            assert user.get(attr), (user.dn, attr)
    user_dns = {user.dn for user in users}
    for group in groups:
        members = {value.decode() for value in group.get("member")}
        assert members and members <= user_dns


def test_example_passwords_are_ssha_of_the_documented_passwords() -> None:
    users = [r for r in parse(_example_ldif()) if r.get("uid")]
    assert [u.get("uid")[0].decode() for u in users] == ["alice", "bob", "carol", "dave", "eve"]
    for user in users:
        uid = user.get("uid")[0].decode()
        (stored,) = user.get("userPassword")
        assert stored.startswith(b"{SSHA}")
        raw = base64.b64decode(stored[len(b"{SSHA}") :])
        digest, salt = raw[:20], raw[20:]
        assert len(salt) >= 4
        assert hashlib.sha1(f"{uid}123".encode() + salt).digest() == digest


def test_openldap_ldif_tools_accept_our_output(tmp_path: Path) -> None:
    """OpenLDAP's own parser reads what we write (`ldapmodify -n` is a dry run, no server)."""
    records = [
        LDIFRecord(dn="cn=\u00e9,dc=example,dc=com", attributes=[("cn", "\u00e9".encode())]),
        LDIFRecord(
            dn="cn=m,dc=example,dc=com",
            changetype="modify",
            changes=[LDIFModification("replace", "description", [b"z" * 120])],
        ),
    ]
    path = tmp_path / "out.ldif"
    path.write_text(write_ldif(records), encoding="ascii")
    result = subprocess.run(
        ["ldapmodify", "-n", "-v", "-a", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "replace description" in result.stdout + result.stderr
