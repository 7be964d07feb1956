"""ACL loading and hot reload (file watch, SIGHUP). STUB: filled in by the ACL work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def start_acl(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    """Load ``aclFile`` into ``runtime.node.access`` and start reload watchers; returns a
    stop callable or None."""
    return None
