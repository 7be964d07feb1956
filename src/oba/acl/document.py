"""The ACL document: the original Oba's rules file format, parsed and validated.

Format (YAML): ``version`` (int >= 1), ``defaultPolicy`` (allow | deny; missing: deny),
``rules``: a list of ``{target, subject, scope, rights, attributes, deny}``. ``target`` is a
DN or ``*``; ``subject`` is ``anonymous``, ``authenticated``, ``self``, ``*``, a DN, a DN
pattern with ``*`` as a whole RDN value (``cn=*,ou=services,dc=example,dc=com``), or
``group:<DN>`` (the members of that groupOfNames / groupOfUniqueNames); ``scope`` is base, one
(alias onelevel) or subtree (default); ``rights`` a non-empty subset of read, write, add,
delete, search, compare, all; ``attributes`` attribute names (empty or ``*``: all).

Rules for this module: a document is only ever built through ``parse_acl``/``validate_acl``,
which report every problem (``rules[2].subject: ...``), never just the first. Documents fail
closed: a missing ``defaultPolicy`` means deny, and a document with no rules and no explicit
``defaultPolicy`` (an empty file, comments only, ``version: 1`` alone: what a truncated or
half-written file looks like) is refused everywhere (``open_by_omission``). Attribute names
and DN attribute types are checked against a schema when one is given. There is no evaluator
here: deciding access is ``oba.acl.engine``'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oba.protocol.dn import DNError, parse_dn
from oba.schema import Schema

Right = Literal["read", "write", "add", "delete", "search", "compare", "all"]
AclScope = Literal["base", "one", "onelevel", "subtree"]
Policy = Literal["allow", "deny"]
SPECIAL_SUBJECTS = frozenset({"anonymous", "authenticated", "self", "*"})
GROUP_PREFIX = "group:"
EMPTY_DOCUMENT_ERROR = (
    "<document>: no rules and no defaultPolicy: an empty ACL document is refused (an empty, "
    "comment-only or half-written file must never change access); write defaultPolicy: deny "
    "(or allow) explicitly to mean it"
)


class AclError(ValueError):
    """An invalid ACL document; ``errors`` lists every problem as ``path: message``."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def _check_dn(value: str, what: str, pattern: bool) -> str:
    try:
        dn = parse_dn(value)
    except DNError as exc:
        raise ValueError(f"invalid {what} DN {value!r}: {exc}") from None
    if not dn:
        raise ValueError(f"{what} must not be empty")
    if not pattern and any(v == "*" for rdn in dn for _, v in rdn):
        raise ValueError(f"{what} DN {value!r} may not use * (only subjects are patterns)")
    return value


class AclRule(BaseModel):
    """One rule: who (subject) may do what (rights) to which entries (target, scope)."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="DN the rule applies to, or * for every entry.")
    subject: str = Field(
        description="anonymous, authenticated, self, *, a DN, a DN pattern with * values, or "
        "group:<DN> (members of a groupOfNames / groupOfUniqueNames)."
    )
    scope: AclScope = Field(default="subtree", description="base, one (onelevel) or subtree.")
    rights: list[Right] = Field(min_length=1, description="Rights granted (or denied).")
    attributes: list[str] = Field(
        default_factory=list, description="Attributes covered; empty or * means all."
    )
    deny: bool = Field(default=False, description="Deny the rights instead of granting them.")

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        value = value.strip()
        return value if value == "*" else _check_dn(value, "target", pattern=False)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in SPECIAL_SUBJECTS:
            return value.lower()
        if value[:6].lower() == GROUP_PREFIX:
            return GROUP_PREFIX + _check_dn(value[6:].strip(), "group", pattern=False)
        return _check_dn(value, "subject", pattern=True)

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != "*" and not _is_attr_name(name):
                raise ValueError(f"invalid attribute name {name!r}")
        return value


def _is_attr_name(name: str) -> bool:
    if not name or not (name[0].isascii() and (name[0].isalpha() or name[0].isdigit())):
        return False
    return all(c.isascii() and (c.isalnum() or c in "-.;") for c in name)


class AclDocument(BaseModel):
    """A whole ACL file."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=1, ge=1, description="Format version (1).")
    defaultPolicy: Policy = Field(default="deny",
                                  description="When no rule matches (missing: deny).")
    rules: list[AclRule] = Field(default_factory=list, description="Ordered; first match wins.")


def open_by_omission(doc: AclDocument) -> bool:
    """True for a document with no rules and no explicit ``defaultPolicy``: refused wherever a
    document is loaded or set (it is what an empty or truncated file parses to)."""
    return not doc.rules and "defaultPolicy" not in doc.model_fields_set


def check_document(doc: AclDocument) -> AclDocument:
    """``doc``, or ``AclError`` when it may not be put in force (see ``open_by_omission``)."""
    if open_by_omission(doc):
        raise AclError([EMPTY_DOCUMENT_ERROR])
    return doc


def _schema_problems(doc: AclDocument, schema: Schema) -> list[str]:
    problems: list[str] = []
    for i, rule in enumerate(doc.rules):
        for name in rule.attributes:
            if name != "*" and schema.attribute(name.split(";", 1)[0]) is None:
                problems.append(f"rules[{i}].attributes: undefined attribute type {name!r}")
        for field_name, value in (("target", rule.target), ("subject", rule.subject)):
            if value == "*" or value in SPECIAL_SUBJECTS:
                continue
            if value.startswith(GROUP_PREFIX):
                value = value[len(GROUP_PREFIX):]
            for rdn in parse_dn(value):
                for attr, _ in rdn:
                    if schema.attribute(attr) is None:
                        problems.append(
                            f"rules[{i}].{field_name}: undefined attribute type {attr!r}"
                        )
    return problems


def validate_acl(data: object, schema: Schema | None = None) -> AclDocument:
    """Build a document from parsed YAML/JSON data; raises ``AclError`` listing every problem."""
    if not isinstance(data, Mapping):
        raise AclError(["the ACL document must be a mapping (version, defaultPolicy, rules)"])
    try:
        doc = AclDocument.model_validate(dict(data))
    except ValidationError as exc:
        raise AclError([_format(err) for err in exc.errors()]) from None
    if schema is not None:
        problems = _schema_problems(doc, schema)
        if problems:
            raise AclError(problems)
    return check_document(doc)


def validate_rule(data: object, schema: Schema | None = None) -> AclRule:
    """One rule, validated like a rule of a document (errors name ``rule.<field>``)."""
    try:
        rule = AclRule.model_validate(data)
    except ValidationError as exc:
        raise AclError([_format(err, "rule") for err in exc.errors()]) from None
    if schema is not None:
        problems = _schema_problems(AclDocument(rules=[rule]), schema)
        if problems:
            raise AclError([p.replace("rules[0]", "rule") for p in problems])
    return rule


def _format(err: Any, prefix: str = "") -> str:
    parts: list[str] = [prefix] if prefix else []
    for item in err["loc"]:
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            else:
                parts.append(f"[{item}]")
        else:
            parts.append(str(item))
    message = str(err["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{'.'.join(parts) or '<document>'}: {message}"


def parse_acl(text: str, schema: Schema | None = None) -> AclDocument:
    """Parse and validate YAML text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AclError([f"invalid YAML: {exc}"]) from None
    return validate_acl(data if data is not None else {}, schema)


def load_acl(path: str | Path, schema: Schema | None = None) -> AclDocument:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AclError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse_acl(text, schema)


def dump_acl(doc: AclDocument) -> str:
    """YAML text of a document (round-trips through ``parse_acl``)."""
    return yaml.safe_dump(doc.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
