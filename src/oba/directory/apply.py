"""Apply one write command to the store: LDAP add / modify / delete / modify DN semantics.

Rules: deterministic — no clock, no randomness, no I/O beyond the given write transaction; the
time, actor and entryUUID come from the command. Everything is validated before anything is
written, so a failed command changes nothing. Result codes and messages follow OpenLDAP slapd
(back-mdb) as observed with ldapadd/ldapmodify: frontend checks (undefined type 17, no user
modification 19, syntax 21, duplicate values 20) come before the existence checks (68, 32 with
the nearest existing ancestor as matchedDN), which come before schema checks (65, 64, 19).
Values are compared by the attribute's equality rule and stored exactly as given, under the
attribute description's key (``oba.schema.options``): ``cn;lang-en`` is an attribute of its own
(its values, SINGLE-VALUE and duplicates are counted apart from ``cn``'s), ``;binary`` is
accepted on the certificate types and dropped (RFC 4523 2.1), an unknown option is 17.
structuralObjectClass is fixed at add: a modify whose objectClass values would give another
structural class fails with objectClassModsProhibited (69), an unrelated second structural class
with objectClassViolation (65, "invalid structural object class chain"), as slapd answers.
Group semantics (memberOf, referential integrity) run in the same transaction: see groups.py.

Credential epochs: every entry has a counter, the number of times its credentials or their
usability changed (``userPassword`` changed, ``obaDisabled`` changed, ``pwdAccountLockedTime``
given a new value), kept beside the entry in the store's ``meta`` database (``authepoch:`` +
the 8-byte entry id; absent: 0) and raised in the transaction that makes the change. A REST
token carries the entry id and the counter it was issued under (``auth_epoch``), so any such
change, on any node, revokes the tokens issued before it; entry ids are never reused, so a
deleted and re-created entry does not inherit them either.
Failed and successful binds are SystemCommands (``lockout.failure`` / ``lockout.success``,
registered below): their lockout arithmetic runs here, on the entry as stored in the applying
transaction, so concurrent binds are counted one after the other wherever they came from.
A ``password.rehash`` (a stored password re-made with the configured scheme after a bind) is a
compare-and-set on the one ``userPassword`` value: replaced only while it is still stored, and
not a credential change (the epoch, ``pwdChangedTime``, ``pwdHistory`` and the modifiers are
left alone: the password is the same, only its stored form changes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from oba.directory import lockout
from oba.directory.commands import (
    BIND_FAILURE,
    BIND_SUCCESS,
    PASSWORD_REHASH,
    AddCommand,
    Command,
    DeleteCommand,
    ModifyCommand,
    ModifyDNCommand,
    SystemCommand,
)
from oba.directory.entry import Entry
from oba.directory.groups import (
    GroupWork,
    Pair,
    after_add,
    after_delete,
    after_modify,
    after_rename,
)
from oba.protocol.dn import DN, DNError, format_dn, parse_dn
from oba.schema.options import OptionError, describe
from oba.storage.lmdbstore import ReadTxn, WriteTxn, id_bytes, parent_ndn
from oba.storage.schemaapi import SchemaLike

SUCCESS = 0
PROTOCOL_ERROR = 2
NO_SUCH_ATTRIBUTE = 16
UNDEFINED_TYPE = 17
CONSTRAINT_VIOLATION = 19
TYPE_OR_VALUE_EXISTS = 20
INVALID_SYNTAX = 21
NO_SUCH_OBJECT = 32
INVALID_DN = 34
UNWILLING = 53
NAMING_VIOLATION = 64
OBJECT_CLASS_VIOLATION = 65
NOT_ALLOWED_ON_NON_LEAF = 66
OBJECT_CLASS_MODS_PROHIBITED = 69
ALREADY_EXISTS = 68
AFFECTS_MULTIPLE_DSAS = 71

# Attributes Oba maintains itself; users may never supply them (also flagged in the schema).
OPERATIONAL = frozenset(
    {
        "entryuuid",
        "createtimestamp",
        "modifytimestamp",
        "creatorsname",
        "modifiersname",
        "structuralobjectclass",
        "entrydn",
        "subschemasubentry",
        "hassubordinates",
        "entrycsn",
        "memberof",
    }
)
_INTEGER_RULES = frozenset({"integermatch"})
# The server's own bookkeeping writes (password policy, lockout): a ModifyCommand with this
# actor may set these NO-USER-MODIFICATION attributes and leaves modifiersName/modifyTimestamp
# alone. Only the server issues commands with it (operations.py never uses it for a client).
SYSTEM_ACTOR = "cn=oba-system"
SERVER_MANAGED = frozenset({"pwdchangedtime", "pwdhistory", "pwdfailuretime",
                            "pwdaccountlockedtime"})
INVALID_CREDENTIALS = 49
# Changes to these attributes move the entry's credential epoch (see the module docstring).
EPOCH_ATTRS = frozenset({"userPassword", "obaDisabled", "pwdAccountLockedTime"})
_EPOCH_KEY = b"authepoch:"


@dataclass(slots=True)
class ApplyContext:
    schema: SchemaLike
    suffixes: tuple[str, ...]  # normalised naming contexts, e.g. "dc=example,dc=com"


@dataclass(slots=True)
class ApplyResult:
    code: int
    matched_dn: str = ""
    message: str = ""
    entry: Entry | None = None
    old_dn: str | None = None
    # Other entries this command changed (memberOf on members, refint on groups), as stored.
    side_effects: list[Entry] = field(default_factory=list)


class _Fail(Exception):
    def __init__(self, code: int, message: str = "", matched_dn: str = "") -> None:
        super().__init__(message)
        self.result = ApplyResult(code, matched_dn, message)


# --------------------------------------------------------------------------- schema helpers


def _flag(obj: Any, *names: str) -> bool:
    return any(bool(getattr(obj, n, False)) for n in names)


def _memo(schema: SchemaLike, name: str) -> dict[Any, Any] | None:
    """A memo table kept on the schema object (None when it takes no attributes). Only
    answers that depend on the schema alone go in; a schema is never changed in place."""
    table: dict[Any, Any] | None = getattr(schema, name, None)
    if table is None:
        table = {}
        try:
            setattr(schema, name, table)
        except AttributeError:
            return None
    if len(table) > 4096:
        table.clear()
    return table


def _no_user_mod(schema: SchemaLike, canon: str) -> bool:
    memo = _memo(schema, "_apply_no_user_mod")
    if memo is not None:
        hit = memo.get(canon)
        if hit is not None:
            return bool(hit)
    if canon.split(";", 1)[0].lower() in OPERATIONAL:
        result = True
    else:
        result = _flag(schema.attribute(canon), "no_user_modification", "no_user_mod")
    if memo is not None:
        memo[canon] = result
    return result


def _operational(schema: SchemaLike, canon: str) -> bool:
    memo = _memo(schema, "_apply_operational")
    hit = None if memo is None else memo.get(canon)
    if hit is None:
        hit = (canon.split(";", 1)[0].lower() in OPERATIONAL
               or _flag(schema.attribute(canon), "operational"))
        if memo is not None:
            memo[canon] = hit
    return bool(hit)


def _naming_not_operational(schema: SchemaLike, canons: Iterable[str]) -> None:
    for canon in canons:
        if _operational(schema, canon):
            raise _Fail(NAMING_VIOLATION, f"naming attribute '{canon}' is operational")


def _single_valued(schema: SchemaLike, canon: str) -> bool:
    memo = _memo(schema, "_apply_single_valued")
    hit = None if memo is None else memo.get(canon)
    if hit is None:
        hit = _flag(schema.attribute(canon), "single_value", "single_valued")
        if memo is not None:
            memo[canon] = hit
    return bool(hit)


def _canon(schema: SchemaLike, name: str) -> str:
    canon = schema.canonical(name)
    if canon is None:
        raise _Fail(UNDEFINED_TYPE, f"{name}: attribute type undefined")
    return canon


def _key_or_problem(schema: SchemaLike, name: str) -> tuple[str | None, str]:
    """The key the values of the attribute description ``name`` are stored under
    (``oba.schema.options``: ``cn;lang-en``, ``userCertificate`` for
    ``userCertificate;binary``), or None and why not (LDAP 17)."""
    try:
        found = describe(schema, name)
    except OptionError as exc:
        return None, str(exc)
    if found is None:
        return None, f"{name}: attribute type undefined"
    return found.key, ""


def _key(schema: SchemaLike, name: str) -> str:
    key, problem = _key_or_problem(schema, name)
    if key is None:
        raise _Fail(UNDEFINED_TYPE, problem)
    return key


def _norm(schema: SchemaLike, canon: str, value: bytes) -> bytes:
    if canon == "objectClass":
        return value.decode("utf-8", "replace").strip().lower().encode("utf-8")
    return schema.normalize(canon, value)


def _normalizer(schema: SchemaLike, canon: str) -> Callable[[bytes], bytes]:
    """The function ``schema.normalize(canon, v)`` amounts to, looked up once per attribute
    (a schema without ``normalizer`` is asked per value)."""
    memo = _memo(schema, "_apply_normalizers")
    fn: Callable[[bytes], bytes] | None = None if memo is None else memo.get(canon)
    if fn is None:
        get = getattr(schema, "normalizer", None)
        try:
            fn = get(canon) if get is not None else None
        except Exception:  # an unknown type: normalize raises it per value
            fn = None
        if fn is None:
            fn = partial(schema.normalize, canon)
        if memo is not None:
            memo[canon] = fn
    return fn


def _normalised(schema: SchemaLike, name: str, canon: str, values: Iterable[bytes]) -> list[bytes]:
    """Normalised values; 21 for an invalid one, 20 for a value given twice."""
    out: list[bytes] = []
    seen: set[bytes] = set()
    if canon == "objectClass":
        memo = _memo(schema, "_apply_class_values")  # value -> normalised (known classes)
        for i, v in enumerate(values):
            n = None if memo is None else memo.get(v)
            if n is None:
                if schema.object_class(v.decode("utf-8", "replace")) is None:
                    raise _Fail(INVALID_SYNTAX, f"{name}: value #{i} invalid per syntax")
                n = _norm(schema, canon, v)
                if memo is not None:
                    memo[v] = n
            if n in seen:
                raise _Fail(TYPE_OR_VALUE_EXISTS, f"{name}: value #{i} provided more than once")
            seen.add(n)
            out.append(n)
        return out
    fn = _normalizer(schema, canon)
    for i, v in enumerate(values):
        try:
            n = fn(v)
        except Exception as exc:  # InvalidValue from the rule
            raise _Fail(INVALID_SYNTAX, f"{name}: value #{i} invalid per syntax") from exc
        if n in seen:
            raise _Fail(TYPE_OR_VALUE_EXISTS, f"{name}: value #{i} provided more than once")
        seen.add(n)
        out.append(n)
    return out


def _class_names(oc: Any, attr: str) -> list[str]:
    raw = getattr(oc, attr, ()) or ()
    if isinstance(raw, str):
        return [raw]
    return [str(x) for x in raw]


def _kind(oc: Any) -> str:
    return str(getattr(oc, "kind", "STRUCTURAL")).upper().rsplit(".", 1)[-1]


def _class_chain(schema: SchemaLike, names: Iterable[str]) -> list[Any]:
    """The named classes and all their superclasses, each once."""
    out: list[Any] = []
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        oc = schema.object_class(name)
        if oc is None:
            continue
        key = str(getattr(oc, "name", name)).lower()
        if key in seen:
            continue
        seen.add(key)
        out.append(oc)
        stack.extend(_class_names(oc, "sup"))
    return out


def _is_subclass(schema: SchemaLike, sub: Any, sup: Any) -> bool:
    target = str(getattr(sup, "name", "")).lower()
    chain = _class_chain(schema, [str(getattr(sub, "name", ""))])
    return any(str(getattr(oc, "name", "")).lower() == target for oc in chain)


def _structural(schema: SchemaLike, classes: list[bytes]) -> str | None:
    """The most-derived structural class among the listed classes (as the schema names it);
    65 when two listed structural classes are not in one superclass chain (slapd's check).
    Memoised on the class list."""
    memo = _memo(schema, "_apply_structural")
    if memo is None:
        return _structural_uncached(schema, classes)
    key = tuple(classes)
    try:
        hit = memo[key]
    except KeyError:
        try:
            hit = (True, _structural_uncached(schema, classes))
        except _Fail as fail:
            hit = (False, fail.result.message)
        memo[key] = hit
    if not hit[0]:
        raise _Fail(OBJECT_CLASS_VIOLATION, hit[1])
    return cast("str | None", hit[1])


def _structural_uncached(schema: SchemaLike, classes: list[bytes]) -> str | None:
    best: Any = None
    best_text = ""
    for value in classes:
        text = value.decode("utf-8", "replace").strip()
        oc = schema.object_class(text)
        if oc is None or _kind(oc) != "STRUCTURAL":
            continue
        if best is None or _is_subclass(schema, oc, best):
            best, best_text = oc, text
        elif not _is_subclass(schema, best, oc):
            raise _Fail(
                OBJECT_CLASS_VIOLATION,
                f"invalid structural object class chain ({best_text}/{text})",
            )
    return None if best is None else str(getattr(best, "name", best_text))


def _structural_unchanged(schema: SchemaLike, old: Entry, attrs: dict[str, list[bytes]]) -> None:
    """A modify may not change the structural object class (slapd: 69)."""
    new = _structural(schema, attrs["objectClass"])
    if new is None:
        raise _Fail(OBJECT_CLASS_VIOLATION, "no structural object class provided")
    stored = old.attrs.get("structuralObjectClass")
    if stored:
        was = stored[0].decode("utf-8", "replace")
    else:
        was = _structural(schema, old.attrs.get("objectClass", [])) or new
    if was.lower() != new.lower():
        raise _Fail(
            OBJECT_CLASS_MODS_PROHIBITED,
            f"structural object class modification from '{was}' to '{new}' not allowed",
        )
    attrs["structuralObjectClass"] = [was.encode("utf-8")]


_CheckKey = tuple[tuple[bytes, ...], frozenset[str]]


def _schema_check(schema: SchemaLike, attrs: dict[str, list[bytes]]) -> None:
    """objectClass present, a structural class, MUST present, nothing outside MUST/MAY.

    The outcome depends only on the class list and on which attributes are present, so it is
    memoised on those (bulk imports and typical writes repeat a handful of shapes)."""
    checks: dict[_CheckKey, tuple[int, str] | None] | None = getattr(
        schema, "_apply_schema_checks", None)
    if checks is None:
        checks = {}
        try:
            schema._apply_schema_checks = checks  # type: ignore[attr-defined]
        except AttributeError:  # a schema object that takes no attributes: no memo
            _schema_check_uncached(schema, attrs)
            return
    key = (tuple(attrs.get("objectClass", ())),
           frozenset(name for name, values in attrs.items() if values))
    try:
        cached = checks[key]
    except KeyError:
        try:
            _schema_check_uncached(schema, attrs)
            cached = None
        except _Fail as fail:
            cached = (fail.result.code, fail.result.message)
        if len(checks) > 4096:
            checks.clear()
        checks[key] = cached
    if cached is not None:
        raise _Fail(cached[0], cached[1])


def _schema_check_uncached(schema: SchemaLike, attrs: dict[str, list[bytes]]) -> None:
    classes = attrs.get("objectClass")
    if not classes:
        raise _Fail(OBJECT_CLASS_VIOLATION, "no objectClass attribute")
    if _structural(schema, classes) is None:
        raise _Fail(OBJECT_CLASS_VIOLATION, "no structural object class provided")
    allowed: set[str] = {"objectclass"}
    extensible = False
    for listed in classes:
        # MUST is reported against the class the entry lists (slapd's wording).
        listed_name = listed.decode("utf-8", "replace")
        listed_oc = schema.object_class(listed_name)
        shown = str(getattr(listed_oc, "name", listed_name))
        for oc in _class_chain(schema, [listed_name]):
            if str(getattr(oc, "name", "")).lower() == "extensibleobject":
                extensible = True
            for must in _class_names(oc, "must"):
                canon = schema.canonical(must) or must
                allowed.add(canon.lower())
                if not attrs.get(canon):
                    raise _Fail(
                        OBJECT_CLASS_VIOLATION,
                        f"object class '{shown}' requires attribute '{canon}'",
                    )
            for may in _class_names(oc, "may"):
                allowed.add((schema.canonical(may) or may).lower())
    if extensible:
        return
    for name in attrs:
        if name.split(";", 1)[0].lower() not in allowed and not _no_user_mod(schema, name) \
                and not _operational(schema, name):
            raise _Fail(OBJECT_CLASS_VIOLATION, f"attribute '{name}' not allowed")


def _single_value_check(schema: SchemaLike, attrs: dict[str, list[bytes]]) -> None:
    for name, values in attrs.items():
        if len(values) > 1 and _single_valued(schema, name):
            raise _Fail(CONSTRAINT_VIOLATION, f"attribute '{name}' cannot have multiple values")


# --------------------------------------------------------------------------- DN helpers


def _parse(schema: SchemaLike, dn: str, what: str = "invalid DN") -> tuple[DN, str]:
    try:
        parsed = parse_dn(dn)
        return parsed, schema.normalize_dn(dn)
    except Exception as exc:  # DNError or an undefined type / bad value
        raise _Fail(INVALID_DN, what) from exc


def _in_suffixes(ctx: ApplyContext, ndn: str) -> bool:
    if not ctx.suffixes:
        return True
    return any(ndn == s or ndn.endswith("," + s) for s in ctx.suffixes)


def _check_served(ctx: ApplyContext, ndn: str) -> None:
    if not _in_suffixes(ctx, ndn):
        raise _Fail(UNWILLING, "no global superior knowledge")


def _pretty(schema: SchemaLike, dn: DN) -> DN:
    """slapd's stored ("pretty") form: schema names for types, the AVAs of a multi-valued RDN
    sorted by that name; values as given."""
    out = []
    for rdn in dn:
        avas = [(schema.canonical(t) or t, v) for t, v in rdn]
        out.append(tuple(sorted(avas, key=lambda a: a[0]) if len(avas) > 1 else avas))
    return tuple(out)


def _under(txn: WriteTxn, schema: SchemaLike, rdn: DN, parent_ndn_: str, parent: DN) -> str:
    """The stored DN of an entry named ``rdn`` below ``parent``: like back-mdb, the parent part
    is the parent entry's stored DN when it exists (so ``OU=People`` reads ``ou=people``)."""
    head = format_dn(_pretty(schema, rdn))
    stored = txn.stored_dn(parent_ndn_) if parent_ndn_ else None
    tail = stored if stored is not None else format_dn(_pretty(schema, parent))
    return head + ("," + tail if tail else "")


def _matched(txn: WriteTxn, ndn: str) -> str:
    """The stored DN of the nearest existing ancestor of ``ndn`` ("" when none)."""
    cur = parent_ndn(ndn)
    while cur:
        e = txn.get_by_ndn(cur)
        if e is not None:
            return e.dn
        cur = parent_ndn(cur)
    return ""


def _load(txn: WriteTxn, ndn: str) -> Entry:
    entry = txn.get_by_ndn(ndn)
    if entry is None:
        raise _Fail(NO_SUCH_OBJECT, "", _matched(txn, ndn))
    return entry


def _rdn_check(
    schema: SchemaLike, rdn: Iterable[tuple[str, str]], attrs: dict[str, list[bytes]]
) -> None:
    for typ, value in rdn:
        canon = schema.canonical(typ) or typ
        values = attrs.get(canon)
        if not values:
            raise _Fail(NAMING_VIOLATION, f"naming attribute '{typ}' is not present in entry")
        try:
            target = _norm(schema, canon, value.encode("utf-8"))
            present = any(_norm(schema, canon, v) == target for v in values)
        except Exception:
            present = False
        if not present:
            raise _Fail(
                NAMING_VIOLATION, f"value of naming attribute '{typ}' is not present in entry"
            )


def _stamp(attrs: dict[str, list[bytes]], actor: str, time: str) -> None:
    attrs["modifiersName"] = [actor.encode("utf-8")]
    attrs["modifyTimestamp"] = [time.encode("utf-8")]


# --------------------------------------------------------------------------- operations


@dataclass(slots=True)
class PreparedAdd:
    """The state-independent part of an add (``prepare_add``): the entry as it will be stored
    unless the existence checks fail (``late``: the first failure after those checks)."""

    ndn: str
    head: str  # the stored form of the entry's own RDN
    tail: str  # the stored form of the parent DN as given (used when the parent is absent)
    attrs: dict[str, list[bytes]]
    time: str
    late: ApplyResult | None = None
    # the equality-normalised values of the attributes of ``attrs`` as given (and the RDN's),
    # value for value; absent for the operational attributes the add sets
    norms: dict[str, list[bytes]] | None = None


# Operational attributes ``_add_naming_and_schema`` sets (so their values have no norms).
_SET_AT_ADD = ("structuralObjectClass", "entryUUID", "creatorsName", "createTimestamp",
               "modifiersName", "modifyTimestamp")


def prepare_add(cmd: AddCommand, ctx: ApplyContext) -> PreparedAdd | ApplyResult:
    """Every check of an add that does not read the store, in apply's order. A failure before
    the existence checks is returned as the result; one after them is kept in ``late``.
    Pure: no transaction, so it can run ahead of (or apart from) the writer."""
    try:
        dn, ndn, attrs, norms = _add_values(cmd, ctx)
    except _Fail as fail:
        return fail.result
    except DNError as exc:
        return ApplyResult(INVALID_DN, message=str(exc))
    try:
        _add_naming_and_schema(cmd, ctx.schema, dn, attrs, norms)
        head = format_dn(_pretty(ctx.schema, dn[:1]))
        tail = _pretty_parent(ctx.schema, dn[1:])
    except _Fail as fail:
        return PreparedAdd(ndn, "", "", attrs, cmd.time, fail.result)
    except DNError as exc:
        return PreparedAdd(ndn, "", "", attrs, cmd.time, ApplyResult(INVALID_DN, message=str(exc)))
    for name in _SET_AT_ADD:
        norms.pop(name, None)
    return PreparedAdd(ndn, head, tail, attrs, cmd.time, None, norms)


def _pretty_parent(schema: SchemaLike, parent: DN) -> str:
    """``format_dn(_pretty(schema, parent))``, memoised: entries share their parents."""
    memo = _memo(schema, "_apply_pretty_parent")
    if memo is None:
        return format_dn(_pretty(schema, parent))
    text: str | None = memo.get(parent)
    if text is None:
        text = memo[parent] = format_dn(_pretty(schema, parent))
    return text


_PLAIN_DN = re.compile(r'[^\\"#+;<>\x00]*\Z')


def _parse_new(schema: SchemaLike, dn: str) -> tuple[DN, str]:
    """``_parse`` for an add: a plain DN (no escapes, quotes, hex values or multi-valued
    RDNs, no space around its first comma) parses as its first RDN followed by its parent,
    whose parse is memoised."""
    i = dn.find(",")
    if not (0 < i < len(dn) - 1 and dn[i - 1] != " " and dn[i + 1] != " "
            and _PLAIN_DN.match(dn)):
        return _parse(schema, dn)
    memo = _memo(schema, "_apply_parsed_parents")
    if memo is None:
        return _parse(schema, dn)
    rest = dn[i + 1 :]
    parent: DN | None = memo.get(rest)
    try:
        if parent is None:
            parent = memo[rest] = parse_dn(rest)
        parsed = parse_dn(dn[:i]) + parent
        return parsed, schema.normalize_dn(dn)
    except Exception as exc:  # DNError or an undefined type / bad value
        raise _Fail(INVALID_DN, "invalid DN") from exc


def _add_values(cmd: AddCommand, ctx: ApplyContext
                ) -> tuple[DN, str, dict[str, list[bytes]], dict[str, list[bytes]]]:
    """The checks before the existence checks: DN, served naming context, attribute types and
    value syntax, no-user-modification."""
    schema = ctx.schema
    dn, ndn = _parse_new(schema, cmd.dn)
    if not dn:
        raise _Fail(ALREADY_EXISTS, "root DSE already exists")
    _check_served(ctx, ndn)
    attrs: dict[str, list[bytes]] = {}
    norms: dict[str, list[bytes]] = {}
    known = _memo(schema, "_apply_normalizers")  # filled by _normalizer
    for (name, values), (canon, no_user_mod, problem) in zip(cmd.attributes,
                                                             _name_plan(schema, cmd),
                                                             strict=True):
        if canon is None:  # ``canon``: the storage key (the canonical type, its tags)
            raise _Fail(UNDEFINED_TYPE, problem)
        if not values:
            raise _Fail(PROTOCOL_ERROR, f"{name}: no values for attribute type")
        prev = attrs.get(canon)
        merged = list(values) if prev is None else prev + list(values)
        # slapd validates value syntax before it refuses NO-USER-MODIFICATION attributes
        if len(merged) == 1 and canon != "objectClass":  # _normalised of one value, inline
            fn = None if known is None else known.get(canon)
            if fn is None:
                fn = _normalizer(schema, canon)
            try:
                norms[canon] = [fn(merged[0])]
            except Exception as exc:  # InvalidValue from the rule
                raise _Fail(INVALID_SYNTAX, f"{name}: value #0 invalid per syntax") from exc
        else:
            norms[canon] = _normalised(schema, name, canon, merged)
        if no_user_mod:
            raise _Fail(CONSTRAINT_VIOLATION, f"{name}: no user modification allowed")
        attrs[canon] = merged
    return dn, ndn, attrs, norms


def _name_plan(schema: SchemaLike, cmd: AddCommand
               ) -> tuple[tuple[str | None, bool, str], ...]:
    """(storage key or None, NO-USER-MODIFICATION, why there is no key) of each attribute an
    add lists: schema-only answers, memoised on the list of names (adds repeat a few shapes)."""
    names = tuple(name for name, _ in cmd.attributes)
    memo = _memo(schema, "_apply_add_names")
    plan = None if memo is None else memo.get(names)
    if plan is None:
        keys = [_key_or_problem(schema, name) for name in names]
        plan = tuple((k, k is not None and _no_user_mod(schema, k), why) for k, why in keys)
        if memo is not None:
            memo[names] = plan
    return cast("tuple[tuple[str | None, bool, str], ...]", plan)


def _add_naming_and_schema(cmd: AddCommand, schema: SchemaLike, dn: DN,
                           attrs: dict[str, list[bytes]], norms: dict[str, list[bytes]]) -> None:
    """The checks after the existence checks (naming, schema, single values); completes
    ``attrs`` with the RDN values and the operational attributes of a new entry."""
    _naming_not_operational(schema, (_canon(schema, typ) for typ, _ in dn[0]))
    # The RDN's values belong to the entry (slapd adds them when missing).
    for typ, value in dn[0]:
        canon = _canon(schema, typ)
        raw = value.encode("utf-8")
        try:
            n = _norm(schema, canon, raw) if canon == "objectClass" else \
                _normalizer(schema, canon)(raw)
        except Exception as exc:
            raise _Fail(INVALID_DN, "invalid DN") from exc
        if n not in norms.get(canon, []):
            attrs.setdefault(canon, []).append(raw)
            norms.setdefault(canon, []).append(n)
    _schema_check(schema, attrs)
    _single_value_check(schema, attrs)
    structural = _structural(schema, attrs["objectClass"]) or ""
    actor = cmd.actor.encode("utf-8")
    when = cmd.time.encode("utf-8")
    attrs["structuralObjectClass"] = [structural.encode("utf-8")]
    attrs["entryUUID"] = [cmd.entry_uuid.encode("utf-8")]
    attrs["creatorsName"] = [actor]
    attrs["createTimestamp"] = [when]
    attrs["modifiersName"] = [actor]
    attrs["modifyTimestamp"] = [when]


def add_prepared(txn: WriteTxn, prep: PreparedAdd, ctx: ApplyContext, *,
                 side_effects: bool = True) -> ApplyResult:
    """The rest of an add after ``prepare_add``: existence checks, then ``prep.late``, then
    the write and the group work. ``apply`` of an AddCommand is exactly
    ``add_prepared(txn, prepare_add(cmd, ctx), ctx)`` (when that gives a ``PreparedAdd``).
    ``side_effects=False``: the result does not list (re-read) the entries the group work
    rewrote, nor re-reads the new entry (a bulk load that only needs the result code)."""
    try:
        return _add_stateful(txn, prep, ctx, side_effects)
    except _Fail as fail:
        return fail.result
    except DNError as exc:
        return ApplyResult(INVALID_DN, message=str(exc))


def _add_stateful(txn: WriteTxn, prep: PreparedAdd, ctx: ApplyContext,
                  side_effects: bool = True) -> ApplyResult:
    ndn = prep.ndn
    if txn.id_for_ndn(ndn) is not None:
        raise _Fail(ALREADY_EXISTS)
    parent = parent_ndn(ndn)
    is_suffix = ndn in ctx.suffixes or not parent
    if not is_suffix and txn.id_for_ndn(parent) is None:
        raise _Fail(NO_SUCH_OBJECT, "", _matched(txn, ndn))
    if prep.late is not None:
        return prep.late
    # like back-mdb, the parent part is the parent entry's stored DN when it exists (so
    # ``OU=People`` reads ``ou=people``)
    stored = txn.stored_dn(parent) if parent else None
    tail = stored if stored is not None else prep.tail
    entry = Entry(txn.next_id(), prep.head + ("," + tail if tail else ""), prep.attrs)
    txn.put_entry(entry)
    work = GroupWork(txn, ctx.schema, prep.time)
    after_add(work, entry)
    if not side_effects:
        return ApplyResult(SUCCESS, entry=entry)
    return _done(txn, work, ApplyResult(SUCCESS, entry=entry))


def _add(txn: WriteTxn, cmd: AddCommand, ctx: ApplyContext) -> ApplyResult:
    prep = prepare_add(cmd, ctx)
    if isinstance(prep, ApplyResult):
        return prep
    return _add_stateful(txn, prep, ctx)


def _check_incrementable(schema: SchemaLike, name: str, canon: str) -> None:
    """slapd refuses increment on a non-integer attribute before looking at the entry."""
    rule = schema.equality(canon)
    if rule is None or str(getattr(rule, "name", "")).lower() not in _INTEGER_RULES:
        raise _Fail(CONSTRAINT_VIOLATION, f"{name}: attribute syntax inappropriate for increment")


def _increment(
    schema: SchemaLike, name: str, canon: str, current: list[bytes], values: tuple[bytes, ...]
) -> list[bytes]:
    _check_incrementable(schema, name, canon)
    if len(values) != 1:
        raise _Fail(PROTOCOL_ERROR, f"modify/increment: {name}: requires exactly one value")
    try:
        delta = int(values[0].decode("ascii").strip())
    except ValueError as exc:
        raise _Fail(INVALID_SYNTAX, f"modify/increment: {name}: invalid syntax") from exc
    out: list[bytes] = []
    for v in current:
        try:
            out.append(str(int(v.decode("ascii").strip()) + delta).encode("ascii"))
        except ValueError as exc:
            raise _Fail(CONSTRAINT_VIOLATION, f"{name}: value not an integer") from exc
    return out


def _modify(txn: WriteTxn, cmd: ModifyCommand, ctx: ApplyContext) -> ApplyResult:
    schema = ctx.schema
    dn, ndn = _parse(schema, cmd.dn)
    _check_served(ctx, ndn)
    old = _load(txn, ndn)
    # a shallow copy: every change below puts a new list in place of the one it changes
    # (``old`` is this transaction's own decoded copy, compared with ``new`` by put_entry)
    attrs = dict(old.attrs)
    replaced: set[str] = set()
    system = cmd.actor == SYSTEM_ACTOR
    credentials = False
    for op, name, values in cmd.changes:
        canon = _key(schema, name)  # the storage key: the canonical type and its tags
        if canon in EPOCH_ATTRS:
            credentials = True
        if _no_user_mod(schema, canon) and not (system and canon.lower() in SERVER_MANAGED):
            raise _Fail(CONSTRAINT_VIOLATION, f"{name}: no user modification allowed")
        if op != 3:
            given = _normalised(schema, name, canon, values)
            if op in (0, 2) and len(values) > 1 and _single_valued(schema, canon):
                raise _Fail(CONSTRAINT_VIOLATION, f"{name}: multiple values provided")
        current = attrs.get(canon, [])
        cur_norm: list[bytes] = []
        if op in (0, 1) and current:  # replace and increment do not compare values
            try:
                cur_norm = [_norm(schema, canon, v) for v in current]
            except Exception:  # stored values are valid; be defensive anyway
                cur_norm = list(current)
        if op == 0:
            for i, n in enumerate(given):
                if n in cur_norm:
                    raise _Fail(
                        TYPE_OR_VALUE_EXISTS, f"modify/add: {name}: value #{i} already exists"
                    )
            if values:
                attrs[canon] = current + list(values)
        elif op == 1:
            if not current:
                raise _Fail(NO_SUCH_ATTRIBUTE, f"modify/delete: {name}: no such attribute")
            if not values:
                del attrs[canon]
                continue
            keep = [True] * len(current)
            for n in given:
                if n not in cur_norm:
                    raise _Fail(NO_SUCH_ATTRIBUTE, f"modify/delete: {name}: no such value")
                keep[cur_norm.index(n)] = False
            remaining = [v for v, k in zip(current, keep, strict=True) if k]
            if remaining:
                attrs[canon] = remaining
            else:
                del attrs[canon]
        elif op == 2:
            replaced.add(canon)
            if values:
                attrs[canon] = list(values)
            else:
                attrs.pop(canon, None)
        elif op == 3:
            _check_incrementable(schema, name, canon)
            if not current:
                raise _Fail(NO_SUCH_ATTRIBUTE, f"modify/increment: {name}: no such attribute")
            attrs[canon] = _increment(schema, name, canon, current, values)
        else:
            raise _Fail(PROTOCOL_ERROR, f"unknown modify operation {op}")
    if not attrs.get("objectClass"):
        raise _Fail(OBJECT_CLASS_VIOLATION, "no objectClass attribute")
    _structural_unchanged(schema, old, attrs)
    _rdn_check(schema, dn[0], attrs)
    _schema_check(schema, attrs)
    _single_value_check(schema, attrs)
    if not system:
        _stamp(attrs, cmd.actor, cmd.time)
    new = Entry(old.id, old.dn, attrs)
    txn.put_entry(new, old)
    if credentials and _credentials_moved(old.attrs, attrs):
        _raise_epoch(txn, old.id)
    work = GroupWork(txn, schema, cmd.time)
    after_modify(work, old, new, replaced)
    return _done(txn, work, ApplyResult(SUCCESS, entry=new))


def _delete(txn: WriteTxn, cmd: DeleteCommand, ctx: ApplyContext) -> ApplyResult:
    _, ndn = _parse(ctx.schema, cmd.dn)
    _check_served(ctx, ndn)
    entry = _load(txn, ndn)
    if txn.has_children(entry.id):
        raise _Fail(NOT_ALLOWED_ON_NON_LEAF, "subordinate objects must be deleted first")
    txn.delete_entry(entry)
    _forget_epoch(txn, entry.id)
    work = GroupWork(txn, ctx.schema, cmd.time)
    after_delete(work, entry, _validator(ctx.schema))
    return _done(txn, work, ApplyResult(SUCCESS, entry=entry, old_dn=entry.dn))


def _modify_dn(txn: WriteTxn, cmd: ModifyDNCommand, ctx: ApplyContext) -> ApplyResult:
    schema = ctx.schema
    dn, ndn = _parse(schema, cmd.dn)
    _check_served(ctx, ndn)
    old = _load(txn, ndn)
    new_rdn_dn, _ = _parse(schema, cmd.new_rdn, "invalid new RDN")
    if len(new_rdn_dn) != 1:
        raise _Fail(INVALID_DN, "invalid new RDN")
    new_rdn = new_rdn_dn[0]
    stored_dn = parse_dn(old.dn)
    if cmd.new_superior is not None:
        sup_dn, sup_ndn = _parse(schema, cmd.new_superior, "invalid new superior DN")
    else:
        sup_dn, sup_ndn = stored_dn[1:], parent_ndn(ndn)
    new_dn_str = _under(txn, schema, (new_rdn,), sup_ndn, sup_dn)
    new_ndn = schema.normalize_dn(new_dn_str)
    if not _in_suffixes(ctx, new_ndn):
        raise _Fail(AFFECTS_MULTIPLE_DSAS, "cannot rename between DSAs")
    if cmd.new_superior is not None:
        if sup_ndn and txn.id_for_ndn(sup_ndn) is None:
            raise _Fail(NO_SUCH_OBJECT, "new superior not found")
        if sup_ndn == ndn or sup_ndn.endswith("," + ndn):
            raise _Fail(UNWILLING, "cannot place an entry below itself")
    if new_ndn != ndn and txn.id_for_ndn(new_ndn) is not None:
        raise _Fail(ALREADY_EXISTS)
    attrs = {k: list(v) for k, v in old.attrs.items()}
    new_pairs: list[tuple[str, bytes]] = []
    for typ, value in new_rdn:
        canon = schema.canonical(typ)
        if canon is None:
            raise _Fail(INVALID_DN, "invalid new RDN")
        try:
            new_pairs.append((canon, _norm(schema, canon, value.encode("utf-8"))))
        except Exception as exc:
            raise _Fail(INVALID_DN, "invalid new RDN") from exc
    _naming_not_operational(schema, (c for c, _ in new_pairs))
    if cmd.delete_old_rdn:
        for typ, value in dn[0]:
            canon = schema.canonical(typ) or typ
            try:
                target = _norm(schema, canon, value.encode("utf-8"))
            except Exception:
                continue
            # Removed even when the new RDN repeats it: the new spelling replaces the old.
            vals = attrs.get(canon, [])
            kept = [v for v in vals if _norm(schema, canon, v) != target]
            if kept:
                attrs[canon] = kept
            else:
                attrs.pop(canon, None)
    for (canon, target), (_, value) in zip(new_pairs, new_rdn, strict=True):
        vals = attrs.setdefault(canon, [])
        if all(_norm(schema, canon, v) != target for v in vals):
            vals.append(value.encode("utf-8"))
    _schema_check(schema, attrs)
    _single_value_check(schema, attrs)
    _stamp(attrs, cmd.actor, cmd.time)
    new = Entry(old.id, new_dn_str, attrs)
    txn.put_entry(new, old)
    moved: list[Pair] = [(old, new)]
    moved += _rename_descendants(txn, old.id, len(stored_dn), new_dn_str)
    work = GroupWork(txn, schema, cmd.time)
    after_rename(work, moved, _validator(schema))
    return _done(txn, work, ApplyResult(SUCCESS, entry=new, old_dn=old.dn))


def _rename_descendants(txn: WriteTxn, root: int, old_depth: int, new_dn: str) -> list[Pair]:
    """Rewrite every descendant's stored DN below a renamed entry (ids and links stay);
    returns the (old, new) pairs."""
    out: list[Pair] = []
    stack = list(txn.children(root))
    while stack:
        eid = stack.pop()
        child = txn.get(eid)
        if child is None:
            continue
        parsed = parse_dn(child.dn)
        own = parsed[: len(parsed) - old_depth]
        updated = Entry(child.id, format_dn(own) + "," + new_dn, child.attrs)
        txn.put_entry(updated, child, keep_parent=True)
        out.append((child, updated))
        stack.extend(txn.children(eid))
    return out


def _validator(schema: SchemaLike) -> Callable[[dict[str, list[bytes]]], bool]:
    """Whether attributes pass the schema check (refint leaves invalid results alone)."""

    def valid(attrs: dict[str, list[bytes]]) -> bool:
        try:
            _schema_check(schema, attrs)
        except _Fail:
            return False
        return True

    return valid


def _done(txn: WriteTxn, work: GroupWork, result: ApplyResult) -> ApplyResult:
    """Attach the side effects, re-reading the main entry if group work changed it too."""
    if not work.touched:
        return result
    main = None if result.entry is None else result.entry.id
    for eid in work.touched:
        current = txn.get(eid)
        if current is None:
            continue
        if eid == main:
            result.entry = current
        else:
            result.side_effects.append(current)
    return result


# --------------------------------------------------------------------------- credential epochs


def _epoch_key(eid: int) -> bytes:
    return _EPOCH_KEY + id_bytes(eid)


def auth_epoch(txn: ReadTxn, eid: int) -> int:
    """How many times the credentials of entry ``eid`` changed (0: never)."""
    raw = txn._txn.get(_epoch_key(eid), db=txn.store._meta)
    return 0 if raw is None else int.from_bytes(raw, "big")


def _raise_epoch(txn: WriteTxn, eid: int) -> None:
    txn._txn.put(_epoch_key(eid), (auth_epoch(txn, eid) + 1).to_bytes(8, "big"),
                 db=txn.store._meta)


def _forget_epoch(txn: WriteTxn, eid: int) -> None:
    txn._txn.delete(_epoch_key(eid), db=txn.store._meta)


def _credentials_moved(old: dict[str, list[bytes]], new: dict[str, list[bytes]]) -> bool:
    """Did a change revoke what was issued before it: a new password (or none), a new
    disabled flag, a new lock (an unlock revokes nothing: the lock did)?"""
    for name in ("userPassword", "obaDisabled"):
        if old.get(name) != new.get(name):
            return True
    lock = new.get(lockout.LOCKED)
    return bool(lock) and old.get(lockout.LOCKED) != lock


# --------------------------------------------------------------------------- bind outcomes


def _bind_entry(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> tuple[Entry, float,
                                                                              float]:
    payload = cmd.payload
    try:
        dn, now, window = str(payload["dn"]), float(payload["now"]), float(payload["window"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _Fail(PROTOCOL_ERROR, f"{cmd.kind}: bad payload") from exc
    _, ndn = _parse(ctx.schema, dn)
    return _load(txn, ndn), now, window


def _system_modify(txn: WriteTxn, cmd: SystemCommand, entry: Entry,
                   changes: lockout.Changes, ctx: ApplyContext) -> ApplyResult:
    result = _modify(txn, ModifyCommand(entry.dn, changes, cmd.request_id, SYSTEM_ACTOR,
                                        cmd.time), ctx)
    return ApplyResult(result.code, result.matched_dn, result.message)


def _bind_failure(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
    """Record one failed bind; the message says "locked" when the account is locked after
    it (by this failure or before)."""
    entry, now, window = _bind_entry(txn, cmd, ctx)
    try:
        max_attempts = int(cmd.payload["max"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _Fail(PROTOCOL_ERROR, f"{cmd.kind}: bad payload") from exc
    changes, locked = lockout.record_failure(entry.attrs, now, max(1, max_attempts), window)
    result = (_system_modify(txn, cmd, entry, changes, ctx) if changes
              else ApplyResult(SUCCESS))
    if result.code == SUCCESS and locked:
        result.message = "locked"
    return result


def _bind_success(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
    """Clear failures and an expired lock; refuse (49, changing nothing) on a locked account:
    the failures of concurrent binds may have locked it while this one was verified."""
    entry, now, window = _bind_entry(txn, cmd, ctx)
    if lockout.locked(entry.attrs, window, now):
        return ApplyResult(INVALID_CREDENTIALS, message="account locked")
    changes = lockout.reset(entry.attrs)
    return _system_modify(txn, cmd, entry, changes, ctx) if changes else ApplyResult(SUCCESS)


def _password_rehash(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
    """Replace the ``userPassword`` value ``old`` with ``new`` if ``old`` is still stored
    (noSuchAttribute, changing nothing, when it is not: the password changed meanwhile).
    The credential epoch is not raised: the password is the same one."""
    payload = cmd.payload
    try:
        dn, old, new = str(payload["dn"]), payload["old"], payload["new"]
    except (KeyError, TypeError) as exc:
        raise _Fail(PROTOCOL_ERROR, f"{cmd.kind}: bad payload") from exc
    if not (isinstance(old, bytes) and isinstance(new, bytes) and old and new.startswith(b"{")
            and b"}" in new):
        raise _Fail(PROTOCOL_ERROR, f"{cmd.kind}: bad payload")
    _, ndn = _parse(ctx.schema, dn)
    _check_served(ctx, ndn)
    entry = _load(txn, ndn)
    values = entry.attrs.get("userPassword", [])
    if old not in values:
        return ApplyResult(NO_SUCH_ATTRIBUTE, message="the password changed meanwhile")
    attrs = dict(entry.attrs)
    attrs["userPassword"] = ([v for v in values if v != old] if new in values
                             else [new if v == old else v for v in values])
    txn.put_entry(Entry(entry.id, entry.dn, attrs), entry)
    return ApplyResult(SUCCESS)


SystemHandler = Callable[[WriteTxn, SystemCommand, ApplyContext], ApplyResult]
_SYSTEM_HANDLERS: dict[str, SystemHandler] = {}


def register_system(kind: str, handler: SystemHandler) -> None:
    """Register the apply function for ``SystemCommand``s of ``kind``. Handlers follow the
    same rules as ``apply``: deterministic, validate before writing, and write only through
    ``txn`` (``txn.store.aux_db(name)`` gives a named sub-database of their own)."""
    _SYSTEM_HANDLERS[kind] = handler


def apply(txn: WriteTxn, cmd: Command, ctx: ApplyContext) -> ApplyResult:
    """Validate ``cmd`` against the current state; change nothing and return the LDAP error,
    or make the whole change and return success (with the resulting entry)."""
    try:
        if isinstance(cmd, SystemCommand):
            handler = _SYSTEM_HANDLERS.get(cmd.kind)
            if handler is None:
                return ApplyResult(UNWILLING, message=f"unknown system command {cmd.kind!r}")
            return handler(txn, cmd, ctx)
        if isinstance(cmd, AddCommand):
            return _add(txn, cmd, ctx)
        if isinstance(cmd, ModifyCommand):
            return _modify(txn, cmd, ctx)
        if isinstance(cmd, DeleteCommand):
            return _delete(txn, cmd, ctx)
        return _modify_dn(txn, cmd, ctx)
    except _Fail as fail:
        return fail.result
    except DNError as exc:
        return ApplyResult(INVALID_DN, message=str(exc))


register_system(BIND_FAILURE, _bind_failure)
register_system(BIND_SUCCESS, _bind_success)
register_system(PASSWORD_REHASH, _password_rehash)
