"""Property-based check of the whole OpenAPI contract: no input makes the REST API answer 5xx.

Runs schemathesis's CLI against a private Oba (it may change that server's config and ACL
rules), authenticated as the root DN so every route's real code runs, with few examples per
operation and a hard time bound. ``GET /api/v1/events`` is left out: an event stream never ends,
so every call would only wait for the request timeout (its own tests are in tests/security).
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
from pathlib import Path

import pytest

from ._support import REPO, ROOT_DN, ROOT_PW
from .rest_support import running_rest_server

TIME_BOUND = 90.0
ENDLESS = ("/api/v1/events",)  # streams that never end on their own


def test_no_server_errors(tmp_path_factory: pytest.TempPathFactory) -> None:
    exe = REPO / ".venv" / "bin" / "schemathesis"
    assert exe.exists(), "pip install schemathesis (the test extra)"
    auth = base64.b64encode(f"{ROOT_DN}:{ROOT_PW}".encode()).decode()
    with running_rest_server(Path(tmp_path_factory.mktemp("rest-fuzz"))) as srv:
        cmd = [
            str(exe), "run", f"{srv.base_url}/openapi.json",
            "--checks", "not_a_server_error",
            "--max-examples", "8",
            "--phases", "examples,coverage,fuzzing",
            "--header", f"Authorization: Basic {auth}",
            "--request-timeout", "10",
            "--seed", "4242",
            "--no-shrink",
            "--workers", "1",
        ]
        for path in ENDLESS:
            cmd += ["--exclude-path", path]
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIME_BOUND,
                              check=False, cwd=tmp_path_factory.getbasetemp())
        elapsed = time.monotonic() - started
        log = srv.log_tail(5000)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, f"schemathesis found failures:\n{report}\n--- server ---\n{log}"
    assert "Traceback" not in log, log
    assert elapsed < TIME_BOUND
    tested = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", done.stdout)
    assert tested, report
    selected, total, ran = (int(tested.group(i)) for i in (1, 2, 3))
    assert selected == ran == total - len(ENDLESS), report
    cases = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert cases and int(cases.group(1)) >= 100 and cases.group(1) == cases.group(2), report
