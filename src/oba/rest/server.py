"""Start/stop the REST API inside a running node. STUB — being implemented."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


async def start_rest(runtime: Any) -> Callable[[], Awaitable[None]]:
    raise NotImplementedError("the REST API is not implemented yet")
