"""Private OpenLDAP slapd for benchmarks, plus /proc CPU accounting shared with run.py.

Rules:
- Everything lives in one temp dir (config, mdb database, pid file); slapd listens only on
  ``ldap://127.0.0.1:<free port>/`` and runs in the foreground (``-d 0``) as our child, so
  its PID is the ``Popen`` PID; ``stop()`` signals that PID only (TERM, then KILL).
- Data is loaded offline with ``slapadd -q`` before slapd starts.
- ``argon2=True``: OpenLDAP's argon2 module (``argon2.so``, slappw-argon2(5), at its default
  parameters: Argon2i, t=3, m=4096 KiB, p=1) as ``password-hash {ARGON2}``, and the ppolicy
  overlay with ``ppolicy_hash_cleartext``, so that slapd hashes cleartext ``userPassword``
  values on add and modify as Oba does (slapadd does not run overlays: load such data over
  LDAP).
- back_mdb stays durable (no ``dbnosync``); indexes mirror Oba's benchmark configuration, and
  ``index_substr_any_len 3`` lets slapd's substring index serve ``*son*`` as Oba's 3-grams do
  (with the default 4, slapd scans the tree for a 3-character ``any``).
- ``cpu_seconds(pid)`` = utime + stime from ``/proc/<pid>/stat`` (all threads of the process);
  ``tree_cpu_seconds(pid)`` adds the live descendants (servers with worker processes).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
MODULE_PATH = "/usr/lib/ldap"
SCHEMA_DIR = "/etc/ldap/schema"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")
INDEXES = {"objectClass": "eq", "uid": "eq", "cn": "eq,sub", "mail": "eq,sub"}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def available() -> bool:
    return os.access(SLAPD, os.X_OK) and os.access(SLAPADD, os.X_OK)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds consumed so far by process ``pid``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (scanning /proc for parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` plus its live descendants (for multi-process servers)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            pass  # exited between the scan and the read
    return total


def wait_for_port(host: str, port: int, timeout: float, alive: subprocess.Popen[bytes]) -> None:
    """Poll until ``host:port`` accepts a connection; raise if the process dies or time ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive.poll() is not None:
            raise RuntimeError(f"process exited with code {alive.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process by PID, SIGKILL it if it has not exited within ``timeout``."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5.0)


def slapd_conf(workdir: Path, suffix: str, root_dn: str, root_pw: str,
               argon2: bool = False) -> str:
    lines = [f"include {SCHEMA_DIR}/{name}.schema" for name in SCHEMAS]
    lines += [
        f"pidfile {workdir}/slapd.pid",
        f"argsfile {workdir}/slapd.args",
        f"modulepath {MODULE_PATH}",
        "moduleload back_mdb",
    ]
    if argon2:
        lines += ["moduleload argon2", "moduleload ppolicy", "password-hash {ARGON2}"]
    lines += [
        "loglevel 0",
        "sizelimit unlimited",
        "index_substr_any_len 3",
        "access to attrs=userPassword by self read by anonymous auth by * none",
        "access to * by * read",
        "database mdb",
        "maxsize 4294967296",
        f'suffix "{suffix}"',
        f'rootdn "{root_dn}"',
        f"rootpw {root_pw}",
        f"directory {workdir}/db",
    ]
    lines += [f"index {attr} {kinds}" for attr, kinds in INDEXES.items()]
    if argon2:
        lines += ["overlay ppolicy", "ppolicy_hash_cleartext"]
    return "\n".join(lines) + "\n"


class Slapd:
    """A private slapd on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(self, ldif: str, suffix: str, root_dn: str, root_pw: str,
                 argon2: bool = False) -> None:
        self.ldif = ldif
        self.argon2 = argon2
        self.suffix = suffix
        self.root_dn = root_dn
        self.root_pw = root_pw
        self.workdir = Path(tempfile.mkdtemp(prefix="oba-bench-slapd-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("slapd is not running")
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        conf = self.workdir / "slapd.conf"
        (self.workdir / "db").mkdir()
        conf.write_text(slapd_conf(self.workdir, self.suffix, self.root_dn, self.root_pw,
                                   self.argon2))
        load = subprocess.run([SLAPADD, "-q", "-f", str(conf), "-l", self.ldif],
                              capture_output=True, text=True, timeout=600, check=False)
        if load.returncode != 0:
            raise RuntimeError(f"slapadd failed ({load.returncode}): {load.stderr.strip()}")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(conf), "-h", f"ldap://127.0.0.1:{self.port}/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_port("127.0.0.1", self.port, timeout, self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"slapd did not start: {exc}") from exc

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Slapd:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
