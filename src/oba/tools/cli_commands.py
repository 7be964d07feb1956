"""The ``backup``, ``restore``, ``import``, ``export`` and ``user`` commands of ``oba``.

Rules for this module: registered on the main Typer app by ``register(app)`` (oba.cli). Exit
codes: 0 success, 1 the operation failed, 2 usage error, 3 the server cannot be reached, 4
authentication failed. Errors are one line on stderr, never a traceback. Heavy imports
(httpx, lmdb, the directory code) happen inside the commands. Tables and colours go through
rich, which drops colours when the output is not a terminal; ``--json`` prints plain JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from oba.tools.client import (
    DEFAULT_URL,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    ToolError,
)

_err = Console(stderr=True, highlight=False, soft_wrap=True)
_out = Console(highlight=False, soft_wrap=True)

UrlOpt = Annotated[str | None, typer.Option("--url", help="REST URL of a running node.",
                                            envvar="OBA_URL")]
DnOpt = Annotated[str | None, typer.Option("--dn", help="Admin bind DN (env OBA_ADMIN_DN).")]
PwOpt = Annotated[str | None, typer.Option("--password",
                                           help="Admin password (env OBA_ADMIN_PASSWORD).")]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", metavar="DIR",
                                                help="Database directory (offline mode).")]
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", metavar="FILE",
                                               help="Server configuration (schema, indexes).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


class BackupFormat(StrEnum):
    native = "native"
    ldif = "ldif"


def _die(code: int, message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", markup=True)
    return typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Map every expected failure to a message and an exit code."""
    from oba.config import ConfigError
    from oba.storage.lmdbstore import IncompleteImport
    from oba.tools.backup import BackupError
    from oba.tools.bulk import ImportRefused
    from oba.tools.offline import DataDirBusy

    try:
        yield
    except ToolError as exc:
        raise _die(exc.code, exc.message) from None
    except (DataDirBusy, BackupError, ImportRefused, IncompleteImport,
            FileNotFoundError) as exc:
        raise _die(EXIT_FAILED, str(exc)) from None
    except ConfigError as exc:
        raise _die(EXIT_FAILED, "; ".join(exc.errors)) from None
    except OSError as exc:
        raise _die(EXIT_FAILED, str(exc)) from None


def _api(url: str | None, dn: str | None, password: str | None) -> Any:
    from oba.tools.client import Api, credentials

    who, pw = credentials(dn, password)
    return Api(url or DEFAULT_URL, who, pw)


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar with entries/s on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.speed} entries/s"), TimeElapsedColumn())
    with Progress(*columns, console=_err, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _count_records(path: Path) -> int | None:
    """The number of lines starting with ``dn:`` (any case): the progress bar's total.
    Counted in large blocks (C speed), not line by line."""
    count = 0
    last = b"\n"  # the byte before the block: the file starts at a line start
    try:
        with path.open("rb") as fh:
            while block := fh.read(1 << 22):
                text = (last + block).lower()
                count += text.count(b"\ndn:")
                last = text[-3:]  # too short to hold a match; may start one in the next block
    except OSError:
        return None
    return count


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)
    app.command("import")(import_)
    app.command("export")(export)
    user_app = typer.Typer(help="Manage user entries on a running server (REST API).",
                           no_args_is_help=True,
                           context_settings={"help_option_names": ["-h", "--help"]})
    for name, fn in (("add", user_add), ("delete", user_delete), ("passwd", user_passwd),
                     ("list", user_list), ("lock", user_lock), ("unlock", user_unlock)):
        user_app.command(name)(fn)
    app.add_typer(user_app, name="user")


# --------------------------------------------------------------------------- backup/restore


