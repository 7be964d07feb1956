"""Side-by-side benchmark: Oba and a private OpenLDAP slapd on the same generated data.

Rules:
- One data set (``datagen``) is loaded into both servers: slapd offline with ``slapadd``, Oba
  with ``oba import`` when that command exists, else over LDAP as the root DN before measuring.
- ``--passwords cleartext``: the users' passwords are set in cleartext through each server, as
  an administrator creates users, so each stores what it hashes by default: both are loaded
  over LDAP (16 connections, the load timed and its server CPU counted), Oba with its default
  scheme (``{ARGON2}``, ``security.argon2``), slapd with OpenLDAP's argon2 module at its
  defaults as ``password-hash`` and ``ppolicy_hash_cleartext`` (bench/slapd.py). With the
  default ``--passwords ssha`` the ``{SSHA}`` values are loaded as given and Oba runs with
  ``security.rehashOnBind: false`` (slapd re-makes no hash on bind either).
- Every workload x concurrency runs against Oba, then slapd, with the same load generator;
  server CPU is utime+stime of the server's process tree from /proc, read just before and
  just after the measured phase (connection set-up is excluded).
- Everything started here runs in its own session and is stopped by PID in a ``finally`` block
  (also on Ctrl-C / SIGTERM). A server that cannot start is a clear error, not a hang.

Usage: ``python bench/run.py [--users 10000] [--clients 1,4,16] [--duration 10]
[--workloads bind,search-eq,...] [--passwords ssha|cleartext] [--only oba|slapd]
[--oba-url ldap://…] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datagen
import loadgen
import slapd

REPO = Path(__file__).resolve().parent.parent
OBA_PYTHON = REPO / ".venv" / "bin" / "python"
DEFAULT_WORKLOADS = "bind,search-eq,search-base,search-sub,modify"
OBA_INDEXES = {"objectClass": ["eq", "pres"], "uid": ["eq"], "cn": ["eq", "sub"],
               "mail": ["eq", "sub"]}


class BenchError(RuntimeError):
    """A server could not be started or loaded."""


@dataclass
class Server:
    name: str
    url: str
    pid: int | None  # None: started elsewhere, no CPU figures
    alive: Callable[[], bool] = field(default=lambda: True)


# --- Oba -----------------------------------------------------------------------------------


def oba_config(workdir: Path, port: int, extra_yaml: str, workers: int = 0) -> str:
    index_lines = "".join(f"    {attr}: [{', '.join(kinds)}]\n"
                          for attr, kinds in OBA_INDEXES.items())
    return (
        "server:\n"
        f"  address: 127.0.0.1:{port}\n"
        f"  workers: {workers}\n"
        "directory:\n"
        f"  baseDN: {datagen.BASE_DN}\n"
        f"  rootDN: {datagen.ROOT_DN}\n"
        f"  rootPassword: {datagen.ROOT_PASSWORD}\n"
        "storage:\n"
        f"  dataDir: {workdir / 'data'}\n"
        "  indexes:\n" + index_lines
        + "logging:\n"
        "  level: warn\n" + extra_yaml
    )


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _oba_import_command(config: Path, ldif: Path, data_dir: Path) -> list[str] | None:
    """The offline import command line, or None when this Oba has no ``import``."""
    probe = subprocess.run([str(OBA_PYTHON), "-m", "oba", "import", "--help"],
                           capture_output=True, text=True, timeout=60, check=False, cwd=REPO)
    if probe.returncode != 0:
        return None
    cmd = [str(OBA_PYTHON), "-m", "oba", "import", str(ldif), "--data-dir", str(data_dir)]
    if "--config" in probe.stdout:
        cmd += ["--config", str(config)]
    return cmd


def load_over_ldap(name: str, url: str, pid: int | None, users: int, cleartext: bool,
                   log: Callable[[str], None], loads: dict[str, dict[str, Any]]) -> None:
    """Add the data set over LDAP as the root DN (16 connections); the time and server CPU
    it took go to ``loads[name]`` (with cleartext passwords: every add hashes one)."""
    started = time.monotonic()
    cpu0 = slapd.tree_cpu_seconds(pid) if pid is not None else math.nan
    entries = ((e.dn, e.attrs) for e in datagen.generate(users, cleartext=cleartext))
    try:
        added = loadgen.load_entries(url, entries)
    except (loadgen.LoadError, OSError, TimeoutError) as exc:
        raise BenchError(f"loading {name} over LDAP failed: {exc}") from exc
    seconds = time.monotonic() - started
    cpu = (slapd.tree_cpu_seconds(pid) - cpu0) if pid is not None else math.nan
    loads[name] = {"entries": added, "seconds": seconds, "adds_per_sec": added / seconds,
                   "cpu_ms_per_add": cpu * 1000 / added if added else math.nan}
    log(f"{name}: loaded {added} entries over LDAP in {seconds:.1f}s "
        f"({added / seconds:.0f}/s, {loads[name]['cpu_ms_per_add']:.2f} ms CPU per add)")


@contextmanager
def start_oba(ldif: Path, users: int, port: int, extra_yaml: str,
              log: Callable[[str], None], workers: int = 0, cleartext: bool = False,
              loads: dict[str, dict[str, Any]] | None = None) -> Iterator[Server]:
    workdir = Path(tempfile.mkdtemp(prefix="oba-bench-oba-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        config = workdir / "config.yaml"
        config.write_text(oba_config(workdir, port, extra_yaml, workers))
        logfile = workdir / "oba.log"
        imported = False
        # cleartext passwords are hashed by the server: through LDAP, not the offline import
        import_cmd = None if cleartext else _oba_import_command(config, ldif, workdir / "data")
        if import_cmd is not None:
            log(f"oba: offline import: {' '.join(import_cmd)}")
            done = subprocess.run(import_cmd, capture_output=True, text=True, timeout=1800,
                                  check=False, cwd=REPO)
            if done.returncode != 0:
                raise BenchError(f"`oba import` failed ({done.returncode}):\n"
                                 f"{(done.stdout + done.stderr).strip()[-2000:]}")
            imported = True
        cmd = [str(OBA_PYTHON), "-m", "oba", "serve", "--config", str(config)]
        env = dict(os.environ)
        if not cleartext:  # {SSHA} yardstick: verify what is stored, as slapd does
            env["OBA_SECURITY_REHASH_ON_BIND"] = "false"
        with logfile.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                    start_new_session=True, env=env)
        try:
            slapd.wait_for_port("127.0.0.1", port, 60.0, proc)
        except RuntimeError as exc:
            raise BenchError(f"Oba did not start ({' '.join(cmd)}): {exc}\n"
                             f"--- {logfile} (last lines) ---\n{_log_tail(logfile)}") from exc
        # every listener process (server.workers) serves once the banner is printed
        deadline = time.monotonic() + 60.0
        while "Oba is serving LDAP on" not in logfile.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"Oba never logged that it is ready\n"
                                 f"--- {logfile} ---\n{_log_tail(logfile)}")
            time.sleep(0.05)
        url = f"ldap://127.0.0.1:{port}"
        if not imported:
            log(f"oba: loading {users} users over LDAP ...")
            try:
                load_over_ldap("oba", url, proc.pid, users, cleartext, log,
                               loads if loads is not None else {})
            except BenchError as exc:
                raise BenchError(f"{exc}\n--- {logfile} ---\n{_log_tail(logfile)}") from exc
        running = proc
        yield Server("oba", url, proc.pid, lambda: running.poll() is None)
    finally:
        if proc is not None:
            slapd.stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def start_slapd(ldif: Path, log: Callable[[str], None], users: int = 0, cleartext: bool = False,
                loads: dict[str, dict[str, Any]] | None = None) -> Iterator[Server]:
    """slapd loaded offline from ``ldif``; with ``cleartext``, the argon2 module and
    ``ppolicy_hash_cleartext`` on, ``ldif`` holding the tree's top only and the ``users``
    loaded over LDAP (slapadd runs no overlay: it would store the cleartext)."""
    server = slapd.Slapd(str(ldif), datagen.BASE_DN, datagen.ROOT_DN, datagen.ROOT_PASSWORD,
                         argon2=cleartext)
    try:
        started = time.monotonic()
        try:
            server.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise BenchError(str(exc)) from exc
        log(f"slapd: loaded and started in {time.monotonic() - started:.1f}s at {server.url}")
        proc = server.proc
        assert proc is not None
        if cleartext:
            load_over_ldap("slapd", server.url, server.pid, users, True, log,
                           loads if loads is not None else {})
        yield Server("slapd", server.url, server.pid, lambda: proc.poll() is None)
    finally:
        server.stop()


# --- measuring -----------------------------------------------------------------------------


def measure(server: Server, workload: str, clients: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    if not server.alive():
        return {"error": f"{server.name} is no longer running"}
    cpu: list[float] = []

    def read_cpu() -> None:
        if server.pid is not None:
            cpu.append(slapd.tree_cpu_seconds(server.pid))

    try:
        result = loadgen.run_load(server.url, workload, clients, processes=args.processes,
                                  duration=args.duration, max_ops=args.max_ops,
                                  users=args.users, on_start=read_cpu, on_end=read_cpu)
    except loadgen.LoadError as exc:
        return {"error": str(exc)}
    row = result.as_dict()
    row["cpu_ms_per_op"] = ((cpu[1] - cpu[0]) * 1000 / result.ops
                            if len(cpu) == 2 and result.ops else math.nan)
    row["cpu_util"] = (cpu[1] - cpu[0]) / result.elapsed if len(cpu) == 2 else math.nan
    return row


def _ratio(a: Any, b: Any) -> float:
    try:
        return float(a) / float(b) if float(b) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _fmt(value: Any, spec: str) -> str:
    if isinstance(value, (int, float)) and not math.isnan(value):
        return format(value, spec)
    return "-"


COLUMNS = ("workload", "clients", "oba ops/s", "slapd ops/s", "ratio", "oba cpu ms/op",
           "slapd cpu ms/op", "cpu ratio", "oba p50/p99 ms", "slapd p50/p99 ms")


def table_row(workload: str, clients: int, oba: dict[str, Any], sl: dict[str, Any]
              ) -> dict[str, Any]:
    return {
        "workload": workload, "clients": clients, "oba": oba, "slapd": sl,
        "ops_ratio": _ratio(oba.get("ops_per_sec"), sl.get("ops_per_sec")),
        "cpu_ratio": _ratio(oba.get("cpu_ms_per_op"), sl.get("cpu_ms_per_op")),
    }


def format_row(row: dict[str, Any]) -> list[str]:
    oba, sl = row["oba"], row["slapd"]

    def lat(r: dict[str, Any]) -> str:
        if "p50_ms" not in r:
            return "-"
        return f"{_fmt(r['p50_ms'], '.2f')}/{_fmt(r['p99_ms'], '.2f')}"

    return [row["workload"], str(row["clients"]), _fmt(oba.get("ops_per_sec"), ",.0f"),
            _fmt(sl.get("ops_per_sec"), ",.0f"), _fmt(row["ops_ratio"], ".2f"),
            _fmt(oba.get("cpu_ms_per_op"), ".3f"), _fmt(sl.get("cpu_ms_per_op"), ".3f"),
            _fmt(row["cpu_ratio"], ".2f"), lat(oba), lat(sl)]


def render_table(rows: list[dict[str, Any]]) -> str:
    cells = [list(COLUMNS)] + [format_row(r) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i > 0 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = []
    for row in rows:
        for name in ("oba", "slapd"):
            r = row[name]
            if r.get("error"):
                notes.append(f"{name} {row['workload']} x{row['clients']}: {r['error']}")
            elif r.get("errors"):
                notes.append(f"{name} {row['workload']} x{row['clients']}: {r['errors']} of "
                             f"{r['ops']} ops failed (first result code {r['first_error']})")
    return "\n".join(lines + [f"! {n}" for n in notes])


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Oba vs slapd side-by-side LDAP benchmark")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--max-ops", type=int, default=5_000_000)
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    p.add_argument("--passwords", choices=("ssha", "cleartext"), default="ssha",
                   help="ssha: {SSHA} values loaded as given (default); cleartext: set in "
                        "cleartext through each server, which hashes them (Oba: its default "
                        "{ARGON2}; slapd: argon2.so + ppolicy_hash_cleartext)")
    p.add_argument("--only", choices=("oba", "slapd"))
    p.add_argument("--oba-url", help="benchmark an already running, already loaded Oba")
    p.add_argument("--oba-pid", type=int, help="its PID, for CPU figures (with --oba-url)")
    p.add_argument("--oba-port", type=int, default=0, help="port for the Oba we start")
    p.add_argument("--oba-workers", type=int, default=0,
                   help="server.workers of the Oba we start (0: one process per core)")
    p.add_argument("--oba-extra-yaml", default="",
                   help="YAML text appended to the generated Oba config")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.add_argument("--cells", default="",
                   help="explicit workload:clients cells (e.g. search-eq:1,bind:16); "
                        "overrides --workloads x --clients")
    args = p.parse_args(argv)
    args.client_list = [int(c) for c in args.clients.split(",") if c.strip()]
    args.workload_list = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in args.workload_list:
        if w not in loadgen.WORKLOADS:
            p.error(f"unknown workload {w!r}; choose from {', '.join(loadgen.WORKLOADS)}")
    if not args.client_list or min(args.client_list) < 1:
        p.error("--clients needs positive integers")
    args.cell_list = [(w, c) for w in args.workload_list for c in args.client_list]
    if args.cells:
        args.cell_list = []
        for cell in args.cells.split(","):
            workload, _, clients = cell.strip().partition(":")
            if workload not in loadgen.WORKLOADS or not clients.isdigit() or int(clients) < 1:
                p.error(f"bad cell {cell!r}: want workload:clients")
            args.cell_list.append((workload, int(clients)))
    return args


def _json_safe(value: Any) -> Any:
    """NaN (no figure) becomes null so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" when unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    want_slapd = args.only != "oba"
    want_oba = args.only != "slapd"
    if want_slapd and not slapd.available():
        log("slapd is not installed; benchmarking Oba alone")
        want_slapd = False
    tmp = Path(tempfile.mkdtemp(prefix="oba-bench-"))
    try:
        ldif = tmp / "data.ldif"
        cleartext = args.passwords == "cleartext"
        count = datagen.write_ldif(str(ldif), args.users, cleartext=cleartext)
        log(f"generated {count} entries ({args.users} users, {args.passwords} passwords) "
            f"in {ldif}")
        top = tmp / "top.ldif"  # cleartext: slapadd the tree's top, add the rest over LDAP
        top.write_text("".join(datagen.to_ldif(datagen.structural_entries())))
        loads: dict[str, dict[str, Any]] = {}
        with ExitStack() as stack:
            servers: dict[str, Server] = {}
            if want_oba:
                if args.oba_url:
                    servers["oba"] = Server("oba", args.oba_url, args.oba_pid)
                else:
                    port = args.oba_port or slapd.free_port()
                    servers["oba"] = stack.enter_context(
                        start_oba(ldif, args.users, port, args.oba_extra_yaml, log,
                                  args.oba_workers, cleartext, loads))
            if want_slapd:
                servers["slapd"] = stack.enter_context(
                    start_slapd(top if cleartext else ldif, log, args.users, cleartext, loads))
            rows = []
            for workload, clients in args.cell_list:
                results: dict[str, dict[str, Any]] = {"oba": {}, "slapd": {}}
                for name, server in servers.items():
                    log(f"{name}: {workload} x{clients} for {args.duration:g}s")
                    results[name] = measure(server, workload, clients, args)
                rows.append(table_row(workload, clients, results["oba"], results["slapd"]))
        print(render_table(rows))
        for name, load in loads.items():
            print(f"load over LDAP, {name}: {load['entries']} entries in {load['seconds']:.1f}s "
                  f"= {load['adds_per_sec']:.0f} adds/s, {load['cpu_ms_per_add']:.2f} ms CPU "
                  "per add")
        if args.json:
            report = {
                "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(),
                            "platform": platform.platform(),
                            "python": platform.python_version()},
                "users": args.users, "duration": args.duration, "passwords": args.passwords,
                "loads": _json_safe(loads),
                "load_processes": args.processes, "rows": _json_safe(rows),
            }
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
            log(f"wrote {args.json}")
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
