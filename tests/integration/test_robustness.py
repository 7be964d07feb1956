"""Raw-socket abuse: the server drops or rejects bad input and keeps serving everyone else.

Rules: no client library on the abusive connection (hand-encoded BER from ``_ber``); after each
abuse a connection opened beforehand and a fresh one must both still answer a search.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import ldap
import pytest

from . import _ber
from ._support import BASE_DN, MAX_MESSAGE_SIZE, LdapServer, connect

SEARCH_DONE = 0x65
NOTICE = 0x78
PROTOCOL_ERROR = 2


@pytest.fixture
def port(server: LdapServer) -> int:
    parsed = urlparse(server.url)
    assert parsed.port is not None
    return parsed.port


@pytest.fixture
def bystander(url: str) -> Iterator[ldap.ldapobject.LDAPObject]:
    """A connection opened before the abuse; it must keep working afterwards."""
    conn = connect(url)
    conn.search_s(BASE_DN, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
    yield conn
    conn.unbind_s()


def assert_alive(port: int, bystander: ldap.ldapobject.LDAPObject) -> None:
    assert bystander.search_s(BASE_DN, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
    req = _ber.message(7, _ber.search_request(BASE_DN.encode(), 0, _ber.present(b"objectClass")))
    responses, closed = _ber.exchange(port, req, SEARCH_DONE)
    done = [r for r in responses if r.op_tag == SEARCH_DONE]
    assert done and done[0].msgid == 7 and done[0].result_code == 0, (responses, closed)


def assert_rejected(responses: list[_ber.Response], closed: bool) -> None:
    """Either a disconnect or a protocolError answer (notice of disconnection or result)."""
    codes = {r.result_code for r in responses}
    assert closed or PROTOCOL_ERROR in codes, responses
    assert codes <= {PROTOCOL_ERROR}, responses


def test_garbage_bytes(port: int, bystander: ldap.ldapobject.LDAPObject) -> None:
    responses, closed = _ber.exchange(port, b"\xff\x00garbage\x13\x37" * 16, None, timeout=10)
    assert_rejected(responses, closed)
    assert closed
    assert_alive(port, bystander)


def test_garbage_inside_valid_envelope(port: int, bystander: ldap.ldapobject.LDAPObject) -> None:
    bogus = _ber.tlv(0x30, _ber.integer(3) + _ber.tlv(0x5F, b"\x01\x02\x03"))
    responses, closed = _ber.exchange(port, bogus, None, timeout=10)
    assert_rejected(responses, closed)
    assert_alive(port, bystander)


def test_truncated_pdu_then_close(port: int, bystander: ldap.ldapobject.LDAPObject) -> None:
    req = _ber.message(2, _ber.search_request(BASE_DN.encode(), 2, _ber.present(b"objectClass")))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(req[: len(req) // 2])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            pytest.fail("server kept the connection open after EOF in the middle of a PDU")
        responses, _ = _ber.split_messages(data)
        assert all(r.result_code == PROTOCOL_ERROR for r in responses), responses
    assert_alive(port, bystander)


def test_pdu_over_size_limit_disconnects(port: int, bystander: ldap.ldapobject.LDAPObject) -> None:
    declared = MAX_MESSAGE_SIZE * 2
    header = b"\x30\x84" + declared.to_bytes(4, "big") + _ber.integer(1)
    payload = header + b"\x63\x84" + (declared - 16).to_bytes(4, "big") + b"\x00" * 4096
    responses, closed = _ber.exchange(port, payload, None, timeout=10)
    assert closed, "server kept a connection that announced an oversized PDU"
    assert_rejected(responses, closed)
    assert_alive(port, bystander)


def test_filter_nested_1000_deep(
    port: int, bystander: ldap.ldapobject.LDAPObject, target: str
) -> None:
    flt = _ber.nested_and(_ber.present(b"objectClass"), 1000)
    req = _ber.message(5, _ber.search_request(BASE_DN.encode(), 0, flt))
    responses, closed = _ber.exchange(port, req, SEARCH_DONE, timeout=15)
    if target == "slapd":
        # slapd has no nesting limit: it evaluates the filter and answers success.
        done = [r for r in responses if r.op_tag == SEARCH_DONE]
        assert done and done[0].result_code == 0, responses
    else:
        assert_rejected(responses, closed)
    assert_alive(port, bystander)