def backup(
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE",
                                        help="Backup file (a timestamp is inserted).")],
    url: UrlOpt = None, dn: DnOpt = None, password: PwOpt = None,
    data_dir: DataDirOpt = None,
    fmt: Annotated[BackupFormat, typer.Option("--format", help="native or ldif.")]
    = BackupFormat.native,
    compress: Annotated[bool, typer.Option("--compress", help="gzip the file.")] = False,
    no_timestamp: Annotated[bool, typer.Option("--no-timestamp",
                                               help="Use --output exactly as given.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Take a consistent backup from a running node (--url) or a data directory (--data-dir).

    Online backups do not stop writes: the node copies its database inside one read
    transaction. --data-dir opens the database read-only and works beside a running server.
    """
    from oba.tools import backup as bk

    if (url is None) == (data_dir is None):
        raise _die(EXIT_USAGE, "give exactly one of --url (running node) or --data-dir")
    name = output if no_timestamp else bk.timestamped(output)
    if compress and not name.endswith(".gz"):
        name += ".gz"
    target = Path(name)
    started = time.monotonic()
    with _errors():
        if url is not None:
            with _api(url, dn, password) as api:
                chunks = api.stream("/backup", {"format": fmt.value})
                size = bk.write_file(chunks, target, compress)
        else:
            assert data_dir is not None
            with tempfile.TemporaryDirectory(prefix="oba-backup-") as work:
                if fmt == BackupFormat.native:
                    snap = bk.snapshot_data_dir(data_dir, Path(work))
                    size = bk.write_file(bk.stream_native(snap), target, compress)
                else:
                    size = _offline_ldif_backup(data_dir, target, compress)
        meta = bk.inspect(target) if fmt == BackupFormat.native else {"format": "ldif"}
    result = {"file": str(target), "bytes": size, "fileBytes": target.stat().st_size,
              "seconds": round(time.monotonic() - started, 3), **meta}
    if as_json:
        print(json.dumps(result))
        return
    _out.print(f"backup written: {target} ({result['fileBytes']} bytes"
               f"{', compressed' if compress else ''}) in {result['seconds']} s")
    if "appliedIndex" in meta:
        _out.print(f"  entries {meta['entries']}, applied index {meta['appliedIndex']}, "
                   f"raft term {meta['raftTerm']}, sha256 {meta['sha256']}")


def _offline_ldif_backup(data_dir: str, target: Path, compress: bool) -> int:
    import io

    from oba.tools import backup as bk
    from oba.tools import bulk, offline

    config = offline.config_for(None, data_dir)
    with tempfile.TemporaryDirectory(prefix="oba-backup-") as work:
        snap = bk.snapshot_data_dir(data_dir, Path(work))  # consistent copy, then read it
        copy_dir = Path(work) / "copy"
        copy_dir.mkdir()
        snap.path.rename(copy_dir / "data.mdb")
        store = offline.open_store(config.model_copy(
            update={"storage": config.storage.model_copy(update={"dataDir": str(copy_dir)})}))
        try:
            buf = io.StringIO()
            bulk.export_store(store, buf)
        finally:
            store.close()
    data = buf.getvalue().encode("ascii")
    return bk.write_file(iter([data]), target, compress)


def restore(
    input_file: Annotated[str, typer.Option("--input", "-i", metavar="FILE",
                                            help="Native backup file (.gz accepted).")],
    data_dir: Annotated[str | None, typer.Option("--data-dir", metavar="DIR",
                                                 help="Database directory to restore into.")]
    = None,
    verify_only: Annotated[bool, typer.Option("--verify",
                                              help="Only check the checksum.")] = False,
    cluster: Annotated[bool, typer.Option(
        "--cluster", help="Prepare a cluster node: reset the Raft applied index and remove "
        "DIR/raft (restore the same backup on every node).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a native backup into a data directory (the server must be stopped)."""
    from oba.tools import backup as bk

    with _errors():
        if verify_only:
            meta = bk.verify(input_file)
            action = "verified"
        else:
            if not data_dir:
                raise _die(EXIT_USAGE, "--data-dir is required to restore")
            meta = bk.restore(input_file, data_dir, for_cluster=cluster)
            action = "restored"
    if as_json:
        print(json.dumps({"action": action, **meta}))
        return
    _out.print(f"{action}: {input_file}: {meta.get('entries')} entries, applied index "
               f"{meta.get('appliedIndex')}, created {meta.get('created')}, checksum ok")


# --------------------------------------------------------------------------- import/export


def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE.ldif", help="LDIF file ('-': stdin).")],
    data_dir: DataDirOpt = None, config: ConfigOpt = None,
    url: UrlOpt = None, dn: DnOpt = None, password: PwOpt = None,
    continue_on_error: Annotated[bool, typer.Option(
        "--continue-on-error", help="Report bad records and go on.")] = False,
    batch: Annotated[int, typer.Option("--batch", min=1,
                                       help="Entries per transaction (offline).")] = 10_000,
    as_json: JsonOpt = False,
) -> None:
    """Load LDIF: offline into an EMPTY data directory (bulk speed), or through a running
    node with --url (batched REST bulk requests)."""
    from oba.tools import bulk, offline

    if (url is None) == (data_dir is None and config is None):
        raise _die(EXIT_USAGE, "give --data-dir/--config (offline) or --url (running node)")
    total = _count_records(file) if str(file) != "-" else None
    with _errors(), _open_input(file) as source, _progress("importing", total) as tick:
        if url is not None:
            from oba.tools.online import import_online

            with _api(url, dn, password) as api:
                report = import_online(api, source, continue_on_error=continue_on_error,
                                       progress=tick)
        else:
            cfg = offline.config_for(config, data_dir)
            report = bulk.import_offline(source, cfg, batch=batch,
                                         continue_on_error=continue_on_error, progress=tick)
    for bad in report.failed[:100]:
        _err.print(f"{file}: {bad}", markup=False)
    if len(report.failed) > 100:
        _err.print(f"... and {len(report.failed) - 100} more bad records")
    if as_json:
        print(json.dumps({"added": report.added, "failed": len(report.failed),
                          "seconds": round(report.seconds, 3), "stopped": report.stopped,
                          "errors": [vars(b) for b in report.failed[:1000]]}))
    else:
        _out.print(f"imported {report.added} entries in {report.seconds:.1f} s "
                   f"({report.rate:.0f} entries/s), {len(report.failed)} failed"
                   f"{' (stopped at the first error)' if report.stopped else ''}")
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


@contextmanager
def _open_input(file: Path) -> Iterator[Any]:
    if str(file) == "-":
        yield sys.stdin.buffer
        return
    with file.open("rb") as fh:
        yield fh


def export(
    url: UrlOpt = None, dn: DnOpt = None, password: PwOpt = None,
    data_dir: DataDirOpt = None, config: ConfigOpt = None,
    base: Annotated[str | None, typer.Option("--base", metavar="DN",
                                             help="Only this subtree.")] = None,
    flt: Annotated[str | None, typer.Option("--filter", metavar="FILTER",
                                            help="RFC 4515 filter.")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", metavar="FILE",
                                               help="Output file (default stdout).")] = None,
) -> None:
    """Write entries as LDIF, from a running node (--url) or a data directory (--data-dir)."""
    from oba.tools import bulk, offline

    if (url is None) == (data_dir is None and config is None):
        raise _die(EXIT_USAGE, "give --data-dir/--config (offline) or --url (running node)")
    with _errors(), _open_output(output) as out:
        if url is not None:
            from oba.tools.online import export_online

            with _api(url, dn, password) as api:
                count = export_online(api, out, base=base, flt=flt)
        else:
            from oba.protocol.filter import FilterError, parse_filter

            try:
                parsed = parse_filter(flt) if flt else None
            except FilterError as exc:
                raise _die(EXIT_USAGE, f"invalid filter {flt!r}: {exc}") from None
            cfg = offline.config_for(config, data_dir)
            if not (Path(cfg.storage.dataDir) / "data.mdb").exists():
                raise _die(EXIT_FAILED, f"{cfg.storage.dataDir} holds no Oba database")
            store = offline.open_store(cfg)
            try:
                count = bulk.export_store(store, out, base=base, flt=parsed)
            finally:
                store.close()
    _err.print(f"exported {count} entries", markup=False)


