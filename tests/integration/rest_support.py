"""Support for the REST API tests: an Oba process with the REST API on a free port.

Rules: ``RestServer`` is ``_support.LdapServer`` (same process handling, stopped by PID) with a
``rest:`` section appended to its config file; the server counts as started once both the LDAP
root DSE and ``GET /api/v1/health`` answer. Helpers assert the one error shape.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ._support import ROOT_DN, ROOT_PW, LdapServer, free_port, wait_until

JWT_SECRET = "test-secret-for-the-rest-api-0123456789"


@dataclass
class RestServer(LdapServer):
    rest_port: int = field(default_factory=free_port)
    rest_extra: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "oba.yaml"

    def command(self) -> list[str]:
        cmd = super().command()
        with self.config_path.open("a", encoding="utf-8") as fh:
            fh.write(
                "rest:\n"
                "  enabled: true\n"
                f'  address: "127.0.0.1:{self.rest_port}"\n'
                f'  jwtSecret: "{JWT_SECRET}"\n'
                "  rateLimit: 100000\n"
                '  corsOrigins: ["https://admin.example.com"]\n'
                '  trustedProxies: ["127.0.0.1"]\n' + self.rest_extra
            )
        return cmd

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)

        def healthy() -> bool:
            try:
                return httpx.get(self.base_url + "/api/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout, "the REST API to answer")

    def client(self, auth: tuple[str, str] | None = (ROOT_DN, ROOT_PW)) -> httpx.Client:
        headers = {}
        if auth is not None:
            raw = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {raw}"
        return httpx.Client(base_url=self.base_url + "/api/v1", headers=headers, timeout=30)


@contextmanager
def running_rest_server(workdir: Path) -> Iterator[RestServer]:
    srv = RestServer("oba", workdir)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def assert_error(resp: httpx.Response, status: int, error: str | None = None,
                 result_code: int | None = None) -> dict[str, Any]:
    """The response is the one error shape with this status (and error name / result code)."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    data: dict[str, Any] = resp.json()
    assert set(data) <= {"error", "code", "message", "resultCode"}, data
    assert data["code"] == status, data
    assert isinstance(data["error"], str) and data["error"], data
    assert isinstance(data["message"], str) and data["message"], data
    if error is not None:
        assert data["error"] == error, data
    if result_code is not None:
        assert data.get("resultCode") == result_code, data
    return data


def quote_dn(dn: str) -> str:
    from urllib.parse import quote

    return quote(dn, safe="")


Event = dict[str, Any]  # one server-sent event: {"id"?, "event", "data" (decoded JSON)}


def sse_frames(lines: Iterable[str]) -> Iterator[Event | str]:
    """The frames of a ``text/event-stream`` given its lines: each event as an ``Event``, each
    comment line as its text (``"connected"``: Oba's first line, once the stream is
    subscribed; ``"heartbeat"`` ...), so a reader sees every line that arrives."""
    current: Event = {}
    for line in lines:
        if line.startswith(":"):
            yield line[1:].strip()
        elif line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            yield current
            current = {}
