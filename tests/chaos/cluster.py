"""A real cluster for the chaos harness: node processes whose every Raft link goes through a
proxy, and the fault primitives the nemeses use.

Rules for this module:
- Node ``i``'s ``cluster.peers`` entry for node ``j`` is the listen port of link ``"i->j"`` of
  one proxy process (``proxy.ProxyProcess``), which forwards to ``j``'s real ``raftAddr``. A
  directed link's mode (pass / blackhole / reset / delay) therefore controls what ``i``
  sends to ``j`` and what comes back on that connection.
- Nodes run ``python -m oba serve`` with the product's defaults (timeouts, listener workers)
  except ``snapshotInterval`` (small, so that snapshots race with faults); each node is the
  leader of its own process group, so kill -9 and SIGSTOP hit the node and its listener
  workers together, as ``docker kill`` / ``docker pause`` would.
- Every process is stopped by PID (group) in ``close``; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from cluster.support import free_ports  # tests/ is on sys.path (pytest, make chaos)

from .proxy import ProxyProcess

BASE = "dc=example,dc=com"
ADMIN = "cn=admin,dc=example,dc=com"
PASSWORD = "admin"
ROOT = Path(__file__).resolve().parents[2]


class ChaosNode:
    def __init__(self, node_id: int, root: Path, ldap_port: int, raft_port: int) -> None:
        self.id = node_id
        self.dir = root / f"node{node_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ldap_port = ldap_port
        self.raft_port = raft_port
        self.config = self.dir / "config.yaml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    @property
    def raft_addr(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.alive
        with open(self.dir / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oba", "serve", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True)
        self.paused = False
        self.starts += 1

    def _group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9 of the node and its listener workers."""
        if self.proc is None:
            return
        self._group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers left behind, if any
        self.paused = False

    def pause(self) -> None:
        self._group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._group(signal.SIGCONT)
        self.paused = False

    def status(self) -> dict[str, Any] | None:
        """This process's ``/cluster/status`` (the runtime keeps ``status.json`` current)."""
        if not self.alive:
            return None
        try:
            st: dict[str, Any] = json.loads(
                (self.dir / "data" / "raft" / "status.json").read_text())
        except (OSError, ValueError):
            return None
        assert self.proc is not None
        return st if st.get("pid") == self.proc.pid else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ChaosCluster:
    def __init__(self, root: Path, n: int = 3, snapshot_interval: int = 300) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * n)
        self.nodes = [ChaosNode(i + 1, root, ports[i], ports[n + i]) for i in range(n)]
        self.snapshot_interval = snapshot_interval
        self.proxy = ProxyProcess(cwd=ROOT, stderr=root / "proxy.log")
        self.links: dict[str, int] = {}
        self.modes: dict[str, str] = {}

    @property
    def ids(self) -> list[int]:
        return [nd.id for nd in self.nodes]

    def node(self, node_id: int) -> ChaosNode:
        return next(nd for nd in self.nodes if nd.id == node_id)

    def start(self) -> None:
        self.proxy.start()
        for a in self.nodes:
            for b in self.nodes:
                if a is not b:
                    link = f"{a.id}->{b.id}"
                    self.links[link] = self.proxy.add(link, b.raft_addr)
                    self.modes[link] = "pass"
        for nd in self.nodes:
            self._write_config(nd)
            nd.start()

    def _write_config(self, nd: ChaosNode) -> None:
        peers = [{"id": p.id, "addr": p.raft_addr if p is nd
                  else f"127.0.0.1:{self.links[f'{nd.id}->{p.id}']}"} for p in self.nodes]
        cfg = {
            "server": {"address": f"127.0.0.1:{nd.ldap_port}"},
            "directory": {"baseDN": BASE, "rootDN": ADMIN, "rootPassword": PASSWORD},
            "storage": {"dataDir": str(nd.dir / "data"), "mapSize": "512MiB"},
            "logging": {"level": "info", "output": str(nd.dir / "server.log")},
            "cluster": {"enabled": True, "nodeID": nd.id, "raftAddr": nd.raft_addr,
                        "peers": peers, "snapshotInterval": self.snapshot_interval},
        }
        nd.config.write_text(yaml.safe_dump(cfg))

    def close(self) -> None:
        for nd in self.nodes:
            with contextlib.suppress(Exception):
                nd.resume()
                nd.kill()
        with contextlib.suppress(Exception):
            self.proxy.close()

    # ------------------------------------------------------------------ links

    def set_links(self, links: Iterable[str], mode: str, delay_ms: int = 0) -> None:
        links = sorted(set(links))
        if links:
            self.proxy.mode(links, mode, delay_ms)
            for link in links:
                self.modes[link] = mode

    def cut(self, a: int, b: int, mode: str = "blackhole") -> list[str]:
        """Both directions between ``a`` and ``b``."""
        links = [f"{a}->{b}", f"{b}->{a}"]
        self.set_links(links, mode)
        return links

    def partition(self, groups: list[list[int]], mode: str = "blackhole") -> list[str]:
        """Every link between two different groups (a node in no group is cut off too)."""
        side = {n: k for k, g in enumerate(groups) for n in g}
        links = [f"{a}->{b}" for a in self.ids for b in self.ids
                 if a != b and side.get(a, -1 - a) != side.get(b, -1 - b)]
        self.set_links(links, mode)
        return links

    def heal_links(self) -> None:
        self.set_links([k for k, m in self.modes.items() if m != "pass"], "pass")

    # ------------------------------------------------------------------ state

    def statuses(self) -> dict[int, dict[str, Any] | None]:
        return {nd.id: nd.status() for nd in self.nodes}

    def leader(self) -> int:
        """The id of a live, unpaused node that says it is leader (0 when none)."""
        for nd in self.nodes:
            if nd.paused:
                continue
            st = nd.status()
            if st is not None and st.get("state") == "leader":
                return nd.id
        return 0

    def wait_leader(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead:
                return lead
            time.sleep(0.02)
        raise TimeoutError(f"no leader within {timeout:.0f} s: {self.statuses()}")

    def converged(self) -> bool:
        """Every node follows the same leader in the same term, is connected to every peer,
        and has applied everything that is committed; all at the same index."""
        sts = list(self.statuses().values())
        if any(st is None for st in sts):
            return False
        first = sts[0]
        assert first is not None
        for st in sts:
            assert st is not None
            if (st["term"], st["leaderId"]) != (first["term"], first["leaderId"]):
                return False
            if not st["leaderId"] or st["lastApplied"] != st["commitIndex"]:
                return False
            if st["commitIndex"] != first["commitIndex"] or st["lastIndex"] != st["commitIndex"]:
                return False
            if sorted(st.get("connected", [])) != sorted(i for i in self.ids if i != st["nodeId"]):
                return False
        return True

    def describe(self) -> str:
        lines = []
        for node_id, st in self.statuses().items():
            nd = self.node(node_id)
            if st is None:
                lines.append(f"node {node_id}: no status (alive={nd.alive})")
                continue
            keep = {k: st.get(k) for k in ("state", "term", "leaderId", "commitIndex",
                                           "lastApplied", "lastIndex", "connected")}
            lines.append(f"node {node_id}: {json.dumps(keep)}")
        return "\n".join(lines)
