"""Support code for the integration suite: start/stop a real LDAP server and drive clients.

Rules:
- The target is chosen by ``OBA_TEST_TARGET``: ``oba`` (default) or ``slapd`` (a private OpenLDAP
  used as the reference implementation). Both get the same base DN, root DN and root password.
- Every process started here is stopped by its own PID; nothing is killed by name.
- Ports come from the kernel (bind to port 0); waits poll a condition under a deadline.
- A missing external tool makes the test FAIL with the Debian package to install.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ldap
import pytest

BASE_DN = "dc=example,dc=com"
ROOT_DN = "cn=admin,dc=example,dc=com"
ROOT_PW = "secret"
MAX_MESSAGE_SIZE = 1048576
REPO = Path(__file__).resolve().parents[2]
OBA_PYTHON = REPO / ".venv" / "bin" / "python"
SLAPD_SCHEMA_DIR = Path("/etc/ldap/schema")
SLAPD_MODULE_DIR = Path("/usr/lib/ldap")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def target_kind() -> str:
    """Return the configured target, ``oba`` or ``slapd``."""
    kind = os.environ.get("OBA_TEST_TARGET", "oba").strip().lower() or "oba"
    if kind not in ("oba", "slapd"):
        raise ValueError(f"OBA_TEST_TARGET must be 'oba' or 'slapd', not {kind!r}")
    return kind


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, chosen BELOW the kernel's ephemeral
    range: a port from bind(0) can be handed to some client connection as its source port
    while the server that should listen there restarts (seen as a bind to the wrong server)."""
    low = _ephemeral_low()
    while True:
        port = random.randrange(20000, max(20001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def wait_until(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``cond`` until it is true; raise ``TimeoutError`` naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def require_tool(name: str, package: str) -> str:
    """Absolute path of an executable, or fail the test naming the Debian package."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        pytest.fail(f"{name} not found: apt-get install {package}")
    return path


def connect(
    url: str, who: str | None = None, cred: str | None = None
) -> ldap.ldapobject.LDAPObject:
    """A python-ldap connection with timeouts; simple-bound when ``who`` is given."""
    conn = ldap.initialize(url)
    conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
    conn.set_option(ldap.OPT_TIMEOUT, 15.0)
    conn.set_option(ldap.OPT_REFERRALS, 0)
    if who is not None:
        conn.simple_bind_s(who, cred or "")
    return conn


def _slapd_conf(db_dir: Path) -> str:
    schemas = ("core", "cosine", "inetorgperson", "nis")
    lines = [f"include {SLAPD_SCHEMA_DIR / s}.schema" for s in schemas]
    lines += [
        f"modulepath {SLAPD_MODULE_DIR}",
        "moduleload back_mdb",
        "moduleload pw-sha2",
        "moduleload argon2",
        "moduleload sssvlv",
        f"pidfile {db_dir.parent / 'slapd.pid'}",
        "sizelimit 500",
        "database mdb",
        f'suffix "{BASE_DN}"',
        f'rootdn "{ROOT_DN}"',
        f"rootpw {ROOT_PW}",
        f"directory {db_dir}",
        "maxsize 104857600",
        "overlay sssvlv",
        "access to attrs=userPassword by self write by anonymous auth by * none",
        "access to * by * read",
    ]
    return "\n".join(lines) + "\n"


def _oba_conf(address: str, data_dir: Path) -> str:
    return (
        "server:\n"
        f'  address: "{address}"\n'
        f"  maxMessageSize: {MAX_MESSAGE_SIZE}\n"
        "directory:\n"
        f'  baseDN: "{BASE_DN}"\n'
        f'  rootDN: "{ROOT_DN}"\n'
        f'  rootPassword: "{ROOT_PW}"\n'
        "storage:\n"
        f'  dataDir: "{data_dir}"\n'
        "logging:\n"
        '  level: "info"\n'
    )


def _default_signals() -> None:
    """In the child before exec: undo an inherited SIG_IGN (pytest run as a background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class LdapServer:
    """One server process (Oba or slapd) owning ``workdir``; restartable on the same data."""

    kind: str
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}/"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def command(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.kind == "slapd":
            slapd = require_tool("slapd", "slapd")
            db_dir = self.workdir / "data"
            db_dir.mkdir(exist_ok=True)
            conf = self.workdir / "slapd.conf"
            conf.write_text(_slapd_conf(db_dir))
            return [slapd, "-d", "0", "-h", self.url, "-f", str(conf)]
        conf = self.workdir / "oba.yaml"
        conf.write_text(_oba_conf(f"127.0.0.1:{self.port}", self.workdir / "data"))
        return [str(OBA_PYTHON), "-m", "oba", "serve", "--config", str(conf)]

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "<no log>"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and wait until a root-DSE search answers."""
        cmd = self.command()
        # OBA_* variables override the config file: keep the developer's shell out of it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBA_")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                preexec_fn=_default_signals,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        try:
            wait_until(self._ready, timeout, f"{self.kind} to answer on {self.url}")
        except (TimeoutError, RuntimeError) as exc:
            self.stop(signal.SIGKILL)
            raise RuntimeError(
                f"{self.kind} server could not start ({' '.join(cmd)}): {exc}\n"
                f"--- server log ---\n{self.log_tail()}"
            ) from exc
        if self.kind == "slapd":
            self._ensure_base_entry()

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"process exited with code {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                pass
            conn = connect(self.url)
            try:
                conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["+"])
            finally:
                conn.unbind_s()
        except (OSError, ldap.LDAPError):
            return False
        return True

    def _ensure_base_entry(self) -> None:
        conn = connect(self.url, ROOT_DN, ROOT_PW)
        try:
            conn.add_s(
                BASE_DN,
                [
                    ("objectClass", [b"top", b"dcObject", b"organization"]),
                    ("dc", [b"example"]),
                    ("o", [b"example"]),
                ],
            )
        except ldap.ALREADY_EXISTS:
            pass
        finally:
            conn.unbind_s()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Signal the process by PID and wait for it; SIGKILL it if it outlives ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
                raise RuntimeError(f"{self.kind} ignored signal {sig} for {timeout}s") from None
        return proc.returncode


@dataclass
class ToolResult:
    """Outcome of one ldap-utils command: exit code (= LDAP result code) and output."""

    rc: int
    stdout: str
    stderr: str


def run_tool(
    name: str,
    url: str,
    args: Sequence[str],
    bind: tuple[str, str] | None = (ROOT_DN, ROOT_PW),
    stdin: str | bytes | None = None,
) -> ToolResult:
    """Run an ldap-utils client with simple auth (anonymous when ``bind`` is None)."""
    exe = require_tool(name, "ldap-utils")
    cmd = [exe, "-x", "-H", url]
    if bind is not None:
        cmd += ["-D", bind[0], "-w", bind[1]]
    cmd += list(args)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    env = dict(os.environ, LDAPNOINIT="1")
    done = subprocess.run(cmd, input=data, capture_output=True, timeout=30, env=env, check=False)
    return ToolResult(
        done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    )


@dataclass
class LdifEntry:
    """One entry of ldapsearch -LLL output; attribute names are keyed lower-case."""

    dn: str
    attrs: dict[str, list[bytes]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def get(self, attr: str) -> list[str]:
        return [v.decode() for v in self.attrs.get(attr.lower(), [])]

    def has(self, attr: str) -> bool:
        return attr.lower() in self.attrs


def parse_ldif(text: str) -> list[LdifEntry]:
    """Parse ``ldapsearch -LLL`` output (folded lines, ``::`` base64 values)."""
    entries: list[LdifEntry] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines: list[str] = []
        for raw in block.split("\n"):
            if raw.startswith("#"):
                continue
            if raw.startswith(" ") and lines:
                lines[-1] += raw[1:]
            elif raw:
                lines.append(raw)
        if not lines:
            continue
        current: LdifEntry | None = None
        for line in lines:
            name, sep, rest = line.partition(":")
            if not sep:
                raise ValueError(f"bad LDIF line: {line!r}")
            if rest.startswith(":"):
                value = base64.b64decode(rest[1:].strip())
            else:
                value = rest.strip().encode()
            if current is None:
                if name.lower() != "dn":
                    raise ValueError(f"LDIF record does not start with dn: {line!r}")
                current = LdifEntry(value.decode())
                continue
            current.attrs.setdefault(name.lower(), []).append(value)
            current.names.setdefault(name.lower(), name)
        assert current is not None
        entries.append(current)
    return entries
