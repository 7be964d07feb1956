"""Property tests of the LDAP codec: round trips, a differential check against asn1tools
compiled from the RFC 4511 ASN.1 module, and fuzzing of the stream decoder."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import asn1tools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oba.protocol.codec import LDAPDecoder, ProtocolError, decode_message, encode_message
from oba.protocol.messages import (
    AbandonRequest,
    AddRequest,
    AddResponse,
    And,
    Approx,
    BindRequest,
    BindResponse,
    CompareRequest,
    CompareResponse,
    Control,
    DelRequest,
    DelResponse,
    Deref,
    Equality,
    ExtendedRequest,
    ExtendedResponse,
    Extensible,
    Filter,
    GreaterOrEqual,
    IntermediateResponse,
    LDAPMessage,
    LDAPResult,
    LessOrEqual,
    ModifyDNRequest,
    ModifyDNResponse,
    ModifyRequest,
    ModifyResponse,
    ModOp,
    Not,
    Or,
    Present,
    Scope,
    SearchRequest,
    SearchResultDone,
    SearchResultEntry,
    SearchResultReference,
    Substrings,
    UnbindRequest,
)
from oba.protocol.resultcodes import ResultCode

HERE = Path(__file__).parent
ASN1_MODULE = HERE / "asn1" / "rfc4511.asn"
SEEDS = sorted(p.read_bytes() for p in (HERE / "fuzz_seeds").glob("*.ber"))

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def asn1_result_codes() -> dict[str, int]:
    text = ASN1_MODULE.read_text()
    block = text[text.index("LDAPResult ::=") : text.index("matchedDN")]
    return {name: int(num) for name, num in re.findall(r"(\w+)\s+\((\d+)\)", block)}


# ------------------------------------------------------------------------------ strategies

texts = st.text(st.characters(codec="utf-8"), max_size=12)
blobs = st.binary(max_size=24)
uints = st.integers(min_value=0, max_value=2**31 - 1)


def _result_codes(names_only: bool) -> st.SearchStrategy[ResultCode | int]:
    named = st.sampled_from(sorted(asn1_result_codes().values()))
    if names_only:
        return named.map(lambda c: ResultCode(c) if c in ResultCode._value2member_map_ else c)
    return st.one_of(st.sampled_from(list(ResultCode)), uints)


def _leaf_filters() -> st.SearchStrategy[Filter]:
    ava = st.tuples(texts, blobs)
    return st.one_of(
        ava.map(lambda a: Equality(*a)),
        ava.map(lambda a: GreaterOrEqual(*a)),
        ava.map(lambda a: LessOrEqual(*a)),
        ava.map(lambda a: Approx(*a)),
        texts.map(Present),
        st.builds(
            Substrings,
            texts,
            st.none() | blobs,
            st.lists(blobs, max_size=3).map(tuple),
            st.none() | blobs,
        ).filter(lambda f: f.initial is not None or f.any or f.final is not None),
        st.builds(Extensible, st.none() | texts, st.none() | texts, blobs, st.booleans()),
    )


filters: st.SearchStrategy[Filter] = st.recursive(
    _leaf_filters(),
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda fs: And(tuple(fs))),
        st.lists(children, max_size=4).map(lambda fs: Or(tuple(fs))),
        children.map(Not),
    ),
    max_leaves=12,
)

attributes = st.lists(st.tuples(texts, st.lists(blobs, max_size=3).map(tuple)), max_size=4).map(
    tuple
)


def _results(names_only: bool) -> st.SearchStrategy[LDAPResult]:
    return st.builds(
        LDAPResult,
        _result_codes(names_only),
        texts,
        texts,
        st.lists(texts, max_size=2).map(tuple),
    )


def _ops(names_only: bool) -> st.SearchStrategy[Any]:
    result = _results(names_only)
    opt_blob = st.none() | blobs
    opt_text = st.none() | texts
    return st.one_of(
        st.builds(BindRequest, st.integers(1, 127), texts, simple=blobs),
        st.builds(
            BindRequest,
            st.integers(1, 127),
            texts,
            sasl_mechanism=texts,
            sasl_credentials=opt_blob,
        ),
        st.builds(BindResponse, result, opt_blob),
        st.just(UnbindRequest()),
        st.builds(
            SearchRequest,
            texts,
            st.sampled_from(Scope),
            st.sampled_from(Deref),
            uints,
            uints,
            st.booleans(),
            filters,
            st.lists(texts, max_size=4).map(tuple),
        ),
        st.builds(SearchResultEntry, texts, attributes),
        st.builds(SearchResultReference, st.lists(texts, min_size=1, max_size=3).map(tuple)),
        st.builds(SearchResultDone, result),
        st.builds(
            ModifyRequest,
            texts,
            st.lists(
                st.tuples(st.sampled_from(ModOp), st.tuples(texts, st.lists(blobs, max_size=3))),
                max_size=4,
            ).map(lambda cs: tuple((op, (name, tuple(vals))) for op, (name, vals) in cs)),
        ),
        st.builds(ModifyResponse, result),
        st.builds(AddRequest, texts, attributes),
        st.builds(AddResponse, result),
        st.builds(DelRequest, texts),
        st.builds(DelResponse, result),
        st.builds(ModifyDNRequest, texts, texts, st.booleans(), opt_text),
        st.builds(ModifyDNResponse, result),
        st.builds(CompareRequest, texts, texts, blobs),
        st.builds(CompareResponse, result),
        st.builds(AbandonRequest, uints),
        st.builds(ExtendedRequest, texts, opt_blob),
        st.builds(ExtendedResponse, result, opt_text, opt_blob),
        st.builds(IntermediateResponse, opt_text, opt_blob),
    )


controls = st.lists(st.builds(Control, texts, st.booleans(), st.none() | blobs), max_size=3)


def messages(names_only: bool = False) -> st.SearchStrategy[LDAPMessage]:
    return st.builds(LDAPMessage, uints, _ops(names_only), controls.map(tuple))


# ------------------------------------------------------------------------------ round trip


@FAST
@given(messages())
def test_round_trip(msg: LDAPMessage) -> None:
    data = encode_message(msg)
    assert decode_message(data) == msg
    decoder = LDAPDecoder()
    decoder.feed(data + data)
    assert decoder.next_message() == msg
    assert decoder.next_message() == msg
    assert decoder.next_message() is None


# ------------------------------------------------------------------------------ asn1tools


@cache
def asn1_spec() -> Any:
    return asn1tools.compile_files(str(ASN1_MODULE), "ber")


SCOPES = ["baseObject", "singleLevel", "wholeSubtree", "subordinateSubtree"]
DEREFS = ["neverDerefAliases", "derefInSearching", "derefFindingBaseObj", "derefAlways"]
MOD_OPS = ["add", "delete", "replace", "increment"]


def _u(text: str) -> bytes:
    return text.encode("utf-8")


def _asn1_filter(f: Filter, defaults: bool) -> Any:
    if isinstance(f, And):
        return ("and", [_asn1_filter(x, defaults) for x in f.filters])
    if isinstance(f, Or):
        return ("or", [_asn1_filter(x, defaults) for x in f.filters])
    if isinstance(f, Not):
        return ("not", _asn1_filter(f.filter, defaults))
    if isinstance(f, Present):
        return ("present", _u(f.attr))
    if isinstance(f, Substrings):
        parts: list[tuple[str, bytes]] = []
        if f.initial is not None:
            parts.append(("initial", f.initial))
        parts.extend(("any", a) for a in f.any)
        if f.final is not None:
            parts.append(("final", f.final))
        return ("substrings", {"type": _u(f.attr), "substrings": parts})
    if isinstance(f, Extensible):
        ext: dict[str, Any] = {"matchValue": f.value}
        if f.matching_rule is not None:
            ext["matchingRule"] = _u(f.matching_rule)
        if f.attr is not None:
            ext["type"] = _u(f.attr)
        if f.dn_attributes or defaults:
            ext["dnAttributes"] = f.dn_attributes
        return ("extensibleMatch", ext)
    names = {
        Equality: "equalityMatch",
        GreaterOrEqual: "greaterOrEqual",
        LessOrEqual: "lessOrEqual",
        Approx: "approxMatch",
    }
    return (names[type(f)], {"attributeDesc": _u(f.attr), "assertionValue": f.value})


def _asn1_result(r: LDAPResult) -> dict[str, Any]:
    by_number = {v: k for k, v in asn1_result_codes().items()}
    out: dict[str, Any] = {
        "resultCode": by_number[int(r.code)],
        "matchedDN": _u(r.matched_dn),
        "diagnosticMessage": _u(r.message),
    }
    if r.referral:
        out["referral"] = [_u(u) for u in r.referral]
    return out


def _asn1_attrs(attrs: Any) -> list[dict[str, Any]]:
    return [{"type": _u(name), "vals": list(values)} for name, values in attrs]


def _optional(out: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    if value is not None:
        out[key] = _u(value) if isinstance(value, str) else value
    return out


def _asn1_op(op: Any, defaults: bool) -> tuple[str, Any]:
    if isinstance(op, BindRequest):
        if op.sasl_mechanism is not None:
            sasl = _optional(
                {"mechanism": _u(op.sasl_mechanism)}, "credentials", op.sasl_credentials
            )
            auth: Any = ("sasl", sasl)
        else:
            auth = ("simple", op.simple)
        return "bindRequest", {"version": op.version, "name": _u(op.name), "authentication": auth}
    if isinstance(op, BindResponse):
        return "bindResponse", _optional(
            _asn1_result(op.result), "serverSaslCreds", op.server_sasl_creds
        )
    if isinstance(op, UnbindRequest):
        return "unbindRequest", None
    if isinstance(op, SearchRequest):
        return "searchRequest", {
            "baseObject": _u(op.base),
            "scope": SCOPES[op.scope],
            "derefAliases": DEREFS[op.deref],
            "sizeLimit": op.size_limit,
            "timeLimit": op.time_limit,
            "typesOnly": op.types_only,
            "filter": _asn1_filter(op.filter, defaults),
            "attributes": [_u(a) for a in op.attributes],
        }
    if isinstance(op, SearchResultEntry):
        return "searchResEntry", {"objectName": _u(op.dn), "attributes": _asn1_attrs(op.attributes)}
    if isinstance(op, SearchResultReference):
        return "searchResRef", [_u(u) for u in op.uris]
    if isinstance(op, ModifyRequest):
        changes = [
            {"operation": MOD_OPS[mod], "modification": _asn1_attrs([attr])[0]}
            for mod, attr in op.changes
        ]
        return "modifyRequest", {"object": _u(op.dn), "changes": changes}
    if isinstance(op, AddRequest):
        return "addRequest", {"entry": _u(op.dn), "attributes": _asn1_attrs(op.attributes)}
    if isinstance(op, DelRequest):
        return "delRequest", _u(op.dn)
    if isinstance(op, ModifyDNRequest):
        body = {"entry": _u(op.dn), "newrdn": _u(op.new_rdn), "deleteoldrdn": op.delete_old_rdn}
        return "modDNRequest", _optional(body, "newSuperior", op.new_superior)
    if isinstance(op, CompareRequest):
        ava = {"attributeDesc": _u(op.attr), "assertionValue": op.value}
        return "compareRequest", {"entry": _u(op.dn), "ava": ava}
    if isinstance(op, AbandonRequest):
        return "abandonRequest", op.message_id
    if isinstance(op, ExtendedRequest):
        return "extendedReq", _optional({"requestName": _u(op.name)}, "requestValue", op.value)
    if isinstance(op, ExtendedResponse):
        out = _optional(_asn1_result(op.result), "responseName", op.name)
        return "extendedResp", _optional(out, "responseValue", op.value)
    if isinstance(op, IntermediateResponse):
        out = _optional({}, "responseName", op.name)
        return "intermediateResponse", _optional(out, "responseValue", op.value)
    simple_results = {
        SearchResultDone: "searchResDone",
        ModifyResponse: "modifyResponse",
        AddResponse: "addResponse",
        DelResponse: "delResponse",
        ModifyDNResponse: "modDNResponse",
        CompareResponse: "compareResponse",
    }
    return simple_results[type(op)], _asn1_result(op.result)


def to_asn1(msg: LDAPMessage, defaults: bool) -> dict[str, Any]:
    """The asn1tools value of ``msg``; ``defaults`` fills DEFAULT fields as a decoder does."""
    out: dict[str, Any] = {"messageID": msg.message_id, "protocolOp": _asn1_op(msg.op, defaults)}
    if msg.controls:
        controls = []
        for c in msg.controls:
            ctl: dict[str, Any] = {"controlType": _u(c.oid)}
            if c.critical or defaults:
                ctl["criticality"] = c.critical
            controls.append(_optional(ctl, "controlValue", c.value))
        out["controls"] = controls
    return out


@FAST
@given(messages(names_only=True))
def test_asn1tools_decodes_what_we_encode(msg: LDAPMessage) -> None:
    ours = encode_message(msg)
    assert asn1_spec().decode("LDAPMessage", ours) == to_asn1(msg, defaults=True)


@FAST
@given(messages(names_only=True))
def test_we_decode_what_asn1tools_encodes(msg: LDAPMessage) -> None:
    theirs = asn1_spec().encode("LDAPMessage", to_asn1(msg, defaults=False))
    assert decode_message(theirs) == msg
    # Both encoders use minimal definite lengths and omit DEFAULT values: same bytes.
    assert encode_message(msg) == theirs


# ------------------------------------------------------------------------------ fuzzing


def _drain(data: bytes, chunk: int) -> None:
    """Feed ``data`` in chunks; only messages or ProtocolError may come out."""
    decoder = LDAPDecoder(max_message_size=4096)
    try:
        for i in range(0, len(data), chunk):
            decoder.feed(data[i : i + chunk])
            while (msg := decoder.next_message()) is not None:
                assert isinstance(msg, LDAPMessage)
                assert decode_message(encode_message(msg)) == msg
    except ProtocolError as exc:
        assert exc.message_id is None or 0 <= exc.message_id <= 2**31 - 1


def test_seeds_are_valid() -> None:
    assert len(SEEDS) >= 20
    for seed in SEEDS:
        assert encode_message(decode_message(seed)) == seed


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 64))
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    _drain(data, chunk)
    _drain(b"\x30" + data, chunk)


@st.composite
def mutated_seeds(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if not data:
            break
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF, 0x30, 0xA0]))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[pos]
        elif kind == "truncate":
            del data[pos:]
        else:
            data.extend(bytes(data))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated_seeds(), st.integers(1, 64))
def test_fuzz_mutated_seeds(data: bytes, chunk: int) -> None:
    _drain(data, chunk)
    try:
        decode_message(data)
    except ProtocolError:
        pass
