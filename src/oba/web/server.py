"""Serve the web admin (static pages) and the REST API on one origin, ``web.address``.

Rules for this module: the node serves the pages itself — uvicorn runs as a task of the node's
own loop, exactly as ``oba.rest.server`` runs the REST API (no thread, no second loop, no
signal handling). Requests under ``/api/`` (and ``/openapi.json``, ``/docs``) go in-process to
the node's REST application, ``runtime.rest_app`` from ``oba.rest.server.prepare_rest_app``
(built and warmed up in a worker thread; also when the REST API is not enabled, so the pages
work without it). Everything else is a file under ``static/`` (``/`` is ``index.html``); the
pages route with the URL fragment, so no server-side fallback is needed. Static answers carry a
strict Content-Security-Policy (same-origin scripts and styles only). The whole app is served
behind ``oba.rest.server.serving_app`` (the request body limit, ``rest.maxBodySize``), as the
REST listeners are. The uvicorn config is loaded in a worker thread too: nothing heavy runs on
the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oba.rest.server import (
    _level,
    _stop_all,
    _wait_started,
    loaded_server,
    prepare_rest_app,
    serving_app,
    split_address,
)

log = logging.getLogger("oba.web")
START_TIMEOUT = 10.0
STATIC_DIR = Path(__file__).with_name("static")
API_PREFIXES = ("/api/", "/openapi.json", "/docs")
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class WebApp:
    """One ASGI app: ``/api/...`` to the REST app, the rest to the static files."""

    def __init__(self, api: ASGIApp, static_dir: Path = STATIC_DIR) -> None:
        self.api = api
        self.static = StaticFiles(directory=str(static_dir), html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path.startswith(API_PREFIXES):
            await self.api(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        try:
            await self.static(scope, receive, send_with_headers)
        except HTTPException as exc:
            text = "not found" if exc.status_code == 404 else str(exc.detail)
            response = PlainTextResponse(text, status_code=exc.status_code)
            await response(scope, receive, send_with_headers)


async def start_web(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    """Listen on ``web.address``; return an async ``stop``. Raises ``OSError`` if it cannot."""
    cfg = runtime.node.config
    address = str(cfg.web.address)
    host, port = split_address(address)
    app = serving_app(runtime, WebApp(await asyncio.to_thread(prepare_rest_app, runtime)))
    server = await loaded_server(uvicorn.Config(
        app, host=host, port=port, loop="none", lifespan="off", log_config=None,
        log_level=_level(str(cfg.logging.level)), access_log=False, proxy_headers=False,
        server_header=False))
    task = asyncio.create_task(server.serve(), name=f"web {address}")
    servers = [(server, task)]
    try:
        await _wait_started(server, task, address, "the web admin")
    except BaseException:
        await _stop_all(servers)
        raise
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log.info("web admin listening on http://%s:%d/", shown, port)

    async def stop() -> None:
        await _stop_all(servers)

    return stop
