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
import concurrent.futures
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from oba import ids, reqctx
from oba.config import Config, RateLimitConfig
from oba.directory import hashpool, lockout
from oba.directory import password as passwords
from oba.directory import policy as pwpolicy
from oba.directory.access import PROTECTED_ATTRS
from oba.directory.apply import SYSTEM_ACTOR, ApplyResult, auth_epoch
from oba.directory.commands import (
    AddCommand,
    Command,
    DeleteCommand,
    ModifyCommand,
    ModifyDNCommand,
    bind_failure,
    bind_success,
    password_rehash,
)
from oba.directory.entry import Entry
from oba.directory.evaluate import (
    compare_among,
    compare_types,
    compile_filter,
    filter_reads,
    values_of,
)
from oba.directory.search import SearchContext, search
from oba.protocol.dn import DNError, parse_dn
from oba.protocol.messages import Filter, Scope
from oba.protocol.resultcodes import ResultCode
from oba.schema import InvalidValue, UndefinedAttribute
from oba.schema.options import OptionError
from oba.server import rootdse
from oba.server.node import SUBSCHEMA_NDN, Node
from oba.storage.lmdbstore import parent_ndn

Attributes = Sequence[tuple[str, Sequence[bytes]]]

PASSWORD_ATTR = "userPassword"
GENERATED_PASSWORD_LENGTH = 8  # slapd's length for a server-generated password
_TRUE = (b"TRUE", b"1", b"YES")
NDN_CACHE_SIZE = 16384  # memoised normalised DNs (``Operations.normalize_dn``)
VIEW_CACHE_SIZE = 32768  # memoised filtered views (``Operations.visible``), cleared when
# full; as large as the storage entry cache (8192 re-filtered most entries of 10,000 users)
log = logging.getLogger("oba.operations")
T = TypeVar("T")


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
        return self if source == self.source else Identity(self.dn, self.ndn, source)


ANONYMOUS = Identity()


