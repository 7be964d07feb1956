"""Real Oba processes serving the web admin, and the browser that drives them.

Rules: a node is ``python -m oba serve --config <file> --example-data`` with ``web.enabled`` on a
free port, stopped by its PID; the browser is Debian's Chromium (``/usr/bin/chromium``, package
``chromium``) driven by Playwright for Python — Playwright's own browser download is never used.
Every wait polls a condition against a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from cluster.support import free_ports, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
BASE = "dc=example,dc=com"
ADMIN = "cn=admin,dc=example,dc=com"
PASSWORD = "admin"
START_TIMEOUT = 30.0
T = TypeVar("T")


def free_port() -> int:
    return free_ports(1)[0]


def web_answers(url: str) -> bool:
    try:
        return httpx.get(url + "/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def launch_options() -> dict[str, Any]:
    """Playwright launch options for Debian's Chromium; fails naming the package if absent."""
    if not Path(CHROMIUM).exists():
        raise AssertionError(f"{CHROMIUM} is missing: install the Debian package `chromium` "
                             "(apt-get install -y chromium)")
    return {"executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}


@dataclass
class WebNode:
    """One standalone node with the example tree and the web admin on ``web_port``."""

    workdir: Path
    ldap_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = {
            "server": {"address": f"127.0.0.1:{self.ldap_port}"},
            "directory": {"baseDN": BASE, "rootDN": ADMIN, "rootPassword": PASSWORD},
            "storage": {"dataDir": str(self.workdir / "data"), "mapSize": "256MiB"},
            "logging": {"level": "info", "output": str(self.workdir / "server.log")},
            "web": {"enabled": True, "address": f"127.0.0.1:{self.web_port}"},
        }
        conf = self.workdir / "oba.yaml"
        conf.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBA_")}
        with (self.workdir / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oba", "serve", "--config", str(conf), "--example-data"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=self.workdir)
        try:
            wait_for(lambda: self._alive() and web_answers(self.url), START_TIMEOUT,
                     f"the web admin on {self.url}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"the node did not start; log:\n{self.log_tail()}") from None

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"the node exited; log:\n{self.log_tail()}")
        return True

    def log_tail(self, limit: int = 3000) -> str:
        parts = []
        for name in ("stdout.log", "server.log"):
            try:
                parts.append((self.workdir / name).read_text(errors="replace")[-limit:])
            except OSError:
                pass
        return "\n".join(parts)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
