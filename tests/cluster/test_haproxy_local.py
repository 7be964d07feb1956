"""The local cluster behind a real HAProxy (`make cluster-haproxy`): the spec's walkthroughs.

Rules: the cluster is started and stopped through oba.cluster.local (the code behind
`make cluster-haproxy` / `make cluster-stop`) on ports shifted by a free random offset, never the
fixed ones; every process is stopped by its PID (the fixture checks none survives); every wait
polls a condition against a deadline. A missing haproxy or ldap-utils binary fails the test naming
the Debian package. Measured failover windows are printed (run with `-s` to see them).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap
import pytest

from oba.cluster import local
from oba.cluster.haproxy import HaproxyPorts

from .support import ADMIN, BASE, PASSWORD, _ephemeral_range, person, wait_for

pytestmark = pytest.mark.timeout(150)

WRITE_EVERY = 0.05  # the client writes once every 50 ms
ERROR_WINDOW_TARGET = 1.0  # seconds: the target for the window of client errors


def _tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail(f"{name} not found: apt-get install {package}")
    return path


def _ports_free(offset: int, nodes: int) -> bool:
    listen = local.proxy_ports(offset)
    wanted = [p for n in range(1, nodes + 1) for p in local.ports(n, offset)]
    wanted += [listen.ldap, listen.rest, listen.stats]
    for port in wanted:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_offset(nodes: int = 3) -> int:
    """An offset that puts every port of the cluster BELOW the kernel's ephemeral range: a
    node restarted on its port must not find it taken by a client connection's source port
    (seen: a restarted node's LDAP port in the range was taken while it was down)."""
    lo, _ = _ephemeral_range()
    highest = max(local.proxy_ports(0).ldap, local.proxy_ports(0).stats,
                  *(p for n in range(1, nodes + 1) for p in local.ports(n, 0)))
    for _ in range(50):
        offset = random.randrange(1000, max(1001, lo - highest - 1), 7)
        if _ports_free(offset, nodes):
            return offset
    raise AssertionError("no free port offset found")


@dataclass
class LocalCluster:
    data: Path
    offset: int
    nodes: int = 3
    printed: str = ""
    started: list[int] = field(default_factory=list)

    @property
    def proxy(self) -> HaproxyPorts:
        return local.proxy_ports(self.offset)

    def ldap_port(self, n: int) -> int:
        return local.ports(n, self.offset)[0]

    def rest_port(self, n: int) -> int:
        return local.ports(n, self.offset)[2]

    def pids(self) -> dict[str, int]:
        out = {s["node"]: int(s["pid"]) for s in local.status(self.data) if s["pid"]}
        proxy = local.haproxy_pid(self.data)
        if proxy is not None:
            out["haproxy"] = proxy
        return out

    def leader(self) -> dict[str, Any] | None:
        found = [s for s in local.status(self.data) if s.get("state") == "leader"]
        return found[0] if len(found) == 1 else None


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    try:
        local.haproxy_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    offset = _free_offset()
    monkeypatch.setenv(local.OFFSET_ENV, str(offset))
    lc = LocalCluster(tmp_path / "cluster-data", offset)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = local.main(["--haproxy", "--nodes", "3", "--data", str(lc.data)])
        lc.printed = out.getvalue()
        lc.started = list(lc.pids().values())
        assert code == 0, lc.printed
        yield lc
    finally:
        pids = lc.pids()
        with contextlib.redirect_stdout(io.StringIO()):
            local.main(["--stop", "--data", str(lc.data)])
        for pid in set(pids.values()) | set(lc.started):
            if _alive(pid):  # the stop above failed: do not leak it, then fail loudly
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"pid {pid} survived `--stop`")


# --------------------------------------------------------------------------- helpers


def _http(url: str, token: str | None = None, body: dict[str, str] | None = None
          ) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=2) as response:
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read() or b"{}")
        except ValueError:
            doc = {}
        return int(exc.code), doc


def _ldapsearch_cn(port: int, cn: str) -> str:
    exe = _tool("ldapsearch", "ldap-utils")
    res = subprocess.run([exe, "-x", "-LLL", "-H", f"ldap://localhost:{port}", "-b", BASE,
                          f"(cn={cn})", "cn"], capture_output=True, text=True, timeout=10)
    return res.stdout if res.returncode == 0 else ""


