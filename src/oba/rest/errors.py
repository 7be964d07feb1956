"""The REST API's one error shape and the LDAP result code → HTTP status table.

Rules for this module: every error the API sends is ``{error, code, message, resultCode?}`` where
``error`` is a stable snake_case name, ``code`` the HTTP status and ``resultCode`` the LDAP result
code when the failure came from the directory. Handlers raise ``ApiError`` (or let an
``OpError`` escape); nothing here formats a stack trace into a response.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from oba.operations import OpError
from oba.protocol.resultcodes import ResultCode


class ErrorBody(BaseModel):
    """Every error response."""

    error: str = Field(description="Stable snake_case error name, e.g. not_found.")
    code: int = Field(description="The HTTP status code.")
    message: str = Field(description="Human-readable explanation.")
    resultCode: int | None = Field(
        default=None, description="The LDAP result code, when the directory refused."
    )


class ApiError(Exception):
    """An error answered with the one JSON error shape."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        result_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.result_code = result_code
        self.headers = headers


# LDAP result code → (HTTP status, error name)
_LDAP_TO_HTTP: dict[int, tuple[int, str]] = {
    ResultCode.OPERATIONS_ERROR: (500, "operations_error"),
    ResultCode.PROTOCOL_ERROR: (400, "protocol_error"),
    ResultCode.TIME_LIMIT_EXCEEDED: (408, "time_limit_exceeded"),
    ResultCode.SIZE_LIMIT_EXCEEDED: (413, "size_limit_exceeded"),
    ResultCode.STRONGER_AUTH_REQUIRED: (401, "authentication_required"),
    ResultCode.NO_SUCH_ATTRIBUTE: (400, "no_such_attribute"),
    ResultCode.UNDEFINED_ATTRIBUTE_TYPE: (400, "undefined_attribute_type"),
    ResultCode.INAPPROPRIATE_MATCHING: (400, "inappropriate_matching"),
    ResultCode.CONSTRAINT_VIOLATION: (400, "constraint_violation"),
    ResultCode.ATTRIBUTE_OR_VALUE_EXISTS: (400, "attribute_or_value_exists"),
    ResultCode.INVALID_ATTRIBUTE_SYNTAX: (400, "invalid_attribute_syntax"),
    ResultCode.NO_SUCH_OBJECT: (404, "not_found"),
    ResultCode.INVALID_DN_SYNTAX: (400, "invalid_dn"),
    ResultCode.INVALID_CREDENTIALS: (401, "invalid_credentials"),
    ResultCode.INSUFFICIENT_ACCESS_RIGHTS: (403, "insufficient_access"),
    ResultCode.BUSY: (503, "busy"),
    ResultCode.UNAVAILABLE: (503, "unavailable"),
    ResultCode.UNWILLING_TO_PERFORM: (422, "unwilling_to_perform"),
    ResultCode.NAMING_VIOLATION: (400, "naming_violation"),
    ResultCode.OBJECT_CLASS_VIOLATION: (400, "object_class_violation"),
    ResultCode.NOT_ALLOWED_ON_NON_LEAF: (409, "not_allowed_on_non_leaf"),
    ResultCode.NOT_ALLOWED_ON_RDN: (400, "not_allowed_on_rdn"),
    ResultCode.ENTRY_ALREADY_EXISTS: (409, "entry_exists"),
    ResultCode.OBJECT_CLASS_MODS_PROHIBITED: (400, "object_class_mods_prohibited"),
    ResultCode.AFFECTS_MULTIPLE_DSAS: (400, "affects_multiple_dsas"),
    ResultCode.LOOP_DETECT: (508, "loop_detected"),
    ResultCode.OTHER: (500, "ldap_error"),
}


def http_status_for(code: int) -> tuple[int, str]:
    """HTTP status and error name for an LDAP result code (unknown codes: 400/500)."""
    known = _LDAP_TO_HTTP.get(code)
    if known is not None:
        return known
    try:
        name = ResultCode(code).name.lower()
    except ValueError:
        name = "ldap_error"
    return (400 if code < 80 else 500), name


def from_op_error(exc: OpError) -> ApiError:
    status, name = http_status_for(int(exc.code))
    message = exc.message or exc.code.name.replace("_", " ").lower()
    if exc.code == ResultCode.NO_SUCH_OBJECT and exc.matched_dn:
        message = f"{message} (nearest existing entry: {exc.matched_dn})"
    if exc.code == ResultCode.BUSY:  # e.g. too many password checks queued: retry shortly
        return ApiError(status, name, message, int(exc.code), headers={"Retry-After": "1"})
    return ApiError(status, name, message, int(exc.code))


def body(status: int, error: str, message: str, result_code: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": error, "code": status, "message": message}
    if result_code is not None:
        out["resultCode"] = result_code
    return out


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        body(exc.status, exc.error, exc.message, exc.result_code),
        status_code=exc.status,
        headers=exc.headers,
    )


STATUS_NAMES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}

# documented on every route of the OpenAPI document
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": name.replace("_", " ")}
    for status, name in ((400, "bad_request"), (401, "unauthorized"), (403, "forbidden"),
                         (404, "not_found"), (409, "conflict"), (422, "invalid_request"),
                         (429, "rate_limited"), (500, "internal_error"), (503, "unavailable"))
}
