"""Authentication of REST requests: HS256 bearer tokens or HTTP Basic ``dn:password``.

Rules for this module: a token is a JWT ``{dn, iat, exp}`` signed with ``rest.jwtSecret`` (a
random per-process key when empty); Basic credentials are checked by ``Operations.bind`` on
every request (refused over plain HTTP when ``security.requireTLS`` is on). Either way the
result is an ``operations.Identity`` that every directory call receives, so LDAP's access
decisions apply unchanged. Admin routes need the root DN.
A token for an entry also carries ``eid`` (the entry's id) and ``ep`` (its credential epoch,
``oba.directory.apply.auth_epoch``, as read with the password the bind verified): it is
refused once the entry is gone, is another entry, is disabled, or its epoch moved (a password
change by anyone, a lock, a disable: an unlock or re-enable brings no old token back). The
check costs one more key lookup in the read transaction that loads the entry. The (id, epoch)
a request authenticated under is kept for it (``Operations.account_stamp``), so a stream it
opens (``GET /events``) ends when its account stops being valid.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request, Security
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from oba.directory.apply import auth_epoch
from oba.operations import Identity, OpError, bound_epoch, note_authenticated
from oba.rest.errors import ApiError, from_op_error
from oba.rest.middleware import in_networks
from oba.rest.state import RestState, get_state

ALGORITHM = "HS256"
bearer_scheme = HTTPBearer(auto_error=False, description="JWT from POST /api/v1/auth/bind.")
basic_scheme = HTTPBasic(auto_error=False, description="Bind DN and password.")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="oba"'}


def secret_for(config_secret: str) -> bytes | None:
    return config_secret.encode("utf-8") if config_secret else None


def issue_token(state: RestState, dn: str, now: float | None = None) -> tuple[str, int]:
    """A token for ``dn``, just bound: with the entry's id and credential epoch as the bind
    read them (``operations.bound_epoch``), else as they are now."""
    issued = int(time.time() if now is None else now)
    ttl = int(state.node.config.rest.tokenTTL.total_seconds())
    expires = issued + max(ttl, 1)
    claims: dict[str, Any] = {"dn": dn, "iat": issued, "exp": expires}
    node = state.node
    ndn = state.ops.normalize_dn(dn)
    if ndn != node.root_ndn:
        stamp = bound_epoch(ndn)
        if stamp is None:
            with node.store.read() as txn:
                entry = txn.get_by_ndn(ndn)
                stamp = (0, -1) if entry is None else (entry.id, auth_epoch(txn, entry.id))
        claims["eid"], claims["ep"] = stamp
    token = jwt.encode(claims, state.secret, algorithm=ALGORITHM)
    return token, expires


def _unauthorized(error: str, message: str) -> ApiError:
    return ApiError(401, error, message, headers=_CHALLENGE)


def identity_from_token(state: RestState, token: str) -> Identity:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, state.secret, algorithms=[ALGORITHM],
            options={"require": ["dn", "iat", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token_expired", "the token has expired; bind again") from None
    except jwt.InvalidTokenError:
        raise _unauthorized("invalid_token", "the token is not valid") from None
    dn = claims.get("dn")
    if not isinstance(dn, str) or not dn:
        raise _unauthorized("invalid_token", "the token names no DN")
    ops = state.ops
    try:
        ndn = ops.normalize_dn(dn)
    except OpError:
        raise _unauthorized("invalid_token", "the token's DN is not valid") from None
    node = state.node
    if ndn != node.root_ndn:
        eid, epoch = claims.get("eid"), claims.get("ep")
        if type(eid) is not int or type(epoch) is not int:
            raise _unauthorized("invalid_token", "the token is not valid")
        with node.store.read() as txn:
            entry = txn.get_by_ndn(ndn)
            current = None if entry is None or entry.id != eid else auth_epoch(txn, eid)
        disabled = entry is not None and any(
            v.upper() in (b"TRUE", b"1", b"YES") for v in entry.attrs.get("obaDisabled", ())
        )
        if current is None or disabled:
            raise _unauthorized("invalid_token", "the token's account no longer exists or is "
                                "disabled")
        if current != epoch:
            raise _unauthorized("invalid_token", "the account's password or lock state has "
                                "changed since the token was issued; bind again")
        note_authenticated(ndn, eid, epoch)  # what a stream of this request must stay
    return Identity(dn, ndn, "rest")


def refuse_password_in_clear(request: Request, state: RestState) -> None:
    """``security.requireTLS``: a password (Basic credentials, ``POST /auth/bind``) is refused
    over plain HTTP with 403 ``confidentiality_required``, as LDAP refuses a simple bind in the
    clear. HTTPS passes, and so does a TLS-terminating proxy listed in ``rest.trustedProxies``
    that sends ``X-Forwarded-Proto: https``. Tokens are not passwords: they pass."""
    config = state.node.config
    if not config.security.requireTLS or request.url.scheme == "https":
        return
    peer = request.client.host if request.client is not None else ""
    proto = request.headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
    if proto == "https" and in_networks(peer, config.rest.trustedProxies):
        return
    raise ApiError(403, "confidentiality_required",
                   "security.requireTLS is on: send passwords over HTTPS only")


async def identity_from_basic(state: RestState, creds: HTTPBasicCredentials) -> Identity:
    if not creds.username or not creds.password:
        raise _unauthorized("invalid_credentials", "Basic credentials need a DN and a password")
    try:
        who = await state.ops.bind(creds.username, creds.password.encode("utf-8"), "rest")
    except OpError as exc:
        if exc.code in (49, 53, 34):
            raise _unauthorized("invalid_credentials", "invalid DN or password") from None
        raise from_op_error(exc) from None
    if who.anonymous:
        raise _unauthorized("invalid_credentials", "invalid DN or password")
    return who


async def current_identity(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    basic: Annotated[HTTPBasicCredentials | None, Security(basic_scheme)],
) -> Identity:
    state = get_state(request)
    if bearer is not None:
        return identity_from_token(state, bearer.credentials)
    if basic is not None:
        refuse_password_in_clear(request, state)
        return await identity_from_basic(state, basic)
    raise _unauthorized("unauthorized", "authentication required: send a Bearer token or Basic "
                        "credentials")


async def admin_identity(
    request: Request, who: Annotated[Identity, Depends(current_identity)]
) -> Identity:
    if not get_state(request).node.access.is_root(who.ndn):
        raise ApiError(403, "forbidden", "administrator rights required (the root DN)")
    return who


Who = Annotated[Identity, Depends(current_identity)]
Admin = Annotated[Identity, Depends(admin_identity)]
State = Annotated[RestState, Depends(get_state)]
