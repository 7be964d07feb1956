"""Start and stop the REST API inside a running node, on the node's own event loop.

Rules for this module: uvicorn runs as tasks of the running loop (``loop="none"``, no lifespan,
no second loop, no thread) and never touches signal handling or logging setup (the node owns
both). ``start_rest`` returns once the listeners are bound (or raises ``OSError``) and gives
back an async ``stop`` that asks uvicorn to exit, forcing it after ``STOP_GRACE`` seconds.
HTTPS listens on ``rest.tlsAddress`` when it and ``server.tlsCert``/``tlsKey`` are set, and
serves the certificate ``oba.server.tls`` keeps current (a reload there applies here too).
Nothing heavy runs on the loop, which also runs LDAP and Raft: ``prepare_rest_app(runtime)``
builds and warms up the node's one REST app (``oba.rest.app.build_app``) and keeps it as
``runtime.rest_app`` (the web admin serves the same one); the runtime calls it in a worker
thread before anything serves, and ``start_rest`` does (a no-op then) too. Each uvicorn config
is loaded (protocol imports, TLS files) in a worker thread as well. Every listener serves the
app behind ``serving_app`` (``oba.rest.middleware.BodyLimit``, ``rest.maxBodySize``), the web
admin's too, so that no request body beyond the limit is read on either port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from oba.rest.app import build_app
from oba.rest.middleware import BodyLimit
from oba.rest.state import RestState

log = logging.getLogger("oba.rest")
START_TIMEOUT = 10.0
STOP_GRACE = 5.0


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the node handles SIGINT/SIGTERM and stops us through ``stop``


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _level(config_level: str) -> str:
    return "debug" if config_level == "debug" else "warning"


def prepare_rest_app(runtime: Any) -> ASGIApp:
    """The node's REST app, ``runtime.rest_app``: built and warmed up on the first call (CPU-bound,
    hundreds of ms: call it in a worker thread, never on the running loop)."""
    app: ASGIApp | None = getattr(runtime, "rest_app", None)
    if app is None:
        node = runtime.node
        rest = node.config.rest
        secret = rest.jwtSecret.encode("utf-8") if rest.jwtSecret else secrets.token_bytes(32)
        app = runtime.rest_app = build_app(RestState(node=node, runtime=runtime, secret=secret))
    return app


def serving_app(runtime: Any, app: ASGIApp) -> ASGIApp:
    """``app`` as a listener serves it: behind the request body limit, ``rest.maxBodySize``
    (read from the node's live config on every request)."""
    return BodyLimit(app, config=lambda: runtime.node.config.rest)


async def loaded_server(config: uvicorn.Config) -> _InLoopServer:
    """A server for ``config``, loaded in a worker thread (uvicorn imports its protocol classes
    and reads TLS files when it loads), so that ``serve()`` does none of it on the loop."""
    await asyncio.to_thread(config.load)
    return _InLoopServer(config)


async def start_rest(runtime: Any) -> Callable[[], Awaitable[None]]:
    cfg = runtime.node.config
    rest = cfg.rest
    app = serving_app(runtime, await asyncio.to_thread(prepare_rest_app, runtime))
    listeners: list[tuple[str, dict[str, Any]]] = [(rest.address, {})]
    if rest.tlsAddress and cfg.server.tlsCert and cfg.server.tlsKey:
        listeners.append((rest.tlsAddress, {"ssl_certfile": cfg.server.tlsCert,
                                            "ssl_keyfile": cfg.server.tlsKey}))
    servers: list[tuple[_InLoopServer, asyncio.Task[None]]] = []
    try:
        for address, extra in listeners:
            host, port = split_address(address)
            server = await loaded_server(uvicorn.Config(
                app, host=host, port=port, loop="none", lifespan="off", log_config=None,
                log_level=_level(str(cfg.logging.level)), access_log=False,
                proxy_headers=False, server_header=False, **extra))
            tls = getattr(runtime, "tls", None)
            if extra and tls is not None:
                # serve the certificate oba.server.tls keeps current (reloaded on change)
                assert server.config.ssl is not None
                server.config.ssl.sni_callback = tls.sni_switch
            task = asyncio.create_task(server.serve(), name=f"rest {address}")
            servers.append((server, task))
            await _wait_started(server, task, address)
            scheme = "https" if extra else "http"
            log.info("REST API listening on %s://%s:%d/api/v1", scheme, host, port)
    except BaseException:
        await _stop_all(servers)
        raise

    async def stop() -> None:
        await _stop_all(servers)

    return stop


async def _wait_started(server: uvicorn.Server, task: asyncio.Task[None], address: str,
                        what: str = "the REST API") -> None:
    """Wait until ``server`` listens; OSError naming ``what`` if it fails or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if task.done():
            exc = task.exception() if not task.cancelled() else None
            raise OSError(f"{what} cannot listen on {address} ({exc!r}); see the log")
        if time.monotonic() > deadline:
            raise OSError(f"{what} did not start on {address} in {START_TIMEOUT:.0f}s")
        await asyncio.sleep(0.01)


async def _stop_all(servers: list[tuple[_InLoopServer, asyncio.Task[None]]]) -> None:
    for server, _ in servers:
        server.should_exit = True
    for server, task in servers:
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
        except TimeoutError:
            server.force_exit = True
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, STOP_GRACE)
        except BaseException as exc:  # a listener that failed to start: already reported
            log.debug("REST listener ended with %r", exc)
