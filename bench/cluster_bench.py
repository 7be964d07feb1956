"""Committed writes on a local 3-node Raft cluster vs one standalone node.

Usage: .venv/bin/python bench/cluster_bench.py [--clients 1,4,16] [--duration 3] [--max-ops N]
       [--users 200] [--json FILE]
       .venv/bin/python bench/cluster_bench.py --bind-flood 60 [--flood-clients 64] [--users 500]

Rules: every server is a real ``python -m oba serve`` process on 127.0.0.1 in a temp directory
(the cluster through tests/cluster/support.py), stopped by its PID at the end (also on error or
Ctrl-C). The workload is loadgen's ``modify`` (replace ``description`` of a random user, as the
root DN, one request outstanding per connection): each acknowledged modify is a committed write
(on the cluster: replicated to a majority, fsynced, applied). Measured through the leader's
LDAP port, through a follower's (forwarded to the leader), on a standalone node and on a
private OpenLDAP slapd (bench/slapd.py: durable back-mdb, same users loaded with ``slapadd``)
in the same run; each run is bounded by ``--duration`` seconds and ``--max-ops`` operations.
Prints a table and, per client count, the ratios cluster leader / slapd and cluster follower /
slapd (``--no-slapd`` skips slapd); ``--json`` also writes the results.

``--bind-flood SECONDS``: instead, a bind flood on a 3-node cluster (each node one listener
process, as ``oba cluster local`` writes it): ``--users`` users are added through the leader
with cleartext passwords (so Oba hashes them with its default scheme and parameters), then
``--flood-clients`` connections spread over the three nodes bind as random users for SECONDS,
while one connection runs loadgen's ``search-eq`` against the leader (a linearizable read: one
heartbeat round each). Reported: binds/s and their result codes, the search stream's p50/p99,
the nodes' CPU per bind, event-loop stall warnings in the nodes' logs, and every change of
leader or term seen while polling the nodes' status every 50 ms. Each load stream is its own
``bench/loadgen.py`` process, bounded by SECONDS and ``--flood-max-ops``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.cluster.support import (  # noqa: E402
    PYTHON,
    Cluster,
    free_ports,
    has_entry,
    wait_for,
)

import datagen  # noqa: E402
import loadgen  # noqa: E402
import slapd  # noqa: E402


def load_users(url: str, users: int, cleartext: bool = False) -> None:
    entries = ((e.dn, e.attrs) for e in datagen.generate(users, groups=0, cleartext=cleartext))
    loadgen.load_entries(url, entries, connections=4)


def start_standalone(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    (port,) = free_ports(1)
    d = root / "standalone"
    d.mkdir()
    cfg = d / "config.yaml"
    cfg.write_text(
        f"server:\n  address: 127.0.0.1:{port}\n"
        f"directory:\n  baseDN: {datagen.BASE_DN}\n  rootDN: {datagen.ROOT_DN}\n"
        f"  rootPassword: {datagen.ROOT_PASSWORD}\n"
        f"storage:\n  dataDir: {d / 'data'}\n  mapSize: 512MiB\n"
        f"logging:\n  level: warn\n  output: {d / 'server.log'}\n")
    out = open(d / "oba.log", "ab")
    proc = subprocess.Popen([PYTHON, "-m", "oba", "serve", "--config", str(cfg)],
                            stdout=out, stderr=subprocess.STDOUT, cwd=d)
    out.close()
    return proc, f"ldap://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def measure(target: str, url: str, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    r = loadgen.run_load(url, "modify", clients, processes=min(2, clients),
                         duration=args.duration, max_ops=args.max_ops, users=args.users)
    return {"target": target, "clients": clients, "ops": r.ops, "errors": r.errors,
            "writes_per_sec": round(r.ops_per_sec, 1), "p50_ms": round(r.p50_ms, 2),
            "p99_ms": round(r.p99_ms, 2), "elapsed_s": round(r.elapsed, 2)}


def _reachable(url: str) -> bool:
    import ldap

    try:
        c = ldap.initialize(url)
        c.set_option(ldap.OPT_NETWORK_TIMEOUT, 2.0)
        c.simple_bind_s(datagen.ROOT_DN, datagen.ROOT_PASSWORD)
        c.unbind_s()
        return True
    except ldap.LDAPError:
        return False


def measure_slapd(root: Path, clients: list[int], args: argparse.Namespace
                  ) -> list[dict[str, Any]]:
    """The same modify workload on a private slapd loaded offline with the same users."""
    if not slapd.available():
        print("slapd is not installed: no slapd cell", file=sys.stderr)
        return []
    ldif = root / "users.ldif"
    datagen.write_ldif(str(ldif), args.users, 0)
    server = slapd.Slapd(str(ldif), datagen.BASE_DN, datagen.ROOT_DN, datagen.ROOT_PASSWORD)
    try:
        server.start()
        return [measure("slapd", server.url, c, args) for c in clients]
    finally:
        server.stop()


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Per client count: cluster leader and follower writes/s over slapd's."""
    by = {(r["target"], r["clients"]): r["writes_per_sec"] for r in rows}
    lines = []
    for c in sorted({r["clients"] for r in rows}):
        base = by.get(("slapd", c))
        if not base:
            continue
        parts = [f"{t} {by[(t, c)] / base:.2f}x" for t in ("cluster-leader", "cluster-follower",
                                                           "standalone") if (t, c) in by]
        lines.append(f"{c:>3} clients, vs slapd {base:.0f}/s: {', '.join(parts)}")
    return lines


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    clients = [int(c) for c in args.clients.split(",")]
    targets = set(args.targets.split(","))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="oba-cluster-bench-") as tmp:
        root = Path(tmp)
        cluster = Cluster(root / "cluster")
        proc: subprocess.Popen[bytes] | None = None
        try:
            cluster.start()
            lead = cluster.wait_ready(30)
            load_users(lead.url, args.users)
            last = datagen.user_dn(args.users)
            for nd in cluster.nodes:
                wait_for(lambda nd=nd: has_entry(nd, last), 30, f"data on node {nd.id}")
            follower = next(nd for nd in cluster.nodes if nd is not lead)
            for c in clients:
                lead = cluster.wait_leader(10)
                if "leader" in targets:
                    rows.append(measure("cluster-leader", lead.url, c, args))
                follower = next(nd for nd in cluster.nodes if nd is not lead)
                if "follower" in targets:
                    rows.append(measure("cluster-follower", follower.url, c, args))
            cluster.close()
            if "standalone" in targets:
                proc, url = start_standalone(root)
                wait_for(lambda: _reachable(url), 30, "standalone node")
                load_users(url, args.users)
                for c in clients:
                    rows.append(measure("standalone", url, c, args))
                stop(proc)
            if not args.no_slapd:
                rows += measure_slapd(root, clients, args)
        finally:
            cluster.close()
            if proc is not None:
                stop(proc)
    return rows