def _conn(port: int, timeout: float) -> Any:
    c = ldap.initialize(f"ldap://127.0.0.1:{port}")
    c.set_option(ldap.OPT_NETWORK_TIMEOUT, timeout)
    c.set_option(ldap.OPT_TIMEOUT, timeout)
    c.simple_bind_s(ADMIN, PASSWORD)
    return c


def _uids(port: int) -> set[str] | None:
    try:
        c = _conn(port, 3.0)
        try:
            res = c.search_s(BASE, ldap.SCOPE_ONELEVEL, "(uid=w*)", ["uid"])
        finally:
            c.unbind_s()
    except ldap.LDAPError:
        return None
    return {attrs["uid"][0].decode() for _, attrs in res}


def _has_all(port: int, wanted: set[str]) -> bool:
    found = _uids(port)
    return found is not None and wanted <= found


# --------------------------------------------------------------------------- tests


def test_started_cluster_prints_the_access_points(cluster: LocalCluster) -> None:
    proxy = cluster.proxy
    for url in (f"ldap://localhost:{proxy.ldap}", f"http://localhost:{proxy.rest}",
                f"http://localhost:{proxy.stats}",
                *(f"ldap://localhost:{cluster.ldap_port(n)}" for n in (1, 2, 3)),
                *(f"http://localhost:{cluster.rest_port(n)}" for n in (1, 2, 3))):
        assert url in cluster.printed, cluster.printed
    cfg = (cluster.data / "haproxy" / "haproxy.cfg").read_text()
    assert f"bind 127.0.0.1:{proxy.ldap}" in cfg
    assert f"server node3 127.0.0.1:{cluster.ldap_port(3)} check" in cfg
    assert set(cluster.pids()) == {"node1", "node2", "node3", "haproxy"}


def test_adding_data_through_haproxy_reaches_every_node(cluster: LocalCluster) -> None:
    ldif = (f"dn: cn=testuser,{BASE}\nobjectClass: inetOrgPerson\ncn: testuser\nsn: User\n"
            "mail: testuser@example.com\n")
    add = subprocess.run(
        [_tool("ldapadd", "ldap-utils"), "-x", "-H", f"ldap://localhost:{cluster.proxy.ldap}",
         "-D", ADMIN, "-w", PASSWORD], input=ldif, capture_output=True, text=True, timeout=15)
    assert add.returncode == 0, add.stderr
    for n in (1, 2, 3):
        port = cluster.ldap_port(n)
        found = wait_for(functools.partial(_ldapsearch_cn, port, "testuser"), 5,
                         f"cn=testuser on node{n}")
        assert f"dn: cn=testuser,{BASE}" in found


def test_rest_through_haproxy_reaches_the_leader(cluster: LocalCluster) -> None:
    base = f"http://127.0.0.1:{cluster.proxy.rest}/api/v1"

    def routed_to_leader() -> dict[str, Any] | None:
        # HAProxy needs a check interval or two to follow a leadership change made just after
        # start-up, so poll (bounded) rather than assert on the first answer
        code, health = _http(f"{base}/cluster/health")
        leader = cluster.leader()
        if code == 200 and health.get("isLeader") and leader is not None \
                and health["nodeId"] == leader["nodeId"]:
            return health
        return None

    deadline = time.monotonic() + 10
    health = routed_to_leader()
    while health is None and time.monotonic() < deadline:
        time.sleep(0.1)
        health = routed_to_leader()
    assert health is not None, "HAProxy never routed REST to the leader within 10 s"
    code, bound = _http(f"{base}/auth/bind", body={"dn": ADMIN, "password": PASSWORD})
    assert code == 200, bound
    for _ in range(5):
        code, st = _http(f"{base}/cluster/status", bound["token"])
        assert code == 200 and st["state"] == "leader", st


@dataclass
class Attempt:
    uid: str
    started: float
    ended: float
    ok: bool
    error: str = ""


