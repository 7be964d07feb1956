"""``oba cluster local|status|stop``: an N-node cluster on 127.0.0.1, optionally behind HAProxy.

Rules for this module:
- Node N listens on LDAP ``N*1000+389`` (1389, 2389, 3389), Raft ``4444+N`` (4445, 4446, 4447)
  and REST ``8080+N`` (8081, 8082, 8083); HAProxy (``--haproxy``) on LDAP 10389, REST 8080 and
  stats 8404. Every port is shifted by ``OBA_LOCAL_PORT_OFFSET`` (default 0) so tests and the
  doc checker can run a cluster beside one started by hand.
- A node's config, data, logs and pid file live in ``<data>/nodeN/``; HAProxy's config, log and
  pid file in ``<data>/haproxy/``. Processes are started detached (own session) and stopped by
  the PID in their pid file only, never by name.
- All nodes share one JWT secret, so a REST token stays valid when leadership moves.
- Status comes from each node's ``status.json`` (see cluster.runtime); a node's ports are read
  back from its config file, so ``status`` needs no offset.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from oba.cluster.haproxy import HEALTH_PATH, HaproxyNode, HaproxyPorts, render_local_haproxy

BASE_DN = "dc=example,dc=com"
OFFSET_ENV = "OBA_LOCAL_PORT_OFFSET"
JWT_SECRET = "oba-local-cluster"  # development only: every local node must share it
HAPROXY_PACKAGE = "haproxy"


def port_offset() -> int:
    """The port shift from ``OBA_LOCAL_PORT_OFFSET`` (0 when unset)."""
    raw = os.environ.get(OFFSET_ENV, "").strip()
    try:
        value = int(raw) if raw else 0
    except ValueError:
        raise ValueError(f"{OFFSET_ENV} must be an integer, not {raw!r}") from None
    if not 0 <= value <= 55000:
        raise ValueError(f"{OFFSET_ENV} must be between 0 and 55000, not {value}")
    return value


def ports(n: int, offset: int | None = None) -> tuple[int, int, int]:
    """(ldap, raft, rest) ports of node ``n``."""
    off = port_offset() if offset is None else offset
    return n * 1000 + 389 + off, 4444 + n + off, 8080 + n + off


def proxy_ports(offset: int | None = None) -> HaproxyPorts:
    """Where the local HAProxy listens: LDAP 10389, REST 8080, stats 8404 (plus the offset)."""
    off = port_offset() if offset is None else offset
    return HaproxyPorts(ldap=10389 + off, rest=8080 + off, stats=8404 + off,
                        bind_host="127.0.0.1")


def proxy_nodes(nodes: int, offset: int | None = None) -> list[HaproxyNode]:
    out = []
    for n in range(1, nodes + 1):
        ldap_port, _, rest_port = ports(n, offset)
        out.append(HaproxyNode(name=f"node{n}", host="127.0.0.1", ldap_port=ldap_port,
                               rest_port=rest_port))
    return out


def write_configs(data: Path, nodes: int, offset: int | None = None) -> list[Path]:
    peers = [{"id": n, "addr": f"127.0.0.1:{ports(n, offset)[1]}"} for n in range(1, nodes + 1)]
    out = []
    for n in range(1, nodes + 1):
        ldap_port, raft_port, rest_port = ports(n, offset)
        d = (data / f"node{n}").resolve()
        d.mkdir(parents=True, exist_ok=True)
        cfg = {
            # the nodes share this machine's cores: one process each, not one per core each
            "server": {"address": f"127.0.0.1:{ldap_port}", "workers": 1},
            "directory": {"baseDN": BASE_DN, "rootDN": f"cn=admin,{BASE_DN}",
                          "rootPassword": "admin"},
            "storage": {"dataDir": str(d / "data")},
            "rest": {"enabled": True, "address": f"127.0.0.1:{rest_port}",
                     "jwtSecret": JWT_SECRET, "trustedProxies": ["127.0.0.1"]},
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
    try:  # reap it first when it is our own child (the tests start nodes in-process)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie nobody reaps (our parent gone, a PID 1 that does not reap) is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _pid(node_dir: Path) -> int | None:
    return _read_pid(node_dir / "oba.pid")


def node_dirs(data: Path) -> list[Path]:
    return sorted((p for p in data.glob("node*") if p.is_dir()), key=lambda p: p.name)


def _config_ports(node_dir: Path) -> dict[str, int]:
    """{"ldapPort", "raftPort", "restPort"} read back from the node's config file."""
    try:
        cfg = yaml.safe_load((node_dir / "config.yaml").read_text())
        return {
            "ldapPort": int(cfg["server"]["address"].rsplit(":", 1)[1]),
            "raftPort": int(cfg["cluster"]["raftAddr"].rsplit(":", 1)[1]),
            "restPort": int(cfg["rest"]["address"].rsplit(":", 1)[1]),
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return {}


def status(data: Path) -> list[dict[str, Any]]:
    out = []
    for d in node_dirs(data):
        pid = _pid(d)
        entry: dict[str, Any] = {"node": d.name, "pid": pid, "running": pid is not None}
        entry.update(_config_ports(d))
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


def _terminate(pid: int, timeout: float) -> str:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        return f"killed pid {pid}"
    return f"stopped pid {pid}"


def stop(data: Path, timeout: float = 10.0) -> list[str]:
    """SIGTERM HAProxy and every node by their pid files (SIGKILL after ``timeout``)."""
    done = stop_haproxy(data, timeout)
    for d in node_dirs(data):
        pid = _pid(d)
        if pid is None:
            continue
        done.append(f"{d.name}: {_terminate(pid, timeout)}")
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
        default_ldap, default_raft, default_rest = ports(int(s["nodeId"]), 0)
        ldap_port = s.get("ldapPort", default_ldap)
        raft_port = s.get("raftPort", default_raft)
        rest_port = s.get("restPort", default_rest)
        lines.append(
            f"{s['node']}: pid {s['pid']} {s['state']:<9} term {s['term']} leader "
            f"{s['leaderId'] or '-'} commit {s['commitIndex']} applied {s['lastApplied']}  "
            f"ldap://127.0.0.1:{ldap_port} raft 127.0.0.1:{raft_port} "
            f"http://127.0.0.1:{rest_port}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- HAProxy


def haproxy_binary() -> str:
    """Path of Debian's haproxy (it lives in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError(f"haproxy not found: apt-get install {HAPROXY_PACKAGE}")
    return found


def haproxy_pid(data: Path) -> int | None:
    return _read_pid(data / "haproxy" / "haproxy.pid")


def start_haproxy(data: Path, nodes: list[HaproxyNode], listen: HaproxyPorts) -> int:
    """Write ``<data>/haproxy/haproxy.cfg``, check it with ``haproxy -c`` and start
    ``haproxy -db -f`` detached; returns its PID (also in ``haproxy.pid``). Idempotent."""
    running = haproxy_pid(data)
    if running is not None:
        return running
    exe = haproxy_binary()
    d = (data / "haproxy").resolve()
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "haproxy.cfg"
    cfg.write_text(render_local_haproxy(nodes, listen))
    check = subprocess.run([exe, "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=60)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy rejected {cfg}:\n{check.stdout}{check.stderr}")
    with open(d / "haproxy.log", "ab") as out:
        proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=d,
                                start_new_session=True)
    (d / "haproxy.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def stop_haproxy(data: Path, timeout: float = 10.0) -> list[str]:
    pid_file = data / "haproxy" / "haproxy.pid"
    pid = haproxy_pid(data)
    if pid is None:
        return []
    try:
        return [f"haproxy: {_terminate(pid, timeout)}"]
    finally:
        pid_file.unlink(missing_ok=True)


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET (None when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def wait_proxy_leader(listen: HaproxyPorts, timeout: float) -> bool:
    """Poll HAProxy's REST port until the cluster health check answers 200 (a leader is used)."""
    url = f"http://127.0.0.1:{listen.rest}{HEALTH_PATH}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(url, 1.0) == 200:
            return True
        time.sleep(0.1)
    return False


def access_table(nodes: list[HaproxyNode], listen: HaproxyPorts | None) -> str:
    """The access points of a running local cluster, as a Markdown-style table."""
    rows = [("Service", "Port", "URL")]
    if listen is not None:
        rows += [
            ("LDAP via HAProxy (all live nodes)", str(listen.ldap),
             f"ldap://localhost:{listen.ldap}"),
            ("REST via HAProxy (the leader)", str(listen.rest),
             f"http://localhost:{listen.rest}"),
            ("HAProxy stats", str(listen.stats), f"http://localhost:{listen.stats}"),
        ]
    for n in nodes:
        rows.append((f"{n.name} LDAP", str(n.ldap_port), f"ldap://localhost:{n.ldap_port}"))
    for n in nodes:
        rows.append((f"{n.name} REST", str(n.rest_port), f"http://localhost:{n.rest_port}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]

    def line(cells: tuple[str, str, str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), sep] + [line(r) for r in rows[1:]])


def run_local(data: Path, nodes: int = 3, haproxy: bool = False, wait: float = 15.0) -> int:
    """What ``oba cluster local [--haproxy]`` does: start, print status and access points.

    Returns the exit code: 1 when no leader was elected (or HAProxy never reached it)."""
    sts = start(data, nodes, wait)
    print(format_status(sts))
    if not any(s.get("state") == "leader" for s in sts):
        print(f"no leader elected yet; see {data}/nodeN/oba.log", file=sys.stderr)
        return 1
    listen = None
    if haproxy:
        listen = proxy_ports()
        pid = start_haproxy(data, proxy_nodes(nodes), listen)
        print(f"haproxy: pid {pid}, config {data / 'haproxy' / 'haproxy.cfg'}")
        if not wait_proxy_leader(listen, wait):
            print(f"HAProxy does not reach a leader; see {data}/haproxy/haproxy.log",
                  file=sys.stderr)
            return 1
    print()
    print(access_table(proxy_nodes(nodes), listen))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m oba.cluster.local [--nodes N] [--data DIR] [--haproxy | --stop]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m oba.cluster.local",
                                     description="A local Oba cluster, optionally with HAProxy.")
    parser.add_argument("--nodes", type=int, default=3, choices=range(1, 10), metavar="N")
    parser.add_argument("--data", default="./cluster-data")
    parser.add_argument("--haproxy", action="store_true", help="also start HAProxy in front")
    parser.add_argument("--stop", action="store_true", help="stop HAProxy and the nodes")
    args = parser.parse_args(argv)
    data = Path(args.data)
    if args.stop:
        for done in stop(data) or ["nothing running"]:
            print(done)
        return 0
    try:
        return run_local(data, args.nodes, args.haproxy)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover - command-line entry
    sys.exit(main())
