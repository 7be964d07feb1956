"""Offline access to a node's data directory: live-server detection and opening the store.

Rules for this module:
- A server holding an LMDB environment keeps a shared ``fcntl`` lock on byte 0 of ``lock.mdb``
  for as long as the environment is open. ``server_holds`` probes it from a process that has
  NOT opened that environment (closing a probe descriptor drops the whole process's locks on
  the file, so never call it on an environment this process has open).
- Tools that write (import, restore) or that must not read under a server (``user list``)
  refuse with ``DataDirBusy``; backup and export may read under a live server (LMDB allows
  concurrent readers across processes).
- ``open_store`` builds the schema and index configuration exactly as the server does
  (``oba.app``), from the same configuration file, so indexes are never rebuilt by accident.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from oba.config import Config, load_config
from oba.directory.apply import ApplyContext
from oba.schema import Schema, default_schema_files
from oba.storage import Store
from oba.storage.indexes import DEFAULT_INDEXES


class DataDirBusy(RuntimeError):
    """A running server holds the database."""


def server_holds(data_dir: str | Path) -> bool:
    """Whether some other process has the LMDB environment in ``data_dir`` open."""
    lock = Path(data_dir) / "lock.mdb"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return True
            raise
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
        return False
    finally:
        os.close(fd)


def refuse_if_live(data_dir: str | Path, what: str) -> None:
    if server_holds(data_dir):
        raise DataDirBusy(
            f"{data_dir} is in use by a running Oba server (LMDB lock held): stop it before "
            f"{what}, or use --url to go through the running server")


def config_for(config_path: str | None, data_dir: str | Path | None) -> Config:
    overrides: dict[str, object] = {"storage.dataDir": str(data_dir) if data_dir else None}
    return load_config(config_path, overrides)


def schema_for(config: Config) -> Schema:
    extra = config.directory.schemaFiles
    return Schema.load([*default_schema_files(), *extra]) if extra else Schema.default()


def index_config(config: Config) -> dict[str, set[str]]:
    configured = config.storage.indexes
    source = DEFAULT_INDEXES if configured is None else configured
    return {k: set(v) for k, v in source.items()}


def open_store(config: Config, schema: Schema | None = None,
               indexes: dict[str, set[str]] | None = None) -> Store:
    """The store of ``config.storage.dataDir`` (created when missing)."""
    schema = schema or schema_for(config)
    return Store(config.storage.dataDir, schema,
                 index_config(config) if indexes is None else indexes,
                 map_size=int(config.storage.mapSize))


def apply_context(config: Config, schema: Schema) -> ApplyContext:
    base = config.directory.baseDN
    return ApplyContext(schema, (schema.normalize_dn(base),) if base else ())