# --- bind flood ---------------------------------------------------------------------------


class LeaderWatch:
    """Polls every node's status.json every ``interval`` seconds in a thread; records each
    (term, leader id) a node reports and the polls in which no node said it was leader."""

    def __init__(self, cluster: Cluster, interval: float = 0.05) -> None:
        self.cluster = cluster
        self.interval = interval
        self.seen: list[tuple[float, int, int, int]] = []  # (t, node, term, leader)
        self.leaderless_polls = 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last: dict[int, tuple[int, int]] = {}
        while not self._stop.wait(self.interval):
            self.polls += 1
            leaders = 0
            for nd in self.cluster.nodes:
                st = nd.status()
                if st is None:
                    continue
                leaders += st["state"] == "leader"
                now = (int(st["term"]), int(st["leaderId"]))
                if last.get(nd.id) != now:
                    last[nd.id] = now
                    self.seen.append((time.monotonic(), nd.id, *now))
            self.leaderless_polls += leaders == 0

    def __enter__(self) -> LeaderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def changes(self) -> int:
        """Leader changes after the first leader seen: distinct (term, leader) pairs - 1."""
        pairs = {(term, leader) for _, _, term, leader in self.seen if leader}
        return max(0, len(pairs) - 1)


def run_loadgen(url: str, workload: str, clients: int, seconds: float, users: int,
                max_ops: int) -> tuple[subprocess.Popen[str], list[str]]:
    cmd = [PYTHON, str(ROOT / "bench" / "loadgen.py"), url, workload, "--clients", str(clients),
           "--processes", "1", "--duration", str(seconds), "--users", str(users),
           "--max-ops", str(max_ops)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT), cmd


