"""One request id per request, shared by the log lines, the Command and the audit record
(issue 9: structured logs with request ids shared between the entry point and the audit trail).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect, wait_until
from .test_audit_support import AuditServer, wait_logs


@dataclass
class DebugAuditServer(AuditServer):
    def command(self) -> list[str]:
        cmd = super().command()
        text = self.config_path.read_text(encoding="utf-8")
        self.config_path.write_text(text.replace('level: "info"', 'level: "debug"'),
                                    encoding="utf-8")
        return cmd


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebugAuditServer]:
    server = DebugAuditServer("oba", tmp_path_factory.mktemp("reqids"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_rest_request_id_reaches_the_audit_record(srv: DebugAuditServer) -> None:
    with srv.client() as root:
        body = {"dn": f"cn=rid-rest,{BASE_DN}",
                "attributes": {"objectClass": ["device"], "cn": ["rid-rest"]}}
        resp = root.post("/entries", json=body, headers={"X-Request-ID": "test-rid-123"})
        assert resp.status_code == 201, resp.text
        assert resp.headers["x-request-id"] == "test-rid-123"
        found = wait_logs(root, {"request_id": "test-rid-123"},
                          lambda b: any(e["fields"].get("operation") == "add"
                                        for e in b["entries"]))
        assert all(e["requestId"] == "test-rid-123" for e in found["entries"])
        # an id a client makes up badly is replaced, never echoed
        bad = root.get("/health", headers={"X-Request-ID": "x" * 200})
        assert bad.headers["x-request-id"] not in ("", "x" * 200)


def test_ldap_write_shares_its_id_between_log_and_audit(srv: DebugAuditServer) -> None:
    dn = f"cn=rid-ldap,{BASE_DN}"
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    conn.add_s(dn, [("objectClass", [b"device"]), ("cn", [b"rid-ldap"])])
    conn.unbind_s()
    with srv.client() as root:
        found = wait_logs(root, {"search": "rid-ldap"},
                          lambda b: any(e["fields"].get("dn") == dn for e in b["entries"]))
    [record] = [e for e in found["entries"] if e["fields"].get("dn") == dn]
    rid = record["requestId"]
    assert rid and rid != record["fields"]["commandId"]
    wait_until(lambda: f"[{rid}]" in srv.log_path.read_text(errors="replace"), 10,
               "the request id in the server log")
    lines = [ln for ln in srv.log_path.read_text(errors="replace").splitlines()
             if f"[{rid}]" in ln]
    assert any("AddRequest" in ln for ln in lines), lines
    assert not any(ROOT_PW in ln for ln in lines)

