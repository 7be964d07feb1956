"""Password hashing is bounded and costs what it is configured to (issue 18):

- a flood of binds beyond ``security.hashThreads`` + ``security.hashQueue`` gets busy (51)
  quickly, over LDAP and REST (503), while a search on another connection still answers fast,
  and the binds that were let in succeed;
- a bind that has no password to check (unknown DN, locked account) verifies against a dummy
  hash made with the configured scheme AND ``security.argon2`` parameters, and a wrong password
  against an older, cheaper stored value ({SSHA}) costs that too: all take about as long as a
  wrong password against a value made with the configured parameters.

Rules: one real server (one listener process, one hashing thread, a queue of 4, Argon2 made
deliberately costly: t=2, m=16 MiB) over real sockets; every load loop is bounded in time and
count; medians, not single timings, and wide margins (the machine is shared).
"""

from __future__ import annotations

import base64
import hashlib
import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ldap
import pytest

from integration._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from integration.test_audit_support import AuditServer
from security.test_bind_oracle import OneProcessServer

PW = "Bound-pass-1"
QUEUE = 4
SETTINGS = f"""security:
  hashThreads: 1
  hashQueue: {QUEUE}
  argon2:
    iterations: 2
    memoryKiB: 16384
    parallelism: 1
  rateLimit:
    enabled: true
    maxAttempts: 1000000
    lockoutDuration: "3s"
"""
FLOOD_CONNECTIONS = 24
FLOOD_SECONDS = 3.0
TRIES = 10  # interleaved refused binds per timing case


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditServer]:
    server = OneProcessServer("oba", Path(tmp_path_factory.mktemp("bound")),
                              rest_extra=SETTINGS)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def add(url: str, uid: str, password: bytes) -> str:
    dn = f"uid={uid},{BASE_DN}"
    conn = connect(url, ROOT_DN, ROOT_PW)
    try:
        conn.add_s(dn, [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
                        ("cn", [b"U"]), ("sn", [b"U"]), ("userPassword", [password])])
    finally:
        conn.unbind_s()
    return dn


def _flood(url: str, dn: str, deadline: float, out: list[tuple[str, float]]) -> None:
    """Bind as ``dn`` on one connection until ``deadline`` (at most 500 binds), recording
    (outcome, seconds) of each; a client told busy waits 20 ms before it tries again."""
    conn = ldap.initialize(url)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 10.0)
    conn.set_option(ldap.OPT_TIMEOUT, 30.0)
    try:
        for _ in range(500):
            if time.monotonic() >= deadline:
                break
            started = time.perf_counter()
            try:
                conn.simple_bind_s(dn, PW)
                outcome = "ok"
            except ldap.BUSY:
                outcome = "busy"
            except ldap.LDAPError as exc:
                outcome = type(exc).__name__
            out.append((outcome, time.perf_counter() - started))
            if outcome == "busy":
                time.sleep(0.02)
    finally:
        conn.unbind_s()


