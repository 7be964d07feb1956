"""Who sees what of the audit trail and the change stream: the one visibility rule.

Rules for this module (every route that shows audit records or change events asks a
``Viewer``: ``/logs``, ``/logs/export``, ``/activities``, ``/events``, and so the web admin's log
and dashboard pages, which read those routes):
- The administrator sees every record and event unchanged. "Administrator" is the root DN,
  exactly as ``oba.rest.auth.admin_identity`` decides for the admin-only routes; change both
  together.
- Anyone else sees an audit record only when it is their own (its ``user`` is their DN,
  compared in normalised form: their binds, failed ones included, and their writes) and they
  may ``read`` every entry it names (``fields.dn``; for a rename also the new superior and the
  new DN). Its ``fields.attributes`` keeps only the attribute names they may read
  (``userPassword``, whose value nobody but the root DN reads: when they may compare it, i.e.
  on their own entry). Records with no user (Raft and system events) and other users' binds
  and changes are never shown: the audit trail is the administrator's tool, a user's window on
  it is their own activity.
- A change event (``/events``) is shown when the caller may read the entry it names: for a
  delete, the entry as it was (its DN before the change). A rename (``moddn``) is shown as one
  only when they may read both its previous DN and its new one; when they may read only the
  new one it is shown as an ``add`` of the new DN (the entry came into their view), only the
  old one as a ``delete`` of the old DN (it left their view); neither: nothing. So the event
  names only DNs they may read, and tells them what a read before and after would. Its actor
  only when it is the caller or they may read ``modifiersName`` on the entry the event names
  (what an LDAP read of the entry tells them), else ``""``.
- Decisions are the ACL's on the DN (``node.access.decide``), whether or not the entry still
  exists (a deleted entry is named by its old DN); a DN that does not parse names nothing the
  caller may read. Filters (text search) run on the view, never on the hidden original, so a
  hidden name cannot be probed; totals count the view only.
- A ``Viewer`` caches decisions for its own lifetime: make one per request (per event for a
  long-lived stream, so an ACL change counts from the next event).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oba.directory.access import PROTECTED_ATTRS
from oba.operations import OpError
from oba.storage.lmdbstore import parent_ndn

if TYPE_CHECKING:
    from oba.operations import Identity, Operations

Record = dict[str, Any]


def is_admin(ops: Operations, who: Identity) -> bool:
    """The administrator: the root DN (as ``rest.auth.admin_identity``)."""
    return ops.node.access.is_root(who.ndn)


class Viewer:
    """The visibility rule applied for one identity."""

    def __init__(self, ops: Operations, who: Identity) -> None:
        self.ops = ops
        self.who = who
        self.admin = is_admin(ops, who)
        self._ndns: dict[str, str | None] = {}
        self._reads: dict[tuple[str, str | None], bool] = {}
        self._spellings: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ decisions

    def ndn(self, dn: object) -> str | None:
        """``dn`` normalised, or None when it is not a DN."""
        if not isinstance(dn, str) or not dn:
            return None
        if dn in self._ndns:
            return self._ndns[dn]
        try:
            ndn: str | None = self.ops.normalize_dn(dn)
        except OpError:  # invalidDNSyntax
            ndn = None
        self._ndns[dn] = ndn
        return ndn

    def may_read(self, ndn: str, attr: str | None = None) -> bool:
        """May the caller read the entry at ``ndn`` (``attr``: that attribute's name)?"""
        key = (ndn, attr)
        got = self._reads.get(key)
        if got is None:
            right = "compare" if attr is not None and attr.lower() in PROTECTED_ATTRS \
                else "read"
            got = self.ops.node.access.decide(self.who.ndn, ndn, right, attr).allowed
            self._reads[key] = got
        return got

    def is_self(self, dn: object) -> bool:
        return bool(self.who.ndn) and self.ndn(dn) == self.who.ndn

    def user_spellings(self) -> tuple[str, ...] | None:
        """How the caller's DN may be written in a record's ``user`` (lower case, for the
        audit user index); None for the administrator, who sees every user's records."""
        if self.admin:
            return None
        if self._spellings is None:
            names = {self.who.dn.lower(), self.who.ndn.lower()}
            if self.who.ndn:
                with self.ops.node.store.read() as txn:
                    entry = txn.get_by_ndn(self.who.ndn)
                if entry is not None:
                    names.add(entry.dn.lower())
            self._spellings = tuple(sorted(n for n in names if n))
        return self._spellings

    # ------------------------------------------------------------------ views

    def _named(self, fields: dict[str, Any]) -> list[str] | None:
        """The normalised DNs a record's fields name (the entry first); None when one of
        them is not a DN."""
        out: list[str] = []
        dn = fields.get("dn")
        if dn in (None, ""):
            return out
        ndn = self.ndn(dn)
        if ndn is None:
            return None
        out.append(ndn)
        superior = fields.get("newSuperior")
        parent = parent_ndn(ndn)
        if superior not in (None, ""):
            sup = self.ndn(superior)
            if sup is None:
                return None
            out.append(sup)
            parent = sup
        new_rdn = fields.get("newRDN")
        if new_rdn not in (None, ""):
            new = self.ndn(f"{new_rdn},{parent}" if parent else str(new_rdn))
            if new is None:
                return None
            out.append(new)
        return out

    def record(self, rec: Record) -> Record | None:
        """The audit record as the caller may see it, or None."""
        if self.admin:
            return rec
        if not self.is_self(rec.get("user")):
            return None
        raw = rec.get("fields")
        fields: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        named = self._named(fields)
        if named is None or not all(self.may_read(ndn) for ndn in named):
            return None
        attrs = fields.get("attributes")
        if attrs is not None:
            if named and isinstance(attrs, list):
                fields["attributes"] = [
                    a for a in attrs
                    if isinstance(a, str) and self.may_read(named[0], a.split(";", 1)[0])]
            else:
                del fields["attributes"]
        return {**rec, "fields": fields}

    def change(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """A change event's data (``{index, type, dn, previousDN?, actor}``) as the caller may
        see it, or None."""
        if self.admin:
            return data
        ndn = self.ndn(data.get("dn"))
        now = ndn is not None and self.may_read(ndn)
        previous = data.get("previousDN")
        if previous:
            old = self.ndn(previous)
            before = old is not None and self.may_read(old)
            if not now and not before:
                return None
            if not before:  # came into view: an add, the hidden old DN is not named
                data = {k: v for k, v in data.items() if k != "previousDN"}
                data["type"] = "add"
            elif not now:  # left the view: a delete of the old DN, the new one is not named
                data = {k: v for k, v in data.items() if k != "previousDN"}
                data.update(type="delete", dn=previous)
                ndn = old
        elif not now:
            return None
        assert ndn is not None
        actor = data.get("actor")
        if actor and not self.is_self(actor) and not self.may_read(ndn, "modifiersName"):
            data = {**data, "actor": ""}
        return data
