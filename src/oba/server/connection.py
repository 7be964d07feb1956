"""One LDAP connection: framing, bind state, dispatch of each request to its handler.

Rules for this module: reads (search, compare, bind) run on the event loop over an LMDB read
transaction and answer at once; writes become Commands submitted to the node's replicator and
are answered when the replicator says they are durable. Every request gets exactly one final
response (abandon and unbind excepted); a malformed PDU gets a Notice of Disconnection and the
connection is closed. No exception escapes to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
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
from oba.directory.evaluate import compare, compile_filter
from oba.directory.search import SearchContext, search
from oba.protocol import codec
from oba.protocol.codec import LDAPDecoder, ProtocolError, encode_message
from oba.protocol.dn import DNError, parse_dn
from oba.protocol.messages import (
    AbandonRequest,
    AddRequest,
    AddResponse,
    And,
    BindRequest,
    BindResponse,
    CompareRequest,
    CompareResponse,
    Control,
    DelRequest,
    DelResponse,
    ExtendedRequest,
    ExtendedResponse,
    Filter,
    LDAPMessage,
    LDAPResult,
    ModifyDNRequest,
    ModifyDNResponse,
    ModifyRequest,
    ModifyResponse,
    Not,
    Or,
    ProtocolOp,
    Scope,
    SearchRequest,
    SearchResultDone,
    UnbindRequest,
)
from oba.protocol.resultcodes import ResultCode
from oba.schema import InvalidValue, UndefinedAttribute
from oba.server import rootdse
from oba.server.node import SUBSCHEMA_NDN, Node

log = logging.getLogger("oba.ldap")

NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
WHOAMI_OID = "1.3.6.1.4.1.4203.1.11.3"
MANAGE_DSA_IT_OID = "2.16.840.1.113730.3.4.2"

# Controls this server understands on any operation (others: see _check_controls).
KNOWN_CONTROLS = frozenset({MANAGE_DSA_IT_OID})


def generalized_time(now: float | None = None) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(now))


class LDAPConnection(asyncio.Protocol):
    def __init__(self, node: Node) -> None:
        self.node = node
        self.decoder = LDAPDecoder(node.config.server.maxMessageSize)
        self.transport: asyncio.Transport | None = None
        self.bind_dn = ""
        self.bind_ndn = ""
        self.peer = "?"
        self.closed = False
        self.pending: dict[int, asyncio.Task[None]] = {}
        self.search_ctx = SearchContext(node.schema)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.node.stats.connections += 1
        self.node.stats.total_connections += 1
        limit = self.node.config.server.maxConnections
        if limit and self.node.stats.connections > limit:
            log.warning("connection from %s refused: maxConnections (%d) reached", self.peer, limit)
            self.disconnect(ResultCode.UNAVAILABLE, "too many connections")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.node.stats.connections -= 1
        for task in self.pending.values():
            # writes already submitted still complete in the writer; only the answer is dropped
            task.cancel()
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        while not self.closed:
            try:
                msg = self.decoder.next_message()
            except ProtocolError as exc:
                self.disconnect(ResultCode.PROTOCOL_ERROR, str(exc))
                return
            if msg is None:
                return
            try:
                self.dispatch(msg)
            except Exception:
                log.exception("unexpected error handling message %d", msg.message_id)
                self.disconnect(ResultCode.OTHER, "internal server error")
                return

    # ------------------------------------------------------------------ output

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def reply(self, message_id: int, op: ProtocolOp) -> None:
        self.send(encode_message(LDAPMessage(message_id, op)))

    def disconnect(self, code: ResultCode, message: str) -> None:
        """Send a Notice of Disconnection (RFC 4511 4.4.1) and close."""
        if self.closed:
            return
        notice = ExtendedResponse(LDAPResult(code, "", message), name=NOTICE_OF_DISCONNECTION)
        self.send(encode_message(LDAPMessage(0, notice)))
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.node.stats.connections -= 1
            self.transport.close()

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, msg: LDAPMessage) -> None:
        op = msg.op
        stats = self.node.stats
        stats.requests += 1
        name = type(op).__name__
        stats.operations[name] += 1
        mid = msg.message_id
        if isinstance(op, UnbindRequest):
            self.close()
            return
        if isinstance(op, AbandonRequest):
            task = self.pending.get(op.message_id)
            if task is not None:
                task.cancel()
            return
        bad = self._check_controls(msg.controls)
        if bad is not None:
            self._answer_error(mid, op, ResultCode.UNAVAILABLE_CRITICAL_EXTENSION,
                               f"critical control {bad} is not supported")
            return
        if isinstance(op, SearchRequest):
            self.handle_search(mid, op)
        elif isinstance(op, BindRequest):
            self.handle_bind(mid, op)
        elif isinstance(op, CompareRequest):
            self.handle_compare(mid, op)
        elif isinstance(op, AddRequest | ModifyRequest | DelRequest | ModifyDNRequest):
            self.handle_write(mid, op)
        elif isinstance(op, ExtendedRequest):
            self.handle_extended(mid, op)
        else:
            # a response PDU sent by a client, or an op we do not serve
            self.disconnect(ResultCode.PROTOCOL_ERROR, f"unexpected {name}")

    def _check_controls(self, controls: Iterable[Control]) -> str | None:
        for c in controls:
            if c.critical and c.oid not in KNOWN_CONTROLS:
                return c.oid
        return None

    def _answer_error(self, mid: int, op: ProtocolOp, code: ResultCode, message: str,
                      matched: str = "") -> None:
        result = LDAPResult(code, matched, message)
        self.node.stats.results[int(code)] += 1
        resp: ProtocolOp
        if isinstance(op, SearchRequest):
            resp = SearchResultDone(result)
        elif isinstance(op, BindRequest):
            resp = BindResponse(result)
        elif isinstance(op, CompareRequest):
            resp = CompareResponse(result)
        elif isinstance(op, AddRequest):
            resp = AddResponse(result)
        elif isinstance(op, ModifyRequest):
            resp = ModifyResponse(result)
        elif isinstance(op, DelRequest):
            resp = DelResponse(result)
        elif isinstance(op, ModifyDNRequest):
            resp = ModifyDNResponse(result)
        else:
            resp = ExtendedResponse(result)
        self.reply(mid, resp)

    # ------------------------------------------------------------------ helpers

    def normalize_dn(self, dn: str) -> str:
        """Normalised DN; raises DNError (invalid syntax or undefined attribute type)."""
        return self.node.schema.normalize_dn(dn)

    def matched_dn(self, txn: Any, ndn: str, dn: str) -> str:
        """The DN of the nearest existing ancestor of ``dn`` (slapd's matchedDN)."""
        try:
            parsed = parse_dn(dn)
        except DNError:
            return ""
        for i in range(1, len(parsed)):
            anc = parsed[i:]
            try:
                anc_ndn = self.node.schema.normalize_dn(anc)
            except DNError:
                continue
            entry = txn.get_by_ndn(anc_ndn)
            if entry is not None:
                return str(entry.dn)
        return ""

    # ------------------------------------------------------------------ bind

    def handle_bind(self, mid: int, op: BindRequest) -> None:
        # A bind (successful or not) resets the connection to anonymous first (RFC 4511 4.2.1).
        self.bind_dn = self.bind_ndn = ""
        if op.version != 3:
            self._answer_error(mid, op, ResultCode.PROTOCOL_ERROR,
                               "requested protocol version not allowed")
            return
        if op.sasl_mechanism is not None:
            self._answer_error(mid, op, ResultCode.AUTH_METHOD_NOT_SUPPORTED,
                               "SASL(-4): no mechanism available: ")
            return
        password = op.simple or b""
        if not op.name:
            if password:
                self._answer_error(mid, op, ResultCode.UNWILLING_TO_PERFORM,
                                   "unauthenticated bind (DN with no password) disallowed")
                return
            self.reply(mid, BindResponse(LDAPResult(ResultCode.SUCCESS)))
            return
        try:
            ndn = self.normalize_dn(op.name)
        except (DNError, UndefinedAttribute, InvalidValue):
            self._answer_error(mid, op, ResultCode.INVALID_DN_SYNTAX, "invalid DN")
            return
        if not password:
            self._answer_error(mid, op, ResultCode.UNWILLING_TO_PERFORM,
                               "unauthenticated bind (DN with no password) disallowed")
            return
        node = self.node
        if ndn == node.root_ndn and node.root_password:
            ok = passwords.verify(password, node.root_password)
            self._finish_bind(mid, op, ok, op.name, ndn)
            return
        with node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            stored = list(entry.attrs.get("userPassword", ())) if entry is not None else []
            disabled = entry is not None and any(
                v.upper() in (b"TRUE", b"1", b"YES") for v in entry.attrs.get("obaDisabled", ())
            )
        if not stored or disabled:
            self._finish_bind(mid, op, False, op.name, ndn)
            return
        if any(passwords.split_scheme(s)[0] == "ARGON2" for s in stored):
            # Argon2 is deliberately slow: verify off the event loop.
            task = asyncio.ensure_future(self._bind_slow(mid, op, ndn, stored))
            self._track(mid, task)
            return
        ok = any(passwords.verify(password, s) for s in stored)
        self._finish_bind(mid, op, ok, op.name, ndn)

    async def _bind_slow(self, mid: int, op: BindRequest, ndn: str, stored: list[bytes]) -> None:
        password = op.simple or b""
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(
            None, lambda: any(passwords.verify(password, s) for s in stored)
        )
        self._finish_bind(mid, op, ok, op.name, ndn)

    def _finish_bind(self, mid: int, op: BindRequest, ok: bool, dn: str, ndn: str) -> None:
        if ok:
            self.bind_dn, self.bind_ndn = dn, ndn
            self.reply(mid, BindResponse(LDAPResult(ResultCode.SUCCESS)))
        else:
            self._answer_error(mid, op, ResultCode.INVALID_CREDENTIALS, "")

    def _track(self, mid: int, task: asyncio.Task[None]) -> None:
        self.pending[mid] = task
        task.add_done_callback(lambda t: self._untrack(mid, t))

    def _untrack(self, mid: int, task: asyncio.Task[None]) -> None:
        if self.pending.get(mid) is task:
            del self.pending[mid]
        if not task.cancelled() and task.exception() is not None:
            log.error("request %d failed", mid, exc_info=task.exception())
            if not self.closed:
                self.disconnect(ResultCode.OTHER, "internal server error")

    # ------------------------------------------------------------------ search

    def handle_search(self, mid: int, op: SearchRequest) -> None:
        node = self.node
        base = op.base
        try:
            base_ndn = self.normalize_dn(base)
        except (DNError, UndefinedAttribute, InvalidValue):
            self._answer_error(mid, op, ResultCode.INVALID_DN_SYNTAX, "invalid DN")
            return
        if base_ndn == "" and op.scope == Scope.BASE:
            self._send_special(mid, op, rootdse.root_dse(node), "")
            return
        if base_ndn == SUBSCHEMA_NDN and op.scope == Scope.BASE:
            self._send_special(mid, op, rootdse.subschema(node), SUBSCHEMA_NDN)
            return
        deadline = time.monotonic() + op.time_limit if op.time_limit > 0 else 0.0
        size_limit = op.size_limit
        selector = AttributeSelector(self, op.attributes, op.types_only)
        count = 0
        guard = None if node.access.is_root(self.bind_ndn) else _protected_in(op.filter)
        with node.store.read() as txn:
            base_entry = txn.get_by_ndn(base_ndn) if base_ndn else None
            if base_entry is None:
                self._answer_error(mid, op, ResultCode.NO_SUCH_OBJECT, "",
                                   self.matched_dn(txn, base_ndn, base))
                return
            try:
                results = search(txn, self.search_ctx, base_ndn, int(op.scope), op.filter)
                for entry in results:
                    if size_limit and count >= size_limit:
                        self._answer_error(mid, op, ResultCode.SIZE_LIMIT_EXCEEDED, "")
                        return
                    if deadline and time.monotonic() > deadline:
                        self._answer_error(mid, op, ResultCode.TIME_LIMIT_EXCEEDED, "")
                        return
                    if guard and not self._filter_visible(entry, op, guard):
                        continue
                    self.send(selector.encode(mid, entry, txn))
                    count += 1
            except (InvalidValue, UndefinedAttribute, ValueError) as exc:
                self._answer_error(mid, op, ResultCode.PROTOCOL_ERROR, str(exc))
                return
        self.reply(mid, SearchResultDone(LDAPResult(ResultCode.SUCCESS)))

    def _filter_visible(self, entry: Entry, op: SearchRequest, guard: frozenset[str]) -> bool:
        """Re-check the filter without the attributes the client may not search (slapd: a
        filter item on an attribute without search access is Undefined)."""
        ndn = self.node.schema.normalize_dn(entry.dn)
        hidden = [a for a in guard if not self.node.access.can_read_attr(self.bind_ndn, ndn, a)]
        if not hidden:
            return True
        attrs = {k: v for k, v in entry.attrs.items() if k not in hidden}
        return compile_filter(op.filter, self.node.schema)(Entry(entry.id, entry.dn, attrs)) is True

    def _send_special(self, mid: int, op: SearchRequest, entry: Entry, ndn: str) -> None:
        if compile_filter(op.filter, self.node.schema)(entry):
            selector = AttributeSelector(self, op.attributes, op.types_only, special=True)
            self.send(selector.encode(mid, entry, None))
        self.reply(mid, SearchResultDone(LDAPResult(ResultCode.SUCCESS)))

    # ------------------------------------------------------------------ compare

    def handle_compare(self, mid: int, op: CompareRequest) -> None:
        node = self.node
        try:
            ndn = self.normalize_dn(op.dn)
        except (DNError, UndefinedAttribute, InvalidValue):
            self._answer_error(mid, op, ResultCode.INVALID_DN_SYNTAX, "invalid DN")
            return
        attr = node.schema.canonical(op.attr.split(";", 1)[0])
        if attr is None:
            self._answer_error(mid, op, ResultCode.UNDEFINED_ATTRIBUTE_TYPE,
                               f"{op.attr}: attribute type undefined")
            return
        with node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            if entry is None:
                self._answer_error(mid, op, ResultCode.NO_SUCH_OBJECT, "",
                                   self.matched_dn(txn, ndn, op.dn))
                return
        if not node.access.can_read_attr(self.bind_ndn, ndn, attr):
            self._answer_error(mid, op, ResultCode.INSUFFICIENT_ACCESS_RIGHTS, "")
            return
        if node.schema.equality(attr) is None:
            self._answer_error(mid, op, ResultCode.INAPPROPRIATE_MATCHING, "")
            return
        try:
            res = compare(entry, attr, op.value, node.schema)
        except InvalidValue:
            res = None
        if res is None:
            if entry.attrs.get(attr):
                self._answer_error(mid, op, ResultCode.INVALID_ATTRIBUTE_SYNTAX, "")
            else:
                self._answer_error(mid, op, ResultCode.NO_SUCH_ATTRIBUTE, "")
            return
        code = ResultCode.COMPARE_TRUE if res else ResultCode.COMPARE_FALSE
        self.reply(mid, CompareResponse(LDAPResult(code)))

    # ------------------------------------------------------------------ writes

    def handle_write(
        self, mid: int, op: AddRequest | ModifyRequest | DelRequest | ModifyDNRequest
    ) -> None:
        node = self.node
        try:
            ndn = self.normalize_dn(op.dn)
        except (DNError, UndefinedAttribute, InvalidValue):
            self._answer_error(mid, op, ResultCode.INVALID_DN_SYNTAX, "invalid DN")
            return
        attrs: frozenset[str] | None = None
        if isinstance(op, ModifyRequest):
            attrs = frozenset(
                node.schema.canonical(a[0].split(";", 1)[0]) or a[0] for _, a in op.changes
            )
        denied = node.access.check_write(self.bind_ndn, ndn, attrs)
        if denied is not None:
            self._answer_error(mid, op, denied.code, denied.message)
            return
        actor = self.bind_dn if self.bind_ndn != node.root_ndn else node.root_dn
        now = generalized_time()
        rid = uuid.uuid4().hex
        cmd: Command
        if isinstance(op, AddRequest):
            cmd = AddCommand(op.dn, op.attributes, rid, actor, now, str(uuid.uuid4()))
        elif isinstance(op, ModifyRequest):
            changes = tuple((int(c), a[0], a[1]) for c, a in op.changes)
            cmd = ModifyCommand(op.dn, changes, rid, actor, now)
        elif isinstance(op, DelRequest):
            cmd = DeleteCommand(op.dn, rid, actor, now)
        else:
            cmd = ModifyDNCommand(op.dn, op.new_rdn, op.delete_old_rdn, op.new_superior,
                                  rid, actor, now)
        task = asyncio.ensure_future(self._submit(mid, op, cmd))
        self._track(mid, task)

    async def _submit(
        self, mid: int, op: AddRequest | ModifyRequest | DelRequest | ModifyDNRequest,
        cmd: Command,
    ) -> None:
        result: ApplyResult = await self.node.replicator.submit(cmd)
        if result.code != ResultCode.SUCCESS:
            self._answer_error(mid, op, ResultCode(result.code), result.message, result.matched_dn)
            return
        ok = LDAPResult(ResultCode.SUCCESS)
        resp: ProtocolOp
        if isinstance(op, AddRequest):
            resp = AddResponse(ok)
        elif isinstance(op, ModifyRequest):
            resp = ModifyResponse(ok)
        elif isinstance(op, DelRequest):
            resp = DelResponse(ok)
        else:
            resp = ModifyDNResponse(ok)
        self.reply(mid, resp)

    # ------------------------------------------------------------------ extended

    def handle_extended(self, mid: int, op: ExtendedRequest) -> None:
        if op.name == WHOAMI_OID:
            authz = f"dn:{self.bind_dn}" if self.bind_dn else ""
            self.reply(mid, ExtendedResponse(LDAPResult(ResultCode.SUCCESS),
                                             value=authz.encode()))
            return
        self._answer_error(mid, op, ResultCode.PROTOCOL_ERROR,
                           f"{op.name} not supported")


def _protected_in(flt: Filter) -> frozenset[str] | None:
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


class AttributeSelector:
    """Which attributes of an entry a search returns, and their encoding (a hot path)."""

    def __init__(self, conn: LDAPConnection, requested: Iterable[str], types_only: bool,
                 special: bool = False) -> None:
        node = conn.node
        self.conn = conn
        self.node = node
        self.types_only = types_only
        self.special = special
        req = [r.split(";", 1)[0] for r in requested]
        lowered = {r.lower() for r in req}
        self.all_user = not req or "*" in lowered
        self.all_oper = "+" in lowered
        named: set[str] = set()
        for r in req:
            if r in ("*", "+", "1.1"):
                continue
            canon = node.schema.canonical(r)
            if canon is not None:
                named.add(canon)
        self.named = frozenset(named)

    def wanted(self, attr: str) -> bool:
        if attr in self.named:
            return True
        if self.node.is_operational(attr):
            return self.all_oper
        return self.all_user

    def encode(self, mid: int, entry: Entry, txn: Any) -> bytes:
        node = self.node
        bind_ndn = self.conn.bind_ndn
        out: list[tuple[str, list[bytes]]] = []
        entry_ndn = ""
        for attr, values in entry.attrs.items():
            if not self.wanted(attr):
                continue
            if attr == "userPassword":
                if not entry_ndn:
                    entry_ndn = node.schema.normalize_dn(entry.dn)
                if not node.access.can_read_attr(bind_ndn, entry_ndn, attr):
                    continue
            out.append((attr, [] if self.types_only else list(values)))
        if txn is not None and (self.all_oper or self.named):
            for attr, values in self._computed(entry, txn):
                if attr in self.named or self.all_oper:
                    out.append((attr, [] if self.types_only else values))
        return codec.encode_search_entry(mid, entry.dn, out)

    def _computed(self, entry: Entry, txn: Any) -> list[tuple[str, list[bytes]]]:
        has_children = txn.has_children(entry.id)
        return [
            ("entryDN", [entry.dn.encode()]),
            ("hasSubordinates", [b"TRUE" if has_children else b"FALSE"]),
            ("subschemaSubentry", [b"cn=Subschema"]),
        ]
