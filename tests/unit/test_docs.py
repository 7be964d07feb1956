"""The documentation cannot drift from the code: links, CLI commands and shell examples.

Rules: (a) every docs/*.md is linked from README's Documentation section and every docs link
there exists; (b) every `oba ...` command shown in code (fenced blocks and inline spans) of
README.md and docs/*.md names real subcommands and options of the CLI (read from the Typer app),
except on lines that say "planned"; (c) scripts/doccheck.py finds only well-formed markers
(each skip gives a reason) and, in the one SLOW test, runs every marked block against a live
local cluster with HAProxy (about 30-40 s; bounded by a timeout).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer

from oba.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
DOCCHECK_BUDGET = 90.0  # seconds for the whole doc-check run (it takes about 35 s)


def _doccheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("doccheck", ROOT / "scripts" / "doccheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["doccheck"] = module
    spec.loader.exec_module(module)
    return module


doccheck = _doccheck()


# --------------------------------------------------------------------------- (a) links


def _documentation_section() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Documentation\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match, "README.md has no '## Documentation' section"
    return match.group(1)


def test_every_doc_is_linked_from_the_readme() -> None:
    section = _documentation_section()
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)\)", section))
    missing = [f"docs/{p.name}" for p in DOCS if f"docs/{p.name}" not in linked]
    assert not missing, f"add to README's Documentation section: {missing}"
    broken = sorted(p for p in linked if not (ROOT / p).exists())
    assert not broken, f"README links to missing docs: {broken}"


# --------------------------------------------------------------------------- (b) CLI commands

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_OBA = re.compile(r"(?<![\w.-])oba[ \t]+(.*)")
_STOP = {"|", "||", "&&", ";", ">", ">>", "<", "<<", "2>&1", ")", "&"}


def _code_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, code text, whole line) of every code line and inline code span."""
    out: list[tuple[int, str, str]] = []
    in_fence = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            out.append((number, line, line))
        else:
            out += [(number, span, line) for span in _CODE_SPAN.findall(line)]
    return out


def _tokens(rest: str) -> list[str]:
    out = []
    for raw in rest.split():
        token = raw.strip("[]\"'`,")
        if raw in _STOP or token in _STOP or raw.startswith(("<<", ">", "|", "#", "$(")):
            break
        out.append(token)
    return out


def _check_command(tokens: list[str]) -> str | None:
    """None when `oba <tokens>` names an existing command and options, else the problem."""
    command: Any = typer.main.get_command(app)  # Typer vendors click: duck-type the groups
    path = ["oba"]
    rest = list(tokens)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        word = rest[0]
        if re.fullmatch(r"[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)+", word):  # `user lock|unlock`
            absent = [w for w in word.split("|") if w not in command.commands]
            return f"{' '.join(path)} has no subcommand {absent}" if absent else None
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            return None if len(path) == 1 else f"{' '.join(path)}: bad subcommand {word!r}"
        sub = command.commands.get(word)
        if sub is None:
            return f"{' '.join(path)} has no subcommand {word!r}"
        command, path = sub, [*path, word]
        rest = rest[1:]
    if len(path) == 1:
        return None  # `oba` alone or followed by something that is not a command name
    known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    known |= {"--help", "-h"}
    for token in rest:
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            if name not in known:
                return f"{' '.join(path)} has no option {name}"
    return None


def _doc_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in [ROOT / "README.md", *DOCS]:
        for number, code, line in _code_lines(path):
            if "planned" in line.lower():
                continue
            for match in _OBA.finditer(code):
                found.append((f"{path.relative_to(ROOT)}:{number}", _tokens(match.group(1))))
    return found


def test_docs_show_oba_commands() -> None:
    commands = {" ".join(t[:2]) for _, t in _doc_commands()}
    assert {"serve", "config validate", "cluster status"} <= {c.split(" --")[0] for c in commands}


def test_every_oba_command_in_the_docs_exists() -> None:
    problems = [f"{where}: {problem}" for where, tokens in _doc_commands()
                if (problem := _check_command(tokens)) is not None]
    assert not problems, "\n".join(problems)


def test_command_checker_rejects_unknown_commands_and_options() -> None:
    assert _check_command(["cluster", "status", "--data", "x"]) is None
    assert _check_command(["serve", "--config", "f.yaml"]) is None
    assert _check_command(["oba:latest", "config"]) is None
    assert _check_command(["nosuch"]) == "oba has no subcommand 'nosuch'"
    assert _check_command(["config", "init|show"]) is None
    assert _check_command(["config", "init|nope"]) == "oba config has no subcommand ['nope']"
    assert _check_command(["cluster", "bogus"]) == "oba cluster has no subcommand 'bogus'"
    assert _check_command(["config", "validate", "--nope"]) == \
        "oba config validate has no option --nope"


# --------------------------------------------------------------------------- (c) doc-check


def test_doccheck_finds_markers_and_skip_reasons(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text(
        "<!-- doccheck -->\n```bash\necho run\n```\n\n"
        "<!-- doccheck: skip docker: no engine -->\n\n```bash\ndocker ps\n```\n"
        "<!-- doccheck: skip -->\n```bash\necho bad\n```\n"
        "```bash\necho unmarked\n```\n"
        "<!-- doccheck -->\n```sh\necho not bash\n```\n")
    found = list(doccheck.blocks(md))
    assert [(b.line, b.marked, b.skip) for b in found] == [
        (2, True, None), (8, True, "docker: no engine"), (12, True, ""), (15, False, None)]
    assert found[0].code == "echo run\n"


def test_doccheck_shifts_only_standard_ports() -> None:
    code = "curl http://localhost:8081/x; for p in 1389 2389; do :; done; echo 81389 18080 4445"
    assert doccheck.substitute(code, 1000) == (
        "curl http://localhost:9081/x; for p in 2389 3389; do :; done; echo 81389 18080 5445")


def test_every_skip_marker_in_the_docs_has_a_reason() -> None:
    marked = [b for f in doccheck.doc_files() for b in doccheck.blocks(f) if b.marked]
    assert [b for b in marked if b.skip is None], "no doc block is checked at all"
    no_reason = [b.where for b in marked if b.skip is not None and not b.skip.strip()]
    assert not no_reason, f"skip markers without a reason: {no_reason}"
    listing = subprocess.run([sys.executable, str(ROOT / "scripts" / "doccheck.py"), "--list"],
                             capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0, listing.stdout


def test_docs_of_this_issue_have_checked_blocks() -> None:
    for name in ("getting-started.md", "operations.md", "troubleshooting.md"):
        run = [b for b in doccheck.blocks(ROOT / "docs" / name) if b.marked and b.skip is None]
        assert len(run) >= 3, f"docs/{name} has too few checked blocks"


# SLOW (about 35 s): starts a 3-node cluster and HAProxy and runs every marked block.
@pytest.mark.timeout(DOCCHECK_BUDGET + 30)
def test_doccheck_runs_every_marked_block_against_a_live_cluster() -> None:
    # Popen, not run(): on a timeout doccheck gets SIGTERM and stops its cluster by PID.
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "doccheck.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=DOCCHECK_BUDGET)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"doccheck took longer than {DOCCHECK_BUDGET}s:\n{out[-8000:]}")
    print(out[-3000:])
    assert proc.returncode == 0, out[-8000:] + err[-2000:]
    assert "blocks passed" in out
