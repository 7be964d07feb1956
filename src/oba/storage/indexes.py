"""Index key computation for ObaDB (pure functions, no LMDB).

Rules: equality keys are ``b"="+norm`` (norm = the attribute's equality-normalised value),
presence is ``b"*"``, substring keys use the substring rule's normalised form: ``b"^"`` + first
3 bytes, ``b"$"`` + last 3 bytes and ``b"~"`` + every 3-byte window. Any key longer than
``MAX_KEY`` bytes becomes ``b"#"+sha256(key)``. A value the rule rejects is simply not indexed
(the apply layer validates values; indexes never raise). An attribute's index holds the values
of its tagged descriptions too (``cn;lang-en`` values under ``cn``: an item on ``cn`` matches
them), see ``values_for_index``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from oba.storage.schemaapi import SchemaLike

MAX_KEY = 400
KINDS = frozenset({"eq", "pres", "sub"})

DEFAULT_INDEXES: dict[str, set[str]] = {
    "objectClass": {"eq"},
    "uid": {"eq", "pres"},
    "cn": {"eq", "sub"},
    "sn": {"eq", "sub"},
    "givenName": {"eq", "sub"},
    "mail": {"eq", "sub"},
    "member": {"eq"},
    "uniqueMember": {"eq"},
    "memberUid": {"eq"},
    "entryUUID": {"eq"},
    "uidNumber": {"eq"},
    "gidNumber": {"eq"},
}


def tagged_keys(attrs: Mapping[str, object]) -> list[str]:
    """The keys of an entry's attributes that carry tags (``cn;lang-en``)."""
    return [k for k in attrs if ";" in k]


def values_for_index(attrs: Mapping[str, list[bytes]], attr: str,
                     tagged: Iterable[str] = ()) -> Iterable[bytes]:
    """The values the index of ``attr`` holds for an entry: its own and those of its tagged
    descriptions (``tagged``: ``tagged_keys(attrs)``)."""
    values: Iterable[bytes] = attrs.get(attr, ())
    extra = [k for k in tagged if k.split(";", 1)[0] == attr]
    if not extra:
        return values
    out = list(values)
    for key in extra:
        out.extend(attrs[key])
    return out


def fit_key(key: bytes) -> bytes:
    """The key as stored: unchanged when short enough, else hashed."""
    if len(key) > MAX_KEY:
        return b"#" + hashlib.sha256(key).digest()
    return key


def eq_key(norm: bytes) -> bytes:
    return fit_key(b"=" + norm)


PRESENCE_KEY = b"*"


def trigrams(norm: bytes) -> set[bytes]:
    return {norm[i : i + 3] for i in range(len(norm) - 2)}


def sub_keys(norm: bytes) -> set[bytes]:
    """Substring index keys for one normalised value (none when shorter than 3 bytes)."""
    if len(norm) < 3:
        return set()
    keys = {b"~" + norm[i : i + 3] for i in range(len(norm) - 2)}
    keys.add(b"^" + norm[:3])
    keys.add(b"$" + norm[-3:])
    return keys


def substring_query_keys(
    initial: bytes | None, any_: Iterable[bytes], final: bytes | None
) -> list[bytes]:
    """Keys whose id lists all contain every match; [] when nothing is indexable."""
    keys: set[bytes] = set()
    if initial is not None and len(initial) >= 3:
        keys.add(b"^" + initial[:3])
        keys.update(b"~" + g for g in trigrams(initial))
    for part in any_:
        keys.update(b"~" + g for g in trigrams(part))
    if final is not None and len(final) >= 3:
        keys.add(b"$" + final[-3:])
        keys.update(b"~" + g for g in trigrams(final))
    return sorted(keys)


def normalize_config(
    schema: SchemaLike, indexes: Mapping[str, Iterable[str]]
) -> dict[str, list[str]]:
    """Canonical attribute names and sorted kinds; unknown attributes/kinds raise ValueError."""
    out: dict[str, list[str]] = {}
    for attr, kinds in indexes.items():
        canon = schema.canonical(attr)
        if canon is None:
            raise ValueError(f"index on undefined attribute type {attr!r}")
        kset = set(kinds)
        bad = kset - KINDS
        if bad:
            raise ValueError(f"unknown index kind(s) {sorted(bad)} for {attr!r}")
        out[canon] = sorted(kset | set(out.get(canon, [])))
    return dict(sorted(out.items()))


def keys_for_values(
    schema: SchemaLike, attr: str, kinds: Iterable[str], values: Iterable[bytes]
) -> set[bytes]:
    """Every index key the values of ``attr`` produce under the given kinds."""
    kset = set(kinds)
    vals = list(values)
    keys: set[bytes] = set()
    if not vals:
        return keys
    if "pres" in kset:
        keys.add(PRESENCE_KEY)
    if "eq" in kset:
        closure = getattr(schema, "objectclass_closure", None)
        if attr == "objectClass" and closure is not None:
            # index every superclass too, so (objectClass=person) finds inetOrgPerson entries
            for v in vals:
                keys.update(eq_key(k) for k in closure(v))
            vals = []
        for v in vals:
            try:
                keys.add(eq_key(schema.normalize(attr, v)))
            except Exception:  # an unindexable value is skipped
                continue
    if "sub" in kset:
        rule = schema.substr(attr)
        if rule is not None:
            for v in vals:
                try:
                    norm = rule.normalize(v)
                except Exception:  # an unindexable value is skipped
                    continue
                keys.update(sub_keys(norm))  # 4-byte keys: never longer than MAX_KEY
    return keys
