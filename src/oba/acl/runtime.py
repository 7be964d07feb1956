"""ACL loading and hot reload: ``aclFile`` at start, file watch, SIGHUP, REST, replication.

Rules for this module:
- Start (``start_acl``): a broken ``aclFile`` refuses the start with a message naming every
  problem. The document in force is the last one set through the REST API (stored in the
  ``acl`` sub-database) if the file has not changed since it was set, else the file's; with
  neither, the built-in default of ``oba.directory.access``.
- Reload: the file is polled every ``POLL_INTERVAL`` seconds; a changed file is acted on only
  once two polls in a row read the same bytes with the same (mtime, size, inode), before and
  after each read, so a file being rewritten in place is never loaded half-written; the bytes
  checked are the bytes parsed. SIGHUP (``oba reload acl``) and ``POST /api/v1/acl/reload``
  re-read it at once. A broken file, and an empty document (no rules, no explicit
  ``defaultPolicy``: ``oba.acl.document.open_by_omission``), are rejected (a warning in the
  log, or REST 400) and the rules in force stay: a reload never falls back to allow.
- API changes are ``acl.set`` SystemCommands (``oba.acl.store``) carrying the whole document:
  every node applies them and switches through its change hub's system subscribers. A document
  set through the API wins over the file until the file's content changes again (or SIGHUP /
  REST reload re-reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from oba.acl.document import AclDocument, AclError, check_document, dump_acl, parse_acl
from oba.acl.store import KIND, acl_db, payload_document, stored_payload
from oba.directory.commands import SystemCommand

log = logging.getLogger("oba.acl")
POLL_INTERVAL = 0.3


class AclStartError(OSError):
    """The ACL file given at start cannot be used (reported as "cannot start: ...")."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class AclManager:
    """Owns the node's ACL document: where it came from and how it changes."""

    def __init__(self, node: Any, file_path: str) -> None:
        self.node = node
        self.access = node.access
        self.file_path = str(Path(file_path).resolve()) if file_path else None
        self.file_hash = ""  # sha256 of the file content last loaded (or rejected)
        self.stamp: tuple[int, int, int] | None = None  # of the content last acted on
        # (sha256, stamp) read by the last poll and not acted on yet: acted on when the next
        # poll reads the same (the file stayed unchanged for a whole poll interval)
        self.pending: tuple[str, tuple[int, int, int]] | None = None
        self.reload_count = 0
        self.last_reload: str | None = None
        self.last_error: str | None = None

    # ------------------------------------------------------------------ file

    def _read_bytes(self) -> bytes:
        assert self.file_path is not None
        try:
            return Path(self.file_path).read_bytes()
        except OSError as exc:
            raise AclError([f"{self.file_path}: cannot read: {exc.strerror or exc}"]) from None

    def _read(self) -> tuple[str, str]:
        raw = self._read_bytes()
        return raw.decode("utf-8", "replace"), hashlib.sha256(raw).hexdigest()

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.file_path is not None
        try:
            st = os.stat(self.file_path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load_file(self, raw: bytes | None = None) -> tuple[AclDocument, str]:
        """Parse the file, or ``raw`` (bytes already read from it); raises ``AclError`` naming
        every problem, and for a document that would be in force only by omission."""
        if self.file_path is None:
            raise AclError(["no aclFile is configured"])
        if raw is None:
            raw = self._read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        try:
            return parse_acl(raw.decode("utf-8", "replace"), self.node.schema), digest
        except AclError as exc:
            raise AclError([f"{self.file_path}: {e}" for e in exc.errors]) from None

    def reload_file(self, why: str, raw: bytes | None = None,
                    stamp: tuple[int, int, int] | None = None) -> AclDocument:
        """Re-read the file (or take ``raw``, read when the file had ``stamp``) and enforce
        it; a broken or empty document raises, logs a warning and changes nothing."""
        self.pending = None
        self.stamp = stamp if raw is not None else self._stat()
        try:
            doc, digest = self.load_file(raw)
        except AclError as exc:
            self.last_error = str(exc)
            log.warning("ACL file rejected (%s), the previous rules stay in force: %s", why,
                        exc)
            if raw is not None:
                self.file_hash = hashlib.sha256(raw).hexdigest()
            else:
                with contextlib.suppress(AclError):
                    self.file_hash = self._read()[1]  # the poller need not report it again
            raise
        self.file_hash = digest
        self.last_error = None
        self.access.set_document(doc, "file")
        self.reload_count += 1
        self.last_reload = _now()
        log.info("ACL file %s loaded (%s): %d rules, defaultPolicy %s", self.file_path, why,
                 len(doc.rules), doc.defaultPolicy)
        return doc

    def poll(self) -> None:
        """One watch step: reload once the file has changed and then stayed the same (bytes,
        mtime, size, inode) from one poll to the next; a file being rewritten in place (say
        truncated, then written) is not acted on until it settles."""
        if self.file_path is None:
            return
        stamp = self._stat()
        if stamp is None:  # gone (an editor's rename in progress): wait for it to come back
            self.pending = None
            return
        if stamp == self.stamp and self.pending is None:
            return
        try:
            raw = self._read_bytes()
        except AclError:
            self.pending = None
            return
        if self._stat() != stamp:  # written while we read: look again next time
            self.pending = None
            return
        digest = hashlib.sha256(raw).hexdigest()
        seen = (digest, stamp)
        if seen != self.pending:
            self.pending = seen  # first sight: act only if the next poll reads the same
            return
        self.pending = None
        if digest == self.file_hash:
            self.stamp = stamp
            return
        with contextlib.suppress(AclError):  # logged by reload_file; the old rules stay
            self.reload_file("file changed", raw, stamp)

    def on_sighup(self) -> None:
        if self.file_path is None:
            log.warning("SIGHUP: no aclFile is configured, nothing to reload")
            return
        with contextlib.suppress(AclError):  # logged by reload_file; the old rules stay
            self.reload_file("SIGHUP")

    def save(self) -> str:
        """Write the document in force to the file (atomically); returns the path."""
        if self.file_path is None:
            raise AclError(["no aclFile is configured"])
        doc = self.access.document
        if doc is None:
            raise AclError(["the built-in default policy is in force: there is no document "
                            "to save"])
        text = dump_acl(doc)
        path = Path(self.file_path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.file_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self.stamp = self._stat()
        self.access.source = "file"
        return str(path)

    # ------------------------------------------------------------------ replicated changes

    async def set_document(self, doc: AclDocument, actor: str) -> None:
        """Replicate ``doc`` (an ``acl.set`` command) and enforce it here at once."""
        await set_document(self.node, doc, actor, self.file_hash)

    def on_system(self, event: Any) -> None:
        if event.kind != KIND:
            return
        try:
            doc = payload_document(dict(event.payload))
        except AclError as exc:  # validated before it was written: should not happen
            log.error("replicated ACL document rejected: %s", exc)
            return
        self.access.set_document(doc, "api")
        self.last_reload = _now()

    def stats(self) -> dict[str, Any]:
        doc = self.access.document
        return {"ruleCount": len(doc.rules) if doc is not None else 0,
                "lastReload": self.last_reload, "reloadCount": self.reload_count,
                "filePath": self.file_path}


async def set_document(node: Any, doc: AclDocument, actor: str, file_hash: str = "") -> None:
    """Submit ``acl.set`` for ``doc``; raises ``AclError`` when the command fails or when
    ``doc`` has no rules and no explicit ``defaultPolicy`` (never submitted)."""
    check_document(doc)
    cmd = SystemCommand(KIND, {"document": doc.model_dump(mode="json"), "fileHash": file_hash},
                        uuid.uuid4().hex, actor,
                        time.strftime("%Y%m%d%H%M%SZ", time.gmtime()))
    result = await node.replicator.submit(cmd)
    if result.code != 0:
        raise AclError([result.message or f"ACL change failed with result code {result.code}"])
    node.access.set_document(doc, "api")
    from oba.server.workers import sync_workers  # listener workers switch before we answer

    await sync_workers(node)


def initial_document(manager: AclManager, stored: dict[str, Any] | None) -> None:
    """Choose and enforce the document in force at start (see the module rules)."""
    file_doc: AclDocument | None = None
    if manager.file_path is not None:
        try:
            file_doc, manager.file_hash = manager.load_file()
        except AclError as exc:
            raise AclStartError(f"aclFile: {exc}") from None
        manager.stamp = manager._stat()
    if stored is not None and (file_doc is None
                               or stored.get("fileHash", "") == manager.file_hash):
        try:
            manager.access.set_document(payload_document(stored), "api")
            log.info("ACL: the document set through the API is in force (%d rules)",
                     len(manager.access.document.rules))
            return
        except AclError as exc:
            log.error("stored ACL document unusable, ignored: %s", exc)
    if file_doc is not None:
        manager.access.set_document(file_doc, "file")
        manager.reload_count += 1
        manager.last_reload = _now()
        log.info("ACL file %s loaded: %d rules, defaultPolicy %s", manager.file_path,
                 len(file_doc.rules), file_doc.defaultPolicy)


async def start_acl(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    """Load ``aclFile`` (or the stored API document) into ``runtime.node.access`` and start the
    reload watchers; returns the stop callable."""
    node = runtime.node
    node.access.attach(node.store, node.schema)
    acl_db(node.store)  # open the sub-database before any write transaction runs
    manager = AclManager(node, str(node.config.aclFile or ""))
    node.access.manager = manager
    initial_document(manager, stored_payload(node.store))
    cleanups: list[Callable[[], None]] = []
    if node.events is not None:
        cleanups.append(node.events.subscribe_system(manager.on_system))
    loop = asyncio.get_running_loop()
    task: asyncio.Task[None] | None = None
    if manager.file_path is not None:
        async def watch() -> None:
            while True:
                await asyncio.sleep(POLL_INTERVAL)
                try:
                    manager.poll()
                except Exception:  # the watcher must survive anything
                    log.exception("ACL file watch failed")

        task = asyncio.create_task(watch())
    def remove_sighup() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, manager.on_sighup)
        cleanups.append(remove_sighup)

    async def stop() -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for cleanup in cleanups:
            cleanup()
        node.access.manager = None

    return stop
