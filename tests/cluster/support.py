"""Real Oba node processes on 127.0.0.1 for the cluster tests (and bench/failover.py).

Rules: every process is started with ``python -m oba serve --config nodeN.yaml`` and stopped by
its PID (``Cluster.close`` kills whatever is left); every wait polls a condition against a
deadline; node state is read from ``<raft dir>/status.json`` (written by cluster.runtime) and
data over LDAP (python-ldap).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import ldap
import ldap.modlist
import yaml

BASE = "dc=example,dc=com"
ADMIN = "cn=admin,dc=example,dc=com"
PASSWORD = "admin"
PYTHON = str(Path(sys.executable))

T = TypeVar("T")


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports BELOW the kernel's ephemeral range: a node restarted on its
    port must not find it taken by some client connection's ephemeral source port."""
    lo, _ = _ephemeral_range()
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20000, max(20001, lo))
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def wait_for(cond: Callable[[], T | None], timeout: float, what: str, every: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class NodeProc:
    def __init__(self, node_id: int, root: Path, ldap_port: int, raft_port: int,
                 rest_port: int = 0) -> None:
        self.id = node_id
        self.rest_port = rest_port
        self.dir = root / f"node{node_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ldap_port = ldap_port
        self.raft_port = raft_port
        self.config = self.dir / "config.yaml"
        self.log = self.dir / "oba.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def raft_addr(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    def server_log(self) -> str:
        try:
            return (self.dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def status(self) -> dict[str, Any] | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            raw = (self.dir / "data" / "raft" / "status.json").read_text()
            st: dict[str, Any] = json.loads(raw)
        except (OSError, ValueError):
            return None
        return st if st.get("pid") == self.proc.pid else None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([PYTHON, "-m", "oba", "serve", "--config", str(self.config)],
                                     stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)
        out.close()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def conn(self, timeout: float = 5.0) -> Any:
        c = ldap.initialize(self.url)
        c.set_option(ldap.OPT_NETWORK_TIMEOUT, timeout)
        c.set_option(ldap.OPT_TIMEOUT, timeout)
        c.simple_bind_s(ADMIN, PASSWORD)
        return c


class Cluster:
    def __init__(self, root: Path, n: int = 3, tls: dict[int, tuple[str, str, str]] | None = None,
                 snapshot_interval: int = 10000, election_ms: int = 150,
                 heartbeat_ms: int = 50, rest: bool = False) -> None:
        ports = free_ports(3 * n)
        self.root = root
        self.rest = rest
        self.tls = tls
        self.settings = (snapshot_interval, election_ms, heartbeat_ms)
        self.nodes = [NodeProc(i + 1, root, ports[i], ports[n + i],
                               ports[2 * n + i] if rest else 0) for i in range(n)]
        peers = [{"id": nd.id, "addr": f"127.0.0.1:{nd.raft_port}"} for nd in self.nodes]
        for nd in self.nodes:
            self._write_config(nd, peers)

    def new_node(self, node_id: int) -> NodeProc:
        """A node not yet in the cluster whose peers are the current members plus itself
        (start it, then add it with POST /cluster/members)."""
        ldap_port, raft_port, rest_port = free_ports(3)
        nd = NodeProc(node_id, self.root, ldap_port, raft_port, rest_port if self.rest else 0)
        peers = [{"id": m.id, "addr": m.raft_addr} for m in self.nodes]
        self.nodes.append(nd)
        self._write_config(nd, [*peers, {"id": nd.id, "addr": nd.raft_addr}])
        return nd

    def _write_config(self, nd: NodeProc, peers: list[dict[str, Any]]) -> None:
        snapshot_interval, election_ms, heartbeat_ms = self.settings
        tls = self.tls
        cluster: dict[str, Any] = {
            "enabled": True, "nodeID": nd.id, "raftAddr": f"127.0.0.1:{nd.raft_port}",
            "peers": peers, "electionTimeout": f"{election_ms}ms",
            "heartbeatTimeout": f"{heartbeat_ms}ms", "snapshotInterval": snapshot_interval,
            "proposalTimeout": "3s"}
        if tls and nd.id in tls:
            cert, key, ca = tls[nd.id]
            cluster.update(raftTLSCert=cert, raftTLSKey=key, raftTLSCA=ca)
        cfg = {
            "server": {"address": f"127.0.0.1:{nd.ldap_port}"},
            "directory": {"baseDN": BASE, "rootDN": ADMIN, "rootPassword": PASSWORD},
            "storage": {"dataDir": str(nd.dir / "data"), "mapSize": "256MiB"},
            "logging": {"level": "info", "output": str(nd.dir / "server.log")},
            "cluster": cluster,
        }
        if nd.rest_port:
            cfg["rest"] = {"enabled": True, "address": f"127.0.0.1:{nd.rest_port}",
                           "rateLimit": 0}
        nd.config.write_text(yaml.safe_dump(cfg))

    def node(self, node_id: int) -> NodeProc:
        return next(nd for nd in self.nodes if nd.id == node_id)

    def start(self) -> None:
        for nd in self.nodes:
            nd.start()

    def close(self) -> None:
        for nd in self.nodes:
            with contextlib.suppress(Exception):
                nd.kill()

    def leader(self, among: list[NodeProc] | None = None) -> NodeProc | None:
        """The node that says it is leader, if the others alive agree (or do not know yet)."""
        for nd in among or self.nodes:
            st = nd.status()
            if st is not None and st["state"] == "leader":
                return nd
        return None

    def wait_leader(self, timeout: float = 10.0, among: list[NodeProc] | None = None
                    ) -> NodeProc:
        return wait_for(lambda: self.leader(among), timeout, "a leader")

    def followers(self) -> list[NodeProc]:
        return [nd for nd in self.nodes if (st := nd.status()) and st["state"] == "follower"]

    def wait_ready(self, timeout: float = 15.0) -> NodeProc:
        """A leader exists and the base entry is readable on every running node."""
        lead = self.wait_leader(timeout)
        for nd in self.nodes:
            if nd.proc is not None and nd.proc.poll() is None:
                wait_for(lambda nd=nd: has_entry(nd, BASE), timeout, f"base on node {nd.id}")
        return lead


def rejoined(nd: NodeProc) -> bool:
    """``nd`` (restarted) follows a leader and serves LDAP again, i.e. its start-up is over and
    its event loop answers (a node still importing modules cannot vote yet)."""
    st = nd.status()
    return (st is not None and st["state"] == "follower" and bool(st["leaderId"])
            and has_entry(nd, BASE))


def serving(nd: NodeProc) -> bool:
    """``nd`` answers an LDAP bind (its event loop is running)."""
    try:
        nd.conn(2.0).unbind_s()
        return True
    except ldap.LDAPError:
        return False


def has_entry(nd: NodeProc, dn: str) -> bool:
    try:
        c = nd.conn(2.0)
        try:
            c.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
            return True
        finally:
            c.unbind_s()
    except ldap.LDAPError:
        return False


def person(uid: str) -> list[tuple[str, list[bytes]]]:
    return ldap.modlist.addModlist({
        "objectClass": [b"inetOrgPerson"], "cn": [uid.encode()], "sn": [b"Test"],
        "uid": [uid.encode()]})


def add_person(nd: NodeProc, uid: str, timeout: float = 5.0) -> None:
    c = nd.conn(timeout)
    try:
        c.add_s(f"uid={uid},{BASE}", person(uid))
    finally:
        c.unbind_s()


def uids(nd: NodeProc) -> set[str]:
    c = nd.conn()
    try:
        res = c.search_s(BASE, ldap.SCOPE_ONELEVEL, "(uid=*)", ["uid"])
    finally:
        c.unbind_s()
    return {attrs["uid"][0].decode() for _, attrs in res}


def dump(nd: NodeProc) -> list[tuple[str, dict[str, list[bytes]]]]:
    """Every entry with all user and operational attributes, sorted (an LDIF-equivalent)."""
    c = nd.conn()
    try:
        res = c.search_s(BASE, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["*", "+"])
    finally:
        c.unbind_s()
    return sorted((dn.lower(), {k.lower(): sorted(v) for k, v in a.items()}) for dn, a in res)


def rest(nd: NodeProc, method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 15.0) -> tuple[int, dict[str, Any]]:
    """A REST call as the admin (HTTP Basic) to ``nd``: (status, JSON body)."""
    from oba.cluster import admin

    return admin.call(nd.rest_url, method, path, body, ADMIN, PASSWORD, timeout)
