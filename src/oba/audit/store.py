"""The replicated audit store. STUB: filled in by the audit work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def attach_audit(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    """Set ``runtime.node.audit`` to the replicated store; returns a stop callable or None."""
    return None
