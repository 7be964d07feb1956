"""Configuration loading: defaults, file errors with lines, substitution, overrides, rendering."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from oba.config import (
    MASK,
    ConfigError,
    default_config,
    dump_config,
    env_variables,
    format_duration,
    load_config,
    parse_duration,
    parse_size,
    render_config_reference,
    render_default_yaml,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "oba.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def errors_of(path: str | None, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, **kwargs)  # type: ignore[arg-type]
    return info.value.errors


def test_defaults_match_the_original() -> None:
    cfg = default_config()
    assert cfg.server.address == ":389"
    assert cfg.server.tlsAddress == ":636"
    assert cfg.server.maxConnections == 10000
    assert cfg.server.readTimeout == timedelta(seconds=30)
    assert cfg.server.writeTimeout == timedelta(seconds=30)
    assert cfg.server.maxMessageSize == 10 * 1024 * 1024
    assert cfg.storage.dataDir == "/var/lib/oba"
    assert cfg.storage.indexes is None
    assert cfg.storage.mapSize == 16 * 1024**3
    assert (cfg.logging.level, cfg.logging.format, cfg.logging.output) == ("info", "text", "stdout")


def test_load_full_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
server:
  address: "127.0.0.1:1389"
  readTimeout: 150ms
  writeTimeout: 2d
  maxMessageSize: 1MiB
directory:
  baseDN: dc=example,dc=com
  rootDN: cn=admin,dc=example,dc=com
  rootPassword: secret
storage:
  dataDir: /srv/oba
  indexes:
    uid: [eq, pres]
    cn: [eq, sub]
  mapSize: 1GiB
logging:
  level: debug
  format: json
""",
    )
    cfg = load_config(path, env={})
    assert cfg.server.address == "127.0.0.1:1389"
    assert cfg.server.readTimeout == timedelta(milliseconds=150)
    assert cfg.server.writeTimeout == timedelta(days=2)
    assert cfg.server.maxMessageSize == 1024 * 1024
    assert cfg.directory.baseDN == "dc=example,dc=com"
    assert cfg.storage.indexes == {"uid": ["eq", "pres"], "cn": ["eq", "sub"]}
    assert cfg.storage.mapSize == 1024**3
    assert cfg.logging.level == "debug"


def test_unknown_key_reports_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  address: ':1389'\n  adress: x\n")
    assert errors_of(path) == [f"{path}:3: server.adress: unknown key"]


def test_unknown_section_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {}\n\nbogus:\n  a: 1\n")
    assert errors_of(path) == [f"{path}:3: bogus: unknown key"]


def test_wrong_type_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  maxConnections: lots\n")
    (line,) = errors_of(path)
    assert line.startswith(f"{path}:2: server.maxConnections: ")
    assert "integer" in line


def test_bad_duration_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "logging:\n  level: info\nserver:\n  readTimeout: 5 parsecs\n")
    (line,) = errors_of(path)
    assert line.startswith(f"{path}:4: server.readTimeout: invalid duration '5 parsecs'")


def test_all_errors_reported_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "logging:\n  level: loud\nserver:\n  address: nowhere\nstorage:\n"
        "  indexes:\n    uid: [eq, fuzzy]\n",
    )
    lines = errors_of(path)
    assert [line.split(": ")[0] for line in lines] == [f"{path}:2", f"{path}:4", f"{path}:7"]
    assert "logging.level" in lines[0]
    assert "server.address" in lines[1]
    assert "storage.indexes.uid.1" in lines[2]


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  address: ':1'\n  address: ':2'\n")
    assert errors_of(path) == [f"{path}:3: server.address: duplicate key"]


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  address: ':1'\n bad: [\n")
    (line,) = errors_of(path)
    assert line.startswith(f"{path}:")
    assert "invalid YAML" in line


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- server\n")
    assert "top level must be a mapping" in errors_of(path)[0]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    (line,) = errors_of(str(tmp_path / "absent.yaml"))
    assert "cannot read config file" in line


def test_empty_file_and_empty_section_mean_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}).server.address == ":389"
    assert load_config(write(tmp_path, "server:\n"), env={}).server.address == ":389"


def test_variable_substitution(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "directory:\n  baseDN: ${BASE}\n  rootPassword: ${PW:-fallback}\n"
        '  rootDN: "${UNSET_VAR}"\n',
    )
    cfg = load_config(path, env={"BASE": "dc=example,dc=org"})
    assert cfg.directory.baseDN == "dc=example,dc=org"
    assert cfg.directory.rootPassword == "fallback"
    assert cfg.directory.rootDN == ""
    cfg = load_config(path, env={"BASE": "o=x", "PW": "given"})
    assert cfg.directory.rootPassword == "given"


def test_precedence_file_then_cli_then_env(tmp_path: Path) -> None:
    path = write(
        tmp_path, "server:\n  address: ':1000'\n  tlsAddress: ':1001'\nlogging:\n  level: warn\n"
    )
    overrides = {
        "server.address": ":2000",
        "server.tlsAddress": ":2001",
        "logging": {"level": None},
    }
    env = {"OBA_SERVER_ADDRESS": ":3000"}
    cfg = load_config(path, overrides, env=env)
    assert cfg.server.address == ":3000"  # env wins over the command line
    assert cfg.server.tlsAddress == ":2001"  # command line wins over the file
    assert cfg.logging.level == "warn"  # None overrides are ignored