def test_a_bind_flood_beyond_the_queue_gets_busy_fast_and_searches_still_answer(
        srv: AuditServer) -> None:
    dn = add(srv.url, "flood", PW.encode())
    searcher = connect(srv.url)
    searcher.search_s(BASE_DN, ldap.SCOPE_SUBTREE, "(uid=flood)", ["cn"])
    results: list[list[tuple[str, float]]] = [[] for _ in range(FLOOD_CONNECTIONS)]
    deadline = time.monotonic() + FLOOD_SECONDS
    threads = [threading.Thread(target=_flood, args=(srv.url, dn, deadline, out), daemon=True)
               for out in results]
    for t in threads:
        t.start()
    searches: list[float] = []
    rest_busy: httpx.Response | None = None
    time.sleep(0.3)  # the flood is under way
    with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as anon:
        for _ in range(200):
            if time.monotonic() >= deadline - 0.2:
                break
            started = time.perf_counter()
            found = searcher.search_s(BASE_DN, ldap.SCOPE_SUBTREE, "(uid=flood)", ["cn"])
            searches.append(time.perf_counter() - started)
            assert [d for d, _ in found] == [dn]
            if rest_busy is None:
                r = anon.post("/auth/bind", json={"dn": dn, "password": PW})
                if r.status_code == 503:
                    rest_busy = r
                else:
                    assert r.status_code == 200, r.text
            time.sleep(0.02)
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    searcher.unbind_s()
    flat = [r for per_conn in results for r in per_conn]
    outcomes = {o for o, _ in flat}
    busy = sorted(s for o, s in flat if o == "busy")
    ok = sorted(s for o, s in flat if o == "ok")
    print(f"\n{len(flat)} binds: {len(ok)} ok (median {statistics.median(ok) * 1000:.0f} ms), "
          f"{len(busy)} busy (median {statistics.median(busy) * 1000:.1f} ms, "
          f"p90 {busy[int(len(busy) * 0.9)] * 1000:.1f} ms); searches median "
          f"{statistics.median(searches) * 1000:.1f} ms, max {max(searches) * 1000:.1f} ms")
    assert outcomes <= {"ok", "busy"}, outcomes  # nothing else: no timeout, no error
    assert ok and busy
    # the flood is refused at once, not queued: a busy answer comes far sooner than a bind
    # that waits its turn for the one hashing thread
    assert statistics.median(busy) < 0.1
    assert statistics.median(busy) < statistics.median(ok) / 2
    # and the event loop stays free for other clients
    assert statistics.median(searches) < 0.1, searches
    assert max(searches) < 1.0, searches
    assert rest_busy is not None, "no REST bind was refused during the flood"
    body = rest_busy.json()
    assert body["error"] == "busy" and body["resultCode"] == 51, body
    assert "password checks" in body["message"] and rest_busy.headers["Retry-After"] == "1"
    # once the flood is over, binds work at once again
    connect(srv.url, dn, PW).unbind_s()


def _ssha(password: str) -> bytes:
    salt = b"saltsalt"
    return b"{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt)


def test_refusals_cost_a_hash_with_the_configured_parameters(srv: AuditServer) -> None:
    """With costly configured parameters, an unknown DN, a locked account and a wrong
    password against an old {SSHA} value take as long as a wrong password against a value
    made with those parameters: the dummy hash uses them (a dummy with the default
    parameters would answer about 4 times sooner)."""
    wrong = add(srv.url, "cost-wrong", PW.encode())  # hashed with the configured parameters
    legacy = add(srv.url, "cost-legacy", _ssha(PW))
    locked = add(srv.url, "cost-locked", PW.encode())
    admin = connect(srv.url, ROOT_DN, ROOT_PW)

    def lock() -> None:
        stamp = time.strftime("%Y%m%d%H%M%SZ", time.gmtime()).encode()
        admin.modify_s(locked, [(ldap.MOD_REPLACE, "pwdAccountLockedTime", [stamp])])

    cases = {"wrong password": (wrong, None), "unknown DN": (f"uid=cost-nobody,{BASE_DN}",
                                                             None),
             "locked account": (locked, lock), "wrong password, {SSHA}": (legacy, None)}
    conns = {name: connect(srv.url) for name in cases}
    times: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    rng = random.Random(18)
    try:
        for _ in range(TRIES):
            rng.shuffle(order)
            for name in order:
                target, prepare = cases[name]
                if prepare is not None:
                    prepare()
                started = time.perf_counter()
                with pytest.raises(ldap.INVALID_CREDENTIALS):
                    conns[name].simple_bind_s(target, "not-the-password")
                times[name].append(time.perf_counter() - started)
    finally:
        for conn in conns.values():
            conn.unbind_s()
        admin.unbind_s()
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    print("\nmedians (ms): " + ", ".join(f"{n} {v:.1f}" for n, v in medians.items()))
    reference = medians["wrong password"]
    assert all(value > 0.6 * reference for value in medians.values()), medians
    # the legacy value is still {SSHA}: wrong passwords re-make nothing
    conn = connect(srv.url, ROOT_DN, ROOT_PW)
    try:
        [(_, attrs)] = conn.search_s(legacy, ldap.SCOPE_BASE, "(objectClass=*)",
                                     ["userPassword"])
    finally:
        conn.unbind_s()
    assert attrs["userPassword"] == [_ssha(PW)]