@contextmanager
def _open_output(output: str | None) -> Iterator[Any]:
    if output is None or output == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with open(output, "w", encoding="ascii") as fh:
        yield fh


# --------------------------------------------------------------------------- users


UserDn = Annotated[str, typer.Argument(metavar="USER_DN", help="The user's DN.")]


def _done(as_json: bool, message: str, **extra: Any) -> None:
    if as_json:
        print(json.dumps({"success": True, "message": message, **extra}))
    else:
        _out.print(f"[green]{message}[/]", markup=True)


def _new_password(password: str | None) -> str:
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise ToolError(EXIT_USAGE, "--user-password is required when not on a terminal")
    first = typer.prompt("New password", hide_input=True)
    if first != typer.prompt("Repeat password", hide_input=True):
        raise ToolError(EXIT_USAGE, "the passwords differ")
    return str(first)


UserPw = Annotated[str | None, typer.Option("--user-password",
                                            help="The user's password (prompted if absent).")]


def user_add(
    user_dn: UserDn, user_password: UserPw = None,
    attr: Annotated[list[str] | None, typer.Option(
        "--attr", "-a", metavar="NAME=VALUE", help="Extra attribute (repeatable).")] = None,
    url: UrlOpt = None, dn: DnOpt = None, password: PwOpt = None, as_json: JsonOpt = False,
) -> None:
    """Create an inetOrgPerson entry."""
    from oba.tools import users

    extra: dict[str, list[str]] = {}
    for item in attr or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise _die(EXIT_USAGE, f"--attr wants NAME=VALUE, not {item!r}")
        extra.setdefault(name, []).append(value)
    with _errors(), _api(url, dn, password) as api:
        users.add(api, user_dn, _new_password(user_password), extra)
    _done(as_json, f"user {user_dn} added", dn=user_dn)


