"""Extended operations (RFC 4511 4.12): a registry from request OID to handler.

Rules for this module: a handler takes the operations layer, the requester's identity and the
raw request value, and returns the response (name and value, both optional) or raises
``OpError``; it never touches the connection. An OID missing from ``HANDLERS`` is answered with
``protocolError`` by the connection (as slapd does). Every OID here is advertised in the Root DSE
as a ``supportedExtension``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from oba.operations import Identity, Operations, OpError
from oba.protocol.controls import (
    OID_PASSWORD_MODIFY,
    OID_WHO_AM_I,
    ControlError,
    PasswordModifyRequest,
    PasswordModifyResponse,
)
from oba.protocol.resultcodes import ResultCode


@dataclass(frozen=True, slots=True)
class ExtendedResult:
    """A successful extended response: ``responseName`` and ``responseValue``."""

    name: str | None = None
    value: bytes | None = None


Handler = Callable[[Operations, Identity, "bytes | None"], Awaitable[ExtendedResult]]


async def who_am_i(ops: Operations, who: Identity, value: bytes | None) -> ExtendedResult:
    """RFC 4532: the authorization identity, ``dn:<bind DN>`` or empty for anonymous."""
    if value is not None:
        raise OpError(ResultCode.PROTOCOL_ERROR, "Who am I? takes no request value")
    return ExtendedResult(value=f"dn:{who.dn}".encode() if who.dn else b"")


async def password_modify(ops: Operations, who: Identity, value: bytes | None) -> ExtendedResult:
    """RFC 3062: change a password; a server-generated one is returned in the response."""
    try:
        req = PasswordModifyRequest.decode(value)
    except ControlError as exc:
        raise OpError(ResultCode.PROTOCOL_ERROR, f"password modify request: {exc}") from exc
    generated = await ops.password_modify(who, req.user_identity, req.old_password,
                                          req.new_password)
    if generated is None:
        return ExtendedResult()
    return ExtendedResult(value=PasswordModifyResponse(generated).encode())


HANDLERS: dict[str, Handler] = {
    OID_WHO_AM_I: who_am_i,
    OID_PASSWORD_MODIFY: password_modify,
}


def supported() -> tuple[str, ...]:
    """The OIDs to advertise as ``supportedExtension``."""
    return tuple(HANDLERS)
