"""Case files of the differential harness: loading, placeholder substitution, validation.

Format (YAML, one file = one pytest item)::

    description: what the case covers
    ops:
      - op: add | modify | delete | modrdn | compare | search | bind | whoami | passwd | extended
        as: root | anon | <user of tree.ldif> | <session named by an earlier bind>  (default root)
        expect: <result name, e.g. success, noSuchObject, compareTrue>             (optional)
        count: <number of entries a search returns>                                (optional)
        dns: [<DNs a search returns; in order when the search is ordered>]         (optional)
        deliberate: <why Oba differs from slapd here on purpose>                    (optional)
        ... op-specific keys, see OP_KEYS ...

A value (in ``attrs`` or ``changes``) is a string, or ``{base64: ...}`` for a binary one.

Rules: placeholders ``{base}`` (the case's private subtree ``ou=<case>,dc=example,dc=com``),
``{ou}`` (the case name), ``{suffix}`` and ``{rootdn}`` are replaced in every string; unknown ops
or keys are errors, so a typo cannot silently weaken a case. Expectations are checked against
the reference (slapd) and let a case be self-checked with ``OBA_DIFF_ONLY=slapd``. An op marked
``deliberate`` still runs on both servers; a disagreement there is reported as a warning, not a
failure (keep these few, each with its reason; they are Oba's documented differences).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .._support import BASE_DN, ROOT_DN

CASES_DIR = Path(__file__).resolve().parent / "cases"
TREE_LDIF = Path(__file__).resolve().parent / "tree.ldif"

COMMON_KEYS = frozenset({"op", "as", "expect", "count", "dns", "note", "deliberate"})
OP_KEYS: dict[str, frozenset[str]] = {
    "add": frozenset({"dn", "attrs"}),
    "modify": frozenset({"dn", "changes"}),
    "delete": frozenset({"dn"}),
    "modrdn": frozenset({"dn", "newrdn", "deleteoldrdn", "newsuperior"}),
    "compare": frozenset({"dn", "attr", "value"}),
    "search": frozenset(
        {
            "base",
            "scope",
            "filter",
            "attrs",
            "sizelimit",
            "sort",
            "page",
            "controls",
            "ordered",
            "project",
        }
    ),
    "bind": frozenset({"dn", "password", "session"}),
    "whoami": frozenset(),
    "passwd": frozenset({"user", "old", "new"}),
    "extended": frozenset({"oid", "value"}),
}
REQUIRED: dict[str, frozenset[str]] = {
    "add": frozenset({"dn", "attrs"}),
    "modify": frozenset({"dn", "changes"}),
    "delete": frozenset({"dn"}),
    "modrdn": frozenset({"dn", "newrdn"}),
    "compare": frozenset({"dn", "attr", "value"}),
    "search": frozenset({"base"}),
    "bind": frozenset({"dn", "password"}),
    "extended": frozenset({"oid"}),
}
MOD_KINDS = ("add", "delete", "replace", "increment")


class CaseError(ValueError):
    """A malformed case file."""


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    base: str
    ops: list[dict[str, Any]]


def case_files() -> list[Path]:
    return sorted(CASES_DIR.glob("*.yaml"))


def case_base(name: str) -> str:
    return f"ou={name},{BASE_DN}"


def substitute(value: Any, name: str) -> Any:
    """Replace the placeholders in every string of ``value`` (recursively)."""
    if isinstance(value, str):
        return (
            value.replace("{base}", case_base(name))
            .replace("{ou}", name)
            .replace("{suffix}", BASE_DN)
            .replace("{rootdn}", ROOT_DN)
        )
    if isinstance(value, list):
        return [substitute(v, name) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, name) for k, v in value.items()}
    return value


def _check_op(index: int, op: Any) -> None:
    where = f"op #{index}"
    if not isinstance(op, dict) or "op" not in op:
        raise CaseError(f"{where}: must be a mapping with an 'op' key")
    kind = op["op"]
    if kind not in OP_KEYS:
        raise CaseError(f"{where}: unknown op {kind!r}")
    unknown = set(op) - COMMON_KEYS - OP_KEYS[kind]
    if unknown:
        raise CaseError(f"{where} ({kind}): unknown keys {sorted(unknown)}")
    missing = REQUIRED.get(kind, frozenset()) - set(op)
    if missing:
        raise CaseError(f"{where} ({kind}): missing keys {sorted(missing)}")
    if kind == "modify":
        for change in op["changes"]:
            kinds = [k for k in MOD_KINDS if k in change]
            if len(kinds) != 1 or set(change) - {*MOD_KINDS, "values"}:
                raise CaseError(f"{where}: bad change {change!r}")
    if kind == "search" and op.get("scope", "sub") not in ("base", "one", "sub"):
        raise CaseError(f"{where}: scope must be base, one or sub")


def load_case(path: Path) -> Case:
    """Parse and validate one case file."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("ops"), list):
        raise CaseError(f"{path.name}: needs a top-level 'ops' list")
    name = path.stem
    ops = substitute(raw["ops"], name)
    for i, op in enumerate(ops):
        try:
            _check_op(i, op)
        except CaseError as exc:
            raise CaseError(f"{path.name}: {exc}") from None
    return Case(name, str(raw.get("description", "")), case_base(name), ops)


def tree_ldif(name: str) -> str:
    """The shared initial tree, placed under the case's own subtree."""
    text: str = substitute(TREE_LDIF.read_text(), name)
    return text
