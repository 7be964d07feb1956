"""Attribute options (oba.schema.options) and approximate matching (oba.schema.phonetic).

Rules: the Metaphone codes below are the ones slapd's ``phonetic()`` gives: these words, and
210 assertions against 60 stored surnames, were run as ``~=`` filters against slapd and matched
the same entries; the differential harness keeps checking a set of them
(differential/cases/approx.yaml).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from oba.directory.apply import ApplyContext, apply
from oba.directory.commands import AddCommand
from oba.directory.entry import Entry
from oba.directory.evaluate import compile_filter
from oba.protocol.messages import Approx, Equality, Filter, Present
from oba.schema import Schema
from oba.schema.options import Described, OptionError, describe, key_parts, wire_name
from oba.schema.phonetic import approx_keys, approx_match, metaphone
from oba.storage import Store
from oba.storage.indexes import eq_key, values_for_index

SCHEMA = Schema.default()


@pytest.mark.parametrize(("word", "code"), [
    ("Smith", "SM0"), ("Smyth", "SM0"), ("Smythe", "SM0"), ("John", "JN"), ("Jon", "JN"),
    ("Knight", "NKT"), ("nite", "NT"), ("Philip", "FLP"), ("Thompson", "0MPS"),
    ("tomson", "TMSN"), ("Xavier", "SFR"), ("Schmidt", "SKMT"), ("shmit", "XMT"),
    ("Robert", "RRT"),  # slapd codes B only as the last letter
    ("Liddell", "LTL"), ("Alice", "ALS"), ("O'Brien", "O"), ("3rd", ""), ("", ""),
    ("Wright", "RKT"), ("Whale", "WL"), ("Aeon", "EN"), ("Oxbow", "OKS"),
])
def test_metaphone_codes(word: str, code: str) -> None:
    assert metaphone(word) == code


@pytest.mark.parametrize(("value", "assertion", "hit"), [
    ("John Smyth", "jon smith", True),
    ("John Smyth", "smith john", False),       # in order
    ("John Smyth", "smyth", True),
    ("Pat  Smith", "4th", False),              # white space never makes an empty word
    ("Pat Smith 3rd", "4th", True),            # ... but a word of digits codes as ""
    ("Pat Smith", "pat,smith", True),          # an assertion word ends at punctuation
    ("Müller Straße", "muller strae", True),   # ü -> u; ß has no ASCII form: dropped
    ("Müller Straße", "muller strasse", False),
    ("Smith", "   ", False),                   # no word: no match
])
def test_approx_match(value: str, assertion: str, hit: bool) -> None:
    assert approx_match(value.encode(), assertion.encode()) is hit


def test_approx_keys_are_the_non_empty_word_codes() -> None:
    assert approx_keys(b"Jon  Smyth 3rd") == {"JN", "SM0"}
    assert approx_match(b"\xff", b"x") is False  # not UTF-8


def test_describe_options() -> None:
    assert describe(SCHEMA, "CN;Lang-EN;lang-de") == Described("cn", ("lang-de", "lang-en"),
                                                               False)
    tagged = describe(SCHEMA, "cn;lang-en")
    assert tagged is not None and tagged.key == "cn;lang-en"
    assert describe(SCHEMA, "userCertificate;binary") == Described("userCertificate", (), True)
    binary = describe(SCHEMA, "userCertificate;binary")
    assert binary is not None and binary.key == "userCertificate"
    assert describe(SCHEMA, "noSuchType;lang-en") is None
    for bad in ("cn;x-foo", "cn;binary", "userPassword;lang-en", "objectClass;lang-en",
                "userCertificate;lang-en", "cn;", "cn;lang en"):
        with pytest.raises(OptionError):
            describe(SCHEMA, bad)
    assert key_parts("cn;lang-de;lang-en") == ("cn", ("lang-de", "lang-en"))


@pytest.mark.parametrize("name", ["userCertificate", "cACertificate",
                                  "certificateRevocationList", "authorityRevocationList",
                                  "crossCertificatePair", "deltaRevocationList"])
def test_certificate_syntaxes_travel_with_binary(name: str) -> None:
    assert wire_name(SCHEMA, name) == name + ";binary"


def test_other_types_keep_their_name() -> None:
    assert wire_name(SCHEMA, "cn;lang-en") == "cn;lang-en"
    assert wire_name(SCHEMA, "jpegPhoto") == "jpegPhoto"


def test_filters_read_subtypes_and_tags() -> None:
    entry = Entry(1, "uid=a,dc=x", {"objectClass": [b"person"], "sn": [b"Smyth"],
                                    "cn;lang-en": [b"Alice L"]})

    def hit(flt: Filter) -> bool | None:
        return compile_filter(flt, SCHEMA)(entry)

    assert hit(Equality("cn", b"alice l")) is True
    assert hit(Equality("name", b"alice l")) is True
    assert hit(Equality("cn;lang-de", b"alice l")) is False
    assert hit(Present("cn")) is True and hit(Present("name;lang-en")) is True
    assert hit(Present("cn;lang-de")) is False
    assert hit(Equality("cn;x-foo", b"alice l")) is None  # an undefined description
    assert hit(Approx("sn", b"smith")) is True
    assert hit(Approx("name", b"smith")) is True
    assert hit(Approx("sn", b"jones")) is False


def test_tagged_values_are_indexed_under_their_type(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", SCHEMA, map_size=1 << 24)
    ctx = ApplyContext(SCHEMA, ("dc=x",))
    with store.write() as w:
        for dn, attrs in (("dc=x", {"objectClass": [b"domain"], "dc": [b"x"]}),
                          ("uid=a,dc=x", {"objectClass": [b"inetOrgPerson"], "uid": [b"a"],
                                          "cn": [b"A"], "cn;lang-en": [b"Alice L"],
                                          "sn": [b"L"]})):
            cmd = AddCommand(dn=dn, attributes=tuple((k, tuple(v)) for k, v in attrs.items()),
                             actor="cn=admin", time="20250101000000Z",
                             entry_uuid="00000000-0000-4000-8000-000000000001",
                             request_id="r")
            assert apply(w, cmd, ctx).code == 0
    with store.read() as r:
        entry = r.get_by_ndn("uid=a,dc=x")
        assert entry is not None and entry.attrs["cn;lang-en"] == [b"Alice L"]
        assert r.eq("cn", SCHEMA.normalize("cn", b"Alice L")) == [entry.id]
    assert list(values_for_index(entry.attrs, "cn", ["cn;lang-en"])) == [b"A", b"Alice L"]
    assert eq_key(b"x") == b"=x"
    store.close()
