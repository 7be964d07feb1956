"""Requests the server does not support get an explicit error, never silence.

Rules: result codes are what slapd answers; the raw SASL case uses hand-encoded BER because
client libraries refuse unknown mechanisms before sending anything.
"""

from __future__ import annotations

from urllib.parse import urlparse

import ldap
import ldap.extop
import pytest

from . import _ber
from ._support import ROOT_DN, ROOT_PW, connect

BIND_RESPONSE = 0x61
EXTENDED_RESPONSE = 0x78


def test_unknown_extended_operation_python_ldap(url: str) -> None:
    conn = connect(url, ROOT_DN, ROOT_PW)
    with pytest.raises(ldap.PROTOCOL_ERROR):
        conn.extop_s(ldap.extop.ExtendedRequest("1.3.6.1.4.1.99999.1.2.3", b"payload"))
    # the connection is still usable afterwards
    assert conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
    conn.unbind_s()


def test_unknown_extended_operation_raw(url: str) -> None:
    port = urlparse(url).port
    assert port is not None
    req = _ber.message(4, _ber.extended_request(b"1.2.3.4.5.6.7"))
    responses, _ = _ber.exchange(port, req, EXTENDED_RESPONSE)
    [resp] = [r for r in responses if r.op_tag == EXTENDED_RESPONSE]
    assert (resp.msgid, resp.result_code) == (4, 2)


def test_sasl_bind_unknown_mechanism(url: str) -> None:
    port = urlparse(url).port
    assert port is not None
    req = _ber.message(1, _ber.sasl_bind_request(b"NO-SUCH-MECH"))
    responses, _ = _ber.exchange(port, req, BIND_RESPONSE)
    [resp] = [r for r in responses if r.op_tag == BIND_RESPONSE]
    assert (resp.msgid, resp.result_code) == (1, 7)  # authMethodNotSupported
