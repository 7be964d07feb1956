"""Search filter string form (RFC 4515): parsing, leniency, errors, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oba.protocol.filter import MAX_FILTER_DEPTH, FilterError, format_filter, parse_filter
from oba.protocol.messages import (
    And,
    Approx,
    Equality,
    Extensible,
    Filter,
    GreaterOrEqual,
    LessOrEqual,
    Not,
    Or,
    Present,
    Substrings,
)

RFC4515_EXAMPLES: list[tuple[str, Filter]] = [
    ("(cn=Babs Jensen)", Equality("cn", b"Babs Jensen")),
    ("(!(cn=Tim Howes))", Not(Equality("cn", b"Tim Howes"))),
    (
        "(&(objectClass=Person)(|(sn=Jensen)(cn=Babs J*)))",
        And(
            (
                Equality("objectClass", b"Person"),
                Or((Equality("sn", b"Jensen"), Substrings("cn", b"Babs J", (), None))),
            )
        ),
    ),
    ("(o=univ*of*mich*)", Substrings("o", b"univ", (b"of", b"mich"), None)),
    ("(seeAlso=)", Equality("seeAlso", b"")),
    (
        "(cn:caseExactMatch:=Fred Flintstone)",
        Extensible("caseExactMatch", "cn", b"Fred Flintstone", False),
    ),
    ("(cn:=Betty Rubble)", Extensible(None, "cn", b"Betty Rubble", False)),
    ("(sn:dn:2.4.6.8.10:=Barney Rubble)", Extensible("2.4.6.8.10", "sn", b"Barney Rubble", True)),
    ("(o:dn:=Ace Industry)", Extensible(None, "o", b"Ace Industry", True)),
    ("(:1.2.3:=Wilma Flintstone)", Extensible("1.2.3", None, b"Wilma Flintstone", False)),
    ("(:DN:2.4.6.8.10:=Dino)", Extensible("2.4.6.8.10", None, b"Dino", True)),
    (
        "(o=Parens R Us \\28for all your parenthetical needs\\29)",
        Equality("o", b"Parens R Us (for all your parenthetical needs)"),
    ),
    ("(cn=*\\2A*)", Substrings("cn", None, (b"*",), None)),
    ("(filename=C:\\5cMyFile)", Equality("filename", b"C:\\MyFile")),
    ("(bin=\\00\\00\\00\\04)", Equality("bin", b"\x00\x00\x00\x04")),
    ("(sn=Lu\\c4\\8di\\c4\\87)", Equality("sn", "Lučić".encode())),
    ("(1.3.6.1.4.1.1466.0=\\04\\02\\48\\69)", Equality("1.3.6.1.4.1.1466.0", b"\x04\x02Hi")),
]


@pytest.mark.parametrize(("text", "expected"), RFC4515_EXAMPLES)
def test_rfc4515_examples(text: str, expected: Filter) -> None:
    assert parse_filter(text) == expected
    assert parse_filter(format_filter(expected)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(cn=*)", Present("cn")),
        ("(cn~=foo)", Approx("cn", b"foo")),
        ("(uidNumber>=100)", GreaterOrEqual("uidNumber", b"100")),
        ("(uidNumber<=100)", LessOrEqual("uidNumber", b"100")),
        ("(cn=*foo)", Substrings("cn", None, (), b"foo")),
        ("(cn=a*b*c)", Substrings("cn", b"a", (b"b",), b"c")),
        ("(cn;lang-en=x)", Equality("cn;lang-en", b"x")),
        ("(cn=Lučić)", Equality("cn", "Lučić".encode())),
        ("(&)", And(())),
        ("(|)", Or(())),
        # lenient forms accepted by ldapsearch
        ("cn=foo", Equality("cn", b"foo")),
        ("objectClass=*", Present("objectClass")),
        ("  (cn=foo)  ", Equality("cn", b"foo")),
        ("( & (a=1) (b=2) )", And((Equality("a", b"1"), Equality("b", b"2")))),
        ("(! (a=1))", Not(Equality("a", b"1"))),
        ("(cn=a\\*b)", Equality("cn", b"a*b")),
        ("(cn=foo )", Equality("cn", b"foo ")),
    ],
)
def test_other_forms(text: str, expected: Filter) -> None:
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "()",
        "(cn=foo",
        "(cn=foo))",
        "((cn=foo))",
        "(&(cn=foo)",
        "(cn=foo)(sn=bar)",
        "(cn=\\2)",
        "(cn=\\zz)",
        "(cn=a\\)",
        "(cn)",
        "(=foo)",
        "(cn>foo)",
        "(cn~=a*b)",
        "(cn>=*)",
        "(cn=**)",
        "(cn=a(b)",
        "(c n=foo)",
        "(:=foo)",
        "(cn:dn:=x*)",
        "(cn:a:b:c:=x)",
        "(!(a=1)(b=2))",
    ],
)
def test_malformed(bad: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(bad)


def test_depth_limit() -> None:
    ok = "(!" * (MAX_FILTER_DEPTH - 1) + "(cn=x)" + ")" * (MAX_FILTER_DEPTH - 1)
    parse_filter(ok)
    too_deep = "(!" * MAX_FILTER_DEPTH + "(cn=x)" + ")" * MAX_FILTER_DEPTH
    with pytest.raises(FilterError):
        parse_filter(too_deep)
    very_deep = "(&" * 1000 + "(cn=x)" + ")" * 1000
    with pytest.raises(FilterError):
        parse_filter(very_deep)


def test_format_escapes_specials_and_binary() -> None:
    assert format_filter(Equality("cn", b"a*(b)\\")) == "(cn=a\\2a\\28b\\29\\5c)"
    assert format_filter(Equality("x", b"\xff\x00a")) == "(x=\\ff\\00a)"
    assert format_filter(Equality("cn", "é".encode())) == "(cn=é)"


# --------------------------------------------------------------------------- round trip

_attrs = st.sampled_from(["cn", "sn", "objectClass", "2.5.4.3", "cn;lang-en", "uid"])
_vals = st.binary(max_size=10) | st.text(max_size=10).map(lambda s: s.encode("utf-8"))
_nonempty = _vals.filter(bool)
_leaves: st.SearchStrategy[Filter] = st.one_of(
    st.builds(Equality, _attrs, _vals),
    st.builds(GreaterOrEqual, _attrs, _vals),
    st.builds(LessOrEqual, _attrs, _vals),
    st.builds(Approx, _attrs, _vals),
    st.builds(Present, _attrs),
    st.builds(
        Substrings,
        _attrs,
        st.none() | _nonempty,
        st.lists(_nonempty, max_size=3).map(tuple),
        st.none() | _nonempty,
    ).filter(lambda s: bool(s.initial or s.any or s.final)),
    st.builds(
        Extensible,
        st.none() | st.sampled_from(["caseExactMatch", "2.5.13.2"]),
        st.none() | _attrs,
        _vals,
        st.booleans(),
    ).filter(lambda e: e.attr is not None or e.matching_rule is not None),
)
_filters = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda fs: And(tuple(fs))),
        st.lists(inner, max_size=3).map(lambda fs: Or(tuple(fs))),
        st.builds(Not, inner),
    ),
    max_leaves=10,
)


@given(_filters)
def test_round_trip(f: Filter) -> None:
    assert parse_filter(format_filter(f)) == f


@given(st.text(alphabet="()&|!=*~<>:\\ab0", max_size=30))
def test_garbage_never_crashes(text: str) -> None:
    try:
        parse_filter(text)
    except FilterError:
        pass
