"""Audit log routes (/api/v1/logs...). STUB: the replicated audit store fills these in."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["logs"])
