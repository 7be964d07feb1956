"""The REST client behind ``oba cluster add|remove|transfer``: one JSON request to a node.

Rules for this module: stdlib only (urllib); HTTP Basic with the admin DN and password; every
answer (success or the API's error shape) comes back as ``(status, body)``; a node that does
not answer gives status 0 and ``{"error": "unreachable", "message": ...}``. No retries here:
any node forwards administration to the leader itself.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8081"
DEFAULT_DN = "cn=admin,dc=example,dc=com"


def call(url: str, method: str, path: str, body: dict[str, Any] | None, dn: str,
         password: str, timeout: float = 15.0) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if dn:
        token = base64.b64encode(f"{dn}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), _json(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), _json(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": "unreachable", "message": f"{url}: {exc}"}


def _json(raw: bytes) -> dict[str, Any]:
    try:
        out = json.loads(raw or b"{}")
    except ValueError:
        return {"error": "bad_response", "message": raw[:200].decode(errors="replace")}
    return out if isinstance(out, dict) else {"value": out}


def add_member(url: str, node_id: int, addr: str, dn: str, password: str
               ) -> tuple[int, dict[str, Any]]:
    return call(url, "POST", "/api/v1/cluster/members", {"id": node_id, "addr": addr}, dn,
                password)


def remove_member(url: str, node_id: int, dn: str, password: str
                  ) -> tuple[int, dict[str, Any]]:
    return call(url, "DELETE", f"/api/v1/cluster/members/{node_id}", None, dn, password)


def transfer_leadership(url: str, to: int | None, dn: str, password: str
                        ) -> tuple[int, dict[str, Any]]:
    return call(url, "POST", "/api/v1/cluster/transfer-leadership",
                {"to": to} if to else {}, dn, password)
