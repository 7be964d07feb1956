"""The `oba` command line (Typer): serve, config init/validate/show, version.

Rules for this module:
- Command and flag names follow the original Oba (`--config`, `--address`, `--tls-address`,
  `--data-dir`, `--log-level`, `--format`, `--short`).
- Exit codes: 0 success, 1 runtime or configuration error, 2 usage error (Click's own).
- Configuration errors are printed as their `FILE:LINE: key: message` lines, never as a
  stack trace.
- The server itself lives in `oba.app`; it is imported only when `serve` runs, so the other
  commands stay fast and work without the server's dependencies.
"""

from __future__ import annotations

import importlib
import platform
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, cast

import typer
from rich.console import Console

from oba import __version__
from oba.config import ConfigError, dump_config, load_config, render_default_yaml

app = typer.Typer(
    name="oba",
    help="Oba: an LDAP v3 directory server with a built-in Raft cluster mode.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(
    help="Create, check and inspect configuration files.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_app, name="config")

_err = Console(stderr=True, highlight=False, soft_wrap=True)


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warn = "warn"
    error = "error"


class OutputFormat(StrEnum):
    yaml = "yaml"
    json = "json"


ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML configuration file.", metavar="FILE"),
]


def _fail(error: ConfigError, heading: str = "configuration error") -> typer.Exit:
    _err.print(f"[bold red]{heading}:[/]", markup=True)
    for line in error.errors:
        _err.print(f"  {line}", markup=False)
    return typer.Exit(code=1)


@app.command()
def serve(
    config: ConfigOption = None,
    address: Annotated[
        str | None,
        typer.Option(help="LDAP listen address HOST:PORT (overrides server.address)."),
    ] = None,
    tls_address: Annotated[
        str | None,
        typer.Option(help="LDAPS listen address HOST:PORT (overrides server.tlsAddress)."),
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(help="Database directory (overrides storage.dataDir).", metavar="DIR"),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(help="Lowest level logged (overrides logging.level)."),
    ] = None,
    example_data: Annotated[
        bool,
        typer.Option(
            "--example-data",
            help="On first start (empty database) load the bundled example tree "
            "(dc=example,dc=com with users and groups) instead of only the base entry.",
        ),
    ] = False,
) -> None:
    """Run the directory server until SIGINT or SIGTERM.

    Settings come from built-in defaults, then the --config file, then these flags, then OBA_*
    environment variables (which win).
    """
    overrides: dict[str, object] = {
        "server.address": address,
        "server.tlsAddress": tls_address,
        "storage.dataDir": data_dir,
        "logging.level": log_level.value if log_level is not None else None,
    }
    try:
        cfg = load_config(config, overrides)
        cfg.validate_semantics()
    except ConfigError as exc:
        raise _fail(exc) from None
    server_module = importlib.import_module("oba.app")
    run = cast(Callable[..., int], server_module.serve)
    try:
        code = run(cfg, example_data=example_data, config_path=config)
    except OSError as exc:
        _err.print(f"error: {exc}", markup=False)
        raise typer.Exit(code=1) from None
    raise typer.Exit(code=code)


@config_app.command("init")
def config_init() -> None:
    """Print a commented configuration file holding every default."""
    sys.stdout.write(render_default_yaml())


@config_app.command("validate")
def config_validate(
    config: Annotated[
        str,
        typer.Option("--config", "-c", help="YAML configuration file to check.", metavar="FILE"),
    ],
) -> None:
    """Check a configuration file (with environment overrides); exit 1 listing every error."""
    try:
        cfg = load_config(config)
        cfg.validate_semantics()
    except ConfigError as exc:
        raise _fail(exc, f"{config} is not valid") from None
    typer.echo(f"{config}: valid")


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.yaml,
) -> None:
    """Print the effective configuration (file plus environment), secrets masked."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise _fail(exc) from None
    sys.stdout.write(dump_config(cfg, output_format.value, mask_secrets=True))


@app.command()
def version(
    short: Annotated[bool, typer.Option("--short", help="Print only the version number.")] = False,
) -> None:
    """Print Oba's version and the platform it runs on."""
    if short:
        typer.echo(__version__)
        return
    typer.echo(f"oba {__version__}")
    typer.echo(f"python {platform.python_version()} ({platform.python_implementation()})")
    typer.echo(f"platform {sys.platform}/{platform.machine()}")


