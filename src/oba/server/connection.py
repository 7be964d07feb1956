"""One LDAP connection: framing, bind state, and the translation of each PDU to an operation.

Rules for this module: the directory decisions live in ``oba.operations`` (shared with the REST
API); this module only turns PDUs into calls and results into PDUs. Reads answer at once on the
event loop; writes and binds run as tasks and answer when done. Every request gets exactly one
final response (abandon and unbind excepted); a malformed PDU gets a Notice of Disconnection and
the connection is closed. No exception escapes to the event loop.

Resource rules (hostile clients):
- Backpressure, not errors: the connection stops reading requests (``pause_reading``) while
  ``MAX_PENDING`` requests are outstanding or while the transport's write buffer is above its
  high-water mark, and resumes when both drop. Memory per connection is thus bounded by the
  high-water mark, one search chunk and one read.
- ``server.readTimeout``: a connection with nothing outstanding that sends nothing for that long
  gets a Notice of Disconnection (unavailable) and is closed. ``server.writeTimeout``: a client
  that drains none of the waiting output for that long is aborted (its buffer is full, so no
  notice can reach it). Both are read live from the config; 0 disables them.
- ``server.anonymousIdleTimeout``: the same, sooner, for a connection without an authenticated
  identity (never bound, bound anonymously, or its last bind failed), but only while the node
  holds at least ``CROWDED`` of ``server.maxConnections`` (all listener processes counted):
  idle unauthenticated connections cannot hold every slot, and pooled anonymous clients keep
  their connections while slots are plentiful. Closes are logged per connection at debug and
  summed up at most every ``REAP_LOG_EVERY`` seconds, so a flood does not flood the log.
- TLS (``tls`` set): StartTLS (RFC 4511 4.14) answers in the clear, then upgrades the transport;
  refused with operationsError when TLS is already active or requests are outstanding; plaintext
  sent after the request and before the handshake is a protocol violation. Without ``tls`` the
  OID is unknown (protocolError, as slapd). ``implicit_tls``: an LDAPS connection (the listener
  did the handshake).
  ``security.requireTLS`` refuses simple binds with a password in the clear (13).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import ssl
import struct
import time
from collections.abc import Awaitable, Coroutine, Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

from oba import reqctx
from oba.directory.entry import Entry
from oba.operations import ANONYMOUS, Identity, Operations, OpError
from oba.protocol import codec
from oba.protocol.codec import LDAPDecoder, ProtocolError, encode_message
from oba.protocol.controls import (
    OID_MANAGE_DSA_IT,
    OID_PAGED_RESULTS,
    OID_PERSISTENT_SEARCH,
    OID_SORT_REQUEST,
    OID_SORT_RESPONSE,
    ControlError,
    PagedResults,
    PersistentSearch,
    SortRequest,
    SortResponse,
)
from oba.protocol.messages import (
    AbandonRequest,
    AddRequest,
    AddResponse,
    BindRequest,
    BindResponse,
    CompareRequest,
    CompareResponse,
    Control,
    DelRequest,
    DelResponse,
    ExtendedRequest,
    ExtendedResponse,
    LDAPMessage,
    LDAPResult,
    ModifyDNRequest,
    ModifyDNResponse,
    ModifyRequest,
    ModifyResponse,
    ProtocolOp,
    SearchRequest,
    SearchResultDone,
    SearchResultEntry,
    UnbindRequest,
)
from oba.protocol.resultcodes import ResultCode
from oba.schema import options as attr_options
from oba.schema.options import OptionError, key_parts, tagged_keys, wire_name
from oba.server import extended
from oba.server.node import Node
from oba.server.paging import CookieJar, PageState, PagingError
from oba.server.psearch import PersistentSearchJob
from oba.server.sorting import ResolvedKey, SortError, check_keys, sort_entries
from oba.server.tls import STARTTLS_OID, ServerTLS

log = logging.getLogger("oba.ldap")
T = TypeVar("T")

NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
WHOAMI_OID = "1.3.6.1.4.1.4203.1.11.3"
MANAGE_DSA_IT_OID = OID_MANAGE_DSA_IT

# Controls this server understands on any operation; a critical control not listed for the
# operation is refused with unavailableCriticalExtension, a non-critical one is ignored.
KNOWN_CONTROLS = frozenset({MANAGE_DSA_IT_OID})
SEARCH_CONTROLS = KNOWN_CONTROLS | {OID_PAGED_RESULTS, OID_SORT_REQUEST, OID_PERSISTENT_SEARCH}

# A search answers this many entries at once on the loop; a larger result continues in a task
# that yields to the loop every CHUNK entries and waits while the transport is paused.
CHUNK = 256
# Requests of one connection being processed at once; beyond it the connection stops reading.
MAX_PENDING = 128
# Share of server.maxConnections from which idle anonymous connections are closed after
# server.anonymousIdleTimeout rather than server.readTimeout.
CROWDED = 0.5
REAP_LOG_EVERY = 10.0

_RESPONSE: dict[type, type] = {
    SearchRequest: SearchResultDone,
    BindRequest: BindResponse,
    CompareRequest: CompareResponse,
    AddRequest: AddResponse,
    ModifyRequest: ModifyResponse,
    DelRequest: DelResponse,
    ModifyDNRequest: ModifyDNResponse,
    ExtendedRequest: ExtendedResponse,
}

# Request type -> protocolOp tag of its response, for responses that are a bare LDAPResult.
_RESULT_TAG: dict[type, int] = {
    SearchRequest: codec.OP_SEARCH_RESULT_DONE,
    BindRequest: codec.OP_BIND_RESPONSE,
    CompareRequest: codec.OP_COMPARE_RESPONSE,
    AddRequest: codec.OP_ADD_RESPONSE,
    ModifyRequest: codec.OP_MODIFY_RESPONSE,
    DelRequest: codec.OP_DEL_RESPONSE,
    ModifyDNRequest: codec.OP_MODIFY_DN_RESPONSE,
}


class LDAPConnection(asyncio.Protocol):
    def __init__(self, node: Node, ops: Operations | None = None, tls: ServerTLS | None = None,
                 implicit_tls: bool = False) -> None:
        self.node = node
        self.ops = ops if ops is not None else Operations(node)
        self.decoder = LDAPDecoder(node.config.server.maxMessageSize)
        self.transport: asyncio.Transport | None = None
        self.identity: Identity = ANONYMOUS
        # (entry id, credential epoch) the identity bound under (``Operations.account_stamp``):
        # a persistent search ends once the account no longer matches it
        self.account: tuple[int, int] | None = None
        self.peer = "?"
        self.closed = False
        self.pending: dict[int, asyncio.Task[None]] = {}
        self.started: dict[int, float] = {}  # message id -> arrival, for latency metrics
        self._cork: list[bytes] | None = None  # output held back while a batch is processed
        self._selectors: dict[tuple[tuple[str, ...], bool], AttributeSelector] = {}
        self.cookies = CookieJar()
        self._writable = asyncio.Event()
        self._writable.set()
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.tls_active = False
        self._upgrading = False
        self._upgrade_task: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._written = 0  # bytes handed to the transport
        self._flushed_mark = 0
        self._progress_at = 0.0

    @property
    def bind_dn(self) -> str:
        return self.identity.dn

    @property
    def bind_ndn(self) -> str:
        return self.identity.ndn

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.node.stats.connections += 1
        self.node.stats.total_connections += 1
        self._loop = asyncio.get_running_loop()
        self._last_active = self._loop.time()
        limit = self.node.config.server.maxConnections
        if limit and self.node.stats.open_connections() > limit:
            log.warning("connection from %s refused: maxConnections (%d) reached", self.peer, limit)
            self.disconnect(ResultCode.UNAVAILABLE, "too many connections")
            return
        # LDAPS: the listener's transport has finished its handshake before this call
        self.tls_active = self.implicit_tls or transport.get_extra_info("ssl_object") is not None
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.node.stats.connections -= 1
        self._cancel_timers()
        for task in self.pending.values():
            # a write already submitted still completes in the writer; only the answer is lost
            task.cancel()
        self.pending.clear()
        self.cookies.clear()
        self._writable.set()

    def pause_writing(self) -> None:
        """The transport's write buffer is above its high-water mark: stop producing."""
        self._writable.clear()
        self._watch_stall()

    def resume_writing(self) -> None:
        self._writable.set()
        self._unblock()

    async def wait_writable(self) -> None:
        if not self._writable.is_set():
            await self._writable.wait()

    def data_received(self, data: bytes) -> None:
        if self._loop is not None:
            self._last_active = self._loop.time()
        self.decoder.feed(data)
        self._process()

    def _blocked(self) -> bool:
        return len(self.pending) >= MAX_PENDING or not self._writable.is_set()

    def _process(self) -> None:
        """Dispatch the buffered requests, unless upgrading to TLS or blocked (backpressure).
        Responses produced meanwhile are corked and leave in one write (one syscall for a
        whole batch of pipelined requests, or for a search's entries and its result)."""
        self._cork = []
        try:
            self._process_corked()
        finally:
            self._flush_cork()

    def _flush_cork(self) -> None:
        buf, self._cork = self._cork, None
        if buf and self.transport is not None and not self.closed:
            self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def _process_corked(self) -> None:
        while not self.closed:
            if self._upgrading:
                return
            if self._blocked():
                self._pause_reading()
                return
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

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _unblock(self) -> None:
        """Resume reading once neither the pending cap nor the write buffer holds us back."""
        if not self._reading_paused or self.closed or self._blocked():
            return
        self._reading_paused = False
        if self.transport is not None:
            self.transport.resume_reading()
        if self._loop is not None:
            self._loop.call_soon(self._process)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            if self._cork is not None:
                self._cork.append(data)
            else:
                self.transport.write(data)
            self._written += len(data)

    def reply(self, message_id: int, op: ProtocolOp, controls: tuple[Control, ...] = ()) -> None:
        self.send(encode_message(LDAPMessage(message_id, op, controls)))

    def answer(self, mid: int, op: ProtocolOp, code: ResultCode | int, message: str = "",
               matched: str = "", controls: tuple[Control, ...] = ()) -> None:
        """The final response to request ``op`` with the given result."""
        stats = self.node.stats
        stats.results[int(code)] += 1
        started = self.started.pop(mid, None)
        if started is not None:
            stats.observe(type(op).__name__, int(code), time.monotonic() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("conn %s op #%d result %d %s", self.peer, mid, int(code), message)
        tag = _RESULT_TAG.get(type(op))
        if tag is not None and not controls:
            # the common case: a plain LDAPResult PDU, without building message objects
            self.send(codec.encode_result(mid, tag, int(code), matched, message))
            return
        result = LDAPResult(ResultCode(code), matched, message)
        resp_type = _RESPONSE.get(type(op), ExtendedResponse)
        self.reply(mid, resp_type(result), controls)

    def answer_error(self, mid: int, op: ProtocolOp, err: OpError) -> None:
        self.answer(mid, op, err.code, err.message, err.matched_dn)

    def disconnect(self, code: ResultCode, message: str) -> None:
        """Send a Notice of Disconnection (RFC 4511 4.4.1) and close."""
        if self.closed:
            return
        notice = ExtendedResponse(LDAPResult(code, "", message), name=NOTICE_OF_DISCONNECTION)
        self.send(encode_message(LDAPMessage(0, notice)))
        self.close()

    def close(self) -> None:
        self._flush_cork()  # a Notice of Disconnection or last results go out first
        self.cookies.clear()
        self._cancel_timers()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.node.stats.connections -= 1
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once, discarding unsent output (also the kernel's: the
        socket lingers 0 s, so the peer gets a reset rather than the rest of the data)."""
        self._cork = None
        self.cookies.clear()
        self._cancel_timers()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.node.stats.connections -= 1
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()

    # ------------------------------------------------------------------ timeouts

    def _cancel_timers(self) -> None:
        for timer in (self._idle_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._stall_timer = None

    def _read_timeout(self) -> float:
        return float(self.node.config.server.readTimeout.total_seconds())

    def _anonymous_timeout(self) -> float:
        """``server.anonymousIdleTimeout`` when it applies to this connection now (its identity
        is anonymous), else 0."""
        if not self.identity.anonymous:
            return 0.0
        return float(self.node.config.server.anonymousIdleTimeout.total_seconds())

    def _crowded(self) -> bool:
        """At least ``CROWDED`` of ``server.maxConnections`` are open (every process)."""
        limit = self.node.config.server.maxConnections
        return bool(limit) and self.node.stats.open_connections() >= limit * CROWDED

    def _write_timeout(self) -> float:
        return float(self.node.config.server.writeTimeout.total_seconds())

    def _arm_idle(self, delay: float | None = None) -> None:
        if self._loop is None or self.closed:
            return
        if delay is None:
            limits = [t for t in (self._read_timeout(), self._anonymous_timeout()) if t > 0]
            delay = min(limits) if limits else 5.0  # disabled: look again for a live change
        self._idle_timer = self._loop.call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.closed or self._loop is None:
            return
        timeout = self._read_timeout()
        anonymous = self._anonymous_timeout()
        now = self._loop.time()
        if (timeout <= 0 and anonymous <= 0) or self.pending or self._upgrading \
                or self._stall_timer is not None:
            self._last_active = now  # busy (or no limit) counts as activity
            self._arm_idle()
            return
        idle = now - self._last_active
        if 0 < timeout <= idle:
            log.info("connection from %s idle for %.0fs: closed", self.peer, idle)
            self.disconnect(ResultCode.UNAVAILABLE, "connection idle for too long")
            return
        if 0 < anonymous <= idle and self._crowded():
            log.debug("anonymous connection from %s idle for %.1fs: closed "
                      "(server.anonymousIdleTimeout)", self.peer, idle)
            _reaped.note(self._loop, self.node.config.server.maxConnections)
            self.disconnect(ResultCode.UNAVAILABLE, "anonymous connection idle for too long "
                            "while the server is busy: bind, or reconnect when needed")
            return
        waits = [timeout - idle] if timeout > 0 else []
        if anonymous > 0:  # not crowded now: look again one anonymousIdleTimeout later
            waits.append(anonymous - idle if idle < anonymous else anonymous)
        self._arm_idle(min(waits))

    def _flushed(self) -> int:
        assert self.transport is not None
        return self._written - self.transport.get_write_buffer_size()

    def _watch_stall(self) -> None:
        """Output is waiting: from now on the client must drain some within writeTimeout."""
        if self._stall_timer is not None or self._loop is None or self.closed:
            return
        timeout = self._write_timeout()
        if timeout <= 0 or self.transport is None:
            return
        self._flushed_mark = self._flushed()
        self._progress_at = self._loop.time()
        self._stall_timer = self._loop.call_later(max(timeout / 4, 0.05), self._stall_check)

    def _stall_check(self) -> None:
        self._stall_timer = None
        if self.closed or self.transport is None or self._loop is None:
            return
        timeout = self._write_timeout()
        waiting = self.transport.get_write_buffer_size()
        if timeout <= 0 or (waiting == 0 and self._writable.is_set()):
            return
        now = self._loop.time()
        flushed = self._written - waiting
        if flushed > self._flushed_mark:
            self._flushed_mark = flushed
            self._progress_at = now
        elif now - self._progress_at >= timeout:
            log.warning("client %s read none of %d waiting bytes for %.0fs: disconnected",
                        self.peer, waiting, now - self._progress_at)
            self.abort()
            return
        self._stall_timer = self._loop.call_later(max(timeout / 4, 0.05), self._stall_check)

    # ------------------------------------------------------------------ TLS

    def handle_starttls(self, mid: int, op: ExtendedRequest) -> None:
        assert self.tls is not None
        if op.value:
            self.answer(mid, op, ResultCode.PROTOCOL_ERROR, "no request data expected")
            return
        if self.tls_active:
            self.answer(mid, op, ResultCode.OPERATIONS_ERROR, "TLS already started")
            return
        if self.pending:
            self.answer(mid, op, ResultCode.OPERATIONS_ERROR,
                        "cannot start TLS when operations are outstanding")
            return
        if self.decoder.buffered():
            self.disconnect(ResultCode.PROTOCOL_ERROR, "data sent before the TLS handshake")
            return
        self.node.stats.results[int(ResultCode.SUCCESS)] += 1
        self.reply(mid, ExtendedResponse(LDAPResult(ResultCode.SUCCESS), name=STARTTLS_OID))
        self._begin_upgrade(self.tls.context)

    def _begin_upgrade(self, ctx: ssl.SSLContext) -> None:
        """Stop reading at once (the next bytes are the client's TLS handshake, which the
        reply just sent allows) and upgrade in a task."""
        assert self.transport is not None
        self._upgrading = True
        self.transport.pause_reading()
        self._upgrade_task = asyncio.ensure_future(self._upgrade(self.transport, ctx))

    async def _upgrade(self, raw: asyncio.Transport, ctx: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        timeout = self._read_timeout()
        try:
            tls = await loop.start_tls(raw, self, ctx, server_side=True,
                                       ssl_handshake_timeout=timeout if timeout > 0 else None)
        except Exception as exc:
            log.info("TLS handshake with %s failed: %s", self.peer, exc)
            raw.abort()
            self.connection_lost(exc)
            return
        if tls is None or self.closed:
            return
        self.transport = tls
        self.tls_active = True
        self._upgrading = False
        self._reading_paused = False
        self._last_active = loop.time()
        self._process()

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, msg: LDAPMessage) -> None:
        op = msg.op
        stats = self.node.stats
        stats.requests += 1
        stats.operations[type(op).__name__] += 1
        mid = msg.message_id
        reqctx.begin()  # this request's id, for its log lines, Commands and audit records
        if log.isEnabledFor(logging.DEBUG):
            log.debug("conn %s op #%d %s", self.peer, mid, describe(op))
        if isinstance(op, UnbindRequest):
            self.close()
            return
        if isinstance(op, AbandonRequest):
            self.started.pop(op.message_id, None)
            task = self.pending.get(op.message_id)
            if task is not None:
                task.cancel()
            return
        self.started[mid] = time.monotonic()
        if msg.controls:
            bad = self._unsupported_critical(
                msg.controls, SEARCH_CONTROLS if isinstance(op, SearchRequest) else KNOWN_CONTROLS)
            if bad is not None:
                self.answer(mid, op, ResultCode.UNAVAILABLE_CRITICAL_EXTENSION,
                            f"critical control {bad} is not supported")
                return
        try:
            if isinstance(op, SearchRequest):
                cluster = self.node.cluster
                if cluster is not None and op.base and cluster.is_leader():
                    self._track(mid, asyncio.ensure_future(
                        self._linearizable_search(mid, op, msg.controls)))
                else:
                    self.handle_search(mid, op, msg.controls)
            elif isinstance(op, BindRequest):
                self.handle_bind(mid, op)
            elif isinstance(op, CompareRequest):
                hit = self.ops.compare(self.identity, op.dn, op.attr, op.value)
                self.answer(mid, op, ResultCode.COMPARE_TRUE if hit else ResultCode.COMPARE_FALSE)
            elif isinstance(op, AddRequest):
                self.spawn(mid, op, self.ops.add(self.identity, op.dn, op.attributes))
            elif isinstance(op, ModifyRequest):
                changes = [(int(c), a[0], a[1]) for c, a in op.changes]
                self.spawn(mid, op, self.ops.modify(self.identity, op.dn, changes))
            elif isinstance(op, DelRequest):
                self.spawn(mid, op, self.ops.delete(self.identity, op.dn))
            elif isinstance(op, ModifyDNRequest):
                self.spawn(mid, op, self.ops.modify_dn(self.identity, op.dn, op.new_rdn,
                                                       op.delete_old_rdn, op.new_superior))
            elif isinstance(op, ExtendedRequest):
                self.handle_extended(mid, op)
            else:
                # a response PDU sent by a client, or an operation no server takes
                self.disconnect(ResultCode.PROTOCOL_ERROR, f"unexpected {type(op).__name__}")
        except OpError as err:
            self.answer_error(mid, op, err)

    def _unsupported_critical(
        self, controls: Iterable[Control], known: frozenset[str] = KNOWN_CONTROLS
    ) -> str | None:
        for c in controls:
            if c.critical and c.oid not in known:
                return c.oid
        return None

    # ------------------------------------------------------------------ tasks

    def spawn(self, mid: int, op: ProtocolOp, work: Awaitable[Any]) -> None:
        """Run ``work`` (a write) as a task; answer success, or the OpError it raises."""

        async def run() -> None:
            try:
                await work
            except OpError as err:
                self.answer_error(mid, op, err)
                return
            self.answer(mid, op, ResultCode.SUCCESS)

        self._track(mid, asyncio.ensure_future(run()))

    def _track(self, mid: int, task: asyncio.Task[None]) -> None:
        self.pending[mid] = task
        task.add_done_callback(lambda t: self._untrack(mid, t))

    def _untrack(self, mid: int, task: asyncio.Task[None]) -> None:
        if self.pending.get(mid) is task:
            del self.pending[mid]
        if self._loop is not None:
            self._last_active = self._loop.time()
        self._unblock()
        if not task.cancelled() and task.exception() is not None:
            log.error("request %d failed", mid, exc_info=task.exception())
            if not self.closed:
                self.disconnect(ResultCode.OTHER, "internal server error")

    # ------------------------------------------------------------------ bind

    def handle_bind(self, mid: int, op: BindRequest) -> None:
        # A bind, successful or not, first resets the connection to anonymous (RFC 4511 4.2.1).
        self.identity = ANONYMOUS
        self.account = None
        if op.version != 3:
            self.answer(mid, op, ResultCode.PROTOCOL_ERROR,
                        "requested protocol version not allowed")
            return
        if op.sasl_mechanism is not None:
            self.answer(mid, op, ResultCode.AUTH_METHOD_NOT_SUPPORTED,
                        "SASL(-4): no mechanism available: ")
            return
        if op.simple and self.node.config.security.requireTLS and not self.tls_active:
            self.answer(mid, op, ResultCode.CONFIDENTIALITY_REQUIRED,
                        "TLS confidentiality required")
            return

        # Fast path: most binds ({SSHA} etc., nothing to write) never suspend, so the
        # coroutine is stepped here and answered at once (corked with the batch); one that
        # does suspend (Argon2 in the executor, a lockout write) finishes in a task. With
        # requests pipelined behind it the bind stays outstanding while they are read, as
        # before (a StartTLS right behind a bind is refused: an operation is outstanding).
        work: Coroutine[Any, Any, Identity] | None = None
        yielded: Any = None
        if not self.decoder.buffered():
            work = self.ops.bind(op.name, op.simple or b"")
            try:
                yielded = work.send(None)
            except StopIteration as done:
                self._bound(done.value)
                self.answer(mid, op, ResultCode.SUCCESS)
                return
            except OpError as err:
                self.answer_error(mid, op, err)
                return

        async def run() -> None:
            try:
                if work is None:  # not started: no coroutine is left unawaited on cancel
                    self._bound(await self.ops.bind(op.name, op.simple or b""))
                else:
                    self._bound(await _resume(work, yielded))
            except OpError as err:
                self.answer_error(mid, op, err)
                return
            self.answer(mid, op, ResultCode.SUCCESS)

        self._track(mid, asyncio.ensure_future(run()))

    def _bound(self, who: Identity) -> None:
        """A successful bind as ``who`` (called in the context that ran the bind)."""
        self.identity = who
        self.account = self.ops.account_stamp(who)

    # ------------------------------------------------------------------ search

    async def _linearizable_search(
        self, mid: int, op: SearchRequest, controls: tuple[Control, ...]
    ) -> None:
        """Reads on the leader are linearizable: confirm leadership with one heartbeat round
        (ReadIndex, batched with concurrent reads) and wait until the state machine has
        applied that index, then search locally. Followers read locally (maybe stale)."""
        cluster = self.node.cluster
        try:
            await cluster.read_barrier()
        except Exception as exc:  # lost leadership or no quorum: never serve a stale read
            self.answer(mid, op, ResultCode.UNAVAILABLE, f"cannot confirm leadership: {exc}")
            return
        try:
            self.handle_search(mid, op, controls)
        except OpError as err:
            self.answer_error(mid, op, err)

    def handle_search(self, mid: int, op: SearchRequest, controls: tuple[Control, ...]) -> None:
        try:
            paged, sort, psearch = _search_controls(controls)
        except ControlError as exc:
            self.answer(mid, op, ResultCode.PROTOCOL_ERROR, str(exc))
            return
        selector = self._selector(op)
        if psearch is not None:
            self.ops.normalize_dn(op.base)  # a bad base fails the request at once
            job = PersistentSearchJob(self, mid, op, psearch, selector)
            self._track(mid, job.start())
            return
        if paged is not None or sort is not None:
            keys: tuple[ResolvedKey, ...] | None = None
            if sort is not None:
                try:
                    keys = check_keys(self.node.schema, sort.keys)
                except SortError as exc:
                    self.answer(mid, op, exc.code, exc.message)
                    return
            self._track(mid, asyncio.ensure_future(self._result_set(mid, op, selector, paged,
                                                                    keys)))
            return
        entries = self.ops.search(self.identity, op.base, op.scope, op.filter,
                                  op.size_limit, op.time_limit)
        try:
            if self._send_chunk(mid, selector, entries) < CHUNK:
                self.answer(mid, op, ResultCode.SUCCESS)
                return
        except OpError as err:
            self.answer_error(mid, op, err)
            return
        # a large result: the rest goes out from a task that lets other connections run

        async def rest() -> None:
            try:
                await self.stream_entries(mid, op, selector, entries)
            except OpError as err:
                self.answer_error(mid, op, err)
                return
            self.answer(mid, op, ResultCode.SUCCESS)

        self._track(mid, asyncio.ensure_future(rest()))

    def _selector(self, op: SearchRequest) -> AttributeSelector:
        """The attribute selection of ``op``; a client asks for the same few again and again,
        and a selector is immutable (its memo holds schema facts), so they are kept."""
        key = (op.attributes, op.types_only)
        selector = self._selectors.get(key)
        if selector is None:
            if len(self._selectors) >= 64:
                self._selectors.clear()
            selector = self._selectors[key] = AttributeSelector(self, op.attributes,
                                                                op.types_only)
        return selector

    def _send_chunk(self, mid: int, selector: AttributeSelector, entries: Iterator[Entry]) -> int:
        sent = 0
        if not selector.computed and not selector.types_only:
            # the common case: no computed attribute needs a transaction of its own
            send, encode = self.send, selector._encode_memo
            for entry in islice(entries, CHUNK):
                send(encode(mid, entry, None))
                sent += 1
            return sent
        with self.node.store.read() as txn:
            for entry in islice(entries, CHUNK):
                self.send(selector.encode(mid, entry, txn))
                sent += 1
        return sent

    async def stream_entries(self, mid: int, op: SearchRequest, selector: AttributeSelector,
                             entries: Iterator[Entry] | None = None) -> None:
        """Send every entry of the search, CHUNK at a time, yielding to the loop in between and
        waiting while the transport is paused. Raises OpError (limits, bad base)."""
        if entries is None:
            entries = self.ops.search(self.identity, op.base, op.scope, op.filter,
                                      op.size_limit, op.time_limit)
        try:
            while True:
                await asyncio.sleep(0)
                await self.wait_writable()
                if self._send_chunk(mid, selector, entries) < CHUNK:
                    return
        finally:
            close = getattr(entries, "close", None)
            if close is not None:
                close()

    async def _collect(self, op: SearchRequest) -> list[Entry]:
        entries = self.ops.search(self.identity, op.base, op.scope, op.filter, 0, op.time_limit)
        out: list[Entry] = []
        try:
            while True:
                chunk = list(islice(entries, CHUNK))
                out.extend(chunk)
                if len(chunk) < CHUNK:
                    return out
                await asyncio.sleep(0)
        finally:
            close = getattr(entries, "close", None)
            if close is not None:
                close()

    async def _result_set(self, mid: int, op: SearchRequest, selector: AttributeSelector,
                          paged: PagedResults | None, keys: tuple[ResolvedKey, ...] | None) -> None:
        """A search with paging and/or sorting: the whole result is computed (and sorted)
        first; a page is then cut from it, the rest kept behind a cookie."""
        done: list[Control] = []
        if keys is not None:
            done.append(Control(OID_SORT_RESPONSE, False, SortResponse(0).encode()))
        request_key = (op.base, int(op.scope), int(op.deref), op.size_limit, op.time_limit,
                       op.types_only, op.filter, op.attributes, keys, self.identity.ndn)
        try:
            if paged is not None and paged.cookie:
                state = self.cookies.take(paged.cookie, request_key)
                if paged.size == 0:  # the client abandons the paged search
                    self.answer(mid, op, ResultCode.SUCCESS, controls=(*done, _paged(b"")))
                    return
                await self._send_page(mid, op, selector, paged.size, state, done,
                                      from_ids=True)
                return
            if paged is not None and paged.size == 0:  # nothing asked for, nothing kept
                self.answer(mid, op, ResultCode.SUCCESS, controls=(*done, _paged(b"")))
                return
            entries = await self._collect(op)
            if keys is not None:
                entries = sort_entries(entries, keys)
            if paged is None:
                await self._send_all(mid, op, selector, entries, op.size_limit, done)
                return
            state = PageState(request_key, tuple(e.id for e in entries), 0)
            await self._send_page(mid, op, selector, paged.size, state, done, from_ids=False,
                                  first=entries)
        except PagingError as exc:
            self.answer(mid, op, exc.code, exc.message)
        except OpError as err:
            self.answer_error(mid, op, err)

    async def _send_all(self, mid: int, op: SearchRequest, selector: AttributeSelector,
                        entries: list[Entry], size_limit: int, done: list[Control]) -> None:
        for start in range(0, len(entries), CHUNK):
            if size_limit and start >= size_limit:
                break
            if start:
                await asyncio.sleep(0)
            await self.wait_writable()
            stop = start + CHUNK if not size_limit else min(start + CHUNK, size_limit)
            with self.node.store.read() as txn:
                for entry in entries[start:stop]:
                    self.send(selector.encode(mid, entry, txn))
        if size_limit and len(entries) > size_limit:
            self.answer(mid, op, ResultCode.SIZE_LIMIT_EXCEEDED, controls=tuple(done))
            return
        self.answer(mid, op, ResultCode.SUCCESS, controls=tuple(done))

    async def _send_page(self, mid: int, op: SearchRequest, selector: AttributeSelector,
                         size: int, state: PageState, done: list[Control], from_ids: bool,
                         first: list[Entry] | None = None) -> None:
        """Send up to ``size`` entries of ``state`` (the client size limit counts the whole
        paged search, as in slapd), then the final result with the next cookie."""
        allowed = size
        if op.size_limit:
            allowed = min(allowed, max(op.size_limit - state.sent, 0))
        matcher = self.ops.matcher_for(self.identity, op.filter) if from_ids else None
        remaining = list(state.remaining)
        sent = 0
        pos = 0
        while sent < allowed and pos < len(remaining):
            await self.wait_writable()
            with self.node.store.read() as txn:
                batch_end = min(pos + CHUNK, len(remaining))
                while sent < allowed and pos < batch_end:
                    if from_ids:
                        stored = txn.get(remaining[pos])
                        entry = None if stored is None else self.ops.readable(self.identity,
                                                                              stored)
                        if entry is not None and matcher is not None and stored is not None \
                                and not matcher(stored):
                            entry = None
                    else:
                        assert first is not None
                        entry = first[pos]
                    pos += 1
                    if entry is not None:
                        self.send(selector.encode(mid, entry, txn))
                        sent += 1
            if pos < len(remaining):
                await asyncio.sleep(0)
        rest = tuple(remaining[pos:])
        total = state.sent + sent
        if rest and op.size_limit and total >= op.size_limit:
            self.answer(mid, op, ResultCode.SIZE_LIMIT_EXCEEDED, controls=tuple(done))
            return
        cookie = self.cookies.issue(PageState(state.request_key, rest, total)) if rest else b""
        self.answer(mid, op, ResultCode.SUCCESS, controls=(*done, _paged(cookie)))

    # ------------------------------------------------------------------ extended

    def handle_extended(self, mid: int, op: ExtendedRequest) -> None:
        if op.name == STARTTLS_OID and self.tls is not None:
            self.handle_starttls(mid, op)
            return
        handler = extended.HANDLERS.get(op.name)
        if handler is None:
            self.answer(mid, op, ResultCode.PROTOCOL_ERROR, f"{op.name} not supported")
            return
        identity = self.identity

        async def run() -> None:
            try:
                res = await handler(self.ops, identity, op.value)
            except OpError as err:
                self.answer_error(mid, op, err)
                return
            self.node.stats.results[int(ResultCode.SUCCESS)] += 1
            self.reply(mid, ExtendedResponse(LDAPResult(ResultCode.SUCCESS), name=res.name,
                                             value=res.value))

        self._track(mid, asyncio.ensure_future(run()))


class _ReapLog:
    """Logs the closes of idle anonymous connections (``server.anonymousIdleTimeout``): the
    first of a burst at once, then how many were closed every ``REAP_LOG_EVERY`` seconds while
    it lasts (one line per close would let a flood of connections flood the log as well)."""

    def __init__(self) -> None:
        self.count = 0
        self.reporting = False

    def note(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.count += 1
        if not self.reporting:
            self.reporting = True
            log.warning("closing idle anonymous connections after server.anonymousIdleTimeout: "
                        "at least %d%% of server.maxConnections (%d) are open",
                        round(CROWDED * 100), limit)
            loop.call_later(REAP_LOG_EVERY, self._report, loop, context=contextvars.Context())

    def _report(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.count:
            self.reporting = False
            return
        log.warning("%d idle anonymous connection(s) closed in the last %.0fs "
                    "(server.anonymousIdleTimeout)", self.count, REAP_LOG_EVERY)
        self.count = 0
        loop.call_later(REAP_LOG_EVERY, self._report, loop, context=contextvars.Context())


_reaped = _ReapLog()


async def _resume(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    """Finish a coroutine that was stepped by hand and suspended on ``yielded`` (what it
    yielded: an asyncio future, or None for a bare yield), as a task would."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((yielded,))  # never raises the future's own exception
        except asyncio.CancelledError:
            coro.close()
            raise
        try:
            yielded = coro.send(None)  # the coroutine reads the future's result itself
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def describe(op: ProtocolOp) -> str:
    """A request for the debug log: its type and names, never a value (values may be
    passwords: bind credentials, userPassword in adds, modifies, compares and filters)."""
    name = type(op).__name__
    if isinstance(op, BindRequest):
        how = "simple" if op.sasl_mechanism is None else f"SASL {op.sasl_mechanism}"
        return f"{name} dn={op.name!r} {how}"
    if isinstance(op, SearchRequest):
        return f"{name} base={op.base!r} scope={int(op.scope)} attrs={list(op.attributes)}"
    if isinstance(op, CompareRequest):
        return f"{name} dn={op.dn!r} attr={op.attr}"
    if isinstance(op, AddRequest):
        return f"{name} dn={op.dn!r} attrs={[a for a, _ in op.attributes]}"
    if isinstance(op, ModifyRequest):
        return f"{name} dn={op.dn!r} attrs={[a[0] for _, a in op.changes]}"
    if isinstance(op, DelRequest | ModifyDNRequest):
        return f"{name} dn={op.dn!r}"
    if isinstance(op, ExtendedRequest):
        return f"{name} oid={op.name}"
    if isinstance(op, AbandonRequest):
        return f"{name} id={op.message_id}"
    return name


def _paged(cookie: bytes) -> Control:
    return Control(OID_PAGED_RESULTS, False, PagedResults(0, cookie).encode())


def _search_controls(
    controls: Iterable[Control],
) -> tuple[PagedResults | None, SortRequest | None, PersistentSearch | None]:
    """The search controls this server acts on, decoded (raises ControlError)."""
    paged: PagedResults | None = None
    sort: SortRequest | None = None
    psearch: PersistentSearch | None = None
    for c in controls:
        if c.oid == OID_PAGED_RESULTS:
            paged = PagedResults.decode(c.value)
        elif c.oid == OID_SORT_REQUEST:
            sort = SortRequest.decode(c.value)
        elif c.oid == OID_PERSISTENT_SEARCH:
            psearch = PersistentSearch.decode(c.value)
    return paged, sort, psearch


class AttributeSelector:
    """Which attributes of an entry a search returns, and their encoding (a hot path).

    A requested type selects its subtypes too (RFC 4511 4.5.1.8: ``name`` returns ``cn``,
    ``sn``...) and every tagged description of them (``cn`` returns ``cn;lang-en``); a request
    with tags (``cn;lang-en``) selects the descriptions holding those tags only. A description
    Oba does not know (``cn;x-foo``, ``cn;binary``) selects nothing. Certificate types go out
    as ``type;binary`` (``oba.schema.options.wire_name``)."""

    def __init__(self, conn: LDAPConnection, requested: Iterable[str], types_only: bool) -> None:
        node = conn.node
        schema = node.schema
        self.node = node
        self.types_only = types_only
        requested = list(requested)
        lowered = {r.split(";", 1)[0].lower() for r in requested}
        self.all_user = not requested or "*" in lowered
        self.all_oper = "+" in lowered
        named: set[str] = set()
        # requests with tags: (the types they cover, the tags a description must hold)
        self.tagged: list[tuple[frozenset[str], tuple[str, ...]]] = []
        for r in requested:
            if r.split(";", 1)[0] in ("*", "+", "1.1"):
                continue
            try:
                found = attr_options.describe(schema, r)
            except OptionError:
                continue
            if found is None:
                continue
            covered = {found.canon, *schema.subtypes(found.canon)}
            if found.tags:
                self.tagged.append((frozenset(covered), found.tags))
            else:
                named.update(covered)
        self.named = frozenset(named)
        self.computed = self.all_oper or bool(
            self.named & {"entryDN", "hasSubordinates", "subschemaSubentry"})
        # named attributes only (the common ``cn mail``): a set lookup decides
        self.named_only = not self.all_user and not self.all_oper
        # attribute -> wanted, for the selections that ask the schema (``*`` / ``+``)
        self._wanted: dict[str, bool] = {}

    def wanted(self, attr: str) -> bool:
        if attr in self.named:
            return True
        if ";" in attr:
            base, tags = key_parts(attr)
            if base in self.named or any(
                    base in types and all(t in tags for t in need)
                    for types, need in self.tagged):
                return True
        if self.node.is_operational(attr):
            return self.all_oper
        return self.all_user

    def encode(self, mid: int, entry: Entry, txn: Any,
               controls: tuple[Control, ...] = ()) -> bytes:
        types_only = self.types_only
        if not types_only and not controls:
            return self._encode_memo(mid, entry, txn)
        schema = self.node.schema
        out: list[tuple[str, list[bytes]]] = [
            (wire_name(schema, attr), [] if types_only else values)
            for attr, values in entry.attrs.items()
            if self.wanted(attr)
        ]
        if self.computed and entry.id:
            for attr, values in self._computed(entry, txn):
                if self.all_oper or attr in self.named:
                    out.append((attr, [] if types_only else values))
        if controls:
            attrs = tuple((a, tuple(v)) for a, v in out)
            return encode_message(LDAPMessage(mid, SearchResultEntry(entry.dn, attrs), controls))
        return codec.encode_search_entry(mid, entry.dn, out)

    def _selected(self, entry: Entry) -> list[str]:
        """The stored attributes of ``entry`` this selection returns, in stored order."""
        if self.named_only and not self.tagged and not tagged_keys(entry):
            named = self.named
            return [a for a in entry.attrs if a in named]
        memo = self._wanted
        out = []
        for attr in entry.attrs:
            hit = memo.get(attr)
            if hit is None:
                hit = memo[attr] = self.wanted(attr)
            if hit:
                out.append(attr)
        return out

    def _encode_memo(self, mid: int, entry: Entry, txn: Any) -> bytes:
        """The hot path: stored attributes are encoded once per cached entry and reused by
        every later search that returns them (entries from the storage read cache are
        immutable, and a changed entry is a new object). Without computed attributes the
        whole protocolOp is memoised too, keyed by the names of the attributes it holds (a
        filtered view shares ``enc`` with its entry and the same value objects, so the same
        names mean the same bytes); only the message id is added per search."""
        enc = entry.enc
        if enc is None:
            enc = entry.enc = {}
        selected = self._selected(entry)
        attrs = entry.attrs
        if not self.computed:
            key = "\x00" + "\x00".join(selected)  # never an attribute name
            op_part = enc.get(key)
            if op_part is None:
                op_part = enc[key] = codec.encode_search_entry_op(
                    entry.dn, [self._piece(enc, a, attrs[a]) for a in selected])
            return codec.encode_with_id(mid, op_part)
        pieces = [self._piece(enc, a, attrs[a]) for a in selected]
        if self.computed and entry.id:
            for attr, values in self._computed(entry, txn):
                if self.all_oper or attr in self.named:
                    pieces.append(codec.encode_attribute(attr, values))
        return codec.encode_search_entry_pieces(mid, entry.dn, pieces)

    def _piece(self, enc: dict[str, bytes], attr: str, values: list[bytes]) -> bytes:
        piece = enc.get(attr)
        if piece is None:
            name = wire_name(self.node.schema, attr)  # always the same for one key
            piece = enc[attr] = codec.encode_attribute(name, values)
        return piece

    def _computed(self, entry: Entry, txn: Any) -> list[tuple[str, list[bytes]]]:
        has_children = txn.has_children(entry.id)
        return [
            ("entryDN", [entry.dn.encode()]),
            ("hasSubordinates", [b"TRUE" if has_children else b"FALSE"]),
            ("subschemaSubentry", [b"cn=Subschema"]),
        ]