def user_delete(user_dn: UserDn, url: UrlOpt = None, dn: DnOpt = None,
                password: PwOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a user entry."""
    from oba.tools import users

    with _errors(), _api(url, dn, password) as api:
        users.delete(api, user_dn)
    _done(as_json, f"user {user_dn} deleted", dn=user_dn)


def user_passwd(user_dn: UserDn, user_password: UserPw = None, url: UrlOpt = None,
                dn: DnOpt = None, password: PwOpt = None, as_json: JsonOpt = False) -> None:
    """Set a user's password (hashed by the server)."""
    from oba.tools import users

    with _errors(), _api(url, dn, password) as api:
        users.passwd(api, user_dn, _new_password(user_password))
    _done(as_json, f"password of {user_dn} changed", dn=user_dn)


def user_lock(user_dn: UserDn, url: UrlOpt = None, dn: DnOpt = None,
              password: PwOpt = None, as_json: JsonOpt = False) -> None:
    """Lock (disable) an account: binds are refused until unlocked."""
    from oba.tools import users

    with _errors(), _api(url, dn, password) as api:
        users.lock(api, user_dn)
    _done(as_json, f"user {user_dn} locked", dn=user_dn, locked=True)


def user_unlock(user_dn: UserDn, url: UrlOpt = None, dn: DnOpt = None,
                password: PwOpt = None, as_json: JsonOpt = False) -> None:
    """Unlock (enable) an account."""
    from oba.tools import users

    with _errors(), _api(url, dn, password) as api:
        users.unlock(api, user_dn)
    _done(as_json, f"user {user_dn} unlocked", dn=user_dn, locked=False)


def user_list(
    base: Annotated[str | None, typer.Option("--base", metavar="DN",
                                             help="Search base.")] = None,
    url: UrlOpt = None, dn: DnOpt = None, password: PwOpt = None,
    data_dir: DataDirOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False,
) -> None:
    """List users (online, or offline with --data-dir when no server holds the database)."""
    from oba.tools import users

    with _errors():
        if data_dir is not None:
            rows = users.list_offline(data_dir, base, config)
        else:
            with _api(url, dn, password) as api:
                rows = users.list_online(api, base)
    if as_json:
        print(json.dumps({"users": rows, "total": len(rows)}))
        return
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for col in ("DN", "uid", "cn", "mail", "status"):
        table.add_column(col)
    for r in rows:
        status = "[red]locked[/]" if r["locked"] else "[green]active[/]"
        table.add_row(r["dn"], r["uid"], r["cn"], r["mail"], status)
    _out.print(table)
    _out.print(f"total: {len(rows)}")


__all__ = ["EXIT_UNREACHABLE", "register"]