# --------------------------------------------------------------------------- cluster
cluster_app = typer.Typer(
    help="Run and inspect a local Raft cluster (see oba.cluster.local).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(cluster_app, name="cluster")

DataOption = Annotated[
    str, typer.Option("--data", help="Directory holding nodeN/ (config, data, logs, pid).")
]


@cluster_app.command("local")
def cluster_local(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=9, help="Number of nodes.")] = 3,
    data: DataOption = "./cluster-data",
    haproxy: Annotated[
        bool,
        typer.Option("--haproxy", help="Also start HAProxy in front (Debian package haproxy)."),
    ] = False,
) -> None:
    """Start N nodes on 127.0.0.1 (LDAP 1389/2389/3389, Raft 4445-4447, REST 8081-8083)."""
    from pathlib import Path

    from oba.cluster import local

    raise typer.Exit(local.run_local(Path(data), nodes, haproxy))


@cluster_app.command("status")
def cluster_status(data: DataOption = "./cluster-data") -> None:
    """Print the state of each local node."""
    from pathlib import Path

    from oba.cluster import local

    typer.echo(local.format_status(local.status(Path(data))))


@cluster_app.command("stop")
def cluster_stop(data: DataOption = "./cluster-data") -> None:
    """Stop the local nodes by the PIDs in their pid files."""
    from pathlib import Path

    from oba.cluster import local

    for line in local.stop(Path(data)) or ["no node running"]:
        typer.echo(line)


UrlOption = Annotated[str, typer.Option("--url", help="REST URL of any node (a follower "
                                          "forwards to the leader).")]
DnOption = Annotated[str, typer.Option("--dn", help="Admin bind DN.")]
PasswordOption = Annotated[str, typer.Option("--password", envvar="OBA_ADMIN_PASSWORD",
                                             help="Admin password (or OBA_ADMIN_PASSWORD).")]


def _admin_result(status: int, body: dict[str, object]) -> None:
    import json

    if 200 <= status < 300:
        typer.echo(json.dumps(body, indent=2))
        return
    _err.print(f"error ({status or 'no answer'}): {body.get('error')}: {body.get('message')}",
               markup=False)
    raise typer.Exit(1)


@cluster_app.command("add")
def cluster_add(
    node_id: Annotated[int, typer.Option("--id", min=1, help="The new member's node id.")],
    addr: Annotated[str, typer.Option("--addr", help="Its Raft address HOST:PORT.")],
    url: UrlOption = "http://127.0.0.1:8081",
    dn: DnOption = "cn=admin,dc=example,dc=com",
    password: PasswordOption = "",
) -> None:
    """Add a voting member to a running cluster (start it with peers = members + itself)."""
    from oba.cluster import admin

    _admin_result(*admin.add_member(url, node_id, addr, dn, password))


@cluster_app.command("remove")
def cluster_remove(
    node_id: Annotated[int, typer.Option("--id", min=1, help="The member to remove.")],
    url: UrlOption = "http://127.0.0.1:8081",
    dn: DnOption = "cn=admin,dc=example,dc=com",
    password: PasswordOption = "",
) -> None:
    """Remove a member from a running cluster (the leader hands over first if it is the one)."""
    from oba.cluster import admin

    _admin_result(*admin.remove_member(url, node_id, dn, password))


@cluster_app.command("transfer")
def cluster_transfer(
    to: Annotated[int, typer.Option("--to", min=0, help="Target id (0: most up to date).")] = 0,
    url: UrlOption = "http://127.0.0.1:8081",
    dn: DnOption = "cn=admin,dc=example,dc=com",
    password: PasswordOption = "",
) -> None:
    """Move leadership to another member."""
    from oba.cluster import admin

    _admin_result(*admin.transfer_leadership(url, to or None, dn, password))


# --------------------------------------------------------------------------- reload (H6b)
reload_app = typer.Typer(
    help="Ask a running server to reload part of its state (SIGHUP to its PID).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(reload_app, name="reload")


@reload_app.command("acl")
def reload_acl(
    pid_file: Annotated[
        str | None,
        typer.Option("--pid-file", "-pid-file", help="PID file of the server (default: "
                     "$OBA_PID_FILE, server.pidFile of --config, /var/run/oba.pid).",
                     metavar="FILE"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Re-read the ACL file (aclFile) of a running server; a broken file is logged by the
    server and the rules in force stay."""
    from oba.acl.control import pid_file_for, send_reload

    try:
        path = pid_file_for(pid_file, config)
    except ConfigError as exc:
        raise _fail(exc) from None
    ok, message = send_reload(path)
    if not ok:
        _err.print(f"error: {message}")
        raise typer.Exit(1)
    typer.echo(message)


# --------------------------------------------------------------------------- ops (H9)
# backup, restore, import, export and the user group live in oba.tools.cli_commands
_ops_commands = importlib.import_module("oba.tools.cli_commands")
_ops_commands.register(app)


def main() -> None:
    """Console-script entry point (`oba`)."""
    app(prog_name="oba")
