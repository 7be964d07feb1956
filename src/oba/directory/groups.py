"""Group semantics run by ``apply`` inside the write transaction: memberOf and refint.

Rules:
- A *group* is an entry whose object classes (with their superclasses) include
  ``groupOfNames`` (members in ``member``) or ``groupOfUniqueNames`` (members in
  ``uniqueMember``). Only those values make an entry a member; a ``uniqueMember`` value's
  optional ``#'…'B`` UID is ignored for membership.
- ``memberOf`` (operational, NO-USER-MODIFICATION) on a member entry lists the DNs of the groups
  naming it, each spelled as the group's stored DN. It is changed when a group is added, its
  member values change, it is deleted or renamed. Members that do not exist locally are
  ignored. As OpenLDAP's memberof overlay (observed on slapd 2.5), there is no backfill: an
  entry created after a group that names it gets memberOf only when the group is renamed or its
  member attribute is *replaced* (every listed member is then brought in); adding values brings
  in only the added members, so a large group costs nothing extra per added member. memberOf
  changes do not touch modifiersName / modifyTimestamp.
- Referential integrity (as OpenLDAP's refint overlay on ``member``/``uniqueMember``): deleting
  an entry removes its DN from every entry's member / uniqueMember values; renaming or moving an
  entry (every entry of a moved subtree) rewrites those values to the new DN. Referencing
  entries are found with the equality indexes of ``member``/``uniqueMember`` (one lookup per
  attribute and affected DN), never by scanning, unless the index is not configured. Values
  carrying a ``#'…'B`` UID are not found by that lookup and are left alone. A referencing
  entry changed by refint gets modifiersName ``cn=Referential Integrity Overlay`` and the
  command's time as modifyTimestamp (slapd does the same).
- When removing a deleted DN would leave the referencing entry invalid for its schema (the last
  ``member`` of a groupOfNames: ``MUST member``), that entry is left unchanged with the stale
  value. This is what slapd's refint does without ``refint_nothing``: its internal modify fails
  with objectClassViolation and the group keeps the value (observed on slapd 2.5).
- Writes that touch no group and no member attribute cost nothing beyond those index lookups on
  delete / rename. Everything here is deterministic: the order of work follows ids and values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from oba.directory.entry import Entry
from oba.storage.lmdbstore import WriteTxn
from oba.storage.schemaapi import SchemaLike

MEMBER_OF = "memberOf"
REFINT_ACTOR = "cn=Referential Integrity Overlay"
MEMBER_ATTRS = ("member", "uniqueMember")
_GROUP_CLASSES = {"groupofnames": "member", "groupofuniquenames": "uniqueMember"}

Validator = Callable[[dict[str, list[bytes]]], bool]
Pair = tuple[Entry, Entry]


def _sup_names(oc: Any) -> list[str]:
    raw = getattr(oc, "sup", ()) or ()
    return [raw] if isinstance(raw, str) else [str(x) for x in raw]


def _group_attrs(schema: SchemaLike, entry: Entry | None) -> tuple[str, ...]:
    """The member attributes that make ``entry`` a group (() for a non-group)."""
    if entry is None or not any(a in entry.attrs for a in MEMBER_ATTRS):
        return ()
    found: set[str] = set()
    seen: set[str] = set()
    stack = [v.decode("utf-8", "replace").strip() for v in entry.attrs.get("objectClass", [])]
    while stack:
        name = stack.pop()
        oc = schema.object_class(name)
        key = str(getattr(oc, "name", name)).lower() if oc is not None else name.lower()
        if key in seen:
            continue
        seen.add(key)
        if key in _GROUP_CLASSES:
            found.add(_GROUP_CLASSES[key])
        if oc is not None:
            stack.extend(_sup_names(oc))
    return tuple(a for a in MEMBER_ATTRS if a in found)


def _strip_uid(value: bytes) -> bytes:
    text = value.rstrip()
    if text.endswith(b"'B") and b"#'" in text:
        return text[: text.rfind(b"#'")]
    return value


def members(schema: SchemaLike, entry: Entry | None) -> dict[str, None]:
    """Normalised DNs of the members of group ``entry`` (ordered, no duplicates)."""
    out: dict[str, None] = {}
    if entry is None:
        return out
    for attr in _group_attrs(schema, entry):
        for value in entry.attrs.get(attr, []):
            try:
                ndn = schema.normalize_dn(_strip_uid(value).decode("utf-8"))
            except Exception:  # stored values are valid; skip anything odd
                continue
            out[ndn] = None
    return out


def _norm_dn(schema: SchemaLike, value: bytes) -> str | None:
    try:
        return schema.normalize_dn(value.decode("utf-8"))
    except Exception:
        return None


class GroupWork:
    """Collects the side effects of one command and writes each touched entry once per step."""

    def __init__(self, txn: WriteTxn, schema: SchemaLike, time: str) -> None:
        self.txn = txn
        self.schema = schema
        self.time = time
        self.touched: dict[int, None] = {}

    # ----------------------------------------------------------------- memberOf

    def _edit_member_of(self, member_ndn: str, remove: str | None, add: str | None) -> None:
        """On the member entry: drop group DN ``remove`` (normalised), add DN ``add`` (stored)."""
        entry = self.txn.get_by_ndn(member_ndn)
        if entry is None:
            return
        values = list(entry.attrs.get(MEMBER_OF, []))
        norms = [_norm_dn(self.schema, v) for v in values]
        changed = False
        if remove is not None and remove in norms:
            i = norms.index(remove)
            del values[i], norms[i]
            changed = True
        if add is not None:
            add_ndn = self.schema.normalize_dn(add)
            if add_ndn not in norms:
                values.append(add.encode("utf-8"))
                changed = True
        if not changed:
            return
        attrs = {k: list(v) for k, v in entry.attrs.items()}
        if values:
            attrs[MEMBER_OF] = values
        else:
            attrs.pop(MEMBER_OF, None)
        self.txn.put_entry(Entry(entry.id, entry.dn, attrs), entry)
        self.touched[entry.id] = None

    def group_changed(self, old: Entry | None, new: Entry | None, resync: bool = False) -> None:
        """Keep members' memberOf right after one entry went from ``old`` to ``new``
        (None: absent); ``resync``: bring in every current member, not only the new ones.
        Must be called after ``new`` is stored."""
        before = members(self.schema, old)
        after = members(self.schema, new)
        if not before and not after:
            return
        old_ndn = None if old is None else self.schema.normalize_dn(old.dn)
        new_ndn = None if new is None else self.schema.normalize_dn(new.dn)
        renamed = old_ndn != new_ndn
        for m in before:
            if m not in after or renamed:
                self._edit_member_of(m, old_ndn, None)
        for m in after:
            if m not in before or renamed or resync:
                self._edit_member_of(m, None, None if new is None else new.dn)

    # ----------------------------------------------------------------- refint

    def _referencing(self, targets: Collection[str]) -> dict[int, None]:
        """Ids of entries whose member/uniqueMember equals one of the normalised DNs."""
        ids: dict[int, None] = {}
        scan: list[str] = []
        for attr in MEMBER_ATTRS:
            for ndn in targets:
                try:
                    key = self.schema.normalize(attr, ndn.encode("utf-8"))
                except Exception:
                    continue
                hits = self.txn.eq(attr, key)
                if hits is None:
                    scan.append(attr)
                    break
                ids.update(dict.fromkeys(hits))
        if scan:  # no equality index configured: fall back to reading every entry
            wanted = set(targets)
            for eid in self.txn.iter_ids():
                entry = self.txn.get(eid)
                if entry is None:
                    continue
                for attr in scan:
                    if any(_norm_dn(self.schema, v) in wanted for v in entry.attrs.get(attr, [])):
                        ids[eid] = None
        return dict.fromkeys(sorted(ids))

    def refint(self, renames: dict[str, str | None], valid: Validator) -> None:
        """Rewrite member/uniqueMember values naming the keys of ``renames`` (normalised old
        DNs) to the mapped new DN (stored form), or remove them when it maps to None."""
        if not renames:
            return
        for eid in self._referencing(renames):
            entry = self.txn.get(eid)
            if entry is None:
                continue
            attrs = {k: list(v) for k, v in entry.attrs.items()}
            changed = False
            for attr in MEMBER_ATTRS:
                values = attrs.get(attr)
                if not values:
                    continue
                out: list[bytes] = []
                for v in values:
                    ndn = _norm_dn(self.schema, v)
                    if ndn is None or ndn not in renames:
                        out.append(v)
                        continue
                    changed = True
                    target = renames[ndn]
                    if target is not None:
                        out.append(target.encode("utf-8"))
                if out:
                    attrs[attr] = out
                else:
                    del attrs[attr]
            if not changed or not valid(attrs):
                continue  # an invalid result keeps the stale value, as slapd's refint does
            attrs["modifiersName"] = [REFINT_ACTOR.encode("utf-8")]
            attrs["modifyTimestamp"] = [self.time.encode("utf-8")]
            new = Entry(entry.id, entry.dn, attrs)
            self.txn.put_entry(new, entry)
            self.touched[entry.id] = None
            self.group_changed(entry, new)


def after_add(work: GroupWork, entry: Entry) -> None:
    work.group_changed(None, entry)


def after_modify(work: GroupWork, old: Entry, new: Entry, replaced: Collection[str]) -> None:
    """``replaced``: canonical names of the attributes the modify replaced."""
    work.group_changed(old, new, resync=any(a in replaced for a in MEMBER_ATTRS))


def after_delete(work: GroupWork, entry: Entry, valid: Validator) -> None:
    work.group_changed(entry, None)
    work.refint({work.schema.normalize_dn(entry.dn): None}, valid)


def after_rename(work: GroupWork, moved: Sequence[Pair], valid: Validator) -> None:
    """``moved``: (old, new) for the renamed entry and each descendant, all already stored."""
    schema = work.schema
    renames: dict[str, str | None] = {schema.normalize_dn(o.dn): n.dn for o, n in moved}
    # First the references to moved entries (this may rewrite moved groups too) ...
    work.refint(renames, valid)
    # ... then the memberOf of members of moved groups, reading each group as now stored.
    for old, new in moved:
        if not _group_attrs(schema, old):
            continue
        current = work.txn.get(new.id)
        if current is None:
            continue
        before = Entry(old.id, old.dn, current.attrs)
        work.group_changed(before, current)
