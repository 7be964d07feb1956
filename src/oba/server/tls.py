"""LDAPS listener and TLS contexts. STUB: filled in by the TLS work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def start_ldaps(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    """Start LDAPS on ``server.tlsAddress`` when a certificate is configured; returns a stop
    callable, or None when LDAPS is off."""
    return None
