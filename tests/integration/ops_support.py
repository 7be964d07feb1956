"""Support for the operations tests (backup, import, metrics, user CLI): run ``oba`` commands.

Rules: every command runs as a subprocess of the repository's virtualenv with a clean
``OBA_*`` environment and a deadline; results carry the exit code and both outputs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from ._support import OBA_PYTHON, REPO


@dataclass
class Run:
    rc: int
    out: str
    err: str


def oba(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        stdin: str | None = None) -> Run:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OBA_")}
    base.update(env or {})
    proc = subprocess.run([str(OBA_PYTHON), "-m", "oba", *args], capture_output=True,
                          text=True, timeout=timeout, env=base, cwd=REPO, input=stdin)
    return Run(proc.returncode, proc.stdout, proc.stderr)
