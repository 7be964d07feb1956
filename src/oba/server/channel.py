"""The local channel between a node's writer process and its listener workers.

Rules for this module:
- One ``Channel`` per end of a Unix socket pair; messages are msgpack maps, framed by msgpack
  itself (a streaming ``Unpacker``), in order, both ways.
- ``send`` never blocks: messages queued during one loop iteration leave in one write
  (``call_soon`` flush), so a burst of small messages (audit records, change events) costs one
  system call.
- ``call`` sends a message with a fresh ``id`` and waits (bounded) for the message that answers
  it (``re`` = that id). Every other message goes to ``on_message``; a handler that needs to
  answer uses ``reply``. When the peer goes away every pending call fails with
  ``ChannelClosed`` and ``on_close`` runs once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import msgpack

log = logging.getLogger("oba.workers")

Message = dict[str, Any]


class ChannelClosed(ConnectionError):
    """The other process closed the channel (it stopped or died)."""


class Channel(asyncio.Protocol):
    def __init__(self, on_message: Callable[[Message], None],
                 on_close: Callable[[], None] | None = None) -> None:
        self.on_message = on_message
        self.on_close = on_close
        self.transport: Any = None  # an asyncio (or uvloop) stream transport
        self.closed = False
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                         max_buffer_size=1 << 30)
        self._out: list[bytes] = []
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._packer = msgpack.Packer(use_bin_type=True)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for msg in self._unpacker:
            if not isinstance(msg, dict):
                log.error("channel: ignored a message that is not a map")
                continue
            answered = msg.get("re")
            if answered is not None:
                fut = self._pending.pop(int(answered), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            try:
                self.on_message(msg)
            except Exception:  # one bad message must not end the channel
                log.exception("channel: handling %r failed", msg.get("t"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ChannelClosed("the other process closed the channel"))
        self._pending.clear()
        if self.on_close is not None:
            self.on_close()

    # ------------------------------------------------------------------ sending

    def send(self, msg: Message) -> None:
        if self.closed:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(self._packer.pack(msg))

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def reply(self, request: Message, msg: Message) -> None:
        msg["re"] = request["id"]
        self.send(msg)

    async def call(self, msg: Message, timeout: float) -> Message:
        """Send ``msg`` and wait at most ``timeout`` seconds for its answer (``TimeoutError``
        after that)."""
        if self.closed:
            raise ChannelClosed("the channel is closed")
        ident = next(self._ids)
        msg["id"] = ident
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()
        self._pending[ident] = fut
        self.send(msg)
        timer = loop.call_later(timeout, self._expire, ident)
        try:
            return await fut
        finally:
            timer.cancel()
            self._pending.pop(ident, None)

    def _expire(self, ident: int) -> None:
        fut = self._pending.pop(ident, None)
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError("no answer from the other process"))

    def close(self) -> None:
        self._flush()
        if self.transport is not None:
            self.transport.close()
