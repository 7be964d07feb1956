"""Minimal hand-written BER for raw-socket tests (independent of Oba's codec on purpose).

Rules: definite lengths only; decoding handles just what responses need (LDAPMessage with an
integer messageID, an application-tagged protocolOp and, for results, the resultCode).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass


def tlv(tag: int, content: bytes) -> bytes:
    """One definite-length TLV."""
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def octets(value: bytes) -> bytes:
    return tlv(0x04, value)


def enum(value: int) -> bytes:
    return tlv(0x0A, bytes([value]))


def message(msgid: int, op: bytes) -> bytes:
    return tlv(0x30, integer(msgid) + op)


def search_request(
    base: bytes, scope: int, flt: bytes, attrs: tuple[bytes, ...] = (b"1.1",)
) -> bytes:
    """SearchRequest ([APPLICATION 3]) with no limits and derefAliases=never."""
    body = (
        octets(base)
        + enum(scope)
        + enum(0)
        + integer(0)
        + integer(0)
        + tlv(0x01, b"\x00")
        + flt
        + tlv(0x30, b"".join(octets(a) for a in attrs))
    )
    return tlv(0x63, body)


def present(attr: bytes) -> bytes:
    return tlv(0x87, attr)


def nested_and(inner: bytes, depth: int) -> bytes:
    for _ in range(depth):
        inner = tlv(0xA0, inner)
    return inner


def sasl_bind_request(mechanism: bytes) -> bytes:
    return tlv(0x60, integer(3) + octets(b"") + tlv(0xA3, octets(mechanism)))


def extended_request(oid: bytes) -> bytes:
    return tlv(0x77, tlv(0x80, oid))


@dataclass
class Response:
    msgid: int
    op_tag: int
    result_code: int | None


def _read_len(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def split_messages(data: bytes) -> tuple[list[Response], bytes]:
    """Decode complete LDAPMessages from ``data``; return them and the unconsumed rest."""
    out: list[Response] = []
    while len(data) >= 2:
        length, body = _read_len(data, 1)
        if len(data) < body + length:
            break
        msg, data = data[body : body + length], data[body + length :]
        id_len, id_pos = _read_len(msg, 1)
        msgid = int.from_bytes(msg[id_pos : id_pos + id_len], "big", signed=True)
        op_pos = id_pos + id_len
        op_tag = msg[op_pos]
        code: int | None = None
        if op_tag & 0x20:
            _, content = _read_len(msg, op_pos + 1)
            if content < len(msg) and msg[content] == 0x0A:
                code = msg[content + 2]
        out.append(Response(msgid, op_tag, code))
    return out, data


def exchange(
    port: int, payload: bytes, until_tag: int | None, timeout: float = 10.0
) -> tuple[list[Response], bool]:
    """Send ``payload``; read until a response with ``until_tag`` arrives, EOF, or ``timeout``.

    Returns the decoded responses and whether the server closed the connection.
    """
    responses: list[Response] = []
    rest = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return responses, True
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return responses, True
            except TimeoutError:
                break
            if not chunk:
                return responses, True
            got, rest = split_messages(rest + chunk)
            responses += got
            if until_tag is not None and any(r.op_tag == until_tag for r in responses):
                return responses, False
    return responses, False
