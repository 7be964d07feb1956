"""Memory after a full read, and restart-to-first-answer time: Oba vs a private slapd.

Usage: .venv/bin/python bench/memory_restart.py [--users 100000] [--groups 1000]
       [--restarts 3] [--timeout 600]

Rules:
- One generated data set (bench/datagen.py) is loaded offline into both servers: Oba with
  ``oba import FILE --data-dir DIR`` (bench/run.py's ``start_oba``), slapd with ``slapadd -q``
  (bench/slapd.py's ``Slapd``); both listen only on 127.0.0.1.
- "Full read": one subtree search of the whole tree, ``(objectClass=*)``, as the root DN, every
  entry streamed and counted by a raw-socket client; then VmRSS (and VmHWM, the peak) is read
  from ``/proc/<pid>/status`` of each server, summed over the server's processes (Oba's
  listener workers too; the LMDB pages they share are counted once per process, so Oba's
  figure is an upper bound). Both servers get the same read.
- "Restart": the server is stopped by PID, started again on the same data, and timed from
  ``Popen`` to the first answered LDAP search (a base search of the suffix, polled every 10 ms
  on fresh connections); best of ``--restarts`` runs.
- Everything lives in temp dirs that are removed at the end; every process started here is
  stopped by its PID (also on error or Ctrl-C). The whole run is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datagen
import loadgen
import run as bench_run
import slapd

HOST = "127.0.0.1"
RSS_TARGET = 2.0
RESTART_TARGET_S = 2.0


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Oba's listener workers, ``server.workers``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(k) for k in kids)
    return out


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM…) of /proc/<pid>/status, summed over the process and its
    children (every process of the server counts; pages they share are counted in each)."""
    total = 0
    for p in _tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
                break
        else:
            raise RuntimeError(f"no {field} in /proc/{p}/status")
    return total


def _exchange(sock: socket.socket, request: bytes, final_id: int,
              on_pdu: Callable[[int], None] | None = None) -> int:
    """Send ``request``, read PDUs until the one with ``final_id`` that is not an entry;
    returns its result code."""
    sock.sendall(request)
    buf = bytearray()
    pos = 0
    while True:
        framed = loadgen.parse_pdu(buf, pos)
        if framed is None:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the connection")
            del buf[:pos]
            pos = 0
            buf += chunk
            continue
        end, mid, tag, code = framed
        pos = end
        if on_pdu is not None:
            on_pdu(tag)
        if mid == final_id and tag not in (loadgen.SEARCH_ENTRY, loadgen.SEARCH_REF):
            return code


def full_read(url: str, timeout: float) -> int:
    """Bind as the root DN and stream a whole-tree search; returns the number of entries."""
    host, port = loadgen.parse_url(url)
    count = 0

    def seen(tag: int) -> None:
        nonlocal count
        if tag == loadgen.SEARCH_ENTRY:
            count += 1

    with socket.create_connection((host, port), timeout=timeout) as sock:
        bind = loadgen.message(1, loadgen.bind_op(datagen.ROOT_DN, datagen.ROOT_PASSWORD))
        if _exchange(sock, bind, 1) != 0:
            raise RuntimeError(f"root bind refused by {url}")
        search = loadgen.message(2, loadgen.search_op(datagen.BASE_DN, 2,
                                                      loadgen.filter_present("objectClass")))
        code = _exchange(sock, search, 2, seen)
        if code != 0:
            raise RuntimeError(f"full read on {url} ended with result code {code}")
        sock.sendall(loadgen.message(3, loadgen.UNBIND_OP))
    return count