def _writer(port: int, stop: threading.Event, attempts: list[Attempt], limit: int) -> None:
    """One add through HAProxy every 50 ms, each on a new connection, until `stop` or `limit`."""
    for i in range(limit):
        if stop.is_set():
            return
        t0 = time.monotonic()
        uid = f"w{i:04d}"
        try:
            c = _conn(port, 2.0)
            try:
                c.add_s(f"uid={uid},{BASE}", person(uid))
            finally:
                with contextlib.suppress(ldap.LDAPError):
                    c.unbind_s()
            attempts.append(Attempt(uid, t0, time.monotonic(), True))
        except ldap.LDAPError as exc:
            attempts.append(Attempt(uid, t0, time.monotonic(), False, type(exc).__name__))
        stop.wait(max(0.0, WRITE_EVERY - (time.monotonic() - t0)))


def _error_window(attempts: list[Attempt]) -> float:
    """First failure -> first success after it (0 when the client never saw an error)."""
    failures = [a for a in attempts if not a.ok]
    if not failures:
        return 0.0
    first = failures[0]
    after = [a for a in attempts if a.ok and a.started > first.started]
    assert after, "the client never succeeded again after its first error"
    return after[0].ended - first.started


def test_leader_killed_while_a_client_writes_through_haproxy(cluster: LocalCluster) -> None:
    old = cluster.leader()
    assert old is not None
    old_id = int(old["nodeId"])
    survivors = [n for n in (1, 2, 3) if n != old_id]
    attempts: list[Attempt] = []
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(cluster.proxy.ldap, stop, attempts, 400))
    writer.start()
    try:
        wait_for(lambda: sum(a.ok for a in attempts) >= 10, 10, "writes before the kill")
        killed_at = time.monotonic()
        os.kill(int(old["pid"]), signal.SIGKILL)
        # REST through HAProxy must follow the new leader within a deadline.
        health = f"http://127.0.0.1:{cluster.proxy.rest}/api/v1/cluster/health"

        def new_leader_via_proxy() -> bool:
            code, doc = _http(health)
            return code == 200 and doc.get("nodeId") in survivors

        wait_for(new_leader_via_proxy, 5, "REST via HAProxy to reach the new leader", 0.01)
        rest_took = time.monotonic() - killed_at
        wait_for(lambda: sum(a.ok for a in attempts if a.started > killed_at + 1.5) >= 10, 15,
                 "writes to succeed again after the kill")
    finally:
        stop.set()
        writer.join(30)
    assert not writer.is_alive()
    window = _error_window(attempts)
    acked = {a.uid for a in attempts if a.ok}
    failed = [a for a in attempts if not a.ok]
    slowest = max(a.ended - a.started for a in attempts if a.started >= killed_at - 0.1)
    print(f"\nleader node{old_id} SIGKILLed; {len(attempts)} writes every 50 ms, "
          f"{len(acked)} acknowledged, {len(failed)} failed "
          f"({sorted({a.error for a in failed})}); client error window {window * 1000:.0f} ms "
          f"(target < {ERROR_WINDOW_TARGET * 1000:.0f} ms); slowest write after the kill "
          f"{slowest * 1000:.0f} ms; REST via HAProxy on the new leader after "
          f"{rest_took * 1000:.0f} ms")
    assert window < ERROR_WINDOW_TARGET
    assert rest_took < 3.0

    # No acknowledged write is lost: on both survivors ...
    for n in survivors:
        port = cluster.ldap_port(n)
        wait_for(functools.partial(_has_all, port, acked), 10,
                 f"every acknowledged write on node{n}")
    # ... and on the killed node once it has rejoined (restarted through oba.cluster.local).
    local.start(cluster.data, 3)
    cluster.started += list(cluster.pids().values())
    port = cluster.ldap_port(old_id)
    wait_for(functools.partial(_has_all, port, acked), 20,
             f"every acknowledged write on the restarted node{old_id}")

    def rejoined_as_follower() -> bool:
        back = {s["node"]: s for s in local.status(cluster.data)}[f"node{old_id}"]
        return back.get("state") == "follower"

    wait_for(rejoined_as_follower, 10, f"node{old_id} to rejoin as a follower")
