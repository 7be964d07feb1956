"""The FastAPI application: routers, middleware, the one error shape, the OpenAPI document.

Rules for this module: ``create_app(state)`` builds a complete app; ``state`` may be None only
to render the OpenAPI document (docs, tests). Every error leaves through one of the handlers
here as ``{error, code, message, resultCode?}`` — unknown routes (404), wrong methods (405),
request validation (422, FastAPI's own shape rewritten) and directory errors included; the
OpenAPI document says so (its 422 responses use ``ErrorBody``). ``build_app(state)`` is
``create_app`` plus ``warm_up``: the servers call it in a worker thread, so that no first request
does FastAPI's, pydantic's or anyio's lazy first-use work on the node's event loop.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oba import __version__
from oba.config import RestConfig
from oba.operations import OpError
from oba.rest import middleware as mw
from oba.rest import (
    routes_admin,
    routes_backup,
    routes_cluster,
    routes_entries,
    routes_events,
    routes_logs,
    routes_metrics,
    routes_public,
)
from oba.rest.errors import STATUS_NAMES, ApiError, body, error_response, from_op_error
from oba.rest.state import RestState

DESCRIPTION = (
    "Oba's directory over JSON. Authenticate with `Authorization: Bearer <token>` (from "
    "`POST /api/v1/auth/bind`) or HTTP Basic with a bind DN and password. Every error is "
    "`{error, code, message, resultCode?}`."
)
# imported by the first request that needs them: anyio's asyncio backend (thread pools,
# streamed responses, memory streams)
WARM_IMPORTS = ("anyio._backends._asyncio",)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _op_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpError)
    return error_response(from_op_error(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    name = STATUS_NAMES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else name.replace("_", " ")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return JSONResponse(body(exc.status_code, name, detail), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts) or "request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [f"{_location(err.get('loc', ()))}: {err.get('msg', 'invalid')}"
                for err in exc.errors()[:20]]
    return JSONResponse(body(422, "invalid_request", "; ".join(problems) or "invalid request"),
                        status_code=422)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for item in schema.get("paths", {}).values():
        for op in item.values():
            resp = op.get("responses", {}).get("422")
            if resp is not None:
                resp["content"] = {"application/json": {"schema": ref}}
                resp["description"] = "invalid_request"
    comps = schema.get("components", {}).get("schemas", {})
    comps.pop("HTTPValidationError", None)
    comps.pop("ValidationError", None)
    app.openapi_schema = schema
    return schema


def create_app(state: RestState | None) -> FastAPI:
    app = FastAPI(title="Oba REST API", version=__version__, description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None)
    app.state.rest = state
    for router in (routes_public.router, routes_entries.router, routes_admin.router,
                   routes_cluster.router, routes_logs.router, routes_events.router,
                   routes_metrics.router):
        app.include_router(router)
    app.include_router(routes_backup.router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(OpError, _op_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    def rest_config() -> RestConfig:
        return state.node.config.rest if state is not None else RestConfig()

    def count() -> None:
        if state is not None:
            state.requests += 1

    # added innermost first: Guard ends up outermost
    app.add_middleware(mw.RateLimit, config=rest_config)
    app.add_middleware(mw.Cors, config=rest_config)
    app.add_middleware(mw.RequestCounter, on_request=count)
    app.add_middleware(mw.Guard)
    app.add_middleware(mw.RequestId)
    return app


def warm_up(app: FastAPI) -> None:
    """Do now the work FastAPI, Starlette and anyio otherwise do on the first request that needs
    it, on the event loop: FastAPI builds every route's request and response models (pydantic
    schemas, tens of ms per router) on the first request that reaches that router, and the
    OpenAPI document (over 100 ms) on the first ``/openapi.json``; Starlette builds its
    middleware stack on the first request; anyio imports its backend and most of its API on
    first use. CPU-bound (hundreds of ms): call it before the app serves, in a worker thread
    (``build_app``), never on a running loop."""
    for name in WARM_IMPORTS:  # internal names: a later version may move them
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    for name in dir(anyio):  # anyio imports its public names lazily, on first access
        with contextlib.suppress(ImportError, AttributeError):
            getattr(anyio, name)
    # the OpenAPI document walks every route, so FastAPI builds (and keeps) the per-route
    # state it would otherwise build when the first request reaches each router
    app.openapi()
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()


def build_app(state: RestState) -> FastAPI:
    """``create_app(state)``, warmed up: what a server serves. Run it in a worker thread."""
    app = create_app(state)
    warm_up(app)
    return app
