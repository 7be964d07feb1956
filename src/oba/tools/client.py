"""A small REST client for the admin commands, with the CLI's exit codes.

Rules for this module: every failure becomes a ``ToolError(exit_code, message)``: 1 the server
refused the operation, 3 the server cannot be reached, 4 authentication failed (401/403).
Credentials come from the arguments or ``OBA_ADMIN_DN`` / ``OBA_ADMIN_PASSWORD``; they are
sent as HTTP Basic on every request (no token is stored anywhere).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
DEFAULT_URL = "http://127.0.0.1:8080"


class ToolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def credentials(dn: str | None, password: str | None) -> tuple[str, str]:
    dn = dn or os.environ.get("OBA_ADMIN_DN", "")
    password = password if password is not None else os.environ.get("OBA_ADMIN_PASSWORD", "")
    if not dn or not password:
        raise ToolError(EXIT_USAGE, "credentials needed: --dn and --password (or OBA_ADMIN_DN "
                        "and OBA_ADMIN_PASSWORD)")
    return dn, password


class Api:
    def __init__(self, url: str, dn: str, password: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url + "/api/v1", auth=(dn, password),
                                 timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200, 201, 204),
                **kw: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ToolError(EXIT_UNREACHABLE, f"cannot reach {self.url}: {exc}") from None
        check(resp, ok)
        return resp

    def stream(self, path: str, params: dict[str, str]) -> Iterator[bytes]:
        try:
            with self.http.stream("GET", path, params=params) as resp:
                if resp.status_code != 200:
                    resp.read()
                    check(resp, (200,))
                yield from resp.iter_bytes()
        except httpx.TransportError as exc:
            raise ToolError(EXIT_UNREACHABLE, f"cannot reach {self.url}: {exc}") from None


def error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict) and "message" in body:
            return f"{body.get('error', resp.status_code)}: {body['message']}"
    except ValueError:
        pass
    return f"HTTP {resp.status_code}: {resp.text[:200]}"


def check(resp: httpx.Response, ok: tuple[int, ...]) -> None:
    if resp.status_code in ok:
        return
    if resp.status_code in (401, 403):
        raise ToolError(EXIT_AUTH, f"authentication failed: {error_text(resp)}")
    raise ToolError(EXIT_FAILED, error_text(resp))
