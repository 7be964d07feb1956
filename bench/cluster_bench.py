"""Committed writes on a local 3-node Raft cluster vs one standalone node.

Usage: .venv/bin/python bench/cluster_bench.py [--clients 1,4,16] [--duration 3] [--max-ops N]
       [--users 200] [--json FILE]

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
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def load_users(url: str, users: int) -> None:
    entries = ((e.dn, e.attrs) for e in datagen.generate(users, groups=0))
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
    args = ap.parse_args(argv)
    t0 = time.monotonic()
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