def answers(port: int) -> bool:
    """True when a base search of the suffix is answered with success on a new connection."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.settimeout(2.0)
            op = loadgen.search_op(datagen.BASE_DN, 0, loadgen.filter_present("objectClass"))
            return _exchange(sock, loadgen.message(1, op), 1) == 0
    except OSError:
        return False


def time_to_answer(start: Callable[[], subprocess.Popen[bytes]], port: int,
                   timeout: float) -> tuple[float, subprocess.Popen[bytes]]:
    """Start a server and poll until it answers; (seconds from Popen, the process)."""
    started = time.monotonic()
    proc = start()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if answers(port):
            return time.monotonic() - started, proc
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        time.sleep(0.01)
    slapd.stop_process(proc)
    raise RuntimeError(f"no answer on port {port} within {timeout:.0f}s")


def measure_rss(name: str, url: str, pid: int, timeout: float) -> dict[str, float]:
    before = proc_status_kib(pid, "VmRSS")
    started = time.monotonic()
    count = full_read(url, timeout)
    seconds = time.monotonic() - started
    after = proc_status_kib(pid, "VmRSS")
    peak = proc_status_kib(pid, "VmHWM")
    print(f"[bench] {name}: read {count} entries in {seconds:.1f}s; RSS {before / 1024:.0f} -> "
          f"{after / 1024:.0f} MiB (peak {peak / 1024:.0f} MiB)", file=sys.stderr, flush=True)
    return {"entries": count, "read_s": seconds, "rss_before_kib": before,
            "rss_kib": after, "hwm_kib": peak}


def restarts(name: str, proc: subprocess.Popen[bytes], cmd: list[str], cwd: Path, port: int,
             runs: int, keep: Callable[[subprocess.Popen[bytes]], None]) -> list[float]:
    """Stop ``proc``, restart ``cmd`` ``runs`` times, timing each start to its first answer."""
    times: list[float] = []
    current = proc
    for _ in range(runs):
        slapd.stop_process(current)
        seconds, current = time_to_answer(lambda: _spawn(cmd, cwd), port, 60.0)
        keep(current)
        times.append(seconds)
        print(f"[bench] {name}: restart answered in {seconds:.3f}s", file=sys.stderr,
              flush=True)
    return times


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("benchmark time limit reached")


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="oba-memrestart-"))
    procs: list[subprocess.Popen[bytes]] = []
    server: slapd.Slapd | None = None

    def keep(p: subprocess.Popen[bytes]) -> None:
        procs.append(p)

    try:
        ldif = tmp / "data.ldif"
        count = datagen.write_ldif(str(ldif), args.users, args.groups)
        log(f"generated {count} entries in {ldif}")
        port = slapd.free_port()
        config = tmp / "config.yaml"
        config.write_text(bench_run.oba_config(tmp, port, ""))
        started = time.monotonic()
        done = subprocess.run([str(bench_run.OBA_PYTHON), "-m", "oba", "import", str(ldif),
                               "--data-dir", str(tmp / "data"), "--config", str(config)],
                              capture_output=True, text=True, timeout=args.timeout,
                              check=False, cwd=bench_run.REPO)
        if done.returncode != 0:
            raise RuntimeError(f"oba import failed: {(done.stdout + done.stderr)[-2000:]}")
        log(f"oba: imported in {time.monotonic() - started:.1f}s")
        oba_cmd = [str(bench_run.OBA_PYTHON), "-m", "oba", "serve", "--config", str(config)]
        first, oba_proc = time_to_answer(lambda: _spawn(oba_cmd, bench_run.REPO), port, 120.0)
        keep(oba_proc)
        log(f"oba: first start answered in {first:.2f}s")
        oba_rss = measure_rss("oba", f"ldap://{HOST}:{port}", oba_proc.pid, args.timeout)

        server = slapd.Slapd(str(ldif), datagen.BASE_DN, datagen.ROOT_DN, datagen.ROOT_PASSWORD)
        server.start(timeout=120.0)
        assert server.proc is not None
        keep(server.proc)
        slapd_rss = measure_rss("slapd", server.url, server.pid, args.timeout)

        oba_times = restarts("oba", oba_proc, oba_cmd, bench_run.REPO, port, args.restarts,
                             keep)
        slapd_cmd = [slapd.SLAPD, "-d", "0", "-f", str(server.workdir / "slapd.conf"), "-h",
                     f"ldap://{HOST}:{server.port}/"]
        slapd_times = restarts("slapd", server.proc, slapd_cmd, server.workdir, server.port,
                               args.restarts, keep)
        report(args, oba_rss, slapd_rss, oba_times, slapd_times)
        return 0
    finally:
        for p in procs:
            slapd.stop_process(p)
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _spawn(cmd: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def report(args: argparse.Namespace, oba: dict[str, float], sl: dict[str, float],
           oba_times: list[float], slapd_times: list[float]) -> None:
    ratio = oba["rss_kib"] / sl["rss_kib"]
    print(f"entries read:          oba {oba['entries']:.0f}, slapd {sl['entries']:.0f}")
    print(f"RSS after full read:   oba {oba['rss_kib'] / 1024:8.1f} MiB   "
          f"slapd {sl['rss_kib'] / 1024:8.1f} MiB   ratio {ratio:.2f}x "
          f"(target <= {RSS_TARGET:g}x: {'met' if ratio <= RSS_TARGET else 'MISSED'})")
    print(f"peak RSS (VmHWM):      oba {oba['hwm_kib'] / 1024:8.1f} MiB   "
          f"slapd {sl['hwm_kib'] / 1024:8.1f} MiB")
    print(f"full read time:        oba {oba['read_s']:8.2f} s     slapd {sl['read_s']:8.2f} s")
    worst = max(oba_times)
    print(f"restart to 1st answer: oba {min(oba_times):8.3f} s     "
          f"slapd {min(slapd_times):8.3f} s   (best of {args.restarts}; worst oba "
          f"{worst:.3f} s, target < {RESTART_TARGET_S:g} s: "
          f"{'met' if worst < RESTART_TARGET_S else 'MISSED'})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=1_000)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(args.timeout))
    try:
        return run(args)
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    raise SystemExit(main())
