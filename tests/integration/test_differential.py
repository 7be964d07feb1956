"""Differential test: every case file runs against Oba and a private slapd; outcomes must agree.

Rules: one pytest item per ``differential/cases/*.yaml``; both servers start once per module
(slapd with memberof/refint/sssvlv, see ``differential/servers.py``); each case works in its own
subtree. A failure lists every disagreeing op as a diff (slapd = reference, oba = candidate)
plus any case expectation slapd itself breaks. ``OBA_DIFF_ONLY=slapd`` (or ``oba``) runs the
cases against that server alone and checks only the cases' own expectations.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._support import LdapServer
from .differential.model import case_files, load_case
from .differential.normalise import comparable, render_diff
from .differential.runner import run_case
from .differential.servers import ReferenceSlapd, missing_modules


def _only() -> str | None:
    only = os.environ.get("OBA_DIFF_ONLY", "").strip().lower() or None
    if only not in (None, "slapd", "oba"):
        raise ValueError(f"OBA_DIFF_ONLY must be 'slapd' or 'oba', not {only!r}")
    return only


class ObaAsStored(LdapServer):
    """Oba keeping stored passwords as they are (``security.rehashOnBind: false``), as slapd
    does: a case that binds as a user and then compares its ``{SHA}`` value must not race the
    rehash that bind would start."""

    def command(self) -> list[str]:
        cmd = super().command()
        conf = self.workdir / "oba.yaml"
        conf.write_text(conf.read_text(encoding="utf-8")
                        + "security:\n  rehashOnBind: false\n", encoding="utf-8")
        return cmd


@pytest.fixture(scope="module")
def diff_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LdapServer]]:
    """The servers under comparison, started and answering."""
    only = _only()
    servers: dict[str, LdapServer] = {}
    if only in (None, "slapd"):
        missing = missing_modules()
        if missing:
            pytest.fail(f"slapd modules missing: {missing} (apt-get install slapd)", pytrace=False)
        servers["slapd"] = ReferenceSlapd.create(tmp_path_factory.mktemp("diff-slapd"))
    if only in (None, "oba"):
        servers["oba"] = ObaAsStored("oba", tmp_path_factory.mktemp("diff-oba"))
    failure = ""
    try:
        for srv in servers.values():
            srv.start()
    except RuntimeError as exc:
        failure = str(exc)
    try:
        if failure:
            pytest.fail(failure, pytrace=False)
        yield servers
    finally:
        for srv in servers.values():
            srv.stop()


@pytest.mark.parametrize("case_path", case_files(), ids=lambda p: Path(p).stem)
def test_case(case_path: Path, diff_servers: dict[str, LdapServer]) -> None:
    case = load_case(case_path)
    results = {}
    for name, srv in diff_servers.items():
        try:
            results[name] = run_case(srv.url, case)
        except RuntimeError as exc:  # the initial tree could not be built
            pytest.fail(f"{name}: {exc}\n--- {name} log ---\n{srv.log_tail(1500)}", pytrace=False)
    problems: list[str] = []
    ref_name = "slapd" if "slapd" in results else "oba"
    problems += [f"[{ref_name} breaks the case] {b}" for b in results[ref_name][1]]
    if len(results) == 2:
        ref, got = results["slapd"][0], results["oba"][0]
        for op, rec_ref, rec_got in zip(case.ops, ref, got, strict=True):
            left, right = comparable(rec_ref, rec_got)
            if left != right and "deliberate" in op:
                warnings.warn(
                    f"{case.name} {rec_ref['op']}: deliberate difference: {op['deliberate']}",
                    stacklevel=1,
                )
            elif left != right:
                detail = render_diff(left, right, "slapd", "oba")
                texts = f"slapd: {rec_ref.get('info') or rec_ref.get('desc') or '-'} | " + (
                    f"oba: {rec_got.get('info') or rec_got.get('desc') or '-'}"
                )
                problems.append(f"{rec_ref['op']}\n  ({texts})\n{detail}")
    if problems:
        pytest.fail(
            f"{case.name}: {len(problems)} problem(s) in {len(case.ops)} ops\n\n"
            + "\n\n".join(problems),
            pytrace=False,
        )
