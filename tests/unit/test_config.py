"""Configuration loading: defaults, file errors with lines, substitution, overrides, rendering."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
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
    assert "storage.indexes.uid[1]" in lines[2]


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
        "server:\n  tlsCert: /nonexistent/cert.pem\n",
    )
    cfg = load_config(path, env={})
    with pytest.raises(ConfigError) as info:
        cfg.validate_semantics()
    assert info.value.errors == [
        f"{path}:3: directory.rootPassword: must be set when directory.rootDN is set",
        f"{path}:5: server.tlsCert: tlsCert and tlsKey must be set together",
        f"{path}:5: server.tlsCert: file not found: /nonexistent/cert.pem",
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


# --------------------------------------------------------------------------- cluster checks

NODE = """\
directory:
  baseDN: dc=example,dc=com
  rootDN: cn=admin,dc=example,dc=com
  rootPassword: admin
storage:
  dataDir: /var/lib/oba
cluster:
  enabled: true
  nodeID: 1
  peers:
    - id: 1
      addr: "node1:4445"
    - id: 2
      addr: "10.0.0.2:4445"
    - id: 3
      addr: "[fd00::3]:4445"
"""


def semantic_errors(path: str) -> list[str]:
    cfg = load_config(path, env={})
    with pytest.raises(ConfigError) as info:
        cfg.validate_semantics()
    return info.value.errors


def pair(tmp_path: Path, name: str, ca: trustme.CA | None = None) -> tuple[str, str]:
    """(cert file, key file): a self-signed certificate (a trustme CA's own), or a leaf issued
    by ``ca`` (the leaf alone in its file)."""
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    if ca is None:
        own = trustme.CA()
        own.cert_pem.write_to_path(str(cert))
        own.private_key_pem.write_to_path(str(key))
    else:
        leaf = ca.issue_cert("127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def test_the_spec_cluster_block_is_valid(tmp_path: Path) -> None:
    load_config(write(tmp_path, NODE), env={}).validate_semantics()


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        ("nonsense", "invalid address 'nonsense': expected HOST:PORT, e.g. node1:4445"),
        (":4445", "invalid address ':4445': a peer needs a host (HOST:PORT, e.g. node1:4445)"),
        ("node2:0", "invalid address 'node2:0': expected HOST:PORT, e.g. node1:4445"),
        ("node2:99999", "invalid address 'node2:99999': expected HOST:PORT, e.g. node1:4445"),
        ("node2:", "invalid address 'node2:': expected HOST:PORT, e.g. node1:4445"),
        ("bad host:4445", "invalid address 'bad host:4445': 'bad host' is not a host name or "
                          "address"),
        ("::1:4445", "invalid address '::1:4445': put IPv6 hosts in brackets, [::1]:4445"),
        ("[nope]:4445", "invalid address '[nope]:4445': [nope] is no IPv6 address"),
    ],
)
def test_peer_address_must_be_host_and_port(tmp_path: Path, addr: str, message: str) -> None:
    path = write(tmp_path, NODE.replace('"10.0.0.2:4445"', repr(addr)))
    assert semantic_errors(path) == [f"{path}:14: cluster.peers[1].addr: {message}"]


@pytest.mark.parametrize("addr", ["node1:4445", "oba-node1:4445", "oba_node1:1", "10.0.0.1:4445",
                                  "node1.example.com.:4445",
                                  "[::1]:4445", "node1.example.com:65535"])
def test_good_peer_addresses(tmp_path: Path, addr: str) -> None:
    path = write(tmp_path, NODE.replace('"10.0.0.2:4445"', repr(addr)))
    load_config(path, env={}).validate_semantics()


def test_peer_address_error_in_a_flow_mapping_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, NODE + "    - {id: 4, addr: nonsense}\n")
    assert semantic_errors(path) == [
        f"{path}:17: cluster.peers[3].addr: invalid address 'nonsense': expected HOST:PORT, "
        "e.g. node1:4445"]


def test_list_item_type_errors_point_at_the_item(tmp_path: Path) -> None:
    path = write(tmp_path, NODE.replace("    - id: 3\n", "    - id: three\n"))
    (line,) = errors_of(path)
    assert line.startswith(f"{path}:15: cluster.peers[2].id: Input should be a valid integer")


def test_every_cluster_problem_is_reported_at_once(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    path = write(tmp_path, NODE.replace('"10.0.0.2:4445"', "nonsense") + (
        f"  raftTLSCert: {missing}/raft.crt\n"
        f"  raftTLSKey: {missing}/raft.key\n"
        f"  raftTLSCA: {missing}/ca.pem\n"
        "server:\n"
        f"  tlsCert: {missing}/ldap.crt\n"
        f"  tlsKey: {tmp_path}\n"))
    assert semantic_errors(path) == [
        f"{path}:21: server.tlsCert: file not found: {missing}/ldap.crt",
        f"{path}:22: server.tlsKey: not a file: {tmp_path}",
        f"{path}:14: cluster.peers[1].addr: invalid address 'nonsense': expected HOST:PORT, "
        "e.g. node1:4445",
        f"{path}:17: cluster.raftTLSCert: file not found: {missing}/raft.crt",
        f"{path}:18: cluster.raftTLSKey: file not found: {missing}/raft.key",
        f"{path}:19: cluster.raftTLSCA: file not found: {missing}/ca.pem",
    ]


def test_raft_tls_files_are_checked_only_in_cluster_mode(tmp_path: Path) -> None:
    path = write(tmp_path, NODE.replace("enabled: true", "enabled: false")
                 + "  raftTLSCert: /missing/raft.crt\n  raftTLSKey: /missing/raft.key\n")
    load_config(path, env={}).validate_semantics()


def test_one_shared_self_signed_certificate_is_enough(tmp_path: Path) -> None:
    cert, key = pair(tmp_path, "raft")
    path = write(tmp_path, NODE + f"  raftTLSCert: {cert}\n  raftTLSKey: {key}\n")
    load_config(path, env={}).validate_semantics()


def test_a_leaf_alone_needs_raft_tls_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, key = pair(tmp_path, "node1", ca)
    path = write(tmp_path, NODE + f"  raftTLSCert: {cert}\n  raftTLSKey: {key}\n")
    (line,) = semantic_errors(path)
    assert line.startswith(f"{path}:17: cluster.raftTLSCA: must be set: the certificate in "
                           f"cluster.raftTLSCert ({cert}) is not self-signed")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    load_config(write(tmp_path, NODE + f"  raftTLSCert: {cert}\n  raftTLSKey: {key}\n"
                      f"  raftTLSCA: {ca_file}\n"), env={}).validate_semantics()


def test_a_key_that_does_not_match_is_reported(tmp_path: Path) -> None:
    cert, _ = pair(tmp_path, "a")
    _, other_key = pair(tmp_path, "b")
    path = write(tmp_path, NODE + f"  raftTLSCert: {cert}\n  raftTLSKey: {other_key}\n"
                 f"server:\n  tlsCert: {cert}\n  tlsKey: {other_key}\n")
    assert semantic_errors(path) == [
        f"{path}:21: server.tlsKey: {other_key} is not the private key of the certificate in "
        f"server.tlsCert ({cert})",
        f"{path}:18: cluster.raftTLSKey: {other_key} is not the private key of the certificate "
        f"in cluster.raftTLSCert ({cert})",
    ]


def test_server_tls_files_that_are_not_pem(tmp_path: Path) -> None:
    cert, key = pair(tmp_path, "ldap")
    junk = tmp_path / "junk"
    junk.write_text("not pem\n")
    base = "directory:\n  baseDN: dc=example,dc=com\nserver:\n"
    assert semantic_errors(write(tmp_path, base + f"  tlsCert: {junk}\n  tlsKey: {key}\n")) == [
        f"{tmp_path}/oba.yaml:4: server.tlsCert: no PEM certificate in {junk}"]
    assert semantic_errors(write(tmp_path, base + f"  tlsCert: {cert}\n  tlsKey: {junk}\n")) == [
        f"{tmp_path}/oba.yaml:5: server.tlsKey: no PEM private key in {junk}"]
    load_config(write(tmp_path, base + f"  tlsCert: {cert}\n  tlsKey: {key}\n"),
                env={}).validate_semantics()


def test_raft_tls_ca_alone_is_an_error(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    path = write(tmp_path, NODE + f"  raftTLSCA: {ca_file}\n")
    assert semantic_errors(path) == [
        f"{path}:17: cluster.raftTLSCA: is set but raftTLSCert and raftTLSKey are not: Raft "
        "traffic would not be encrypted"]


def test_raft_tls_paths_from_the_environment_name_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, NODE)
    cfg = load_config(path, env={"OBA_CLUSTER_RAFT_TLS_CERT": "/missing/raft.crt",
                                 "OBA_CLUSTER_RAFT_TLS_KEY": "/missing/raft.key"})
    with pytest.raises(ConfigError) as info:
        cfg.validate_semantics()
    assert info.value.errors == [
        "<env OBA_CLUSTER_RAFT_TLS_CERT>: cluster.raftTLSCert: file not found: /missing/raft.crt",
        "<env OBA_CLUSTER_RAFT_TLS_KEY>: cluster.raftTLSKey: file not found: /missing/raft.key"]


def test_oba_config_validate_and_oba_serve_report_the_same_lines(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from oba.cli import app

    path = write(tmp_path, NODE.replace('"10.0.0.2:4445"', "nonsense")
                 + "  raftTLSCert: /missing/raft.crt\n  raftTLSKey: /missing/raft.key\n")
    expected = [
        f"{path}:14: cluster.peers[1].addr: invalid address 'nonsense': expected HOST:PORT, "
        "e.g. node1:4445",
        f"{path}:17: cluster.raftTLSCert: file not found: /missing/raft.crt",
        f"{path}:18: cluster.raftTLSKey: file not found: /missing/raft.key",
    ]
    runner = CliRunner()
    for args in (["config", "validate", "--config", path], ["serve", "--config", path]):
        result = runner.invoke(app, args, env={})
        assert result.exit_code == 1, result.output
        lines = [line.strip() for line in result.output.splitlines()]
        assert [line for line in lines if line.startswith(f"{path}:")] == expected, result.output
        assert "Traceback" not in result.output


def test_an_encrypted_server_key_is_reported_without_a_prompt(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    cert, key = tmp_path / "ldap.crt", tmp_path / "ldap.key"
    ca.cert_pem.write_to_path(str(cert))
    plain = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    key.write_bytes(plain.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.BestAvailableEncryption(b"pw")))
    path = write(tmp_path, f"directory:\n  baseDN: dc=example,dc=com\nserver:\n"
                           f"  tlsCert: {cert}\n  tlsKey: {key}\n")
    assert semantic_errors(path) == [
        f"{path}:5: server.tlsKey: the private key is encrypted; give an unencrypted key file"]


# --------------------------------------------------------------------------- password hashing


def test_password_hashing_defaults_are_openldaps_argon2_defaults() -> None:
    security = default_config().security
    assert (security.argon2.iterations, security.argon2.memoryKiB,
            security.argon2.parallelism) == (3, 4096, 1)
    assert security.rehashOnBind is True
    assert (security.hashThreads, security.hashQueue) == (0, 128)


def test_password_hashing_keys_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "security:\n  argon2:\n    iterations: 2\n    memoryKiB: 19456\n"
                           "  hashQueue: 16\n")
    env = {"OBA_SECURITY_ARGON2_PARALLELISM": "2", "OBA_SECURITY_ARGON2_ITERATIONS": "4",
           "OBA_SECURITY_HASH_THREADS": "3", "OBA_SECURITY_REHASH_ON_BIND": "false"}
    security = load_config(path, env=env).security
    assert (security.argon2.iterations, security.argon2.memoryKiB,
            security.argon2.parallelism) == (4, 19456, 2)  # the environment wins
    assert (security.hashThreads, security.hashQueue, security.rehashOnBind) == (3, 16, False)
    names = env_variables()
    for key in ("security.argon2.iterations", "security.argon2.memoryKiB",
                "security.argon2.parallelism", "security.rehashOnBind", "security.hashThreads",
                "security.hashQueue"):
        assert key in names.values()
    assert names["OBA_SECURITY_ARGON2_MEMORY_KIB"] == "security.argon2.memoryKiB"


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("security:\n  argon2:\n    iterations: 0\n", "security.argon2.iterations: Input should "
     "be greater than or equal to 1"),
    ("security:\n  argon2:\n    memoryKiB: 4\n", "security.argon2.memoryKiB: Input should be "
     "greater than or equal to 8"),
    ("security:\n  argon2:\n    memoryKiB: 99999999\n", "security.argon2.memoryKiB: Input "
     "should be less than or equal to 4194304"),
    ("security:\n  argon2:\n    parallelism: 65\n", "security.argon2.parallelism: Input "
     "should be less than or equal to 64"),
    ("security:\n  argon2:\n    memoryKiB: 16\n    parallelism: 4\n",
     "security.argon2.parallelism: 4 lanes need memoryKiB of at least 8 x 4 = 32 (it is 16)"),
    ("security:\n  hashQueue: -1\n", "security.hashQueue: Input should be greater than or "
     "equal to 0"),
    ("security:\n  hashThreads: many\n", "security.hashThreads: Input should be a valid "
     "integer"),
    ("security:\n  argon2:\n    memory: 4096\n", "security.argon2.memory: unknown key"),
])
def test_password_hashing_keys_are_validated(tmp_path: Path, yaml_text: str,
                                             message: str) -> None:
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert any(message in line for line in info.value.errors), info.value.errors
