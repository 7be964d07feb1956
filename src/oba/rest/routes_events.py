"""Server-Sent Events (/api/v1/events). STUB: filled in with the audit store."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["events"])
