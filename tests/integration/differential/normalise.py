"""Normalisation of recorded outcomes so that Oba and slapd can be compared.

Rules (the same for both sides):
- attribute names lower-cased; values sorted; DN-valued attributes and DNs compared by a neutral
  DN form (python-ldap parse, names and values case-folded, spaces collapsed, multi-valued RDNs
  sorted);
- dropped: per-server bookkeeping (entryUUID, timestamps, creators/modifiersName, CSNs);
- ``userPassword`` values become ``<password>`` (slapd stores cleartext, Oba hashes on write);
- kept only when BOTH sides return them: ``ONE_SIDED_OK`` (e.g. structuralObjectClass, entryDN);
- error message text is never compared (``desc``/``info`` are kept only for the report).
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import ldap.dn

DROPPED = frozenset(
    {
        "entryuuid",
        "createtimestamp",
        "modifytimestamp",
        "creatorsname",
        "modifiersname",
        "entrycsn",
        "contextcsn",
        "pwdchangedtime",
    }
)
ONE_SIDED_OK = frozenset({"structuralobjectclass", "entrydn"})
DN_VALUED = frozenset(
    {
        "member",
        "uniquemember",
        "memberof",
        "owner",
        "seealso",
        "manager",
        "secretary",
        "roleoccupant",
        "subschemasubentry",
        "namingcontexts",
        "entrydn",
        "distinguishedname",
    }
)
HIDDEN = frozenset({"userpassword"})
UNCOMPARED_KEYS = frozenset({"desc", "info", "op"})


def norm_dn(dn: str) -> str:
    """A server-neutral DN form."""
    try:
        rdns = ldap.dn.str2dn(dn)
    except ldap.DECODING_ERROR:
        return " ".join(dn.lower().split())
    out = []
    for rdn in rdns:
        avas = sorted(
            f"{name.strip().lower()}={ldap.dn.escape_dn_chars(' '.join(str(val).lower().split()))}"
            for name, val, _flags in rdn
        )
        out.append("+".join(avas))
    return ",".join(out)


def norm_attrs(attrs: dict[str, list[bytes]]) -> dict[str, list[str]]:
    """Lower-case names, drop bookkeeping attributes, sort (and DN-normalise) values."""
    out: dict[str, list[str]] = {}
    for name, values in attrs.items():
        key = name.lower()
        if key in DROPPED:
            continue
        texts = [v.decode("utf-8", "backslashreplace") for v in values]
        if key in DN_VALUED:
            texts = [norm_dn(t) for t in texts]
        if key in HIDDEN:
            texts = ["<password>" for _ in texts]
        out.setdefault(key, []).extend(texts)
    return {k: sorted(v) for k, v in sorted(out.items())}


def project(attrs: dict[str, list[str]], needles: dict[str, list[str]]) -> dict[str, Any]:
    """Replace attributes by 'does some value contain each needle' (case-insensitive)."""
    result: dict[str, Any] = {}
    for name, wanted in needles.items():
        values = [v.lower() for v in attrs.get(name.lower(), [])]
        result[name.lower()] = {n: any(n.lower() in v for v in values) for n in wanted}
    return result


def _reconcile_entries(a: list[Any], b: list[Any]) -> None:
    """Drop ONE_SIDED_OK attributes from entries of either side when the peer lacks them."""
    peers = {e["dn"]: e for e in b if isinstance(e, dict)}
    for entry in a:
        if not isinstance(entry, dict) or entry["dn"] not in peers:
            continue
        other = peers[entry["dn"]]
        for key in ONE_SIDED_OK:
            if (key in entry["attrs"]) != (key in other["attrs"]):
                entry["attrs"].pop(key, None)
                other["attrs"].pop(key, None)


def comparable(ref: dict[str, Any], got: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies of two records of the same op, ready for ``==`` (message text removed)."""
    left = json.loads(json.dumps({k: v for k, v in ref.items() if k not in UNCOMPARED_KEYS}))
    right = json.loads(json.dumps({k: v for k, v in got.items() if k not in UNCOMPARED_KEYS}))
    if isinstance(left.get("entries"), list) and isinstance(right.get("entries"), list):
        _reconcile_entries(left["entries"], right["entries"])
    return left, right


def render_diff(ref: dict[str, Any], got: dict[str, Any], ref_name: str, got_name: str) -> str:
    """A unified diff of two comparable records."""
    a = json.dumps(ref, indent=1, sort_keys=True).splitlines()
    b = json.dumps(got, indent=1, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(a, b, ref_name, got_name, lineterm="", n=2))
