"""``oba reload acl``: ask a running server to re-read its ACL file (SIGHUP to its PID).

Rules for this module: the PID file is ``--pid-file``, else ``$OBA_PID_FILE``, else
``server.pidFile`` of ``--config``, else ``/var/run/oba.pid`` (the original's default). Errors
are returned as messages, never raised; the signal goes to exactly the PID in the file.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

DEFAULT_PID_FILE = "/var/run/oba.pid"


def pid_file_for(pid_file: str | None, config_path: str | None) -> str:
    if pid_file:
        return pid_file
    env = os.environ.get("OBA_PID_FILE", "").strip()
    if env:
        return env
    if config_path:
        from oba.config import load_config

        configured = str(load_config(config_path).server.pidFile or "")
        if configured:
            return configured
    return DEFAULT_PID_FILE


def send_reload(pid_file: str) -> tuple[bool, str]:
    """SIGHUP the process named in ``pid_file``; (ok, message)."""
    try:
        text = Path(pid_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        return False, f"cannot read PID file {pid_file}: {exc.strerror or exc}"
    try:
        pid = int(text.split()[0])
    except (ValueError, IndexError):
        return False, f"PID file {pid_file} does not hold a process id"
    if pid <= 1:
        return False, f"PID file {pid_file} holds an invalid process id {pid}"
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False, f"no process {pid} (from {pid_file}): is the server running?"
    except PermissionError:
        return False, f"not allowed to signal process {pid} (from {pid_file})"
    return True, f"sent SIGHUP to {pid}: the ACL file will be reloaded"