def test_env_overrides_every_scalar_key(tmp_path: Path) -> None:
    env = {
        "OBA_SERVER_TLS_ADDRESS": "127.0.0.1:1636",
        "OBA_SERVER_READ_TIMEOUT": "5m",
        "OBA_SERVER_MAX_CONNECTIONS": "12",
        "OBA_DIRECTORY_BASE_DN": "dc=example,dc=com",
        "OBA_DIRECTORY_ROOT_PASSWORD": "pw",
        "OBA_STORAGE_DATA_DIR": "/tmp/oba-data",
        "OBA_LOGGING_LEVEL": "error",
    }
    cfg = load_config(None, env=env)
    assert cfg.server.tlsAddress == "127.0.0.1:1636"
    assert cfg.server.readTimeout == timedelta(minutes=5)
    assert cfg.server.maxConnections == 12
    assert cfg.directory.baseDN == "dc=example,dc=com"
    assert cfg.directory.rootPassword == "pw"
    assert cfg.storage.dataDir == "/tmp/oba-data"
    assert cfg.logging.level == "error"


def test_env_variable_names_are_generated() -> None:
    names = env_variables()
    assert names["OBA_SERVER_ADDRESS"] == "server.address"
    assert names["OBA_SERVER_TLS_ADDRESS"] == "server.tlsAddress"
    assert names["OBA_DIRECTORY_BASE_DN"] == "directory.baseDN"
    assert names["OBA_DIRECTORY_ROOT_DN"] == "directory.rootDN"
    assert names["OBA_STORAGE_DATA_DIR"] == "storage.dataDir"
    assert names["OBA_LOGGING_OUTPUT"] == "logging.output"
    assert "OBA_STORAGE_INDEXES" not in names


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"OBA_SERVER_READ_TIMEOUT": "soon"})
    (line,) = info.value.errors
    assert line.startswith("<env OBA_SERVER_READ_TIMEOUT>: server.readTimeout: invalid duration")


def test_relative_paths_resolved_against_cwd(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "storage:\n  dataDir: ./data\nserver:\n  pidFile: run/oba.pid\n"
        "logging:\n  output: logs/oba.log\n",
    )
    cfg = load_config(path, env={}, cwd="/srv/work")
    assert cfg.storage.dataDir == "/srv/work/data"
    assert cfg.server.pidFile == "/srv/work/run/oba.pid"
    assert cfg.logging.output == "/srv/work/logs/oba.log"
    assert load_config(None, env={}, cwd="/x").logging.output == "stdout"
    assert load_config(None, env={}, cwd="/x").server.tlsCert == ""


def test_dump_masks_secrets_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, env={"OBA_DIRECTORY_ROOT_PASSWORD": "hunter2"})
    text = dump_config(cfg, "yaml")
    assert "hunter2" not in text
    assert yaml.safe_load(text)["directory"]["rootPassword"] == MASK
    data = json.loads(dump_config(cfg, "json"))
    assert data["directory"]["rootPassword"] == MASK
    assert data["server"]["readTimeout"] == "30s"
    plain = dump_config(cfg, "yaml", mask_secrets=False)
    again = load_config(write(tmp_path, plain), env={})
    assert again.model_dump() == cfg.model_dump()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("150ms", 0.15),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172800),
        ("1h30m", 5400),
        (45, 45),
        ("12", 12),
        (1.5, 1.5),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "m5", "1h 30m", "-3s", True, -1, [1]])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(seconds=30)) == "30s"
    assert format_duration(timedelta(milliseconds=150)) == "150ms"
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert format_duration(timedelta(0)) == "0s"


def test_parse_size() -> None:
    assert parse_size(4096) == 4096
    assert parse_size("10MiB") == 10 * 1024 * 1024
    assert parse_size("256MB") == 256_000_000
    with pytest.raises(ValueError):
        parse_size("ten")


def test_semantic_checks_name_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "directory:\n  baseDN: dc=example,dc=com\n  rootDN: cn=admin,dc=example,dc=com\n"
        "server:\n  tlsCert: /etc/cert.pem\n",
    )
    cfg = load_config(path, env={})
    with pytest.raises(ConfigError) as info:
        cfg.validate_semantics()
    assert info.value.errors == [
        f"{path}:3: directory.rootPassword: must be set when directory.rootDN is set",
        f"{path}:5: server.tlsCert: tlsCert and tlsKey must be set together",
    ]


def test_semantic_checks_reject_a_bad_base_dn(tmp_path: Path) -> None:
    path = write(tmp_path, "directory:\n  baseDN: 'not a dn'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}).validate_semantics()
    (line,) = info.value.errors
    assert line.startswith(f"{path}:2: directory.baseDN: invalid DN")


def test_semantic_checks_accept_a_good_config() -> None:
    env = {
        "OBA_DIRECTORY_BASE_DN": "dc=example,dc=com",
        "OBA_DIRECTORY_ROOT_DN": "cn=admin,dc=example,dc=com",
        "OBA_DIRECTORY_ROOT_PASSWORD": "admin",
    }
    load_config(None, env=env).validate_semantics()


def test_reference_page_is_up_to_date() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render_config_reference(), "regenerate with render_config_reference()"
    for name in env_variables():
        assert f"`{name}`" in committed


def test_example_config_is_the_default_yaml_and_loads(tmp_path: Path) -> None:
    committed = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    assert committed == render_default_yaml()
    loaded = load_config(write(tmp_path, committed), env={})
    assert loaded.model_dump() == default_config().model_dump()


def test_local_config_used_by_make_run_is_valid() -> None:
    cfg = load_config(str(REPO / "config.local.yaml"), env={}, cwd=REPO)
    cfg.validate_semantics()
    assert cfg.server.address == "127.0.0.1:1389"
    assert cfg.directory.baseDN == "dc=example,dc=com"
    assert cfg.directory.rootDN == "cn=admin,dc=example,dc=com"
    assert cfg.directory.rootPassword == "admin"
    assert cfg.storage.dataDir == str(REPO / "data")
