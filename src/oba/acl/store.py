"""Replicated ACL state: the ``acl.set`` SystemCommand and its copy in the ``acl`` sub-database.

Rules for this module: a document set through the REST API travels as one ``SystemCommand``
(kind ``acl.set``, payload ``{"document": <whole document>, "fileHash": <sha256 of the aclFile
content when it was set, or "">}``), so applying it is idempotent and every node ends with the
same document. The handler is registered when this module is imported (``oba.directory.access``
imports it, so it is in place before any log replay); it validates the document's structure
before writing and writes only through the given transaction. ``stored_payload`` reads the copy
back at start-up.
"""

from __future__ import annotations

import json
from typing import Any

from oba.acl.document import AclDocument, AclError, validate_acl
from oba.directory.apply import ApplyContext, ApplyResult, register_system
from oba.directory.commands import SystemCommand
from oba.storage.lmdbstore import WriteTxn

KIND = "acl.set"
ACL_DB = b"acl"
DOC_KEY = b"document"
UNWILLING = 53


def acl_db(store: Any, txn: Any = None) -> Any:
    """The ``acl`` sub-database; opened inside ``txn`` (a raw LMDB write txn) when it is not
    open yet and a write transaction is already running (LMDB would deadlock otherwise)."""
    cache: dict[bytes, Any] = vars(store).setdefault("_aux_dbs", {})
    db = cache.get(ACL_DB)
    if db is None:
        if txn is not None:
            db = cache[ACL_DB] = store.env.open_db(ACL_DB, txn=txn)
        else:
            db = store.aux_db(ACL_DB)
    return db


def payload_document(payload: dict[str, Any]) -> AclDocument:
    return validate_acl(payload.get("document"))


def _apply(txn: WriteTxn, cmd: SystemCommand, ctx: ApplyContext) -> ApplyResult:
    try:
        doc = payload_document(cmd.payload)
    except AclError as exc:
        return ApplyResult(UNWILLING, message=f"invalid ACL document: {exc}")
    raw_txn = txn._txn  # no public aux put on WriteTxn yet
    record = {"document": doc.model_dump(mode="json"),
              "fileHash": str(cmd.payload.get("fileHash", "")),
              "actor": cmd.actor, "time": cmd.time}
    raw_txn.put(DOC_KEY, json.dumps(record).encode("utf-8"), db=acl_db(txn.store, raw_txn))
    return ApplyResult(0)


def stored_payload(store: Any) -> dict[str, Any] | None:
    """The last document set through the API (as stored), or None."""
    db = acl_db(store)
    with store.env.begin(db=db) as txn:
        raw = txn.get(DOC_KEY, db=db)
    if raw is None:
        return None
    data: dict[str, Any] = json.loads(bytes(raw).decode("utf-8"))
    return data


register_system(KIND, _apply)
