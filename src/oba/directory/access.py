"""Access decisions for every front end: the root bypass, the built-in default, or the ACL engine.

Rules for this module:
- The root DN may do anything, whatever the rules say.
- With no ACL document (no ``aclFile``, nothing set over REST) the built-in default applies, the
  policy of a stock OpenLDAP: ``userPassword`` writable by its owner (binds check it
  regardless), everything else readable (read, search, compare) by everyone, no other write for
  anyone but the root DN.
- Whatever the rules say, ``userPassword`` values are returned (``read``) and searched (used in
  a filter) by the root DN only, and compared by the root DN and the entry's owner only (a
  document can restrict that further, never widen it). A hash is a secret too: offline
  guessing needs only the hash, and a filter on it answers guesses without a bind (so lockout
  never counts them): for every other caller a filter item on it is Undefined
  (``unsearchable``), under the built-in policy as under a document.
- A document with no rules and no explicit ``defaultPolicy`` is never put in force
  (``oba.acl.document.check_document``): it is what an empty or half-written file parses to.
- ``group:<DN>`` subjects are resolved from the directory (``attach`` gives the store) and
  cached per applied change index, so a membership change counts from the next operation.
- Decisions only, no network I/O; identities and targets are normalised DNs (``""`` =
  anonymous).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oba.acl import store as _acl_store  # noqa: F401  (registers the acl.set handler)
from oba.acl.document import AclDocument, check_document
from oba.acl.engine import AclEngine, Decision, GroupResolver
from oba.protocol.resultcodes import ResultCode

PROTECTED_ATTRS = frozenset({"userpassword"})
NOTHING: frozenset[str] = frozenset()


def _password_hidden(bind_ndn: str, target_ndn: str, right: str) -> bool:
    """For a non-root identity: is this read/search/compare of userPassword refused? Only
    ``compare`` is left to the owner (as a bind would check it)."""
    return right != "compare" or not bind_ndn or bind_ndn != target_ndn


READ_RIGHTS = frozenset({"read", "search", "compare"})
GROUP_MEMBER_ATTRS = ("member", "uniqueMember")


@dataclass(frozen=True, slots=True)
class Denied:
    code: ResultCode
    message: str


class AccessPolicy:
    """The node's access policy (``node.access``); swapped documents take effect at once."""

    def __init__(self, root_ndn: str) -> None:
        self.root_ndn = root_ndn
        self.engine: AclEngine | None = None
        self.source = "builtin"  # builtin | file | api
        self.manager: Any = None  # oba.acl.runtime.AclManager once started
        self._store: Any = None
        self._schema: Any = None
        self._groups: tuple[int, dict[str, frozenset[str]]] = (-1, {})
        # called after every switch (the writer process tells its listener workers)
        self.on_change: list[Callable[[AclDocument | None, str], None]] = []

    # ------------------------------------------------------------------ setup

    def attach(self, store: Any, schema: Any) -> None:
        """Give the store and schema used to resolve ``group:`` subjects and compile rules."""
        self._store = store
        self._schema = schema

    @property
    def document(self) -> AclDocument | None:
        return self.engine.document if self.engine is not None else None

    def set_document(self, document: AclDocument | None, source: str = "file") -> None:
        """Enforce ``document`` from now on (None: back to the built-in default); ``AclError``
        for a document with no rules and no explicit ``defaultPolicy`` (nothing changes)."""
        if document is None:
            self.engine, self.source = None, "builtin"
        else:
            check_document(document)
            if self._schema is None:
                from oba.schema import Schema

                self._schema = Schema.default()
            self.engine = AclEngine(document, self._schema)
            self.source = source
        for notify in self.on_change:
            notify(document, self.source)

    @property
    def builtin(self) -> bool:
        return self.engine is None

    # ------------------------------------------------------------------ groups

    def group_members(self, group_ndn: str) -> frozenset[str]:
        store = self._store
        if store is None or self._schema is None:
            return frozenset()
        with store.read() as txn:
            index = txn.applied_index()
            cached_index, cache = self._groups
            if cached_index != index:
                cache = {}
                self._groups = (index, cache)
            members = cache.get(group_ndn)
            if members is None:
                members = self._load_members(txn, group_ndn)
                cache[group_ndn] = members
        return members

    def _load_members(self, txn: Any, group_ndn: str) -> frozenset[str]:
        entry = txn.get_by_ndn(group_ndn)
        if entry is None:
            return frozenset()
        out: set[str] = set()
        for attr in GROUP_MEMBER_ATTRS:
            for value in entry.attrs.get(attr, ()):
                try:
                    out.add(self._schema.normalize_dn(value.decode("utf-8")))
                except Exception:  # a malformed member value names nobody
                    continue
        return frozenset(out)

    @property
    def resolver(self) -> GroupResolver:
        return self.group_members

    # ------------------------------------------------------------------ decisions

    def is_root(self, bind_ndn: str) -> bool:
        return bool(bind_ndn) and bind_ndn == self.root_ndn

    def unsearchable(self, bind_ndn: str) -> frozenset[str]:
        """The attributes (lower-case canonical names) ``bind_ndn`` may use in a filter on no
        entry, whatever the rules: the protected ones for everyone but the root DN. Under the
        built-in policy this is the whole set of attributes the caller may not search."""
        return NOTHING if self.is_root(bind_ndn) else PROTECTED_ATTRS

    def decide(self, bind_ndn: str, target_ndn: str, right: str,
               attr: str | None = None) -> Decision:
        """May ``bind_ndn`` exercise ``right`` on the entry (``attr`` None) or one attribute?"""
        if self.is_root(bind_ndn):
            return Decision(True, None, None, "the root DN may do anything")
        protected = attr is not None and attr.split(";", 1)[0].lower() in PROTECTED_ATTRS
        if protected and right in READ_RIGHTS and _password_hidden(bind_ndn, target_ndn, right):
            return Decision(False, None, None,
                            "userPassword is returned to and searched by the root DN only "
                            "(its owner may compare it)")
        if self.engine is None:
            return self._builtin(bind_ndn, target_ndn, right, attr)
        return self.engine.decide(bind_ndn, target_ndn, right, attr, self.group_members)

    def _builtin(self, bind_ndn: str, target_ndn: str, right: str,
                 attr: str | None) -> Decision:
        if right in READ_RIGHTS:
            return Decision(True, None, None, "built-in default: everything else is readable")
        if (right == "write" and attr is not None
                and attr.split(";", 1)[0].lower() in PROTECTED_ATTRS
                and bind_ndn and bind_ndn == target_ndn):
            return Decision(True, None, None, "built-in default: users may change their own "
                            "userPassword")
        return Decision(False, None, None, "built-in default: only the root DN may write")

    def rules_for(self, bind_ndn: str, target_ndn: str) -> Any:
        """Pre-matched rules for one (identity, entry) pair; pass to ``decide_among``."""
        if self.engine is None or self.is_root(bind_ndn):
            return None
        return self.engine.applicable(bind_ndn, target_ndn, self.group_members)

    def allowed_among(self, rules: Any, bind_ndn: str, target_ndn: str, right: str,
                      attr: str | None) -> bool:
        """``decide(...).allowed`` with rules from ``rules_for`` (fast path for searches)."""
        if rules is None or self.engine is None:
            return self.decide(bind_ndn, target_ndn, right, attr).allowed
        if (attr is not None and attr.split(";", 1)[0].lower() in PROTECTED_ATTRS
                and right in READ_RIGHTS):
            if _password_hidden(bind_ndn, target_ndn, right):
                return False
        return self.engine.decide_among(rules, right, attr).allowed

    def can_read_attr(self, bind_ndn: str, entry_ndn: str, attr: str) -> bool:
        """May ``bind_ndn`` see (read) ``attr`` of the entry?"""
        return self.decide(bind_ndn, entry_ndn, "read", attr).allowed

    def denied(self, bind_ndn: str, message: str) -> Denied:
        """The error for a refused write: 8 for anonymous, 50 for everyone else."""
        if not bind_ndn:
            return Denied(ResultCode.STRONGER_AUTH_REQUIRED, "modifications require "
                          "authentication")
        return Denied(ResultCode.INSUFFICIENT_ACCESS_RIGHTS, message)

    def check_write(
        self, bind_ndn: str, target_ndn: str, attrs: frozenset[str] | None = None
    ) -> Denied | None:
        """May ``bind_ndn`` change the entry (``attrs``: the attributes a modify touches;
        None: the entry as a whole)?"""
        if self.is_root(bind_ndn):
            return None
        if not attrs:
            if self.decide(bind_ndn, target_ndn, "write").allowed:
                return None
            return self.denied(bind_ndn, "no write access to parent" if attrs is None
                               else "no write access")
        for attr in sorted(attrs):
            if not self.decide(bind_ndn, target_ndn, "write", attr).allowed:
                return self.denied(bind_ndn, "no write access")
        return None
