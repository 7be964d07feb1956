#!/usr/bin/env python3
"""Run the shell examples of the docs against a live local cluster, so no example goes stale.

Rules:
- Which blocks: a fenced ```bash block in README.md or docs/*.md whose last non-blank line
  before the fence is ``<!-- doccheck -->`` is run; ``<!-- doccheck: skip REASON -->`` marks a
  block that cannot run here (REASON is mandatory, e.g. ``docker`` when there is no engine).
  Unmarked blocks are not touched.
- What they run against: the doc checker starts its own 3-node cluster plus HAProxy with
  ``python -m oba.cluster.local --haproxy`` (the code behind ``make cluster-haproxy``) in a
  temporary directory, loads the example tree (src/oba/data/example.ldif) through HAProxy, and
  stops everything by PID at the end.
- Ports: the docs use the standard ports (node LDAP 1389/2389/3389/4389, Raft 4445-4448, REST
  8081-8084, HAProxy LDAP 10389, REST 8080, stats 8404, a scratch server on 1390). The checker
  shifts every port by a free offset (``OBA_DOCCHECK_OFFSET`` to choose it) and rewrites each
  of those numbers in a block (as a whole number, not inside a longer one) to the shifted port
  before running it; the blocks also see ``OBA_LOCAL_PORT_OFFSET`` so ``oba cluster ...``
  commands find the same cluster.
- Environment of a block: ``bash -e -o pipefail``, working directory a scratch directory where
  ``./cluster-data`` is the live cluster's data directory (blocks may leave files there), the
  virtualenv's ``bin`` first on PATH. Blocks run in order (README.md, then docs/*.md sorted),
  each within ``--timeout`` seconds; any non-zero exit fails the run (exit 1) and prints the
  block and its output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STANDARD_PORTS = (1389, 1390, 2389, 3389, 4389, 4445, 4446, 4447, 4448, 8080, 8081, 8082, 8083,
                  8084, 8404, 10389)
MARK = re.compile(r"^<!--\s*doccheck(?::\s*skip\b\s*(?P<reason>.*?))?\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
_PORT = re.compile(r"(?<!\d)(" + "|".join(str(p) for p in STANDARD_PORTS) + r")(?!\d)")


@dataclass(frozen=True)
class Block:
    """A ```bash block of a Markdown file and how it is marked."""

    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    marked: bool  # preceded by a doccheck marker (run or skip)
    skip: str | None  # the skip reason ("" when the marker has none), None when run

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}" \
               f":{self.line}"


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks(path: Path) -> Iterator[Block]:
    """Every fenced ```bash block of ``path`` with its marker."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if fence.group("lang") != "bash":
            continue
        prev = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.match(prev)
        skip = None if mark is None or mark.group("reason") is None else mark.group("reason")
        yield Block(path, start + 1, "\n".join(body) + "\n", mark is not None, skip)


def substitute(code: str, offset: int) -> str:
    """Shift every standard port number in ``code`` by ``offset``."""
    return _PORT.sub(lambda m: str(int(m.group(1)) + offset), code)


def _ports_free(offset: int) -> bool:
    for port in STANDARD_PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + offset))
            except OSError:
                return False
    return True


