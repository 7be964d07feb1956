"""``oba cluster local|status|stop``: a 3-node (or N-node) cluster on 127.0.0.1 for development.

Rules for this module: node N listens on LDAP ``N*1000+389`` (1389, 2389, 3389), Raft
``4444+N`` (4445, 4446, 4447) and REST ``8080+N`` (8081, 8082, 8083); its config, data, log and
pid file live in ``<data>/nodeN/``. Processes are started detached and stopped by the PID in
their pid file only. Status comes from each node's ``status.json`` (see cluster.runtime).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

BASE_DN = "dc=example,dc=com"


def ports(n: int) -> tuple[int, int, int]:
    """(ldap, raft, rest) ports of node ``n``."""
    return n * 1000 + 389, 4444 + n, 8080 + n


def write_configs(data: Path, nodes: int) -> list[Path]:
    peers = [{"id": n, "addr": f"127.0.0.1:{ports(n)[1]}"} for n in range(1, nodes + 1)]
    out = []
    for n in range(1, nodes + 1):
        ldap_port, raft_port, rest_port = ports(n)
        d = (data / f"node{n}").resolve()
        d.mkdir(parents=True, exist_ok=True)
        cfg = {
            "server": {"address": f"127.0.0.1:{ldap_port}"},
            "directory": {"baseDN": BASE_DN, "rootDN": f"cn=admin,{BASE_DN}",
                          "rootPassword": "admin"},
            "storage": {"dataDir": str(d / "data")},
            "rest": {"enabled": True, "address": f"127.0.0.1:{rest_port}"},
            "logging": {"level": "info", "output": str(d / "oba.log")},
            "cluster": {"enabled": True, "nodeID": n, "raftAddr": f"127.0.0.1:{raft_port}",
                        "peers": peers, "electionTimeout": "150ms",
                        "heartbeatTimeout": "50ms", "snapshotInterval": 10000},
        }
        path = d / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out.append(path)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _pid(node_dir: Path) -> int | None:
    try:
        pid = int((node_dir / "oba.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def node_dirs(data: Path) -> list[Path]:
    return sorted((p for p in data.glob("node*") if p.is_dir()), key=lambda p: p.name)


def status(data: Path) -> list[dict[str, Any]]:
    out = []
    for d in node_dirs(data):
        pid = _pid(d)
        entry: dict[str, Any] = {"node": d.name, "pid": pid, "running": pid is not None}
        try:
            st = json.loads((d / "data" / "raft" / "status.json").read_text())
            if pid is not None and st.get("pid") == pid:
                entry.update(st)
        except (OSError, ValueError):
            pass
        out.append(entry)
    return out


def start(data: Path, nodes: int = 3, wait: float = 15.0) -> list[dict[str, Any]]:
    """Start every node that is not already running; wait for a leader; return statuses."""
    configs = write_configs(data, nodes)
    for cfg in configs:
        d = cfg.parent
        if _pid(d) is not None:
            continue
        with open(d / "console.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "oba", "serve", "--config", str(cfg)],
                stdout=out, stderr=subprocess.STDOUT, cwd=d, start_new_session=True)
        (d / "oba.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        sts = status(data)
        if any(s.get("state") == "leader" for s in sts):
            return sts
        time.sleep(0.1)
    return status(data)


def stop(data: Path, timeout: float = 10.0) -> list[str]:
    """SIGTERM every node by its pid file (SIGKILL after ``timeout``); returns what was done."""
    done = []
    for d in node_dirs(data):
        pid = _pid(d)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            done.append(f"{d.name}: killed pid {pid}")
        else:
            done.append(f"{d.name}: stopped pid {pid}")
        (d / "oba.pid").unlink(missing_ok=True)
    return done


def format_status(sts: list[dict[str, Any]]) -> str:
    lines = []
    for s in sts:
        if not s.get("running"):
            lines.append(f"{s['node']}: not running")
            continue
        if "state" not in s:
            lines.append(f"{s['node']}: pid {s['pid']}, starting")
            continue
        n = int(s["nodeId"])
        ldap_port, raft_port, rest_port = ports(n)
        lines.append(
            f"{s['node']}: pid {s['pid']} {s['state']:<9} term {s['term']} leader "
            f"{s['leaderId'] or '-'} commit {s['commitIndex']} applied {s['lastApplied']}  "
            f"ldap://127.0.0.1:{ldap_port} raft 127.0.0.1:{raft_port} "
            f"http://127.0.0.1:{rest_port}")
    return "\n".join(lines)
