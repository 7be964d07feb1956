"""ASGI middleware of the REST API: body size limit, last-resort errors, counting, CORS,
per-IP rate limit.

Rules for this module: plain ASGI classes (no buffering, so streamed responses stay streamed).
Order, outermost first: ``BodyLimit`` (wrapped around the whole app by each server that serves
it, ``oba.rest.server`` and ``oba.web.server``, so it runs before anything else, authentication
included) → ``Guard`` (an unhandled exception is logged and answered 500 ``internal_error``,
never with a trace) → ``Counter`` → ``Cors`` (preflights answered here) → ``RateLimit`` (token
bucket per client IP; 429 + ``Retry-After``). The client IP is the socket peer unless that peer
is listed in ``rest.trustedProxies``; then the right-most ``X-Forwarded-For`` address that is
not itself a trusted proxy. Settings are read from the live config on every request.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oba import reqctx
from oba.config import RestConfig
from oba.rest.errors import body

log = logging.getLogger("oba.rest")

ConfigGetter = Callable[[], RestConfig]


async def send_json(send: Send, status: int, payload: dict[str, Any],
                    headers: Iterable[tuple[str, str]] = ()) -> None:
    data = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """``rest.maxBodySize``: a request whose ``Content-Length`` says more is answered 413
    ``payload_too_large`` at once, before any of its body is read (so no ``100 Continue``
    either); one within the limit passes untouched (the HTTP parser reads no more than the
    length). A body without a length (chunked) is read here first, counted as it arrives: past
    the limit it is answered 413 and the application never runs (a refused body is freed at
    once; had the application read it, the error raised in the framework would keep it alive
    until a full garbage collection); within the limit the application gets it in one piece.
    A 413 closes the connection (``Connection: close``): the rest of the body is never read."""

    def __init__(self, app: ASGIApp, config: ConfigGetter) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(self.config().maxBodySize)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if declared.strip().isdigit() and int(declared) > limit:
                await self._refuse(scope, send, limit)
                return
            await self.app(scope, receive, send)
            return
        if _header(scope, b"transfer-encoding") is None:  # no body at all
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                chunks.clear()
                await self._refuse(scope, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        chunks.clear()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what comes after the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": whole, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, limit: int) -> None:
        log.debug("REST %s %s from %s refused: body larger than rest.maxBodySize (%d bytes)",
                  scope.get("method"), scope.get("path"), (scope.get("client") or ("?",))[0],
                  limit)
        await send_json(send, 413, body(413, "payload_too_large",
                                        f"the request body is larger than rest.maxBodySize "
                                        f"({limit} bytes)"),
                        [("Connection", "close")])


class RequestId:
    """Gives each HTTP request a request id (the client's sane ``X-Request-ID``, or a new one)
    for logs, Commands and audit records, and echoes it in the ``X-Request-ID`` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for key, value in scope.get("headers", ()):
            if key == b"x-request-id":
                given = value.decode("latin-1")
                break
        rid = reqctx.begin(given)

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()),
                                      (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, with_header)


class Guard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("REST %s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await send_json(send, 500, body(500, "internal_error",
                                                "internal server error (see the server log)"))


class RequestCounter:
    def __init__(self, app: ASGIApp, on_request: Callable[[], None]) -> None:
        self.app = app
        self.on_request = on_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.on_request()
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Cors:
    METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
    EXPOSE = "Location, Retry-After, Content-Type"

    def __init__(self, app: ASGIApp, config: ConfigGetter) -> None:
        self.app = app
        self.config = config

    def _allowed(self, origin: str) -> str | None:
        origins = self.config().corsOrigins
        if "*" in origins:
            return "*"
        return origin if origin in origins else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self._allowed(origin)
        requested = _header(scope, b"access-control-request-method")
        if scope["method"] == "OPTIONS" and requested is not None:
            if allowed is None:
                await send_json(send, 403, body(403, "cors_origin_not_allowed",
                                                f"origin {origin!r} is not in rest.corsOrigins"))
                return
            headers = [
                (b"access-control-allow-origin", allowed.encode()),
                (b"access-control-allow-methods", self.METHODS.encode()),
                (b"access-control-allow-headers", (
                    _header(scope, b"access-control-request-headers")
                    or "Authorization, Content-Type").encode("latin-1")),
                (b"access-control-max-age", b"600"),
                (b"vary", b"Origin"),
                (b"content-length", b"0"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if allowed is None:
            await self.app(scope, receive, send)
            return

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"access-control-allow-origin", allowed.encode()),
                            (b"access-control-expose-headers", self.EXPOSE.encode()),
                            (b"vary", b"Origin")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, cors_send)


def in_networks(ip: str, networks: list[str]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for net in networks:
        try:
            if addr in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_ip(peer: str, forwarded_for: str | None, trusted: list[str]) -> str:
    """The address a rate limit applies to (see the module rules)."""
    if not forwarded_for or not trusted or not in_networks(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            return hop
    return hops[0] if hops else peer


class TokenBuckets:
    """Per-key token buckets: ``rate`` tokens a second, bursts of up to ``rate``."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self.last_prune = time.monotonic()

    def take(self, key: str, rate: int, now: float | None = None) -> float:
        """0 when allowed, else the seconds until a token is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(key, (float(rate), now))
        tokens = min(float(rate), tokens + (now - last) * rate)
        if tokens >= 1.0:
            self.buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self.buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / rate
        if now - self.last_prune > 60:
            self.last_prune = now
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 60}
        return wait


class RateLimit:
    def __init__(self, app: ASGIApp, config: ConfigGetter) -> None:
        self.app = app
        self.config = config
        self.buckets = TokenBuckets()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.config()
        if scope["type"] != "http" or cfg.rateLimit <= 0:
            await self.app(scope, receive, send)
            return
        peer = scope.get("client") or ("unknown", 0)
        ip = client_ip(str(peer[0]), _header(scope, b"x-forwarded-for"), cfg.trustedProxies)
        wait = self.buckets.take(ip, cfg.rateLimit)
        if wait > 0:
            retry = max(1, math.ceil(wait))
            await send_json(send, 429, body(429, "rate_limited",
                                            f"too many requests from {ip}; retry later"),
                            [("Retry-After", str(retry))])
            return
        await self.app(scope, receive, send)
