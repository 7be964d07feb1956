"""Prometheus metrics: ``GET /metrics`` (text exposition format) on the REST port.

Rules for this module: unauthenticated, like most exporters (restrict it at the network or
proxy level; docs/backup-restore.md, "Metrics"); the registry is built once per app on first
scrape and reads live node state at each scrape (``oba.metrics``).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from oba import metrics
from oba.rest.state import get_state

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {metrics.CONTENT_TYPE: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format."}})
async def get_metrics(request: Request) -> Response:
    state = get_state(request)
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = metrics.registry_for(state.node, lambda: state.requests)
        request.app.state.metrics_registry = registry
    body = await asyncio.to_thread(metrics.render, registry)
    return Response(body, media_type=metrics.CONTENT_TYPE)
