"""Serve the web admin. STUB: filled in by the web admin work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def start_web(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    return None