def free_offset() -> int:
    """An offset that keeps every port BELOW the kernel's ephemeral range (the docs restart a
    killed node on its port: a client's source port must not have taken it meanwhile)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = max(1001, low - max(STANDARD_PORTS) - 1)
    for _ in range(50):
        offset = random.randrange(1000, top, 11)
        if _ports_free(offset):
            return offset
    raise RuntimeError("no free port offset found")


def _load_example(ldap_port: int) -> None:
    """The example tree through HAProxy (-c: the base entry exists already)."""
    ldif = ROOT / "src" / "oba" / "data" / "example.ldif"
    deadline = time.monotonic() + 15
    while True:
        res = subprocess.run(
            ["ldapadd", "-c", "-x", "-H", f"ldap://127.0.0.1:{ldap_port}",
             "-D", "cn=admin,dc=example,dc=com", "-w", "admin", "-f", str(ldif)],
            capture_output=True, text=True, timeout=30)
        check = subprocess.run(
            ["ldapsearch", "-x", "-LLL", "-H", f"ldap://127.0.0.1:{ldap_port}",
             "-b", "uid=eve,ou=users,dc=example,dc=com", "-s", "base", "1.1"],
            capture_output=True, text=True, timeout=30)
        if check.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not load the example tree:\n{res.stderr}{check.stderr}")
        time.sleep(0.2)


@contextlib.contextmanager
def live_cluster(work: Path, offset: int) -> Iterator[Path]:
    """A running local cluster + HAProxy in ``work/cluster-data``; stopped on exit.

    Started by a separate ``python -m oba.cluster.local`` process, as ``make cluster-haproxy``
    does, so the nodes are not this process's children (a block may kill one)."""
    data = work / "cluster-data"
    env = dict(os.environ, OBA_LOCAL_PORT_OFFSET=str(offset))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "oba.cluster.local", "--nodes", "3", "--data", str(data)]
    try:
        res = subprocess.run([*cmd, "--haproxy"], env=env, capture_output=True, text=True,
                             timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"the local cluster did not start:\n{res.stdout}{res.stderr}")
        _load_example(10389 + offset)
        yield data
    finally:
        subprocess.run([*cmd, "--stop"], env=env, capture_output=True, timeout=60)


def run_block(block: Block, offset: int, cwd: Path, timeout: float) -> tuple[bool, str]:
    env = dict(os.environ)
    env["OBA_LOCAL_PORT_OFFSET"] = str(offset)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    code = substitute(block.code, offset)
    try:
        res = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = b"".join(x if isinstance(x, bytes) else x.encode() for x in (exc.stdout, exc.stderr)
                       if x)
        return False, f"timed out after {timeout}s\n{out.decode(errors='replace')}"
    return res.returncode == 0, f"exit {res.returncode}\n{res.stdout}{res.stderr}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("files", nargs="*", type=Path, help="default: README.md and docs/*.md")
    parser.add_argument("--list", action="store_true", help="only list the marked blocks")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per block")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every output")
    args = parser.parse_args(argv)
    files = [p.resolve() for p in args.files] or doc_files()
    found = [b for f in files for b in blocks(f) if b.marked]
    bad = [b for b in found if b.skip == ""]
    for b in bad:
        print(f"{b.where}: skip marker without a reason")
    if args.list or bad:
        for b in found:
            print(f"{b.where}: {'skip: ' + b.skip if b.skip is not None else 'run'}")
        return 1 if bad else 0
    to_run = [b for b in found if b.skip is None]
    if not to_run:
        print("no block to run")
        return 0
    # SIGTERM (a test's timeout) unwinds through the finally blocks: the cluster is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = os.environ.get("OBA_DOCCHECK_OFFSET")
    offset = int(chosen) if chosen else free_offset()
    failures = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="doccheck-") as tmp:
        work = Path(tmp)
        with live_cluster(work, offset):
            for block in to_run:
                t0 = time.monotonic()
                ok, output = run_block(block, offset, work, args.timeout)
                print(f"{'ok  ' if ok else 'FAIL'} {block.where} ({time.monotonic() - t0:.1f}s)")
                if args.verbose and ok:
                    print(output)
                if not ok:
                    failures += 1
                    print("---- block (ports shifted by", offset, ")")
                    print(substitute(block.code, offset), end="")
                    print("---- output")
                    print(output)
                    for log in sorted((work / "cluster-data").glob("node*/oba.log")):
                        tail = log.read_text(errors="replace").splitlines()[-12:]
                        print(f"---- {log.parent.name}/oba.log (last lines)", *tail, sep="\n")
    skipped = sum(1 for b in found if b.skip is not None)
    print(f"{len(to_run) - failures}/{len(to_run)} blocks passed, {skipped} skipped, "
          f"{time.monotonic() - started:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
