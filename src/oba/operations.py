"""Directory operations for any front end (LDAP listener, REST API, CLI): one place that decides.

Rules for this module: every front end calls these functions instead of touching the store or
the replicator itself, so an operation means the same over LDAP and REST — same access
decisions, same Commands on the single write path, same result codes. Functions take an
``Identity`` (who is asking) and protocol-neutral arguments, and report failures as
``OpError(code, message, matched_dn)`` with an LDAP result code; front ends map codes to their
own wire format. No socket, HTTP or BER code here.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from oba.directory import password as passwords
from oba.directory.access import PROTECTED_ATTRS
from oba.directory.apply import ApplyResult
from oba.directory.commands import (
    AddCommand,
    Command,
    DeleteCommand,
    ModifyCommand,
    ModifyDNCommand,
)
from oba.directory.entry import Entry
from oba.directory.evaluate import compare as compare_values
from oba.directory.evaluate import compile_filter
from oba.directory.search import SearchContext, search
from oba.protocol.dn import DNError, parse_dn
from oba.protocol.messages import And, Filter, Not, Or, Scope
from oba.protocol.resultcodes import ResultCode
from oba.schema import InvalidValue, UndefinedAttribute
from oba.server import rootdse
from oba.server.node import SUBSCHEMA_NDN, Node

Attributes = Sequence[tuple[str, Sequence[bytes]]]

PASSWORD_ATTR = "userPassword"
GENERATED_PASSWORD_LENGTH = 8  # slapd's length for a server-generated password
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


class OpError(Exception):
    """An operation's non-success outcome, as an LDAP result code."""

    def __init__(self, code: ResultCode | int, message: str = "", matched_dn: str = "") -> None:
        super().__init__(message or ResultCode(code).name)
        self.code = ResultCode(code)
        self.message = message
        self.matched_dn = matched_dn


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: a bind DN as given and its normalised form (``""`` = anonymous)."""

    dn: str = ""
    ndn: str = ""
    source: str = "ldap"  # the front end that authenticated it: "ldap" | "rest" | "cli"

    @property
    def anonymous(self) -> bool:
        return not self.ndn

    def as_source(self, source: str) -> Identity:
        return Identity(self.dn, self.ndn, source)


ANONYMOUS = Identity()


def generalized_time(now: float | None = None) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now))


class Operations:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.schema = node.schema
        self.search_ctx = SearchContext(node.schema)

    # ------------------------------------------------------------------ helpers

    def normalize_dn(self, dn: str) -> str:
        try:
            return self.schema.normalize_dn(dn)
        except (DNError, UndefinedAttribute, InvalidValue) as exc:
            raise OpError(ResultCode.INVALID_DN_SYNTAX, "invalid DN") from exc

    def matched_dn(self, txn: Any, dn: str) -> str:
        """The DN of the nearest existing ancestor of ``dn`` (slapd's matchedDN)."""
        try:
            parsed = parse_dn(dn)
        except DNError:
            return ""
        for i in range(1, len(parsed)):
            try:
                anc_ndn = self.schema.normalize_dn(parsed[i:])
            except (DNError, UndefinedAttribute, InvalidValue):
                continue
            entry = txn.get_by_ndn(anc_ndn)
            if entry is not None:
                return str(entry.dn)
        return ""

    def get_entry(self, who: Identity, dn: str) -> Entry:
        """The entry at ``dn`` as ``who`` may see it (protected attributes removed)."""
        ndn = self.normalize_dn(dn)
        with self.node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            if entry is None:
                raise OpError(ResultCode.NO_SUCH_OBJECT, "", self.matched_dn(txn, dn))
        return self.visible(who, entry, ndn)

    def visible(self, who: Identity, entry: Entry, ndn: str | None = None) -> Entry:
        access = self.node.access
        if access.is_root(who.ndn):
            return entry
        hidden = [a for a in entry.attrs if a.lower() in PROTECTED_ATTRS]
        if not hidden:
            return entry
        if who.anonymous:
            ndn = ""
        ndn = ndn if ndn is not None else self.schema.normalize_dn(entry.dn)
        drop = {a for a in hidden if not access.can_read_attr(who.ndn, ndn, a)}
        if not drop:
            return entry
        return Entry(entry.id, entry.dn, {k: v for k, v in entry.attrs.items() if k not in drop})

    # ------------------------------------------------------------------ bind

    async def bind(self, dn: str, password: bytes, source: str = "ldap") -> Identity:
        """Simple bind; returns the new identity or raises OpError (49 on bad credentials).
        Every attempt with a DN is put in the audit trail (never the password)."""
        try:
            who = await self._bind(dn, password)
        except OpError as err:
            if dn:
                self.node.audit.record("warn", f"bind {dn}: {err.code.name.lower()}", source,
                                       dn, "", dn=dn, resultCode=int(err.code))
            raise
        if dn:
            self.node.audit.record("info", f"bind {dn}: success", source, who.dn, "", dn=dn,
                                   resultCode=0)
        return who.as_source(source)

    async def _bind(self, dn: str, password: bytes) -> Identity:
        """Simple bind; returns the new identity or raises OpError (49 on bad credentials)."""
        if not dn:
            if password:
                raise OpError(ResultCode.UNWILLING_TO_PERFORM,
                              "unauthenticated bind (DN with no password) disallowed")
            return ANONYMOUS
        ndn = self.normalize_dn(dn)
        if not password:
            raise OpError(ResultCode.UNWILLING_TO_PERFORM,
                          "unauthenticated bind (DN with no password) disallowed")
        node = self.node
        if ndn == node.root_ndn and node.root_password:
            if passwords.verify(password, node.root_password):
                return Identity(node.root_dn, ndn)
            raise OpError(ResultCode.INVALID_CREDENTIALS)
        with node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            stored = list(entry.attrs.get("userPassword", ())) if entry is not None else []
            disabled = entry is not None and any(
                v.upper() in (b"TRUE", b"1", b"YES") for v in entry.attrs.get("obaDisabled", ())
            )
        if not stored or disabled:
            raise OpError(ResultCode.INVALID_CREDENTIALS)
        if any(passwords.split_scheme(s)[0] == "ARGON2" for s in stored):
            # Argon2 is deliberately slow: verify off the event loop.
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(
                None, lambda: any(passwords.verify(password, s) for s in stored))
        else:
            ok = any(passwords.verify(password, s) for s in stored)
        if not ok:
            raise OpError(ResultCode.INVALID_CREDENTIALS)
        return Identity(entry.dn if entry is not None else dn, ndn)

    # ------------------------------------------------------------------ reads

    def compare(self, who: Identity, dn: str, attr: str, value: bytes) -> bool:
        ndn = self.normalize_dn(dn)
        canon = self.schema.canonical(attr.split(";", 1)[0])
        if canon is None:
            raise OpError(ResultCode.UNDEFINED_ATTRIBUTE_TYPE, f"{attr}: attribute type undefined")
        with self.node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            if entry is None:
                raise OpError(ResultCode.NO_SUCH_OBJECT, "", self.matched_dn(txn, dn))
        if not self.node.access.can_read_attr(who.ndn, ndn, canon):
            raise OpError(ResultCode.INSUFFICIENT_ACCESS_RIGHTS)
        if self.schema.equality(canon) is None:
            raise OpError(ResultCode.INAPPROPRIATE_MATCHING)
        if not entry.attrs.get(canon):
            raise OpError(ResultCode.NO_SUCH_ATTRIBUTE)
        try:
            res = compare_values(entry, canon, value, self.schema)
        except InvalidValue:
            res = None
        if res is None:
            if entry.attrs.get(canon):
                raise OpError(ResultCode.INVALID_ATTRIBUTE_SYNTAX)
            raise OpError(ResultCode.NO_SUCH_ATTRIBUTE)
        return res

    def search(
        self,
        who: Identity,
        base: str,
        scope: Scope | int,
        flt: Filter,
        size_limit: int = 0,
        time_limit: float = 0,
    ) -> Iterator[Entry]:
        """Matching entries as ``who`` may see them (protected attributes removed).

        Raises OpError before the first entry (bad base, missing base) or after the last one
        allowed (size or time limit exceeded). Must be consumed on the calling thread.
        """
        base_ndn = self.normalize_dn(base)
        node = self.node
        if base_ndn == "" and scope == Scope.BASE:
            entry = rootdse.root_dse(node)
            if compile_filter(flt, self.schema)(entry):
                yield entry
            return
        if base_ndn == SUBSCHEMA_NDN and scope == Scope.BASE:
            entry = rootdse.subschema(node)
            if compile_filter(flt, self.schema)(entry):
                yield entry
            return
        deadline = time.monotonic() + time_limit if time_limit > 0 else 0.0
        guard = None if node.access.is_root(who.ndn) else protected_in(flt)
        matcher = compile_filter(flt, self.schema) if guard else None
        count = 0
        with node.store.read() as txn:
            if not base_ndn or txn.get_by_ndn(base_ndn) is None:
                raise OpError(ResultCode.NO_SUCH_OBJECT, "", self.matched_dn(txn, base))
            try:
                for entry in search(txn, self.search_ctx, base_ndn, int(scope), flt):
                    if deadline and time.monotonic() > deadline:
                        raise OpError(ResultCode.TIME_LIMIT_EXCEEDED)
                    seen = self.visible(who, entry) if guard or "userPassword" in entry.attrs \
                        else entry
                    if matcher is not None and seen is not entry and matcher(seen) is not True:
                        # slapd: a filter item on an attribute the client may not search is
                        # Undefined, so re-check without the hidden attributes
                        continue
                    if size_limit and count >= size_limit:
                        raise OpError(ResultCode.SIZE_LIMIT_EXCEEDED)
                    count += 1
                    yield seen
            except (InvalidValue, UndefinedAttribute) as exc:
                raise OpError(ResultCode.PROTOCOL_ERROR, str(exc)) from exc

    def has_children(self, entry: Entry) -> bool:
        with self.node.store.read() as txn:
            return bool(txn.has_children(entry.id))

    # ------------------------------------------------------------------ writes

    def _authorize_write(self, who: Identity, ndn: str, attrs: frozenset[str] | None) -> None:
        denied = self.node.access.check_write(who.ndn, ndn, attrs)
        if denied is not None:
            raise OpError(denied.code, denied.message)

    def _actor(self, who: Identity) -> str:
        return self.node.root_dn if who.ndn == self.node.root_ndn else who.dn

    async def submit(self, cmd: Command) -> ApplyResult:
        result = await self.node.replicator.submit(cmd)
        if result.code != ResultCode.SUCCESS:
            raise OpError(result.code, result.message, result.matched_dn)
        return result

    async def submit_as(self, who: Identity, cmd: Command) -> ApplyResult:
        """Submit a write made on behalf of ``who`` and put it in the audit trail."""
        try:
            result = await self.submit(cmd)
        except OpError as err:
            self._audit_write(who, cmd, int(err.code), err.message)
            raise
        self._audit_write(who, cmd, 0, "")
        return result

    def _audit_write(self, who: Identity, cmd: Command, code: int, message: str) -> None:
        kind = type(cmd).__name__.removesuffix("Command").lower()
        fields: dict[str, Any] = {"dn": getattr(cmd, "dn", ""), "operation": kind,
                                  "resultCode": code}
        if isinstance(cmd, AddCommand):
            fields["attributes"] = sorted({name for name, _ in cmd.attributes})
        elif isinstance(cmd, ModifyCommand):
            fields["attributes"] = sorted({name for _, name, _ in cmd.changes})
        elif isinstance(cmd, ModifyDNCommand):
            fields["newRDN"] = cmd.new_rdn
            if cmd.new_superior:
                fields["newSuperior"] = cmd.new_superior
        if message:
            fields["error"] = message
        self.node.audit.record(
            "info" if code == 0 else "warn",
            f"{kind} {fields['dn']}: {ResultCode(code).name.lower()}",
            who.source, who.dn, cmd.request_id, **fields,
        )

    async def add(self, who: Identity, dn: str, attributes: Attributes) -> ApplyResult:
        ndn = self.normalize_dn(dn)
        self._authorize_write(who, ndn, None)
        attrs: list[tuple[str, tuple[bytes, ...]]] = []
        for name, values in attributes:
            if self._is_password(name):
                attrs.append((name, await self.hash_passwords(values)))
            else:
                attrs.append((name, tuple(values)))
        cmd = AddCommand(dn, tuple(attrs), uuid.uuid4().hex, self._actor(who),
                         generalized_time(), str(uuid.uuid4()))
        return await self.submit_as(who, cmd)

    async def modify(
        self, who: Identity, dn: str, changes: Iterable[tuple[int, str, Sequence[bytes]]]
    ) -> ApplyResult:
        ndn = self.normalize_dn(dn)
        change_list = tuple((int(op), attr, tuple(values)) for op, attr, values in changes)
        touched = frozenset(
            self.schema.canonical(attr.split(";", 1)[0]) or attr for _, attr, _ in change_list
        )
        self._authorize_write(who, ndn, touched)
        if PASSWORD_ATTR in touched:
            hashed: list[tuple[int, str, tuple[bytes, ...]]] = []
            for op, attr, values in change_list:
                if op in (MOD_ADD, MOD_REPLACE) and self._is_password(attr):
                    values = await self.hash_passwords(values)
                hashed.append((op, attr, values))
            change_list = tuple(hashed)
        return await self.submit_as(who, ModifyCommand(dn, change_list, uuid.uuid4().hex,
                                               self._actor(who), generalized_time()))

    async def delete(self, who: Identity, dn: str) -> ApplyResult:
        ndn = self.normalize_dn(dn)
        self._authorize_write(who, ndn, None)
        return await self.submit_as(who, DeleteCommand(dn, uuid.uuid4().hex, self._actor(who),
                                               generalized_time()))

    async def modify_dn(
        self, who: Identity, dn: str, new_rdn: str, delete_old_rdn: bool,
        new_superior: str | None = None,
    ) -> ApplyResult:
        ndn = self.normalize_dn(dn)
        self._authorize_write(who, ndn, None)
        return await self.submit_as(who, ModifyDNCommand(dn, new_rdn, delete_old_rdn, new_superior,
                                                 uuid.uuid4().hex, self._actor(who),
                                                 generalized_time()))

    # ------------------------------------------------------------------ passwords

    def _is_password(self, attr: str) -> bool:
        return self.schema.canonical(attr.split(";", 1)[0]) == PASSWORD_ATTR

    @property
    def password_scheme(self) -> str:
        return str(self.node.config.security.passwordHash)

    async def hash_passwords(self, values: Iterable[bytes]) -> tuple[bytes, ...]:
        """Cleartext values hashed with ``security.passwordHash``; ``{SCHEME}`` values as given.

        Hashing (Argon2 above all) is slow, so it runs in the default thread executor."""
        values = tuple(values)
        if all(passwords.is_hashed(v) for v in values):
            return values
        scheme = self.password_scheme
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None,
            lambda: tuple(v if passwords.is_hashed(v) else passwords.hash_password(v, scheme)
                          for v in values),
        )

    async def _verify_any(self, password: bytes, stored: Sequence[bytes]) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, lambda: any(passwords.verify(password, s) for s in stored))

    async def password_modify(
        self, who: Identity, user: str | None, old: bytes | None, new: bytes | None
    ) -> bytes | None:
        """RFC 3062 Password Modify; returns the generated password when ``new`` is None.

        Result codes as slapd gives them: anonymous -> strongerAuthRequired (8); no such user
        (the root DN included, it has no entry) -> noSuchObject (32); another user's password
        without the right -> insufficientAccessRights (50); a wrong or unverifiable old
        password -> unwillingToPerform (53)."""
        if who.anonymous:
            raise OpError(ResultCode.STRONGER_AUTH_REQUIRED,
                          "only authenticated users may change passwords")
        if user:
            dn = user[3:] if user[:3].lower() == "dn:" else user
        else:
            dn = who.dn
        ndn = self.normalize_dn(dn)
        with self.node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            if entry is None:  # slapd reports no matchedDN here
                raise OpError(ResultCode.NO_SUCH_OBJECT)
        self._authorize_write(who, ndn, frozenset({PASSWORD_ATTR}))
        if old is not None:
            stored = list(entry.attrs.get(PASSWORD_ATTR, ()))
            if not stored or not await self._verify_any(old, stored):
                raise OpError(ResultCode.UNWILLING_TO_PERFORM, "unwilling to verify old password")
        generated: bytes | None = None
        if new is None:
            generated = "".join(secrets.choice(_PASSWORD_ALPHABET)
                                for _ in range(GENERATED_PASSWORD_LENGTH)).encode()
            new = generated
        if not new:
            raise OpError(ResultCode.UNWILLING_TO_PERFORM, "new password is empty")
        hashed = await self.hash_passwords([new])
        change = ((MOD_REPLACE, PASSWORD_ATTR, hashed),)
        await self.submit_as(who, ModifyCommand(entry.dn, change, uuid.uuid4().hex,
                                                self._actor(who), generalized_time()))
        return generated


MOD_ADD, MOD_DELETE, MOD_REPLACE = 0, 1, 2


def protected_in(flt: Filter) -> frozenset[str] | None:
    """The protected attributes (canonical names) a filter mentions, or None."""
    found: set[str] = set()
    stack: list[Filter] = [flt]
    while stack:
        f = stack.pop()
        if isinstance(f, And | Or):
            stack.extend(f.filters)
        elif isinstance(f, Not):
            stack.append(f.filter)
        else:
            attr = getattr(f, "attr", None)
            if attr and attr.split(";", 1)[0].lower() in PROTECTED_ATTRS:
                found.add("userPassword")
    return frozenset(found) if found else None
