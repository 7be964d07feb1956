"""What the REST API shares across requests: the node, the operations layer, keys, ACL rules.

Rules for this module: one ``RestState`` per running API, stored on ``app.state.rest``. Settings
that may change at run time (rate limit, token lifetime, CORS origins) are read from
``node.config`` on every request, never copied here. Nothing here does network I/O.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request

from oba.acl.document import AclDocument
from oba.directory.entry import Entry
from oba.operations import Operations
from oba.rest.errors import ApiError
from oba.server.node import Node

BASE64_SUFFIX = ";base64"


@dataclass
class AclState:
    """The ACL document held in memory (no ``aclFile`` config key exists yet)."""

    document: AclDocument = field(default_factory=AclDocument)
    file_path: str | None = None
    reload_count: int = 0
    last_reload: str | None = None


@dataclass
class RestState:
    node: Node
    runtime: Any = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    acl: AclState = field(default_factory=AclState)
    # Lockout lands with issue 6: this placeholder knows no locked accounts.
    locked: set[str] = field(default_factory=set)
    operations: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.ops = Operations(self.node)

    def config_path(self) -> Path | None:
        """The configuration file the node was started from, if known."""
        path = getattr(self.runtime, "config_path", None)
        if path:
            return Path(path)
        origin = getattr(self.node.config, "_origins", {}).get("", "")
        file, sep, line = str(origin).rpartition(":")
        if sep and line == "1" and file and not file.startswith("<"):
            return Path(file)
        return None


def get_state(request: Request) -> RestState:
    state: RestState = request.app.state.rest
    return state


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry_json(entry: Entry, wanted: set[str] | None = None,
               operational: Any = None) -> dict[str, Any]:
    """``{dn, attributes}``; ``wanted`` (lower-case names, ``*``, ``+``) selects attributes."""
    attrs: dict[str, list[str]] = {}
    for name, values in entry.attrs.items():
        if wanted is not None and not _selected(name, wanted, operational):
            continue
        texts: list[str] = []
        raw: list[str] = []
        for v in values:
            try:
                texts.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                raw.append(base64.b64encode(v).decode("ascii"))
        if texts:
            attrs[name] = texts
        if raw:
            attrs[name + BASE64_SUFFIX] = raw
    return {"dn": entry.dn, "attributes": attrs}


def _selected(name: str, wanted: set[str], operational: Any) -> bool:
    if name.lower() in wanted:
        return True
    is_op = bool(operational(name)) if operational is not None else False
    return ("+" in wanted) if is_op else ("*" in wanted)


def decode_values(name: str, values: list[str]) -> tuple[str, list[bytes]]:
    """An input attribute (``name;base64`` values are decoded) as the operations layer wants it."""
    if name.lower().endswith(BASE64_SUFFIX):
        try:
            return name[: -len(BASE64_SUFFIX)], [base64.b64decode(v, validate=True)
                                                  for v in values]
        except ValueError:
            raise ApiError(400, "invalid_value", f"{name}: value is not base64") from None
    return name, [v.encode("utf-8") for v in values]


def close_iter(it: object) -> None:
    """Close a search generator early (releases its read transaction)."""
    close = getattr(it, "close", None)
    if close is not None:
        close()
