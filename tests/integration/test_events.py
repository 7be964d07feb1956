"""GET /api/v1/events (Server-Sent Events) over a real server: changes made over LDAP arrive,
audit records arrive, Last-Event-ID resumes, readers see only entries they may read, an unknown
position asks for a reset.

Rules: the stream is read in the test thread with a read timeout; the action that should
produce events runs once the server has sent its ``connected`` comment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from .rest_support import Event, sse_frames
from .test_audit_support import USER_DN, USER_PW, AuditServer, ensure_user


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    server = AuditServer("oba", tmp_path_factory.mktemp("events"))
    server.start()
    try:
        ensure_user(server.url)
        yield server
    finally:
        server.stop()


def collect(srv: AuditServer, until: Callable[[list[Event]], bool],
            action: Callable[[], None] | None = None, headers: dict[str, str] | None = None,
            auth: tuple[str, str] = (ROOT_DN, ROOT_PW), timeout: float = 15.0) -> list[Event]:
    """Read the stream until ``until(events)``; run ``action`` once connected."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    with srv.client(auth) as client, client.stream(
            "GET", "/events", headers=headers or {}, timeout=httpx.Timeout(timeout)) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for frame in sse_frames(resp.iter_lines()):
            if frame == "connected" and action is not None:
                threading.Thread(target=action, daemon=True).start()
            elif isinstance(frame, dict):
                events.append(frame)
                if until(events):
                    return events
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"stream ended or timed out; got {events}")


def add_device(srv: AuditServer, cn: str) -> None:
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    try:
        conn.add_s(f"cn={cn},{BASE_DN}", [("objectClass", [b"device"]), ("cn", [cn.encode()])])
    finally:
        conn.unbind_s()


def _change(events: list[Event], cn: str) -> Event | None:
    for ev in events:
        if ev.get("event") == "change" and ev["data"]["dn"].lower().startswith(f"cn={cn},"):
            return ev
    return None


def test_ldap_change_arrives_and_resumes(srv: AuditServer) -> None:
    got = collect(srv, lambda evs: _change(evs, "sse-one") is not None,
                  lambda: add_device(srv, "sse-one"))
    first = _change(got, "sse-one")
    assert first is not None
    assert first["data"]["type"] == "add" and first["data"]["actor"] == ROOT_DN
    assert first["id"] == first["data"]["index"] > 0
    # disconnected: two more changes happen, then resume from the first event's id
    add_device(srv, "sse-two")
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    conn.rename_s(f"cn=sse-two,{BASE_DN}", "cn=sse-three")
    conn.unbind_s()
    resumed = collect(srv, lambda evs: _change(evs, "sse-three") is not None,
                      headers={"Last-Event-ID": str(first["id"])})
    changes = [e for e in resumed if e.get("event") == "change"]
    assert _change(changes, "sse-one") is None
    two, three = _change(changes, "sse-two"), _change(changes, "sse-three")
    assert two is not None and three is not None and two["id"] < three["id"]
    assert three["data"]["type"] == "moddn"
    assert three["data"]["previousDN"].lower().startswith("cn=sse-two,")


def test_audit_records_arrive(srv: AuditServer) -> None:
    def bind() -> None:
        connect(srv.url, USER_DN, USER_PW).unbind_s()

    got = collect(srv, lambda evs: any(
        e.get("event") == "audit" and e["data"]["user"] == USER_DN for e in evs), bind)
    rec = next(e for e in got if e.get("event") == "audit" and e["data"]["user"] == USER_DN)
    assert rec["data"]["source"] == "ldap" and rec["id"] == rec["data"]["index"]


def test_unknown_position_resets(srv: AuditServer) -> None:
    got = collect(srv, lambda evs: any(e.get("event") == "reset" for e in evs),
                  headers={"Last-Event-ID": "999999999"})
    assert got[-1]["event"] == "reset"


def test_reader_sees_only_readable_entries(srv: AuditServer) -> None:
    got = collect(srv, lambda evs: _change(evs, "sse-user") is not None,
                  lambda: add_device(srv, "sse-user"), auth=(USER_DN, USER_PW))
    assert _change(got, "sse-user") is not None  # the default policy lets users read entries


def test_needs_authentication(srv: AuditServer) -> None:
    resp = httpx.get(srv.base_url + "/api/v1/events", timeout=5)
    assert resp.status_code == 401
