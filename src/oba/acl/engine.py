"""The ACL evaluator: an ``AclDocument`` compiled against the schema, asked one question at a time.

Rules for this module:
- Rules are tried in order; the first rule whose target+scope, subject, right and attribute all
  match decides (allow, or deny when ``deny: true``); when none does, ``defaultPolicy`` decides.
- A rule with no ``attributes`` (or ``*``) covers every attribute and the entry itself; a rule
  naming attributes covers only those attributes, never the entry-level question (``attr=None``:
  may the entry be seen, added, deleted, renamed?).
- Subjects: ``anonymous`` (no bind DN), ``authenticated`` (any bind DN), ``self`` (bind DN ==
  target DN), ``*`` (everyone), a DN, a DN pattern with ``*`` as a whole RDN value, and
  ``group:<DN>`` (the members of that group, looked up through the ``GroupResolver`` given to
  each call). DNs compare in normalised form (case-insensitive, schema-aware).
- Pure decisions: no I/O here (group members come from the caller's resolver); the root DN
  bypass and the built-in default policy live in ``oba.directory.access``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oba.acl.document import GROUP_PREFIX, AclDocument, AclRule
from oba.protocol.dn import DN, DNError, parse_dn
from oba.schema import InvalidValue, Schema, UndefinedAttribute
from oba.storage.lmdbstore import parent_ndn

RIGHTS = ("read", "write", "add", "delete", "search", "compare")
GroupResolver = Callable[[str], frozenset[str]]  # group ndn -> member ndns


@dataclass(frozen=True, slots=True)
class Decision:
    """An access decision: ``rule_index`` is None when the default policy decided."""

    allowed: bool
    rule_index: int | None
    rule: AclRule | None
    reason: str


def _no_groups(_: str) -> frozenset[str]:
    return frozenset()


@dataclass(frozen=True, slots=True)
class _Compiled:
    index: int
    rule: AclRule
    target: str | None  # normalised DN; None = every entry
    scope: str  # base | one | subtree
    kind: str  # anonymous | authenticated | self | * | dn | pattern | group
    subject: str  # normalised DN (dn, group)
    pattern: tuple[tuple[frozenset[str], str | None], ...]  # per RDN: types, normalised RDN
    rights: frozenset[str]
    attrs: frozenset[str] | None  # lower-case canonical names; None = all (and the entry)
    deny: bool


class AclEngine:
    """A compiled ACL document."""

    def __init__(self, document: AclDocument, schema: Schema) -> None:
        self.document = document
        self.schema = schema
        self.default_allow = document.defaultPolicy == "allow"
        self.rules = [self._compile(i, r) for i, r in enumerate(document.rules)]

    # ------------------------------------------------------------------ compile

    def _ndn(self, dn: str | DN) -> str:
        return self.schema.normalize_dn(dn)

    def _rdn_norm(self, rdn: tuple[tuple[str, str], ...]) -> str:
        return self.schema.normalize_dn((rdn,))

    def _compile(self, index: int, rule: AclRule) -> _Compiled:
        target = None if rule.target == "*" else self._ndn(rule.target)
        scope = "one" if rule.scope in ("one", "onelevel") else rule.scope
        subject = rule.subject
        kind, norm = subject, ""
        pattern: tuple[tuple[frozenset[str], str | None], ...] = ()
        if subject.startswith(GROUP_PREFIX):
            kind, norm = "group", self._ndn(subject[len(GROUP_PREFIX):])
        elif subject not in ("anonymous", "authenticated", "self", "*"):
            dn = parse_dn(subject)
            if any(v == "*" for rdn in dn for _, v in rdn):
                kind = "pattern"
                parts = []
                for rdn in dn:
                    types = frozenset((self.schema.canonical(t) or t).lower() for t, _ in rdn)
                    wild = any(v == "*" for _, v in rdn)
                    parts.append((types, None if wild else self._rdn_norm(rdn)))
                pattern = tuple(parts)
            else:
                kind, norm = "dn", self._ndn(dn)
        rights = frozenset(RIGHTS) if "all" in rule.rights else frozenset(rule.rights)
        names = [a for a in rule.attributes if a != "*"]
        attrs = None
        if names and "*" not in rule.attributes:
            attrs = frozenset(
                (self.schema.canonical(a.split(";", 1)[0]) or a).lower() for a in names
            )
        return _Compiled(index, rule, target, scope, kind, norm, pattern, rights, attrs,
                         rule.deny)

    # ------------------------------------------------------------------ match

    def _target_matches(self, r: _Compiled, target_ndn: str) -> bool:
        if r.target is None:
            return True
        if r.scope == "base":
            return target_ndn == r.target
        if r.scope == "one":
            return bool(target_ndn) and parent_ndn(target_ndn) == r.target
        return target_ndn == r.target or target_ndn.endswith("," + r.target) or not r.target

    def _pattern_matches(self, r: _Compiled, bind_ndn: str) -> bool:
        try:
            dn = parse_dn(bind_ndn)
        except DNError:
            return False
        if len(dn) != len(r.pattern):
            return False
        for rdn, (types, norm) in zip(dn, r.pattern, strict=True):
            if norm is None:
                if frozenset(t.lower() for t, _ in rdn) != types:
                    return False
                continue
            try:
                if self._rdn_norm(rdn) != norm:
                    return False
            except (DNError, InvalidValue, UndefinedAttribute):
                return False
        return True

    def _subject_matches(self, r: _Compiled, bind_ndn: str, target_ndn: str,
                         groups: GroupResolver) -> bool:
        kind = r.kind
        if kind == "*":
            return True
        if kind == "anonymous":
            return not bind_ndn
        if kind == "authenticated":
            return bool(bind_ndn)
        if kind == "self":
            return bool(bind_ndn) and bind_ndn == target_ndn
        if not bind_ndn:
            return False
        if kind == "dn":
            return bind_ndn == r.subject
        if kind == "group":
            return bind_ndn in groups(r.subject)
        return self._pattern_matches(r, bind_ndn)

    def applicable(self, bind_ndn: str, target_ndn: str,
                   groups: GroupResolver = _no_groups) -> list[_Compiled]:
        """The rules whose target, scope and subject match (in order): reuse it for every
        attribute of one entry."""
        return [r for r in self.rules
                if self._target_matches(r, target_ndn)
                and self._subject_matches(r, bind_ndn, target_ndn, groups)]

    def decide_among(self, rules: list[_Compiled], right: str, attr: str | None) -> Decision:
        # a tagged description (cn;lang-en) is decided as its type
        key = attr.split(";", 1)[0].lower() if attr is not None else None
        for r in rules:
            if right not in r.rights:
                continue
            if r.attrs is not None and (key is None or key not in r.attrs):
                continue
            what = f"rule {r.index} ({r.rule.subject} on {r.rule.target}, scope {r.scope})"
            if r.deny:
                return Decision(False, r.index, r.rule, f"{what} denies {right}")
            return Decision(True, r.index, r.rule, f"{what} grants {right}")
        policy = "allow" if self.default_allow else "deny"
        return Decision(self.default_allow, None, None,
                        f"no rule matched: defaultPolicy {policy}")

    def decide(self, bind_ndn: str, target_ndn: str, right: str, attr: str | None = None,
               groups: GroupResolver = _no_groups) -> Decision:
        return self.decide_among(self.applicable(bind_ndn, target_ndn, groups), right, attr)

    @property
    def uses_groups(self) -> bool:
        return any(r.kind == "group" for r in self.rules)
