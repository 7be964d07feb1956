"""DN string form (RFC 4514): parsing, escaping, formatting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oba.protocol.dn import DNError, escape_value, format_dn, parent, parse_dn


def test_empty_dn_is_root() -> None:
    assert parse_dn("") == ()
    assert format_dn(()) == ""
    assert parent(()) == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # RFC 4514 section 4 examples
        (
            "UID=jsmith,DC=example,DC=net",
            ((("UID", "jsmith"),), (("DC", "example"),), (("DC", "net"),)),
        ),
        (
            "OU=Sales+CN=J.  Smith,DC=example,DC=net",
            ((("OU", "Sales"), ("CN", "J.  Smith")), (("DC", "example"),), (("DC", "net"),)),
        ),
        (
            'CN=James \\"Jim\\" Smith\\, III,DC=example,DC=net',
            ((("CN", 'James "Jim" Smith, III'),), (("DC", "example"),), (("DC", "net"),)),
        ),
        (
            "CN=Before\\0dAfter,DC=example,DC=net",
            ((("CN", "Before\rAfter"),), (("DC", "example"),), (("DC", "net"),)),
        ),
        (
            "1.3.6.1.4.1.1466.0=#04024869,DC=example,DC=com",
            ((("1.3.6.1.4.1.1466.0", "Hi"),), (("DC", "example"),), (("DC", "com"),)),
        ),
        ("CN=Lu\\C4\\8Di\\C4\\87", ((("CN", "Lučić"),),)),
        (
            "CN=Steve Kille,O=Isode Limited,C=GB",
            ((("CN", "Steve Kille"),), (("O", "Isode Limited"),), (("C", "GB"),)),
        ),
    ],
)
def test_rfc4514_examples(text: str, expected: tuple[object, ...]) -> None:
    assert parse_dn(text) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("cn=a\\,b", "a,b"),
        ("cn=a\\+b", "a+b"),
        ('cn=a\\"b', 'a"b'),
        ("cn=a\\\\b", "a\\b"),
        ("cn=a\\<b\\>", "a<b>"),
        ("cn=a\\;b", "a;b"),
        ("cn=a\\=b", "a=b"),
        ("cn=a=b", "a=b"),
        ("cn=\\ lead", " lead"),
        ("cn=trail\\ ", "trail "),
        ("cn=\\#hash", "#hash"),
        ("cn=in#side", "in#side"),
        ("cn=\\c3\\a9t\\C3\\A9", "été"),
        ('cn="quoted, value"', "quoted, value"),
        ("cn=", ""),
        ("cn=#3082", "#3082"),  # not a BER string: kept as written
        ("cn=#0c03c3a963", "éc"),  # UTF8String
    ],
)
def test_escapes(text: str, value: str) -> None:
    assert parse_dn(text) == ((("cn", value),),)


def test_spaces_around_separators_are_tolerated() -> None:
    assert parse_dn(" cn = John Smith , dc = example ,dc=com ") == (
        (("cn", "John Smith"),),
        (("dc", "example"),),
        (("dc", "com"),),
    )
    assert parse_dn("cn = a + sn = b , dc=x") == ((("cn", "a"), ("sn", "b")), (("dc", "x"),))
    assert parse_dn("cn=x\\  ,dc=y") == ((("cn", "x "),), (("dc", "y"),))


def test_semicolon_separator_and_oid_types() -> None:
    assert parse_dn("cn=a;dc=b") == ((("cn", "a"),), (("dc", "b"),))
    assert parse_dn("2.5.4.3=a") == ((("2.5.4.3", "a"),),)
    assert parse_dn("OID.2.5.4.3=a") == ((("2.5.4.3", "a"),),)


@pytest.mark.parametrize(
    "bad",
    [
        "cn",
        "=a",
        "cn=a,",
        ",cn=a",
        "cn=a,,dc=b",
        "c n=a",
        "1cn=a",
        "cn=a\\",
        "cn=a\\zz",
        "cn=a\\4",
        "cn=\\ff\\fe",
        "cn=a<b",
        'cn=a"b',
        "cn=#123",
        "cn=#zz",
        'cn="unterminated',
        "cn=a+",
        "cn_x=a",
    ],
)
def test_malformed(bad: str) -> None:
    with pytest.raises(DNError):
        parse_dn(bad)


def test_format_escapes() -> None:
    assert escape_value(" a,b+c ") == "\\ a\\,b\\+c\\ "
    assert escape_value("#x") == "\\#x"
    assert escape_value('a"b\\c<d>e;f') == 'a\\"b\\\\c\\<d\\>e\\;f'
    assert escape_value("nul\x00") == "nul\\00"
    assert escape_value("plain text=ok") == "plain text=ok"
    dn = ((("cn", "Smith, John"), ("uid", "js")), (("dc", "example"),))
    assert format_dn(dn) == "cn=Smith\\, John+uid=js,dc=example"


def test_parent() -> None:
    dn = parse_dn("cn=a,ou=b,dc=c")
    assert parent(dn) == parse_dn("ou=b,dc=c")
    assert parent(parse_dn("dc=c")) == ()


_types = st.sampled_from(["cn", "ou", "dc", "uid", "2.5.4.3", "sn"])
_values = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=12,
)
_dns = st.lists(
    st.lists(st.tuples(_types, _values), min_size=1, max_size=3).map(tuple),
    max_size=4,
).map(tuple)


@given(_dns)
def test_format_parse_round_trip(dn: tuple[tuple[tuple[str, str], ...], ...]) -> None:
    assert parse_dn(format_dn(dn)) == dn
