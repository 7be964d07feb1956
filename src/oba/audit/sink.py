"""Where front ends report auditable events. The replicated store behind it is ``audit.store``.

Rules for this module: ``record`` never blocks and never raises: an event is queued and
submitted in the background (buffered and retried in cluster mode), so auditing cannot slow or
break the operation it describes. Secrets (passwords, tokens) are never passed in ``fields``.
"""

from __future__ import annotations

from typing import Any, Protocol


class AuditSink(Protocol):
    def record(
        self,
        level: str,
        message: str,
        source: str,
        user: str = "",
        request_id: str = "",
        **fields: Any,
    ) -> None: ...


class NullAudit:
    """Used until an audit store is attached (and when ``logging.store.enabled`` is false)."""

    def record(
        self,
        level: str,
        message: str,
        source: str,
        user: str = "",
        request_id: str = "",
        **fields: Any,
    ) -> None:
        return None
