"""Wires one node: config -> schema, store, replicator, listeners; runs until a signal.

Rules for this module: construction and lifecycle only. ``serve`` returns a process exit code;
SIGINT/SIGTERM stop the node cleanly (listeners closed, queued writes committed, store closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import lmdb

from oba import __version__
from oba.audit.archive import Archiver
from oba.audit.db import set_archiver
from oba.cluster.replicator import LocalReplicator, Replicator
from oba.config import Config
from oba.directory.access import AccessPolicy
from oba.directory.apply import ApplyContext
from oba.directory.commands import AddCommand
from oba.events import ChangeHub
from oba.ldif import parse_ldif
from oba.protocol.dn import DNError
from oba.protocol.resultcodes import ResultCode
from oba.reqctx import RequestIdFilter
from oba.schema import Schema, SchemaError, default_schema_files
from oba.server.listener import LDAPListener
from oba.server.node import Node
from oba.storage import DEFAULT_INDEXES, Store
from oba.storage.lmdbstore import IncompleteImport

if TYPE_CHECKING:  # cluster mode
    from starlette.types import ASGIApp

    from oba.cluster.runtime import ClusterRuntime
    from oba.server.tls import ServerTLS
    from oba.server.workers import WorkerPool

log = logging.getLogger("oba")
# what the node imports on the loop once the LDAP listener serves (``prepare_front_ends``
# imports them earlier, in a worker thread)
FRONT_END_MODULES = ("oba.server.tls", "oba.server.workers", "oba.rest.server", "oba.web.server")
LOOP_WATCH_PERIOD = 0.02  # seconds between two wake-ups of ``NodeRuntime.watch_loop``


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "requestId": getattr(record, "request_id", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(config: Config) -> None:
    level = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
             "warning": logging.WARNING, "error": logging.ERROR}.get(
        str(config.logging.level).lower(), logging.INFO)
    output = str(config.logging.output)
    handler: logging.Handler
    if output == "stdout":
        handler = logging.StreamHandler(sys.stdout)
    elif output == "stderr":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(output)
    if str(config.logging.format) == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _show(address: str) -> str:
    """A listen address as a client would type it (":8080" -> "127.0.0.1:8080")."""
    host, _, port = address.rpartition(":")
    return f"{host if host not in ('', '0.0.0.0', '[::]') else '127.0.0.1'}:{port}"


def _now() -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime())


def _index_config(config: Config) -> dict[str, set[str]]:
    configured = config.storage.indexes
    if configured is None:
        return {k: set(v) for k, v in DEFAULT_INDEXES.items()}
    return {k: set(v) for k, v in configured.items()}


class NodeRuntime:
    """One running node (standalone)."""

    def __init__(self, config: Config, example_data: bool = False,
                 config_path: str | None = None) -> None:
        self.config = config
        self.example_data = example_data
        # the file the config came from (REST config/reload and config/save use it)
        self.config_path = str(Path(config_path).resolve()) if config_path else None
        extra = config.directory.schemaFiles
        self.schema = (
            Schema.load([*default_schema_files(), *extra]) if extra else Schema.default()
        )
        data_dir = Path(config.storage.dataDir)
        data_dir.mkdir(parents=True, exist_ok=True)
        # cluster mode: the Raft log is the durable record of every write, so a commit of
        # the applied state skips LMDB's second (meta page) fsync (see ``Store``)
        self.store = Store(data_dir, self.schema, _index_config(config),
                           map_size=int(config.storage.mapSize),
                           meta_sync=not config.cluster.enabled)
        base_dn = config.directory.baseDN
        self.base_ndn = self.schema.normalize_dn(base_dn) if base_dn else ""
        root_dn = config.directory.rootDN
        self.root_ndn = self.schema.normalize_dn(root_dn) if root_dn else ""
        self.apply_ctx = ApplyContext(self.schema, (self.base_ndn,) if self.base_ndn else ())
        # --- cluster mode (oba.cluster.runtime); the standalone path is unchanged ---
        self.cluster: ClusterRuntime | None = None
        self.replicator: Replicator
        if config.cluster.enabled:
            from oba.cluster.runtime import ClusterRuntime

            self.cluster = ClusterRuntime(config, self.store, self.apply_ctx)
            self.replicator = self.cluster.replicator
        else:
            self.replicator = LocalReplicator(self.store, self.apply_ctx)
        # --- end cluster mode ---
        self.node = Node(
            config=config, schema=self.schema, store=self.store, replicator=self.replicator,
            access=AccessPolicy(self.root_ndn), base_dn=base_dn, base_ndn=self.base_ndn,
            root_dn=root_dn, root_ndn=self.root_ndn,
            root_password=(config.directory.rootPassword or "").encode(),
            cluster=self.cluster,
        )
        if self.cluster is not None:
            self.cluster.attach_node(self.node)
        self.ldap = LDAPListener(self.node)
        # audit records dropped by a replicated retention command are archived on every node,
        # also while the Raft log is replayed before the audit store is attached
        store_cfg = config.logging.store
        set_archiver(self.store, Archiver(store_cfg.archiveDir, store_cfg.compress))
        self.stopping = asyncio.Event()
        self.tls: ServerTLS | None = None  # set by start_ldaps when a certificate is configured
        # async callables run (in reverse order) when the node stops: REST server, cluster...
        self.stoppers: list[Callable[[], Awaitable[None]]] = []
        self.workers: WorkerPool | None = None  # set when server.workers > 1
        # the REST app (oba.rest.server.prepare_rest_app), when the REST API or the web admin
        # is enabled; shared by both
        self.rest_app: ASGIApp | None = None

    async def bootstrap(self) -> None:
        """On first start (empty database) create the base entry, or load the example tree."""
        if not self.base_ndn:
            return
        with self.store.read() as txn:
            if txn.get_by_ndn(self.base_ndn) is not None:
                return
        if self.example_data:
            text = resources.files("oba").joinpath("data/example.ldif").read_text("utf-8")
            records = list(parse_ldif(text))
            log.info("empty database: loading the example tree (%d entries)", len(records))
        else:
            rdn_attr, _, rdn_value = self.config.directory.baseDN.split(",")[0].partition("=")
            log.info("empty database: creating the base entry %s", self.config.directory.baseDN)
            records = None
            attrs = _base_entry_attributes(rdn_attr.strip(), rdn_value.strip())
            res = await self.replicator.submit(
                AddCommand(self.config.directory.baseDN, attrs, uuid.uuid4().hex,
                           self.config.directory.rootDN, _now(), str(uuid.uuid4())))
            if res.code != ResultCode.SUCCESS:
                raise RuntimeError(f"cannot create the base entry: {res.code} {res.message}")
        for rec in records or ():
            grouped: dict[str, list[bytes]] = {}
            for name, value in rec.attributes:
                grouped.setdefault(name, []).append(value)
            attrs = tuple((k, tuple(v)) for k, v in grouped.items())
            res = await self.replicator.submit(
                AddCommand(rec.dn, attrs, uuid.uuid4().hex, self.config.directory.rootDN,
                           _now(), str(uuid.uuid4())))
            if res.code != ResultCode.SUCCESS:
                raise RuntimeError(f"example data: {rec.dn}: {res.code} {res.message}")

    async def prepare_front_ends(self) -> None:
        """Before anything serves (in cluster mode: before the Raft node ticks), in a worker
        thread: import the front ends and build the REST app, warmed up. About a second of CPU
        that must not run on the loop once it serves LDAP and Raft (a first REST request doing
        FastAPI's lazy work froze a node for ~220 ms, longer than an election timeout).
        Then every object made so far (modules, schema, the app: some 100,000) is collected
        and frozen out of the garbage collector, whose full collections would otherwise walk
        them all, on the loop, for 40-100 ms each."""
        await asyncio.to_thread(self._prepare_front_ends)

    def _prepare_front_ends(self) -> None:
        for name in FRONT_END_MODULES:
            importlib.import_module(name)
        if self.config.rest.enabled or self.config.web.enabled:
            from oba.rest.server import prepare_rest_app

            prepare_rest_app(self)
        gc.collect()
        gc.freeze()

    async def watch_loop(self) -> None:
        """Wake up every ``LOOP_WATCH_PERIOD`` and measure how late: later than the election
        timeout means something blocked the loop, which runs LDAP, REST and Raft alike (a
        follower missing heartbeats that long may start an election). Counted in the metrics
        (``oba_event_loop_*``) and logged as a warning."""
        threshold = self.config.cluster.electionTimeout.total_seconds()
        stats = self.node.stats
        while True:
            start = time.monotonic()
            await asyncio.sleep(LOOP_WATCH_PERIOD)
            late = time.monotonic() - start - LOOP_WATCH_PERIOD
            if stats.observe_loop_lag(late, threshold):
                log.warning("the event loop was blocked for %.0f ms (over "
                            "cluster.electionTimeout, %.0f ms): LDAP, REST and Raft all waited",
                            late * 1000, threshold * 1000)

    async def start_core_extras(self) -> None:
        """Before any listener opens: the ACL engine (so no request sees the default policy
        when aclFile is set) and the audit store."""
        from oba.acl.runtime import start_acl
        from oba.audit.store import attach_audit

        for start in (start_acl, attach_audit):
            stop = await start(self)
            if stop is not None:
                self.stoppers.append(stop)

    async def start_extras(self) -> None:
        """After the LDAP listener: LDAPS, the REST API and the web admin, each owned by its
        own module."""
        from oba.server.tls import start_ldaps
        from oba.web.server import start_web

        stop = await start_ldaps(self)
        if stop is not None:
            self.stoppers.append(stop)
        await self.start_rest()
        if self.config.web.enabled:
            stop = await start_web(self)
            if stop is not None:
                self.stoppers.append(stop)

    async def start_rest(self) -> None:
        """Start the REST API on this loop when ``rest.enabled`` (hook for oba.rest)."""
        if not self.config.rest.enabled:
            return
        from oba.rest.server import start_rest  # imported only when used

        self.stoppers.append(await start_rest(self))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        fatal: list[BaseException] = []

        def on_fatal(exc: BaseException) -> None:
            fatal.append(exc)
            self.stopping.set()

        if self.cluster is not None:
            self.cluster.on_fatal = on_fatal
        self.node.events = ChangeHub(loop)
        self.replicator.add_listener(self.node.events.publish)
        self.replicator.start()
        pid_file = self.config.server.pidFile
        watcher: asyncio.Task[None] | None = None
        try:
            await self.prepare_front_ends()
            watcher = asyncio.create_task(self.watch_loop(), name="loop watcher")
            if self.cluster is not None:  # cluster mode: the leader bootstraps, once
                await self.cluster.start(self.bootstrap)
            else:
                await self.bootstrap()
            await self.start_core_extras()
            from oba.server.workers import make_pool, start_workers

            self.workers = make_pool(self)
            host, port = await self.ldap.start(self.config.server.address)
            await self.start_extras()
            stop_workers = await start_workers(self)
            if stop_workers is not None:
                self.stoppers.append(stop_workers)
            if pid_file:
                Path(pid_file).write_text(f"{os.getpid()}\n")
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            log.info("Oba %s ready: ldap://%s:%d base %r root %r", __version__, shown, port,
                     self.config.directory.baseDN, self.config.directory.rootDN)
            lines = [f"\nOba is serving LDAP on ldap://{shown}:{port}  (Ctrl-C stops it)"]
            if self.config.rest.enabled:
                lines.append(f"  REST API:  http://{_show(self.config.rest.address)}/api/v1/")
            if self.config.web.enabled:
                lines.append(f"  web admin: http://{_show(self.config.web.address)}/")
            lines += [
                f"  try: ldapsearch -x -H ldap://{shown}:{port} "
                f"-b '{self.config.directory.baseDN}' '(objectClass=*)'",
                f"  as admin: add -D '{self.config.directory.rootDN}' -W\n",
            ]
            print("\n".join(lines), flush=True)
            await self.stopping.wait()
            log.info("stopping")
        finally:
            if watcher is not None:
                watcher.cancel()
            for stop in reversed(self.stoppers):
                await stop()
            await self.ldap.stop()
            if self.cluster is not None:  # cluster mode
                await self.cluster.stop()
            await self.replicator.stop()
            self.store.close()
            if pid_file:
                with contextlib.suppress(OSError):
                    Path(pid_file).unlink()
        return 1 if fatal else 0


Attrs = tuple[tuple[str, tuple[bytes, ...]], ...]


def _base_entry_attributes(rdn_attr: str, rdn_value: str) -> Attrs:
    a = rdn_attr.lower()
    v = rdn_value.encode()
    if a == "dc":
        return (("objectClass", (b"top", b"dcObject", b"organization")), ("dc", (v,)), ("o", (v,)))
    if a == "o":
        return (("objectClass", (b"top", b"organization")), ("o", (v,)))
    if a == "ou":
        return (("objectClass", (b"top", b"organizationalUnit")), ("ou", (v,)))
    if a == "c":
        return (("objectClass", (b"top", b"country")), ("c", (v,)))
    return (("objectClass", (b"top", b"extensibleObject")), (rdn_attr, (v,)))


def serve(config: Config, example_data: bool = False, config_path: str | None = None) -> int:
    """Run one node until SIGINT/SIGTERM; returns the process exit code."""
    setup_logging(config)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass

    async def main() -> int:
        runtime = NodeRuntime(config, example_data=example_data, config_path=config_path)
        return await runtime.run()

    try:
        return asyncio.run(main())
    except (OSError, SchemaError, DNError, lmdb.Error, IncompleteImport) as exc:
        log.error("cannot start: %s", exc)
        return 1
