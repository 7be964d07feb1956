"""Support for the audit and event-stream tests: a REST server with a configured audit store.

Rules: ``AuditServer`` is ``RestServer`` with a ``logging.store`` section (small limits for the
retention tests); helpers poll ``GET /api/v1/logs`` under a deadline, never sleep-and-hope.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import ldap

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from .rest_support import RestServer

USER_DN = f"uid=auditee,ou=people,{BASE_DN}"
USER_PW = "auditee-pw"


@dataclass
class AuditServer(RestServer):
    store_yaml: str = ""

    def command(self) -> list[str]:
        cmd = super().command()
        text = self.config_path.read_text(encoding="utf-8")
        old = 'logging:\n  level: "info"\n'
        assert old in text
        new = old + "  store:\n    enabled: true\n" + self.store_yaml
        self.config_path.write_text(text.replace(old, new), encoding="utf-8")
        return cmd


def wait_logs(client: httpx.Client, params: dict[str, Any], pred: Any, timeout: float = 15.0,
              what: str = "audit records") -> dict[str, Any]:
    """Poll /logs with ``params`` until ``pred(body)`` is true; return the body."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = client.get("/logs", params=params)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if pred(body):
            return body
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: last {body}")


def ensure_user(url: str) -> None:
    """ou=people and a user with a password (idempotent)."""
    conn = connect(url, ROOT_DN, ROOT_PW)
    try:
        for dn, attrs in (
            (f"ou=people,{BASE_DN}", [("objectClass", [b"organizationalUnit"]),
                                      ("ou", [b"people"])]),
            (USER_DN, [("objectClass", [b"inetOrgPerson"]), ("cn", [b"Auditee"]),
                       ("sn", [b"Auditee"]), ("uid", [b"auditee"]),
                       ("userPassword", [USER_PW.encode()])]),
        ):
            try:
                conn.add_s(dn, attrs)
            except ldap.ALREADY_EXISTS:
                pass
    finally:
        conn.unbind_s()
