"""Schema layer: bundled files, lookups, SUP inheritance, matching rules, DN normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from oba.protocol.dn import DNError, parse_dn
from oba.schema import (
    DEFAULT_FILES,
    AttributeUsage,
    InvalidValue,
    ObjectClassKind,
    Schema,
    SchemaError,
    UndefinedAttribute,
    default_schema_files,
    parse_attribute_type,
    parse_object_class,
    parse_schema_text,
)


@pytest.fixture(scope="module")
def schema() -> Schema:
    return Schema.default()


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", DEFAULT_FILES)
def test_every_bundled_file_parses(name: str) -> None:
    (path,) = [p for p in default_schema_files() if p.name == name]
    assert parse_schema_text(path.read_text(encoding="utf-8"), name)


def test_default_is_cached_and_complete(schema: Schema) -> None:
    assert Schema.default() is schema
    for attr in [
        "createTimestamp", "modifyTimestamp", "creatorsName", "modifiersName",
        "subschemaSubentry", "structuralObjectClass", "entryDN", "hasSubordinates",
        "entryUUID", "namingContexts", "supportedLDAPVersion", "supportedControl",
        "supportedExtension", "supportedFeatures", "supportedSASLMechanisms", "vendorName",
        "vendorVersion", "altServer", "attributeTypes", "objectClasses", "ldapSyntaxes",
        "matchingRules", "matchingRuleUse", "obaDisabled", "memberOf", "pwdChangedTime",
        "pwdAccountLockedTime", "pwdFailureTime", "pwdHistory", "pwdReset", "uidNumber",
        "mail", "displayName", "memberUid",
    ]:  # fmt: skip
        assert schema.attribute(attr) is not None, attr
    for oc in [
        "top", "subschema", "extensibleObject", "dcObject", "uidObject", "labeledURIObject",
        "person", "organizationalPerson", "inetOrgPerson", "posixAccount", "posixGroup",
        "shadowAccount", "groupOfNames", "groupOfUniqueNames", "organizationalUnit", "domain",
        "account", "obaAccount",
    ]:  # fmt: skip
        assert schema.object_class(oc) is not None, oc


def test_every_referenced_rule_and_syntax_is_known(schema: Schema) -> None:
    syntaxes = {s.oid for s in schema.syntaxes()}
    for at in schema.attribute_types():
        for rule in (at.equality, at.ordering, at.substr):
            if rule is not None:
                assert schema.matching_rule(rule) is not None, (at.name, rule)
        if at.syntax is not None:
            assert at.syntax in syntaxes, (at.name, at.syntax)


def test_load_from_paths(tmp_path: Path) -> None:
    extra = tmp_path / "extra.schema"
    extra.write_text(
        "# a test schema\n"
        "objectidentifier TestRoot 1.3.6.1.4.1.99999.9\n"
        "attributetype ( TestRoot:1 NAME 'testAttr'\n"
        "\tSUP name SINGLE-VALUE )\n"
        "objectclass ( TestRoot:2 NAME 'testClass' SUP top AUXILIARY MAY testAttr )\n",
        encoding="utf-8",
    )
    s = Schema.load([*default_schema_files(), extra])
    at = s.attribute("testattr")
    assert at is not None and at.oid == "1.3.6.1.4.1.99999.9.1"
    assert s.equality("testAttr") is s.equality("name")
    assert s.may("testClass") == {"testAttr"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "attributetype ( 1.2.3 NAME 'x' )",
            "x.schema:1: attribute type 1.2.3 needs SUP or SYNTAX",
        ),
        ("\n\nattributetype ( 1.2.3 NAME 'x' SYNTAX 1.2 BOGUS )", "x.schema:3: unknown keyword"),
        ("attributetype ( 1.2.3 NAME 'x' SYNTAX 1.2", "x.schema:1: unexpected end"),
        ("objectclass ( 1.2.3 NAME 'x' MUST ( a b ) )", "x.schema:1: expected '$' or ')'"),
        ("objectklass ( 1.2.3 )", "x.schema:1: unknown directive"),
        ("  ( 1.2.3 )", "x.schema:1: continuation line"),
        ("attributetype ( foo NAME 'x' SYNTAX 1.2 )", "x.schema:1: invalid OID"),
        ("attributetype ( 1.2 NAME 'x' SYNTAX 1.2 SINGLE-VALUE SINGLE-VALUE )", "given twice"),
        ("attributetype ( 1.2 NAME 'x' SYNTAX 1.2 USAGE nobody )", "invalid USAGE"),
    ],
)
def test_parse_errors_carry_file_and_line(text: str, message: str) -> None:
    with pytest.raises(
        SchemaError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")
    ):
        parse_schema_text(text, "x.schema")


def test_consistency_errors() -> None:
    core = parse_schema_text(default_schema_files()[0].read_text(encoding="utf-8"))
    with pytest.raises(SchemaError, match="unknown SUP"):
        Schema([*core, parse_attribute_type("( 1.9 NAME 'y' SUP nothing )")])
    with pytest.raises(SchemaError, match="defined twice"):
        Schema([*core, parse_attribute_type("( 1.9 NAME 'CN' SYNTAX 1.2 )")])
    with pytest.raises(SchemaError, match="unknown attribute type"):
        Schema([*core, parse_object_class("( 1.9 NAME 'z' MUST nope )")])


# --------------------------------------------------------------------------- descriptions


def test_parse_and_describe_attribute_type() -> None:
    text = (
        "( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'it''s' SUP name EQUALITY caseIgnoreMatch "
        "SYNTAX 1.3.6.1.4.1.1466.115.121.1.15{64} SINGLE-VALUE COLLECTIVE NO-USER-MODIFICATION "
        "USAGE dSAOperation X-ORIGIN ( 'RFC 4519' 'test' ) )"
    ).replace("'it''s'", "'it\\27s'")
    at = parse_attribute_type(text)
    assert at.names == ("cn", "commonName")
    assert at.desc == "it's"
    assert at.syntax_len == 64
    assert at.single_value and at.collective and at.no_user_modification
    assert at.usage is AttributeUsage.DSA_OPERATION
    assert at.extensions == (("X-ORIGIN", ("RFC 4519", "test")),)
    assert parse_attribute_type(at.describe()) == at


def test_parse_and_describe_object_class(schema: Schema) -> None:
    oc = schema.object_class("inetorgperson")
    assert oc is not None and oc.kind is ObjectClassKind.STRUCTURAL
    assert parse_object_class(oc.describe()) == oc
    top = schema.object_class("top")
    assert top is not None and top.describe() == "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )"
    for at in schema.attribute_types():
        assert parse_attribute_type(at.describe()) == at
    for oc in schema.object_classes():
        assert parse_object_class(oc.describe()) == oc


def test_listings(schema: Schema) -> None:
    assert "( 1.3.6.1.4.1.1466.115.121.1.15 DESC 'Directory String' )" in [
        s.describe() for s in schema.syntaxes()
    ]
    assert "( 2.5.13.2 NAME 'caseIgnoreMatch' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )" in [
        r.describe() for r in schema.matching_rules()
    ]
    assert schema.syntax_descriptions() == [s.describe() for s in schema.syntaxes()]
    assert schema.matching_rule_descriptions() == [r.describe() for r in schema.matching_rules()]
    uses = schema.matching_rule_use_descriptions()
    assert any(u.startswith("( 2.5.13.14 NAME 'integerMatch' APPLIES (") for u in uses)


# --------------------------------------------------------------------------- lookups


def test_canonical_names(schema: Schema) -> None:
    assert schema.canonical("commonName") == "cn"
    assert schema.canonical("CN") == "cn"
    assert schema.canonical("2.5.4.3") == "cn"
    assert schema.canonical("OBJECTCLASS") == "objectClass"
    assert schema.canonical("userid") == "uid"
    assert schema.canonical("cn;lang-en") == "cn"
    assert schema.canonical("nonexistent") is None
    assert schema.attribute("nonexistent") is None
    assert schema.object_class("INETORGPERSON") is schema.object_class("2.16.840.1.113730.3.2.2")


def test_sup_inheritance(schema: Schema) -> None:
    sn = schema.attribute("sn")
    assert sn is not None and sn.equality is None
    eq, sub = schema.equality("sn"), schema.substr("surname")
    assert eq is not None and eq.name == "caseIgnoreMatch"
    assert sub is not None and sub.name == "caseIgnoreSubstringsMatch"
    assert schema.ordering("sn") is None
    assert schema.syntax("sn") == "1.3.6.1.4.1.1466.115.121.1.15"
    member = schema.equality("member")
    assert member is not None and member.name == "distinguishedNameMatch"
    assert set(schema.subtypes("name")) >= {"cn", "sn", "givenName", "ou"}
    c = schema.syntax("c")
    assert c == "1.3.6.1.4.1.1466.115.121.1.11"


def test_object_class_closure(schema: Schema) -> None:
    chain = [oc.name for oc in schema.superclasses("inetOrgPerson")]
    assert chain == ["inetOrgPerson", "organizationalPerson", "person", "top"]
    assert schema.must("inetOrgPerson") == {"cn", "sn", "objectClass"}
    assert {"mail", "uid", "telephoneNumber", "title", "userPassword"} <= schema.may(
        "inetOrgPerson"
    )
    assert schema.must("nope") == frozenset()


def test_operational_flags(schema: Schema) -> None:
    for name in ("createTimestamp", "entryUUID", "memberOf", "pwdFailureTime", "namingContexts"):
        at = schema.attribute(name)
        assert at is not None and at.operational, name
    dis = schema.attribute("obaDisabled")
    assert dis is not None and dis.single_value and not dis.operational
    mo = schema.attribute("memberOf")
    assert mo is not None and mo.oid == "1.2.840.113556.1.2.102"


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("attr", "value", "normalized"),
    [
        ("cn", b"  John   SMITH  ", b"john smith"),
        ("cn", b"a\tb", b"a b"),
        ("cn", b"   ", b" "),
        ("dc", b"", b""),
        ("cn", "  ÉCOLE  Straße ".encode(), "école strasse".encode()),
        ("cn", "\uff26\uff55\uff4c\uff4c".encode(), b"full"),  # fullwidth: NFKC
        ("labeledURI", b" http://X  y ", b"http://X y"),  # caseExactMatch
        ("dc", b"Example", b"example"),  # caseIgnoreIA5Match
        ("homeDirectory", b"/Home/X", b"/Home/X"),  # caseExactIA5Match
        ("uidNumber", b" 42 ", b"42"),
        ("uidNumber", b"-7", b"-7"),
        ("createTimestamp", b"20240102030405Z", b"20240102030405Z"),
        ("createTimestamp", b"202401020304-0130", b"20240102043400Z"),
        ("createTimestamp", b"2024010203Z", b"20240102030000Z"),
        ("createTimestamp", b"20240102030405.500+0100", b"20240102020405.5Z"),
        ("createTimestamp", b"2024010203,25Z", b"20240102031500Z"),
        ("createTimestamp", b"20241231235960Z", b"20241231235959Z"),  # leap second
        ("x121Address", b"12 34 5", b"12345"),
        ("telephoneNumber", b"+1 555-123 4567", b"+15551234567"),
        ("userPassword", b"  Secret ", b"  Secret "),
        ("objectClass", b"InetOrgPerson", b"2.16.840.1.113730.3.2.2"),
        ("objectClass", b"2.5.6.0", b"2.5.6.0"),
        ("objectClass", b"unknownThing", b"unknownthing"),
        ("obaDisabled", b"true", b"TRUE"),
        (
            "entryUUID",
            b"6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
            b"6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        ),
        ("x500UniqueIdentifier", b"'0101'B", b"'0101'B"),
        ("postalAddress", b"1 Main  St$Springfield", b"1 main st$springfield"),
        ("member", b"CN=John  Smith, DC=Example", b"cn=john smith,dc=example"),
        (
            "uniqueMember",
            b"CN=A,DC=Example#'0101'B",
            b"cn=a,dc=example#'0101'B",
        ),
        ("attributeTypes", b"( 2.5.4.3 NAME 'cn' SUP name )", b"2.5.4.3"),
        ("attributeTypes", b"cn", b"2.5.4.3"),
        ("dITStructureRules", b"( 7 NAME 'x' FORM y )", b"7"),
        ("jpegPhoto", b"\xff\xd8", b"\xff\xd8"),  # no equality rule: octets as they are
    ],
)
def test_normalize(schema: Schema, attr: str, value: bytes, normalized: bytes) -> None:
    assert schema.normalize(attr, value) == normalized


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("description", b""),
        ("labeledURI", b""),
        ("uidNumber", b"abc"),
        ("uidNumber", b"1_000"),
        ("uidNumber", b"0042"),
        ("uidNumber", b"+5"),
        ("uidNumber", b"-0"),
        ("createTimestamp", b"20241302030405Z"),
        ("createTimestamp", b"20240102030405"),
        ("createTimestamp", b"yesterday"),
        ("createTimestamp", b"20240102030461Z"),
        ("dc", "exämple".encode()),
        ("cn", b"\xff\xfe"),
        ("x121Address", b"12a"),
        ("obaDisabled", b"yes"),
        ("entryUUID", b"not-a-uuid"),
        ("x500UniqueIdentifier", b"0101"),
        ("member", b"not a dn"),
        ("member", b"bogusAttr=x,dc=example"),
        ("objectClass", b"1.2.x"),
    ],
)
def test_invalid_values(schema: Schema, attr: str, value: bytes) -> None:
    with pytest.raises(InvalidValue):
        schema.normalize(attr, value)


def test_undefined_attribute(schema: Schema) -> None:
    with pytest.raises(UndefinedAttribute) as info:
        schema.normalize("noSuchAttr", b"x")
    assert isinstance(info.value, KeyError)
    assert "noSuchAttr" in str(info.value)


def test_ordering_rules(schema: Schema) -> None:
    integer = schema.ordering("uidNumber")
    assert integer is not None
    assert integer.compare(b"9", b"10") < 0
    assert integer.compare(b"-5", b"-6") > 0
    assert integer.compare(b"7", b"7") == 0
    gt = schema.ordering("createTimestamp")
    assert gt is not None
    a = gt.normalize(b"20240101000000Z")
    b = gt.normalize(b"20240101000000.5Z")
    c = gt.normalize(b"20240101010000+0200")  # = 2023-12-31 23:00 UTC
    assert gt.compare(a, b) < 0 < gt.compare(b, a)
    assert gt.compare(c, a) < 0
    ci = schema.ordering("dnQualifier")
    assert ci is not None and ci.compare(ci.normalize(b"ABC"), ci.normalize(b"abd")) < 0


def test_substring_matching(schema: Schema) -> None:
    rule = schema.substr("cn")
    assert rule is not None
    value = rule.normalize(b"  John   Q.  SMITH ")
    comp = rule.normalize_component
    assert rule.match_substrings(value, comp(b"JOHN"), [], None)
    assert rule.match_substrings(value, None, [comp(b"q.")], comp(b"smith"))
    assert rule.match_substrings(value, comp(b"john "), [], None)
    assert not rule.match_substrings(rule.normalize(b"Johnny"), comp(b"john "), [], None)
    assert not rule.match_substrings(value, comp(b"smith"), [], None)
    assert not rule.match_substrings(value, None, [comp(b"smith"), comp(b"john")], None)
    # initial and final must not overlap
    assert not rule.match_substrings(b"abc", b"ab", [], b"bc")
    tel = schema.substr("telephoneNumber")
    assert tel is not None
    assert tel.match_substrings(tel.normalize(b"+1 555-123"), None, [tel.normalize(b"5-1")], None)
    ia5 = schema.substr("mail")
    assert ia5 is not None
    assert ia5.match_substrings(
        ia5.normalize(b"A@Example.COM"), None, [], ia5.normalize(b"example.com")
    )


# --------------------------------------------------------------------------- DNs


@pytest.mark.parametrize(
    ("dn", "normalized"),
    [
        ("CN=John  Smith+uid=JS, DC=Example,dc=COM", "cn=john smith+uid=js,dc=example,dc=com"),
        ("uid=JS+CN=John Smith,dc=example,dc=com", "cn=john smith+uid=js,dc=example,dc=com"),
        ("commonName=X,2.5.4.11=People,domainComponent=org", "cn=x,ou=people,dc=org"),
        ("", ""),
        ("cn=Smith\\, John,dc=x", "cn=smith\\, john,dc=x"),
        ("cn=\\20lead,dc=x", "cn=lead,dc=x"),
        ("cn=#04024869,dc=x", "cn=hi,dc=x"),
        ("uidNumber=100,dc=x", "uidnumber=100,dc=x"),
        ("cn=\\c3\\89t\\c3\\a9,dc=x", "cn=été,dc=x"),
    ],
)
def test_normalize_dn(schema: Schema, dn: str, normalized: str) -> None:
    assert schema.normalize_dn(dn) == normalized
    assert schema.normalize_dn(parse_dn(dn)) == normalized


@pytest.mark.parametrize("bad", ["cn=x,bogus=y", "cn=x,,dc=y", "uidNumber=abc"])
def test_normalize_dn_errors(schema: Schema, bad: str) -> None:
    with pytest.raises(DNError):
        schema.normalize_dn(bad)
