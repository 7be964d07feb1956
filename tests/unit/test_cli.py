"""The `oba` command line, driven through Typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from oba import __version__
from oba.cli import app
from oba.config import MASK, Config

runner = CliRunner()

COMMANDS = [
    [],
    ["serve"],
    ["version"],
    ["config"],
    ["config", "init"],
    ["config", "validate"],
    ["config", "show"],
]

GOOD = """
server:
  address: "127.0.0.1:1389"
directory:
  baseDN: dc=example,dc=com
  rootDN: cn=admin,dc=example,dc=com
  rootPassword: s3cret
storage:
  dataDir: ./data
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OBA_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "oba.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_every_option_has_help_text() -> None:
    from typer.main import get_command

    def walk(command: Any) -> None:
        assert command.help, command.name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{command.name} {param.name}"
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(get_command(app))


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert f"oba {__version__}" in result.output
    assert "python" in result.output
    short = runner.invoke(app, ["version", "--short"])
    assert short.output == f"{__version__}\n"


def test_config_init_prints_loadable_defaults(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "init"])
    assert result.exit_code == 0
    assert result.output.startswith("# Oba configuration")
    data = yaml.safe_load(result.output)
    assert data["server"]["address"] == ":389"
    assert data["logging"]["level"] == "info"


def test_config_validate_ok(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = runner.invoke(app, ["config", "validate", "--config", path])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_config_validate_reports_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  adress: x\n  readTimeout: soon\n")
    result = runner.invoke(app, ["config", "validate", "--config", path])
    assert result.exit_code == 1
    assert f"{path}:2: server.adress: unknown key" in result.output
    assert f"{path}:3: server.readTimeout: invalid duration" in result.output
    assert "Traceback" not in result.output


def test_config_validate_runs_semantic_checks(tmp_path: Path) -> None:
    path = write(tmp_path, "directory:\n  baseDN: dc=example,dc=com\n  rootDN: cn=admin\n")
    result = runner.invoke(app, ["config", "validate", "-c", path])
    assert result.exit_code == 1
    assert f"{path}:3: directory.rootPassword: must be set" in result.output


def test_config_validate_requires_config() -> None:
    result = runner.invoke(app, ["config", "validate"])
    assert result.exit_code == 2


def test_config_show_masks_and_applies_env(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    env = {"OBA_LOGGING_LEVEL": "debug"}
    result = runner.invoke(app, ["config", "show", "--config", path], env=env)
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    data = yaml.safe_load(result.output)
    assert data["directory"]["rootPassword"] == MASK
    assert data["logging"]["level"] == "debug"
    as_json = runner.invoke(app, ["config", "show", "-c", path, "--format", "json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["directory"]["rootPassword"] == MASK


def test_config_show_without_file_shows_defaults() -> None:
    result = runner.invoke(app, ["config", "show", "--format", "json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["server"]["address"] == ":389"


def test_config_show_bad_format_is_usage_error() -> None:
    assert runner.invoke(app, ["config", "show", "--format", "xml"]).exit_code == 2


def test_unknown_command_is_usage_error() -> None:
    assert runner.invoke(app, ["frobnicate"]).exit_code == 2


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    seen: list[Config] = []
    examples: list[bool] = []
    module = types.ModuleType("oba.app")
    module.examples = examples  # type: ignore[attr-defined]

    def serve(config: Config, example_data: bool = False, config_path: str | None = None) -> int:
        seen.append(config)
        examples.append(example_data)
        return 0

    module.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "oba.app", module)
    return seen


def test_serve_applies_flags_then_env(
    tmp_path: Path, fake_app: list[Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.chdir(tmp_path)
    args = ["serve", "--config", path, "--address", "127.0.0.1:2389", "--data-dir", "db"]
    args += ["--tls-address", "127.0.0.1:2636", "--log-level", "warn"]
    result = runner.invoke(app, args, env={"OBA_LOGGING_LEVEL": "error"})
    assert result.exit_code == 0, result.output
    (cfg,) = fake_app
    assert cfg.server.address == "127.0.0.1:2389"
    assert cfg.server.tlsAddress == "127.0.0.1:2636"
    assert cfg.storage.dataDir == str(tmp_path / "db")
    assert cfg.logging.level == "error"  # the environment wins over flags


def test_serve_example_data_flag(tmp_path: Path, fake_app: list[Config]) -> None:
    path = write(tmp_path, GOOD)
    assert runner.invoke(app, ["serve", "-c", path]).exit_code == 0
    assert runner.invoke(app, ["serve", "-c", path, "--example-data"]).exit_code == 0
    assert sys.modules["oba.app"].examples == [False, True]  # type: ignore[attr-defined]


def test_serve_returns_the_server_exit_code(
    tmp_path: Path, fake_app: list[Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sys.modules["oba.app"]
    module.serve = lambda config: 1  # type: ignore[attr-defined]
    result = runner.invoke(app, ["serve", "--config", write(tmp_path, GOOD)])
    assert result.exit_code == 1


def test_serve_config_error_has_no_traceback(tmp_path: Path, fake_app: list[Config]) -> None:
    path = write(tmp_path, "server:\n  address: nowhere\n")
    result = runner.invoke(app, ["serve", "--config", path])
    assert result.exit_code == 1
    assert f"{path}:2: server.address" in result.output
    assert "Traceback" not in result.output
    assert fake_app == []


def test_serve_bad_log_level_is_usage_error(fake_app: list[Config]) -> None:
    assert runner.invoke(app, ["serve", "--log-level", "loud"]).exit_code == 2


def test_python_dash_m_oba_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oba", "version", "--short"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{__version__}\n"