class BindRefused(OpError):
    """A refused simple bind: invalidCredentials (49) with the same (empty) diagnostic
    whatever the reason, so that a client learns nothing about the account; ``reason`` ("no
    such entry", "wrong credentials", "account locked", ...) goes to the audit trail only. The
    one exception, ``message="password expired"``, is told only to whoever gave the right
    password."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(ResultCode.INVALID_CREDENTIALS, message)
        self.reason = reason


# (normalised DN, entry id, credential epoch) of the last successful bind made in this context
# (one REST request): the token that bind earns carries the epoch its password was verified
# under, read in the same transaction as the password (``oba.rest.auth.issue_token``)
_BOUND: contextvars.ContextVar[tuple[str, int, int] | None] = contextvars.ContextVar(
    "oba_bound", default=None)


def bound_epoch(ndn: str) -> tuple[int, int] | None:
    """(entry id, credential epoch) of the last successful bind as ``ndn`` in this context."""
    last = _BOUND.get()
    return (last[1], last[2]) if last is not None and last[0] == ndn else None


def note_authenticated(ndn: str, entry_id: int, epoch: int) -> None:
    """Record that this context authenticated as ``ndn`` under (entry id, credential epoch)
    without a bind (a REST token checked against the store), for ``Operations.account_stamp``."""
    _BOUND.set((ndn, entry_id, epoch))


_DUMMIES: dict[tuple[str, passwords.Argon2Params], concurrent.futures.Future[bytes]] = {}
_DUMMIES_LOCK = threading.Lock()


def dummy_hash(scheme: str, argon2_params: passwords.Argon2Params = passwords.DEFAULT_ARGON2
               ) -> concurrent.futures.Future[bytes]:
    """``passwords.dummy_hash(scheme, argon2_params)``, made once per process, scheme and
    parameters in a thread of its own (started by the first ``Operations``, so it is ready
    before the first bind needs it)."""
    key = (scheme, argon2_params)
    with _DUMMIES_LOCK:
        fut = _DUMMIES.get(key)
        if fut is None:
            fut = _DUMMIES[key] = concurrent.futures.Future()
            threading.Thread(target=_make_dummy, args=(scheme, argon2_params, fut),
                             name="oba-dummy-hash", daemon=True).start()
    return fut


def _make_dummy(scheme: str, argon2_params: passwords.Argon2Params,
                fut: concurrent.futures.Future[bytes]) -> None:
    try:
        fut.set_result(passwords.dummy_hash(scheme, argon2_params))
    except Exception:  # a scheme the config should not have let in: still no oracle
        log.exception("cannot hash with %s: binds to unknown accounts verify {SSHA}", scheme)
        fut.set_result(passwords.dummy_hash("SSHA"))


def argon2_params(config: Config) -> passwords.Argon2Params:
    """``security.argon2`` as the password module takes it."""
    a = config.security.argon2
    return passwords.Argon2Params(a.iterations, a.memoryKiB, a.parallelism)


def hash_pool(config: Config) -> hashpool.HashPool:
    """This process's bounded hashing pool, sized by ``security.hashThreads`` (0: the cores
    divided among the ``server.workers`` listener processes) and ``security.hashQueue``."""
    security = config.security
    threads = security.hashThreads or hashpool.auto_threads(int(config.server.workers))
    return hashpool.shared(threads, security.hashQueue)


@dataclass
class BindGate:
    """One per node (shared by its LDAP and REST front ends): failed binds whose password was
    verified wrong but whose failure is not applied yet, per normalised DN, by the time each
    failure is recorded under (its ``pwdFailureTime`` stamp once applied). They count towards
    ``maxAttempts`` like applied ones, so a burst of concurrent binds gets no more guesses
    verified than the account has left (per listener process and node: each keeps its own;
    the count itself is atomic in the write path)."""

    pending: dict[str, list[float]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # normalised DNs whose stored password is being re-made (``Operations._rehash``)
    rehashing: set[str] = field(default_factory=set)

    def enter(self, ndn: str, now: float) -> None:
        self.pending.setdefault(ndn, []).append(now)

    def unapplied(self, ndn: str, attrs: Mapping[str, Sequence[bytes]]) -> int:
        """The pending failures of ``ndn`` that ``attrs`` (the entry as read) does not show
        yet: one applied between that read and its ``leave`` is not counted twice."""
        nows = self.pending.get(ndn)
        if not nows:
            return 0
        recorded = set(attrs.get(lockout.FAILURES, ()))
        return sum(1 for now in nows
                   if lockout.failure_stamp(now) not in recorded)
    def leave(self, ndn: str, now: float) -> None:
        nows = self.pending.get(ndn)
        if nows is not None:
            nows.remove(now)
            if not nows:
                del self.pending[ndn]


def generalized_time(now: float | None = None) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now))


class Operations:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.schema = node.schema
        self.search_ctx = SearchContext(node.schema)
        # entry object id -> (entry, its view without protected attributes), see ``visible``
        self._views: dict[int, tuple[Entry, Entry]] = {}
        # DN as given -> normalised DN (search bases, bind DNs: the same few come back)
        self._ndns: dict[str, str] = {}
        # normalised bind DN -> its (immutable) Identity, shared by the binds of that DN
        self._identities: dict[str, Identity] = {}
        self._gate: BindGate = vars(node).setdefault("_oba_bind_gate", BindGate())
        self._hashes = hash_pool(node.config)
        # start making it now, off the event loop
        dummy_hash(self.password_scheme, self.argon2_params)

    # ------------------------------------------------------------------ helpers

    def normalize_dn(self, dn: str) -> str:
        ndn = self._ndns.get(dn)
        if ndn is not None:
            return ndn
        try:
            ndn = self.schema.normalize_dn(dn)
        except (DNError, UndefinedAttribute, InvalidValue) as exc:
            raise OpError(ResultCode.INVALID_DN_SYNTAX, "invalid DN") from exc
        if len(self._ndns) >= NDN_CACHE_SIZE:
            self._ndns.clear()
        self._ndns[dn] = ndn
        return ndn

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
        """The entry at ``dn`` as ``who`` may see it; an entry ``who`` may not read is
        reported as missing (noSuchObject), never as an access error."""
        ndn = self.normalize_dn(dn)
        with self.node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            seen = None if entry is None else self.readable(who, entry, ndn)
            if seen is None:
                raise OpError(ResultCode.NO_SUCH_OBJECT, "", self.matched_dn_for(who, txn, dn))
        return seen

    def matched_dn_for(self, who: Identity, txn: Any, dn: str, itself: bool = False) -> str:
        """slapd's matchedDN as ``who`` may learn it: the nearest ancestor of ``dn`` (``dn``
        itself too when ``itself``) that exists and that ``who`` may read, whether or not
        hidden or missing entries lie between (OpenLDAP's ``disclose``). So an entry below
        one ``who`` may not read and an entry below one that does not exist get the same
        answer: a hidden entry is never named, nor told apart from a missing one."""
        access = self.node.access
        if not itself and (access.builtin or access.is_root(who.ndn)):
            return self.matched_dn(txn, dn)  # every entry is readable
        everything = access.builtin or access.is_root(who.ndn)
        try:
            parsed = parse_dn(dn)
        except DNError:
            return ""
        for i in range(0 if itself else 1, len(parsed)):
            try:
                anc_ndn = self.schema.normalize_dn(parsed[i:])
            except (DNError, UndefinedAttribute, InvalidValue):
                continue
            entry = txn.get_by_ndn(anc_ndn)
            if entry is not None and (everything
                                      or access.decide(who.ndn, anc_ndn, "read").allowed):
                return str(entry.dn)
        return ""

    def no_such_object(self, who: Identity, dn: str) -> OpError:
        """noSuchObject (32) for ``dn`` with the matchedDN ``who`` may learn."""
        with self.node.store.read() as txn:
            return OpError(ResultCode.NO_SUCH_OBJECT, "", self.matched_dn_for(who, txn, dn))

    # ------------------------------------------------------------------ sessions

    def account_stamp(self, who: Identity) -> tuple[int, int] | None:
        """(entry id, credential epoch) ``who`` authenticated under: from the bind (or token
        check) made in this context, else as stored now. None for anonymous and the root DN
        (no entry). Give it to ``account_valid`` later to know whether a long-lived session
        (an event stream, a persistent search) still stands for the same account."""
        if who.anonymous or self.node.access.is_root(who.ndn):
            return None
        stamp = bound_epoch(who.ndn)
        if stamp is not None:
            return stamp
        with self.node.store.read() as txn:
            entry = txn.get_by_ndn(who.ndn)
            return (0, -1) if entry is None else (entry.id, auth_epoch(txn, entry.id))

    def account_valid(self, who: Identity, stamp: tuple[int, int] | None) -> bool:
        """Is the account of ``stamp`` (``account_stamp``) still the one ``who`` names, not
        disabled, and its credential epoch unmoved (no password change, lock or disable
        since)? Always true for anonymous and the root DN."""
        if stamp is None:
            return True
        with self.node.store.read() as txn:
            entry = txn.get_by_ndn(who.ndn)
            if entry is None or entry.id != stamp[0]:
                return False
            if any(v.upper() in _TRUE for v in entry.attrs.get("obaDisabled", ())):
                return False
            return auth_epoch(txn, entry.id) == stamp[1]

    def _entry_ndn(self, entry: Entry) -> str:
        try:
            return entry.normalized_dn(self.schema)
        except (DNError, UndefinedAttribute, InvalidValue):
            return entry.dn.lower()

    def visible(self, who: Identity, entry: Entry, ndn: str | None = None) -> Entry:
        """``entry`` with the attributes ``who`` may not read removed."""
        access = self.node.access
        if access.is_root(who.ndn):
            return entry
        if access.builtin:
            # built-in policy: protected attributes are read by the root DN only, so the view
            # is the same for every other identity; memoised per (shared, immutable) entry
            memo = self._views.get(id(entry))
            if memo is not None and memo[0] is entry:
                return memo[1]
            hidden = [a for a in entry.attrs if a.lower() in PROTECTED_ATTRS]
            if not hidden:
                return entry
            if who.anonymous:
                ndn = ""
            ndn = ndn if ndn is not None else self._entry_ndn(entry)
            drop = {a for a in hidden if not access.can_read_attr(who.ndn, ndn, a)}
            if drop == set(hidden):
                view = self._filtered(entry, drop)
                if len(self._views) >= VIEW_CACHE_SIZE:
                    self._views.clear()
                self._views[id(entry)] = (entry, view)
                return view
        else:
            ndn = ndn if ndn is not None else self._entry_ndn(entry)
            rules = access.rules_for(who.ndn, ndn)
            drop = {a for a in entry.attrs
                    if not access.allowed_among(rules, who.ndn, ndn, "read", a)}
        if not drop:
            return entry
        return self._filtered(entry, drop)

    @staticmethod
    def _filtered(entry: Entry, drop: set[str]) -> Entry:
        if entry.enc is None:
            entry.enc = {}
        # the filtered view shares the encoded-attribute memo: its values are the same objects
        view = Entry(entry.id, entry.dn, {k: v for k, v in entry.attrs.items() if k not in drop},
                     entry.enc)
        view.ndn = entry.ndn
        return view

    def readable(self, who: Identity, entry: Entry, ndn: str | None = None) -> Entry | None:
        """``visible(entry)``, or None when ``who`` may not see the entry at all."""
        access = self.node.access
        if access.builtin or access.is_root(who.ndn):
            return self.visible(who, entry, ndn)
        ndn = ndn if ndn is not None else self._entry_ndn(entry)
        if not access.decide(who.ndn, ndn, "read").allowed:
            return None
        return self.visible(who, entry, ndn)

    # ------------------------------------------------------------------ bind

    async def bind(self, dn: str, password: bytes, source: str = "ldap") -> Identity:
        """Simple bind; returns the new identity or raises OpError (49 on bad credentials).
        Every attempt with a DN is put in the audit trail (never the password), a refusal
        with its real reason."""
        try:
            who = await self._bind(dn, password)
        except OpError as err:
            if dn:
                fields: dict[str, Any] = {"dn": dn, "resultCode": int(err.code)}
                if isinstance(err, BindRefused):
                    fields["reason"] = err.reason
                self.node.audit.record("warn", f"bind {dn}: {err.code.name.lower()}", source,
                                       dn, "", **fields)
            raise
        if dn:
            self.node.audit.record("info", f"bind {dn}: success", source, who.dn, "", dn=dn,
                                   resultCode=0)
        return who.as_source(source)

    async def _bind(self, dn: str, password: bytes) -> Identity:
        """Simple bind; returns the new identity or raises OpError: 49 on bad credentials
        (``BindRefused``: the same answer in about the same time for an unknown DN, a wrong
        password, a locked or disabled account; each verifies a password off the event loop,
        the ones without a password to check against ``dummy_hash``), busy (51) when too
        many password checks wait already (``security.hashQueue``). A stored password made
        with a weaker scheme or other Argon2 parameters than the configured ones is re-made
        after the bind (``security.rehashOnBind``, ``_rehash``)."""
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
            if await self._verify_any(password, (node.root_password,)):
                return Identity(node.root_dn, ndn)
            raise BindRefused("wrong credentials")
        with node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            epoch = 0 if entry is None else auth_epoch(txn, entry.id)
        security = node.config.security
        rate = security.rateLimit
        now = time.time()
        reason = self._refusal(entry, rate, now)
        if reason is not None:
            await self._verify_dummy(password)
            raise BindRefused(reason)
        assert entry is not None  # (``_refusal`` says why otherwise)
        attrs = entry.attrs
        gate = self._gate if rate.enabled else None
        pending = 0 if gate is None else gate.unapplied(ndn, attrs)
        if pending and (lockout.counted_failures(attrs, lockout.window(rate), now) + pending
                        >= rate.maxAttempts):
            # as many failures as the account has left are being recorded already
            await self._verify_dummy(password)
            raise BindRefused("too many concurrent attempts")
        stored = attrs[PASSWORD_ATTR]
        scheme, params = self.password_scheme, self.argon2_params
        # a wrong password against a value cheaper than the configured hash ({SSHA}, older
        # parameters) also costs a dummy verification: as long as an unknown DN's answer
        legacy = any(passwords.needs_rehash(v, scheme, params) for v in stored)
        matched = await self._verify_match(password, stored,
                                           await self._dummy() if legacy else None)
        if matched is None:
            if gate is not None:
                failed = time.time()
                gate.enter(ndn, failed)  # until the failure is applied: ``_count_failure``
                task = asyncio.get_running_loop().create_task(
                    self._count_failure(entry.dn, ndn, rate, failed))
                gate.tasks.add(task)
                task.add_done_callback(gate.tasks.discard)
            raise BindRefused("wrong credentials")
        changed = attrs.get("pwdChangedTime")
        if changed and pwpolicy.expired(security.passwordPolicy, changed, now):
            raise BindRefused("credentials expired", "password expired")
        if gate is not None and (attrs.get(lockout.FAILURES) or attrs.get(lockout.LOCKED)
                                 or gate.pending.get(ndn)):
            # clear the count in the write path, which refuses when the failures of
            # concurrent binds have locked the account meanwhile
            cmd = bind_success(entry.dn, time.time(), lockout.window(rate), ids.command_id(),
                               SYSTEM_ACTOR, generalized_time())
            result = await node.replicator.submit(cmd)
            if result.code == ResultCode.INVALID_CREDENTIALS:
                raise BindRefused("account locked")
            if result.code != ResultCode.SUCCESS:
                log.warning("clearing the failed binds of %s failed: %s %s", entry.dn,
                            result.code, result.message)
        if legacy and security.rehashOnBind and passwords.needs_rehash(matched, scheme, params):
            self._start_rehash(entry.dn, ndn, matched, password)
        _BOUND.set((ndn, entry.id, epoch))
        who = self._identities.get(ndn)
        if who is None or who.dn != entry.dn:
            if len(self._identities) >= NDN_CACHE_SIZE:
                self._identities.clear()
            who = self._identities[ndn] = Identity(entry.dn, ndn)
        return who

    @staticmethod
    def _refusal(entry: Entry | None, rate: RateLimitConfig, now: float) -> str | None:
        """Why a bind as ``entry`` is refused whatever the password, or None."""
        if entry is None:
            return "no such entry"
        attrs = entry.attrs
        if not attrs.get(PASSWORD_ATTR):
            return "no credentials"
        flags = attrs.get("obaDisabled")
        if flags and any(v.upper() in _TRUE for v in flags):
            return "account disabled"
        if rate.enabled and lockout.is_locked(rate, attrs, now):
            return "account locked"
        return None

    async def _count_failure(self, dn: str, ndn: str, rate: RateLimitConfig,
                             now: float) -> None:
        """Apply one failed bind made at ``now`` (its answer has gone already: recording it
        adds nothing to the time a wrong password takes); it stays pending in the gate until
        then."""
        try:
            cmd = bind_failure(dn, now, rate.maxAttempts, lockout.window(rate),
                               ids.command_id(), SYSTEM_ACTOR, generalized_time())
            result = await self.node.replicator.submit(cmd)
            if result.code != ResultCode.SUCCESS:
                log.warning("recording a failed bind on %s failed: %s %s", dn, result.code,
                            result.message)
            elif result.message == "locked":
                log.warning("bind %s: account locked after %d failed binds", dn,
                            rate.maxAttempts)
        except Exception:
            log.exception("recording a failed bind on %s failed", dn)
        finally:
            self._gate.leave(ndn, now)

    def _start_rehash(self, dn: str, ndn: str, old: bytes, password: bytes) -> None:
        """Re-make ``old`` (the stored value ``password`` just matched) in a task: the bind
        is answered meanwhile. One at a time per entry and process."""
        gate = self._gate
        if ndn in gate.rehashing:
            return
        gate.rehashing.add(ndn)
        task = asyncio.get_running_loop().create_task(self._rehash(dn, ndn, old, password))
        gate.tasks.add(task)
        task.add_done_callback(gate.tasks.discard)

    async def _rehash(self, dn: str, ndn: str, old: bytes, password: bytes) -> None:
        """Hash ``password`` with the configured scheme and parameters (in the bounded pool:
        when it is full the next bind tries again) and replace ``old`` with it through the
        write path (``password.rehash``: compare-and-set, not a password change, so tokens,
        ``pwdChangedTime`` and ``pwdHistory`` stay); one audit record when it is done."""
        scheme, params = self.password_scheme, self.argon2_params
        try:
            new = await self._hashing(
                lambda: passwords.hash_password(password, scheme, argon2_params=params),
                passwords.costly_scheme(scheme))
            cmd = password_rehash(dn, old, new, ids.command_id(), SYSTEM_ACTOR,
                                  generalized_time())
            result = await self.node.replicator.submit(cmd)
            if result.code == ResultCode.SUCCESS:
                self.node.audit.record(
                    "info", f"rehash {dn}: success", "system", "", "", dn=dn,
                    operation="rehash", resultCode=0, previous=passwords.describe(old),
                    stored=passwords.describe(new))
            elif result.code == ResultCode.NO_SUCH_ATTRIBUTE:
                log.debug("rehash of %s skipped: the password changed meanwhile", dn)
            else:
                log.warning("re-hashing the password of %s failed: %s %s", dn, result.code,
                            result.message)
        except OpError:  # busy
            log.debug("rehash of %s skipped: hashing pool busy (the next bind retries)", dn)
        except Exception:
            log.exception("re-hashing the password of %s failed", dn)
        finally:
            self._gate.rehashing.discard(ndn)

    async def system_modify(self, dn: str, changes: lockout.Changes) -> bool:
        """A bookkeeping write of the server itself (lockout, password history) through the
        Command path, so it replicates and survives a restart; failures are logged."""
        if not changes:
            return True
        cmd = ModifyCommand(dn, changes, ids.command_id(), SYSTEM_ACTOR, generalized_time())
        result = await self.node.replicator.submit(cmd)
        if result.code != ResultCode.SUCCESS:
            log.warning("bookkeeping write on %s failed: %s %s", dn, result.code, result.message)
            return False
        return True

    # ------------------------------------------------------------------ lockout

    def lock_status(self, who: Identity, dn: str) -> dict[str, Any]:
        """Whether the account at ``dn`` is locked, from its pwd* attributes."""
        entry = self.get_entry(who, dn)
        with self.node.store.read() as txn:
            stored = txn.get(entry.id)
        attrs = stored.attrs if stored is not None else entry.attrs
        rate = self.node.config.security.rateLimit
        until = lockout.locked_until(rate, attrs)
        locked = until is not None and time.time() < until
        return {"dn": entry.dn, "locked": locked,
                "failures": len(attrs.get(lockout.FAILURES, ())),
                "lockedUntil": pwpolicy.format_time(until) if locked and until else None}

    async def unlock(self, who: Identity, dn: str) -> None:
        """Clear failures and lock (needs write access to pwdAccountLockedTime)."""
        entry = self.get_entry(who, dn)
        ndn = self.normalize_dn(entry.dn)
        self._authorize(who, ndn, "write", frozenset({lockout.LOCKED}))
        with self.node.store.read() as txn:
            stored = txn.get(entry.id)
        if stored is not None and not await self.system_modify(stored.dn,
                                                               lockout.reset(stored.attrs)):
            raise OpError(ResultCode.OTHER, "could not clear the lock")
        self.node.audit.record("info", f"unlock {entry.dn}: success", who.source, who.dn, "",
                               dn=entry.dn, operation="unlock", resultCode=0)

    # ------------------------------------------------------------------ reads

    def compare(self, who: Identity, dn: str, attr: str, value: bytes) -> bool:
        """Compare ``value`` with the values of ``attr``, its subtypes and its descriptions with
        more tags (``name`` reads ``cn``; ``cn`` reads ``cn;lang-en``), as slapd; a subtype the
        caller may not compare is left out."""
        ndn = self.normalize_dn(dn)
        try:
            found = compare_types(self.schema, attr)
        except OptionError as exc:
            raise OpError(ResultCode.UNDEFINED_ATTRIBUTE_TYPE, str(exc)) from None
        if found is None:
            raise OpError(ResultCode.UNDEFINED_ATTRIBUTE_TYPE, f"{attr}: attribute type undefined")
        canon, types, tags = found
        access = self.node.access
        with self.node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            if entry is None or self.readable(who, entry, ndn) is None:
                raise OpError(ResultCode.NO_SUCH_OBJECT, "", self.matched_dn_for(who, txn, dn))
        if not access.decide(who.ndn, ndn, "compare", canon).allowed:
            raise OpError(ResultCode.INSUFFICIENT_ACCESS_RIGHTS)
        if self.schema.equality(canon) is None:
            raise OpError(ResultCode.INAPPROPRIATE_MATCHING)
        types = tuple(t for t in types
                      if t == canon or access.decide(who.ndn, ndn, "compare", t).allowed)
        if not values_of(entry, types, tags):
            raise OpError(ResultCode.NO_SUCH_ATTRIBUTE)
        try:
            res = compare_among(entry, canon, types, tags, value, self.schema)
        except InvalidValue:
            res = None
        if res is None:
            raise OpError(ResultCode.INVALID_ATTRIBUTE_SYNTAX)
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
        """Matching entries as ``who`` may see them (unreadable entries skipped, unreadable
        attributes removed; filter items on attributes without ``search`` right Undefined).

        Raises OpError before the first entry (bad base, missing or unreadable base) or after
        the last one allowed (size or time limit exceeded). Must be consumed on the calling
        thread.
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
        access = node.access
        root = access.is_root(who.ndn)
        ruled = not root and not access.builtin
        # items on attributes ``who`` may search in no entry (userPassword: the root DN only)
        # are Undefined in the search itself, and not planned from their indexes
        blind = access.unsearchable(who.ndn)
        reads = filter_reads(flt, self.schema) if ruled else (frozenset(), False)
        restricted: dict[frozenset[str], Any] = {}
        count = 0
        with node.store.read() as txn:
            base_entry = txn.get_by_ndn(base_ndn) if base_ndn else None
            if base_entry is None or (ruled and self.readable(who, base_entry, base_ndn) is None):
                raise OpError(ResultCode.NO_SUCH_OBJECT, "", self.matched_dn_for(who, txn, base))
            try:
                for entry in search(txn, self.search_ctx, base_ndn, int(scope), flt,
                                    base_entry=base_entry, blind=blind):
                    if deadline and time.monotonic() > deadline:
                        raise OpError(ResultCode.TIME_LIMIT_EXCEEDED)
                    if ruled:
                        seen = self._ruled_view(who, entry, flt, reads, restricted)
                        if seen is None:
                            continue
                    else:
                        seen = self.visible(who, entry) if blind and "userPassword" in entry.attrs \
                            else entry
                    if size_limit and count >= size_limit:
                        raise OpError(ResultCode.SIZE_LIMIT_EXCEEDED)
                    count += 1
                    yield seen
            except (InvalidValue, UndefinedAttribute) as exc:
                raise OpError(ResultCode.PROTOCOL_ERROR, str(exc)) from exc

    def _ruled_view(self, who: Identity, entry: Entry, flt: Filter,
                    reads: tuple[frozenset[str], bool], restricted: dict[frozenset[str], Any],
                    ) -> Entry | None:
        """A search candidate as a caller under ACL rules sees it, or None. ``reads``: what the
        filter reads (``filter_reads``); the filter is evaluated again with the attributes the
        caller may not search in this entry Undefined."""
        access = self.node.access
        ndn = self._entry_ndn(entry)
        rules = access.rules_for(who.ndn, ndn)
        if not access.allowed_among(rules, who.ndn, ndn, "read", None):
            return None
        names, every = reads
        if every:  # an extensible match without a type compares every attribute
            names = names | {a.lower() for a in entry.attrs}
        # ``search`` already made the attributes unsearchable everywhere Undefined
        everywhere = access.unsearchable(who.ndn)
        extra = frozenset(a for a in names if a not in everywhere
                          and not access.allowed_among(rules, who.ndn, ndn, "search", a))
        if extra:
            blind = extra | everywhere
            matcher = restricted.get(blind)
            if matcher is None:
                matcher = restricted[blind] = compile_filter(flt, self.schema, blind)
            if matcher(entry) is not True:
                return None
        drop = {a for a in entry.attrs
                if not access.allowed_among(rules, who.ndn, ndn, "read", a)}
        if not drop:
            return entry
        return Entry(entry.id, entry.dn, {k: v for k, v in entry.attrs.items() if k not in drop})

    def matcher_for(self, who: Identity, flt: Filter) -> Callable[[Entry], bool]:
        """Does a stored entry match ``flt`` for ``who``, items on attributes ``who`` may not
        search being Undefined (as in ``search``)? For filters evaluated outside ``search``
        (persistent search, later pages of a paged search). Give it the stored entry, never a
        view from ``visible``: an attribute missing from a view would count as absent
        (FALSE, so TRUE under NOT) instead of Undefined."""
        access = self.node.access
        base = compile_filter(flt, self.schema, access.unsearchable(who.ndn))
        restricted: dict[frozenset[str], Any] = {}
        reads: list[tuple[frozenset[str], bool]] = []

        def match(entry: Entry) -> bool:
            if base(entry) is not True:
                return False
            if access.builtin or access.is_root(who.ndn):
                return True
            if not reads:
                reads.append(filter_reads(flt, self.schema))
            return self._ruled_view(who, entry, flt, reads[0], restricted) is not None

        return match

    def has_children(self, entry: Entry) -> bool:
        with self.node.store.read() as txn:
            return bool(txn.has_children(entry.id))

    # ------------------------------------------------------------------ writes

    def _authorize(self, who: Identity, ndn: str, right: str,
                   attrs: frozenset[str] | None = None, new_dn: str | None = None) -> None:
        """Refuse the write unless ``who`` holds ``right`` (on each of ``attrs``, or on the
        entry). Denied on an entry ``who`` may not even read: noSuchObject (no existence leak);
        otherwise strongerAuthRequired (8) for anonymous, insufficientAccessRights (50)."""
        access = self.node.access
        if access.is_root(who.ndn):
            return
        if access.builtin:
            denied = access.check_write(who.ndn, ndn, attrs if right == "write" else None)
            if denied is not None:
                raise OpError(denied.code, denied.message)
            return
        if right == "add":
            ok = self._may_add(who, ndn)
        elif attrs:
            ok = all(access.decide(who.ndn, ndn, right, a).allowed for a in sorted(attrs))
        else:
            ok = access.decide(who.ndn, ndn, right).allowed
        if ok:
            return
        if right != "add" and not self._may_see(who, ndn):
            raise self.no_such_object(who, ndn)
        what = {"add": "no add access", "delete": "no delete access"}.get(right,
                                                                        "no write access")
        denied = access.denied(who.ndn, what)
        raise OpError(denied.code, denied.message)

    def _may_add(self, who: Identity, ndn: str) -> bool:
        """``add`` on the new entry's DN decides when a rule covers it, else on its parent."""
        access = self.node.access
        decision = access.decide(who.ndn, ndn, "add")
        if decision.rule_index is not None or not ndn:
            return decision.allowed
        return access.decide(who.ndn, parent_ndn(ndn), "add").allowed

    def _may_see(self, who: Identity, ndn: str) -> bool:
        with self.node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            return entry is not None and self.readable(who, entry, ndn) is not None

    def _authorize_write(self, who: Identity, ndn: str, attrs: frozenset[str] | None) -> None:
        self._authorize(who, ndn, "write", attrs)

    def _actor(self, who: Identity) -> str:
        return self.node.root_dn if who.ndn == self.node.root_ndn else who.dn

    async def submit(self, cmd: Command) -> ApplyResult:
        result = await self.node.replicator.submit(cmd)
        if result.code != ResultCode.SUCCESS:
            raise OpError(result.code, result.message, result.matched_dn)
        return result

    async def submit_as(self, who: Identity, cmd: Command) -> ApplyResult:
        """Submit a write made on behalf of ``who`` and put it in the audit trail. A
        noSuchObject's matchedDN (the write path names the nearest existing ancestor) is
        narrowed to the nearest one ``who`` may read (``matched_dn_for``)."""
        try:
            result = await self.submit(cmd)
        except OpError as err:
            access = self.node.access
            if (err.code == ResultCode.NO_SUCH_OBJECT and err.matched_dn
                    and not access.builtin and not access.is_root(who.ndn)):
                with self.node.store.read() as txn:
                    err.matched_dn = self.matched_dn_for(who, txn, err.matched_dn, itself=True)
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
        # the audit record carries the entry point's request id (shared with its log lines);
        # the Command keeps its own unique id (one request may issue several Commands)
        fields["commandId"] = cmd.request_id
        self.node.audit.record(
            "info" if code == 0 else "warn",
            f"{kind} {fields['dn']}: {ResultCode(code).name.lower()}",
            who.source, who.dn, reqctx.current() or cmd.request_id, **fields,
        )

    async def add(self, who: Identity, dn: str, attributes: Attributes) -> ApplyResult:
        ndn = self.normalize_dn(dn)
        self._authorize(who, ndn, "add")
        attrs: list[tuple[str, tuple[bytes, ...]]] = []
        new_passwords: list[bytes] = []
        for name, values in attributes:
            if self._is_password(name):
                new_passwords.extend(values)
                await self.check_new_passwords(who, values, None)
                attrs.append((name, await self.hash_passwords(values)))
            else:
                attrs.append((name, tuple(values)))
        cmd = AddCommand(dn, tuple(attrs), ids.command_id(), self._actor(who),
                         generalized_time(), ids.new_uuid())
        result = await self.submit_as(who, cmd)
        if new_passwords:
            await self.password_changed(dn, None)
        return result

    async def modify(
        self, who: Identity, dn: str, changes: Iterable[tuple[int, str, Sequence[bytes]]]
    ) -> ApplyResult:
        ndn = self.normalize_dn(dn)
        change_list = tuple((int(op), attr, tuple(values)) for op, attr, values in changes)
        touched = frozenset(
            self.schema.canonical(attr.split(";", 1)[0]) or attr for _, attr, _ in change_list
        )
        self._authorize_write(who, ndn, touched)
        before: Entry | None = None
        if PASSWORD_ATTR in touched:
            with self.node.store.read() as txn:
                before = txn.get_by_ndn(ndn)
            hashed: list[tuple[int, str, tuple[bytes, ...]]] = []
            for op, attr, values in change_list:
                if op in (MOD_ADD, MOD_REPLACE) and self._is_password(attr):
                    await self.check_new_passwords(who, values, before)
                    values = await self.hash_passwords(values)
                hashed.append((op, attr, values))
            change_list = tuple(hashed)
        result = await self.submit_as(who, ModifyCommand(dn, change_list, ids.command_id(),
                                                         self._actor(who), generalized_time()))
        if PASSWORD_ATTR in touched:
            await self.password_changed(dn, before)
        return result

    async def delete(self, who: Identity, dn: str) -> ApplyResult:
        ndn = self.normalize_dn(dn)
        self._authorize(who, ndn, "delete")
        return await self.submit_as(who, DeleteCommand(dn, ids.command_id(), self._actor(who),
                                               generalized_time()))

    async def modify_dn(
        self, who: Identity, dn: str, new_rdn: str, delete_old_rdn: bool,
        new_superior: str | None = None,
    ) -> ApplyResult:
        """Needs ``write`` on the entry; a move (newSuperior) also ``delete`` on the old DN
        and ``add`` on the new one."""
        ndn = self.normalize_dn(dn)
        self._authorize(who, ndn, "write")
        if new_superior is not None and not self.node.access.builtin:
            self._authorize(who, ndn, "delete")
            try:
                new_ndn = self.schema.normalize_dn(f"{new_rdn},{new_superior}")
            except (DNError, UndefinedAttribute, InvalidValue):
                new_ndn = ""
            if new_ndn:
                self._authorize(who, new_ndn, "add")
        return await self.submit_as(who, ModifyDNCommand(dn, new_rdn, delete_old_rdn, new_superior,
                                                 ids.command_id(), self._actor(who),
                                                 generalized_time()))

    # ------------------------------------------------------------------ passwords

    def _is_password(self, attr: str) -> bool:
        return self.schema.canonical(attr.split(";", 1)[0]) == PASSWORD_ATTR

    @property
    def password_scheme(self) -> str:
        return str(self.node.config.security.passwordHash)

    @property
    def argon2_params(self) -> passwords.Argon2Params:
        return argon2_params(self.node.config)

    async def _hashing(self, job: Callable[[], T], costly: bool = True) -> T:
        """``job()`` (hashing or verifying passwords) in the bounded pool; busy (51) when too
        many wait already or it waited too long. A job that is not ``costly`` (digests and
        cleartext only: microseconds) runs at once instead, sparing it two thread hops; as
        the dummy hash of a digest scheme does, so refusals still take the same time."""
        if not costly:
            return job()
        try:
            return await self._hashes.run(job)
        except hashpool.HashBusy as exc:
            raise OpError(ResultCode.BUSY, f"server busy: {exc}, try again") from None

    async def check_new_passwords(self, who: Identity, values: Iterable[bytes],
                                  entry: Entry | None) -> None:
        """Apply ``security.passwordPolicy`` to new cleartext values (constraintViolation,
        19, naming the rule); ``{SCHEME}`` values are accepted from the root DN only."""
        policy = self.node.config.security.passwordPolicy
        if not policy.enabled:
            return
        for value in values:
            if passwords.is_hashed(value):
                if self.node.access.is_root(who.ndn):
                    continue
                raise OpError(ResultCode.CONSTRAINT_VIOLATION, f"{pwpolicy.PREFIX}pre-hashed "
                              "{SCHEME} passwords may be set by the root DN only")
            problem = pwpolicy.quality_problem(policy, value)
            if problem is not None:
                raise OpError(ResultCode.CONSTRAINT_VIOLATION, problem)
            if entry is not None and policy.historyCount > 0:
                old = list(entry.attrs.get(PASSWORD_ATTR, ()))
                old += [pwpolicy.history_stored(h) for h in entry.attrs.get("pwdHistory", ())]
                if old and await self._verify_any(value, old):
                    raise OpError(ResultCode.CONSTRAINT_VIOLATION,
                                  f"{pwpolicy.PREFIX}historyCount: the password was used "
                                  f"recently (the last {policy.historyCount} may not be reused)")

    async def password_changed(self, dn: str, before: Entry | None) -> None:
        """After a password write: ``pwdChangedTime`` and ``pwdHistory`` (policy enabled)."""
        policy = self.node.config.security.passwordPolicy
        if not policy.enabled:
            return
        now = generalized_time()
        changes: list[tuple[int, str, tuple[bytes, ...]]] = [
            (MOD_REPLACE, "pwdChangedTime", (now.encode(),))]
        if before is not None and policy.historyCount > 0:
            history = pwpolicy.new_history(policy, now, before.attrs.get(PASSWORD_ATTR, ()),
                                           before.attrs.get("pwdHistory", ()))
            if history:
                changes.append((MOD_REPLACE, "pwdHistory", tuple(history)))
        await self.system_modify(dn, tuple(changes))

    async def hash_passwords(self, values: Iterable[bytes]) -> tuple[bytes, ...]:
        """Cleartext values hashed with ``security.passwordHash`` and ``security.argon2``;
        ``{SCHEME}`` values as given.

        Hashing (Argon2 above all) is slow, so it runs in the bounded hashing pool (busy, 51,
        when it is full)."""
        values = tuple(values)
        if all(passwords.is_hashed(v) for v in values):
            return values
        scheme, params = self.password_scheme, self.argon2_params
        return await self._hashing(
            lambda: tuple(v if passwords.is_hashed(v)
                          else passwords.hash_password(v, scheme, argon2_params=params)
                          for v in values), passwords.costly_scheme(scheme))

    async def _verify_any(self, password: bytes, stored: Sequence[bytes]) -> bool:
        """Does ``password`` match one of the ``stored`` values? Verified in the bounded
        hashing pool, never on the event loop (whatever the scheme)."""
        return await self._verify_match(password, stored) is not None

    async def _verify_match(self, password: bytes, stored: Sequence[bytes],
                            pad: bytes | None = None) -> bytes | None:
        """The ``stored`` value ``password`` matches, or None (then also verified against
        ``pad`` when given, for the time it takes), in the bounded hashing pool."""
        values = tuple(stored)
        if not any(passwords.costly(v) for v in values):
            # digests and cleartext: checked at once; only a miss pays the padding
            for value in values:
                if passwords.verify(password, value):
                    return value
            if pad is not None:
                dummy = pad
                await self._hashing(lambda: passwords.verify(password, dummy),
                                    passwords.costly(dummy))
            return None

        def check() -> bytes | None:
            for value in values:
                if passwords.verify(password, value):
                    return value
            if pad is not None:
                passwords.verify(password, pad)
            return None

        return await self._hashing(check)

    async def _dummy(self) -> bytes:
        """The dummy hash of the configured scheme and parameters (``dummy_hash``)."""
        fut = dummy_hash(self.password_scheme, self.argon2_params)
        if fut.done():
            return fut.result()
        try:  # made at start-up: only the first binds may wait for it
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)),
                                          hashpool.WAIT_TIMEOUT)
        except TimeoutError:
            raise OpError(ResultCode.BUSY, "server busy: still starting, try again") from None

    async def _verify_dummy(self, password: bytes) -> None:
        """Verify ``password`` as for an account with the configured scheme and parameters,
        for the time it takes (the answer is always no)."""
        await self._verify_match(password, (), await self._dummy())

    async def password_modify(
        self, who: Identity, user: str | None, old: bytes | None, new: bytes | None
    ) -> bytes | None:
        """RFC 3062 Password Modify; returns the generated password when ``new`` is None.

        Result codes as slapd gives them: anonymous -> strongerAuthRequired (8); no such user
        (the root DN included, it has no entry) -> noSuchObject (32); another user's password
        without the right -> insufficientAccessRights (50); a wrong or unverifiable old
        password -> unwillingToPerform (53). The password policy applies to the new one."""
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
        try:
            self._authorize_write(who, ndn, frozenset({PASSWORD_ATTR}))
        except OpError as err:  # a hidden entry: the same answer as a missing one
            if err.code == ResultCode.NO_SUCH_OBJECT:
                raise OpError(ResultCode.NO_SUCH_OBJECT) from None
            raise
        if old is not None:
            stored = list(entry.attrs.get(PASSWORD_ATTR, ()))
            if not stored or not await self._verify_any(old, stored):
                raise OpError(ResultCode.UNWILLING_TO_PERFORM, "unwilling to verify old password")
        generated: bytes | None = None
        if new is None:
            policy = self.node.config.security.passwordPolicy
            generated = pwpolicy.generate(policy, GENERATED_PASSWORD_LENGTH)
            new = generated
        if not new:
            raise OpError(ResultCode.UNWILLING_TO_PERFORM, "new password is empty")
        await self.check_new_passwords(who, [new], entry)
        hashed = await self.hash_passwords([new])
        change = ((MOD_REPLACE, PASSWORD_ATTR, hashed),)
        await self.submit_as(who, ModifyCommand(entry.dn, change, ids.command_id(),
                                                self._actor(who), generalized_time()))
        await self.password_changed(entry.dn, entry)
        return generated


MOD_ADD, MOD_DELETE, MOD_REPLACE = 0, 1, 2

