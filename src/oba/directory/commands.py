"""Write commands: what the proposer decides and every replica applies.

Rules: frozen dataclasses holding only plain data; the proposer fixes ``time`` (GeneralizedTime
``YYYYmmddHHMMSSZ``), ``actor`` (bind DN), ``request_id`` and, for adds, ``entry_uuid`` so that
``apply`` is deterministic. ``encode``/``decode`` use msgpack with a type tag ``"t"``; never
pickle. Modify ops: 0 add, 1 delete, 2 replace, 3 increment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack


@dataclass(frozen=True, slots=True)
class AddCommand:
    dn: str
    attributes: tuple[tuple[str, tuple[bytes, ...]], ...]
    request_id: str
    actor: str
    time: str
    entry_uuid: str


@dataclass(frozen=True, slots=True)
class ModifyCommand:
    dn: str
    changes: tuple[tuple[int, str, tuple[bytes, ...]], ...]
    request_id: str
    actor: str
    time: str


@dataclass(frozen=True, slots=True)
class DeleteCommand:
    dn: str
    request_id: str
    actor: str
    time: str


@dataclass(frozen=True, slots=True)
class ModifyDNCommand:
    dn: str
    new_rdn: str
    delete_old_rdn: bool
    new_superior: str | None
    request_id: str
    actor: str
    time: str


@dataclass(frozen=True, slots=True)
class SystemCommand:
    """A replicated change to state other than directory entries: ACL rules, audit records,
    lockout counters, config sections... ``kind`` names the handler registered with
    ``oba.directory.apply.register_system`` (e.g. ``"acl.set"``, ``"audit.append"``);
    ``payload`` is plain msgpack-able data fixed by the proposer."""

    kind: str
    payload: dict[str, Any]
    request_id: str
    actor: str
    time: str


Command = AddCommand | ModifyCommand | DeleteCommand | ModifyDNCommand | SystemCommand

# Bind outcomes counted in the write path (``oba.directory.apply`` applies them to the entry as
# stored in the applying transaction; see ``oba.directory.lockout``).
BIND_FAILURE = "lockout.failure"
BIND_SUCCESS = "lockout.success"


def bind_failure(dn: str, now: float, max_attempts: int, window: float, request_id: str,
                 actor: str, time: str) -> SystemCommand:
    """One more failed bind on ``dn`` at ``now`` (seconds since the epoch, the proposer's
    clock); it locks the account when it makes ``max_attempts`` failures within ``window``
    seconds, and changes nothing on an account locked at ``now``."""
    return SystemCommand(BIND_FAILURE, {"dn": dn, "now": float(now), "max": int(max_attempts),
                                        "window": float(window)}, request_id, actor, time)


def bind_success(dn: str, now: float, window: float, request_id: str, actor: str,
                 time: str) -> SystemCommand:
    """A successful bind on ``dn`` at ``now``: clears failures and an expired lock; on an
    account locked at ``now`` it changes nothing and answers invalidCredentials (49)."""
    return SystemCommand(BIND_SUCCESS, {"dn": dn, "now": float(now), "window": float(window)},
                         request_id, actor, time)


# A stored password re-made with the configured scheme and parameters after a successful bind
# (``oba.directory.apply`` replaces the value only if it is still the one the bind verified).
PASSWORD_REHASH = "password.rehash"


def password_rehash(dn: str, old: bytes, new: bytes, request_id: str, actor: str,
                    time: str) -> SystemCommand:
    """Replace the ``userPassword`` value ``old`` of ``dn`` (the one a bind just verified)
    with ``new`` (the same password hashed with the configured scheme and parameters): a
    server bookkeeping write, not a password change (compare-and-set: nothing happens when
    ``old`` is no longer stored)."""
    return SystemCommand(PASSWORD_REHASH, {"dn": dn, "old": bytes(old), "new": bytes(new)},
                         request_id, actor, time)


class CommandDecodeError(ValueError):
    """The bytes are not an encoded command."""


def encode(cmd: Command) -> bytes:
    body: dict[str, Any]
    if isinstance(cmd, AddCommand):
        body = {
            "t": "add",
            "dn": cmd.dn,
            "a": [[n, list(v)] for n, v in cmd.attributes],
            "u": cmd.entry_uuid,
        }
    elif isinstance(cmd, ModifyCommand):
        body = {"t": "mod", "dn": cmd.dn, "c": [[op, n, list(v)] for op, n, v in cmd.changes]}
    elif isinstance(cmd, DeleteCommand):
        body = {"t": "del", "dn": cmd.dn}
    elif isinstance(cmd, SystemCommand):
        body = {"t": "sys", "k": cmd.kind, "p": cmd.payload}
    else:
        body = {
            "t": "mdn",
            "dn": cmd.dn,
            "r": cmd.new_rdn,
            "d": cmd.delete_old_rdn,
            "s": cmd.new_superior,
        }
    body["rid"] = cmd.request_id
    body["who"] = cmd.actor
    body["ts"] = cmd.time
    out: bytes = msgpack.packb(body, use_bin_type=True)
    return out


def decode(data: bytes) -> Command:
    try:
        b = msgpack.unpackb(data, raw=False)
        tag = b["t"]
        common = {"request_id": b["rid"], "actor": b["who"], "time": b["ts"]}
        if tag == "add":
            attrs = tuple((str(n), tuple(bytes(x) for x in v)) for n, v in b["a"])
            return AddCommand(dn=b["dn"], attributes=attrs, entry_uuid=b["u"], **common)
        if tag == "mod":
            changes = tuple((int(op), str(n), tuple(bytes(x) for x in v)) for op, n, v in b["c"])
            return ModifyCommand(dn=b["dn"], changes=changes, **common)
        if tag == "del":
            return DeleteCommand(dn=b["dn"], **common)
        if tag == "sys":
            if not isinstance(b["p"], dict):
                raise TypeError("system command payload must be a map")
            return SystemCommand(kind=str(b["k"]), payload=b["p"], **common)
        if tag == "mdn":
            return ModifyDNCommand(
                dn=b["dn"],
                new_rdn=b["r"],
                delete_old_rdn=bool(b["d"]),
                new_superior=b["s"],
                **common,
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandDecodeError(f"bad command encoding: {exc}") from exc
    raise CommandDecodeError(f"unknown command type {tag!r}")
