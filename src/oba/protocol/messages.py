"""LDAP v3 message and filter objects (RFC 4511 section 4), independent of any encoding.

Rules for this module: plain frozen dataclasses, no behaviour beyond trivial helpers. The BER
codec (``codec.py``) turns bytes into these objects and back; the server and the tests build
and inspect them. Strings that the protocol defines as LDAPDN / LDAPString are ``str`` (UTF-8
decoded); attribute values and assertion values are ``bytes`` (they may be binary).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from oba.protocol.resultcodes import ResultCode

# --------------------------------------------------------------------------- filters


@dataclass(frozen=True, slots=True)
class And:
    filters: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    filters: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    filter: Filter


@dataclass(frozen=True, slots=True)
class Equality:
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Substrings:
    attr: str
    initial: bytes | None
    any: tuple[bytes, ...]
    final: bytes | None


@dataclass(frozen=True, slots=True)
class GreaterOrEqual:
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class LessOrEqual:
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Present:
    attr: str


@dataclass(frozen=True, slots=True)
class Approx:
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Extensible:
    matching_rule: str | None
    attr: str | None
    value: bytes
    dn_attributes: bool = False


Filter = (
    And
    | Or
    | Not
    | Equality
    | Substrings
    | GreaterOrEqual
    | LessOrEqual
    | Present
    | Approx
    | Extensible
)


# --------------------------------------------------------------------------- common parts


@dataclass(frozen=True, slots=True)
class Control:
    oid: str
    critical: bool = False
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class LDAPResult:
    code: ResultCode | int
    matched_dn: str = ""
    message: str = ""
    referral: tuple[str, ...] = ()


class Scope(IntEnum):
    BASE = 0
    ONE = 1
    SUB = 2
    SUBORDINATE = 3  # draft-sermersheim-ldap-subordinate-scope, sent by ldapsearch -s children


class Deref(IntEnum):
    NEVER = 0
    IN_SEARCHING = 1
    FINDING_BASE = 2
    ALWAYS = 3


class ModOp(IntEnum):
    ADD = 0
    DELETE = 1
    REPLACE = 2
    INCREMENT = 3  # RFC 4525


# An attribute as it travels: (type, values). Order of values is preserved.
Attribute = tuple[str, tuple[bytes, ...]]


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class BindRequest:
    version: int
    name: str
    # simple authentication: password bytes; SASL: (mechanism, credentials or None)
    simple: bytes | None = None
    sasl_mechanism: str | None = None
    sasl_credentials: bytes | None = None


@dataclass(frozen=True, slots=True)
class UnbindRequest:
    pass


@dataclass(frozen=True, slots=True)
class SearchRequest:
    base: str
    scope: Scope | int
    deref: Deref | int
    size_limit: int
    time_limit: int
    types_only: bool
    filter: Filter
    attributes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModifyRequest:
    dn: str
    changes: tuple[tuple[ModOp | int, Attribute], ...]


@dataclass(frozen=True, slots=True)
class AddRequest:
    dn: str
    attributes: tuple[Attribute, ...]


@dataclass(frozen=True, slots=True)
class DelRequest:
    dn: str


@dataclass(frozen=True, slots=True)
class ModifyDNRequest:
    dn: str
    new_rdn: str
    delete_old_rdn: bool
    new_superior: str | None = None


@dataclass(frozen=True, slots=True)
class CompareRequest:
    dn: str
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class AbandonRequest:
    message_id: int


@dataclass(frozen=True, slots=True)
class ExtendedRequest:
    name: str
    value: bytes | None = None


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class BindResponse:
    result: LDAPResult
    server_sasl_creds: bytes | None = None


@dataclass(frozen=True, slots=True)
class SearchResultEntry:
    dn: str
    attributes: tuple[Attribute, ...]


@dataclass(frozen=True, slots=True)
class SearchResultReference:
    uris: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchResultDone:
    result: LDAPResult


@dataclass(frozen=True, slots=True)
class ModifyResponse:
    result: LDAPResult


@dataclass(frozen=True, slots=True)
class AddResponse:
    result: LDAPResult


@dataclass(frozen=True, slots=True)
class DelResponse:
    result: LDAPResult


@dataclass(frozen=True, slots=True)
class ModifyDNResponse:
    result: LDAPResult


@dataclass(frozen=True, slots=True)
class CompareResponse:
    result: LDAPResult


@dataclass(frozen=True, slots=True)
class ExtendedResponse:
    result: LDAPResult
    name: str | None = None
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class IntermediateResponse:
    name: str | None = None
    value: bytes | None = None


ProtocolOp = (
    BindRequest
    | BindResponse
    | UnbindRequest
    | SearchRequest
    | SearchResultEntry
    | SearchResultDone
    | SearchResultReference
    | ModifyRequest
    | ModifyResponse
    | AddRequest
    | AddResponse
    | DelRequest
    | DelResponse
    | ModifyDNRequest
    | ModifyDNResponse
    | CompareRequest
    | CompareResponse
    | AbandonRequest
    | ExtendedRequest
    | ExtendedResponse
    | IntermediateResponse
)


@dataclass(frozen=True, slots=True)
class LDAPMessage:
    message_id: int
    op: ProtocolOp
    controls: tuple[Control, ...] = field(default=())


# Operations that get a response carrying an LDAPResult, by request type.
RESPONSE_FOR: dict[type, type] = {
    BindRequest: BindResponse,
    SearchRequest: SearchResultDone,
    ModifyRequest: ModifyResponse,
    AddRequest: AddResponse,
    DelRequest: DelResponse,
    ModifyDNRequest: ModifyDNResponse,
    CompareRequest: CompareResponse,
    ExtendedRequest: ExtendedResponse,
}