def loadgen_result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The ``key: value`` lines ``bench/loadgen.py`` prints, as numbers where they are."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        return {"error": "load generator timed out"}
    if proc.returncode != 0:
        return {"error": out.strip()[-500:]}
    result: dict[str, Any] = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        try:
            result[key.strip()] = float(value) if "." in value or "nan" in value else int(value)
        except ValueError:
            result[key.strip()] = value
    return result


def _ms(value: Any) -> float | None:
    return round(float(value), 1) if isinstance(value, int | float) else None


def stall_warnings(cluster: Cluster) -> int:
    return sum(nd.server_log().count("the event loop was blocked") for nd in cluster.nodes)


def bind_flood(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.bind_flood
    with tempfile.TemporaryDirectory(prefix="oba-cluster-flood-") as tmp:
        cluster = Cluster(Path(tmp) / "cluster")
        for nd in cluster.nodes:
            cfg = yaml.safe_load(nd.config.read_text())
            cfg["server"]["workers"] = 1  # three nodes share the machine (oba cluster local)
            nd.config.write_text(yaml.safe_dump(cfg))
        procs: list[subprocess.Popen[str]] = []
        try:
            cluster.start()
            lead = cluster.wait_ready(30)
            started = time.monotonic()
            load_users(lead.url, args.users, cleartext=True)
            print(f"[flood] {args.users} users added with cleartext passwords in "
                  f"{time.monotonic() - started:.1f}s", file=sys.stderr)
            last = datagen.user_dn(args.users)
            for nd in cluster.nodes:
                wait_for(lambda nd=nd: has_entry(nd, last), 60, f"data on node {nd.id}")
            pids = [nd.proc.pid for nd in cluster.nodes if nd.proc is not None]
            stalls0 = stall_warnings(cluster)
            per_node = [args.flood_clients // 3 + (i < args.flood_clients % 3) for i in range(3)]
            with LeaderWatch(cluster) as watch:
                time.sleep(1.0)  # a baseline before the flood
                cpu0 = sum(slapd.tree_cpu_seconds(pid) for pid in pids)
                t0 = time.monotonic()
                cap = args.flood_max_ops
                floods = [run_loadgen(nd.url, "bind", n, seconds, args.users, cap)[0]
                          for nd, n in zip(cluster.nodes, per_node, strict=True) if n]
                search = run_loadgen(lead.url, "search-eq", 1, seconds, args.users, cap)[0]
                procs = [*floods, search]
                flood_results = [loadgen_result(p, seconds + 120) for p in floods]
                search_result = loadgen_result(search, seconds + 120)
                elapsed = time.monotonic() - t0
                cpu = sum(slapd.tree_cpu_seconds(pid) for pid in pids) - cpu0
                time.sleep(1.0)
            ops = sum(int(r.get("ops", 0)) for r in flood_results)
            return {
                "seconds": seconds, "clients": args.flood_clients, "per_node": per_node,
                "users": args.users, "leader_before": lead.id,
                "leader_changes": watch.changes(), "leaderless_polls": watch.leaderless_polls,
                "polls": watch.polls,
                "terms": sorted({term for _, _, term, _ in watch.seen}),
                "binds": ops, "binds_per_sec": ops / elapsed if elapsed else math.nan,
                "bind_errors": sum(int(r.get("errors", 0)) for r in flood_results),
                "bind_first_error": [r.get("first_error") for r in flood_results],
                "bind_p50_ms": [_ms(r.get("p50_ms")) for r in flood_results],
                "bind_p99_ms": [_ms(r.get("p99_ms")) for r in flood_results],
                "cpu_ms_per_bind": cpu * 1000 / ops if ops else math.nan,
                "search": search_result,
                "loop_stall_warnings": stall_warnings(cluster) - stalls0,
                "errors": [r["error"] for r in [*flood_results, search_result] if "error" in r],
            }
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            cluster.close()


def render_flood(r: dict[str, Any]) -> str:
    s = r["search"]
    return "\n".join([
        f"bind flood: {r['clients']} connections {r['per_node']} over 3 nodes for "
        f"{r['seconds']:g}s, {r['users']} users (cleartext through Oba: default scheme)",
        f"  binds: {r['binds']} ({r['binds_per_sec']:.0f}/s), {r['bind_errors']} not success "
        f"(first codes {r['bind_first_error']}), p50 {r['bind_p50_ms']} ms, "
        f"p99 {r['bind_p99_ms']} ms; nodes' CPU {r['cpu_ms_per_bind']:.2f} ms per bind",
        f"  search-eq on the leader: {s.get('ops')} ops, p50 {s.get('p50_ms', math.nan):.1f} ms, "
        f"p99 {s.get('p99_ms', math.nan):.1f} ms, {s.get('errors')} errors",
        f"  leader changes: {r['leader_changes']} (terms seen {r['terms']}, leaderless polls "
        f"{r['leaderless_polls']} of {r['polls']}); event-loop stall warnings: "
        f"{r['loop_stall_warnings']}",
        *(f"  ! {e}" for e in r["errors"]),
    ])


def render(rows: list[dict[str, Any]]) -> str:
    head = f"{'target':<18}{'clients':>8}{'writes/s':>11}{'p50 ms':>9}{'p99 ms':>9}" \
           f"{'ops':>8}{'errors':>8}"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["clients"], r["target"])):
        p50 = "-" if math.isnan(r["p50_ms"]) else f"{r['p50_ms']:.1f}"
        p99 = "-" if math.isnan(r["p99_ms"]) else f"{r['p99_ms']:.1f}"
        lines.append(f"{r['target']:<18}{r['clients']:>8}{r['writes_per_sec']:>11.0f}"
                     f"{p50:>9}{p99:>9}{r['ops']:>8}{r['errors']:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    ap.add_argument("--max-ops", type=int, default=20_000, help="operations cap per run")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--no-slapd", action="store_true", help="skip the slapd cell")
    ap.add_argument("--targets", default="leader,follower,standalone",
                    help="Oba targets to measure (comma-separated)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--bind-flood", type=float, default=0.0, metavar="SECONDS",
                    help="run the bind flood for SECONDS instead of the write benchmark")
    ap.add_argument("--flood-clients", type=int, default=64,
                    help="concurrent bind connections of the flood (spread over the nodes)")
    ap.add_argument("--flood-max-ops", type=int, default=1_000_000,
                    help="operations cap per load stream of the flood (its time bound is "
                         "--bind-flood)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    if args.bind_flood > 0:
        flood = bind_flood(args)
        print(render_flood(flood))
        print(f"({platform.python_version()}, {time.monotonic() - t0:.0f} s total)")
        if args.json:
            Path(args.json).write_text(json.dumps({"flood": flood, "args": vars(args)},
                                                  indent=2, default=str))
        ok = not flood["errors"] and flood["leader_changes"] == 0
        return 0 if ok else 1
    rows = run(args)
    print(render(rows))
    for line in ratios(rows):
        print(line)
    print(f"({platform.python_version()}, {time.monotonic() - t0:.0f} s total)")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": rows, "args": vars(args)}, indent=2))
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
