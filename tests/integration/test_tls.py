"""TLS over real connections: LDAPS, StartTLS, requireTLS, HTTPS for REST, certificate reload.

Rules: certificates come from trustme (a throw-away CA per test module); clients verify them
(ldap-utils through ``LDAPTLS_CACERT``, python-ldap through ``OPT_X_TLS_CACERTFILE`` with
``OPT_X_TLS_NEWCTX``, raw sockets through ``ssl``). Servers are private processes stopped by PID.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import ldap
import pytest
import trustme

from oba.server.tls import build_context

from ._ber import extended_request, message, split_messages
from ._support import (
    BASE_DN,
    ROOT_DN,
    ROOT_PW,
    LdapServer,
    connect,
    free_port,
    require_tool,
    wait_until,
)

STARTTLS = b"1.3.6.1.4.1.1466.20037"


@dataclass
class TLSServer(LdapServer):
    """An Oba server with a certificate, LDAPS, requireTLS and HTTPS REST."""

    cert: Path = Path()
    key: Path = Path()
    tls_port: int = field(default_factory=free_port)
    rest_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    require_tls: bool = True

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}/"

    def command(self) -> list[str]:
        cmd = super().command()
        conf = self.workdir / "oba.yaml"
        text = conf.read_text().replace(
            "server:\n",
            "server:\n"
            f'  tlsAddress: "127.0.0.1:{self.tls_port}"\n'
            f'  tlsCert: "{self.cert}"\n'
            f'  tlsKey: "{self.key}"\n',
            1,
        )
        text += (
            "security:\n"
            f"  requireTLS: {'true' if self.require_tls else 'false'}\n"
            "rest:\n"
            "  enabled: true\n"
            f'  address: "127.0.0.1:{self.rest_port}"\n'
            f'  tlsAddress: "127.0.0.1:{self.https_port}"\n'
            '  jwtSecret: "tls-test-secret-0123456789abcdef0123"\n'
        )
        conf.write_text(text)
        return cmd


    def start(self, timeout: float = 30.0) -> None:
        """Start, then wait for LDAPS and HTTPS too (they open after the plain listener)."""
        super().start(timeout)

        def listening() -> bool:
            try:
                for port in (self.tls_port, self.https_port):
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except OSError:
                return False
            return True

        wait_until(listening, timeout, "the LDAPS and HTTPS listeners")


def write_pair(ca: trustme.CA, cert: Path, key: Path) -> None:
    issued = ca.issue_cert("127.0.0.1", "localhost")
    key.write_bytes(issued.private_key_pem.bytes())
    cert.write_bytes(b"".join(p.bytes() for p in issued.cert_chain_pems))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def make_tls_server(ca: trustme.CA, workdir: Path, require_tls: bool = True) -> TLSServer:
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    write_pair(ca, cert, key)
    return TLSServer("oba", workdir / "srv", cert=cert, key=key, require_tls=require_tls)


@pytest.fixture(scope="module")
def tls_server(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    srv = make_tls_server(ca, tmp_path_factory.mktemp("tls"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def tool(name: str, args: list[str], ca_file: str) -> subprocess.CompletedProcess[str]:
    exe = require_tool(name, "ldap-utils")
    # no LDAPNOINIT: it would make the tools ignore LDAPTLS_* as well
    env = dict(os.environ, LDAPTLS_CACERT=ca_file, LDAPTLS_REQCERT="demand")
    return subprocess.run([exe, "-x", *args], capture_output=True, text=True, timeout=30,
                          env=env, check=False)


def tls_connect(url: str, ca_file: str) -> ldap.ldapobject.LDAPObject:
    conn = connect(url)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, ca_file)
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    return conn


def read_responses(sock: socket.socket | ssl.SSLSocket, count: int) -> list[tuple[int, int]]:
    """Read until ``count`` responses arrived: (message id, result code) each."""
    data = b""
    out: list[tuple[int, int]] = []
    while len(out) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {out}"
        got, data = split_messages(data + chunk)
        out += [(r.msgid, r.result_code if r.result_code is not None else -1) for r in got]
    return out


# --------------------------------------------------------------------------- ldap-utils


def test_root_dse_advertises_starttls(tls_server: TLSServer) -> None:
    conn = connect(tls_server.url)
    [(_, attrs)] = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["supportedExtension"])
    assert STARTTLS in attrs["supportedExtension"]


def test_ldapwhoami_starttls_zz(tls_server: TLSServer, ca_file: str) -> None:
    done = tool("ldapwhoami", ["-ZZ", "-H", tls_server.url, "-D", ROOT_DN, "-w", ROOT_PW],
                ca_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"dn:{ROOT_DN}"


def test_ldapsearch_ldaps(tls_server: TLSServer, ca_file: str) -> None:
    done = tool("ldapsearch", ["-H", tls_server.ldaps_url, "-D", ROOT_DN, "-w", ROOT_PW,
                               "-LLL", "-b", BASE_DN, "-s", "base", "dn"], ca_file)
    assert done.returncode == 0, done.stderr
    assert f"dn: {BASE_DN}" in done.stdout


def test_ldaps_rejects_an_untrusted_client_view(tls_server: TLSServer, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    done = tool("ldapwhoami", ["-H", tls_server.ldaps_url], str(other))
    assert done.returncode != 0  # the client refuses a certificate from another CA


def test_require_tls_refuses_plaintext_password_bind(tls_server: TLSServer,
                                                     ca_file: str) -> None:
    done = tool("ldapwhoami", ["-H", tls_server.url, "-D", ROOT_DN, "-w", ROOT_PW], ca_file)
    assert done.returncode == 13, done.stderr
    conn = connect(tls_server.url)
    with pytest.raises(ldap.CONFIDENTIALITY_REQUIRED):
        conn.simple_bind_s(ROOT_DN, ROOT_PW)
    conn.simple_bind_s("", "")  # anonymous binds stay allowed in the clear
    assert conn.whoami_s() == ""
    conn.unbind_s()


def test_python_ldap_bind_after_starttls(tls_server: TLSServer, ca_file: str) -> None:
    conn = tls_connect(tls_server.url, ca_file)
    conn.start_tls_s()
    conn.simple_bind_s(ROOT_DN, ROOT_PW)
    assert conn.whoami_s() == f"dn:{ROOT_DN}"
    conn.unbind_s()
    conn = tls_connect(tls_server.ldaps_url, ca_file)
    conn.simple_bind_s(ROOT_DN, ROOT_PW)
    assert conn.whoami_s() == f"dn:{ROOT_DN}"
    conn.unbind_s()


# --------------------------------------------------------------------------- StartTLS errors


def test_starttls_twice_is_an_operations_error(tls_server: TLSServer, ca_file: str) -> None:
    ctx = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw:
        raw.sendall(message(1, extended_request(STARTTLS)))
        assert read_responses(raw, 1) == [(1, 0)]
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(message(2, extended_request(STARTTLS)))
            assert read_responses(tls, 1) == [(2, 1)]
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_starttls_with_outstanding_operation(tls_server: TLSServer) -> None:
    anon_bind = b"\x60\x07\x02\x01\x03\x04\x00\x80\x00"
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw:
        raw.sendall(message(1, anon_bind) + message(2, extended_request(STARTTLS)))
        got = dict(read_responses(raw, 2))
    assert got == {1: 0, 2: 1}


def test_plaintext_pipelined_after_starttls_is_refused(tls_server: TLSServer) -> None:
    """Bytes sent in the clear behind a StartTLS request must never run as if protected."""
    whoami = message(2, extended_request(b"1.3.6.1.4.1.4203.1.11.3"))
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw:
        raw.sendall(message(1, extended_request(STARTTLS)) + whoami)
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    got, _ = split_messages(data)
    assert [(r.msgid, r.result_code) for r in got] == [(0, 2)]  # Notice: protocolError


def test_tls_1_2_is_accepted_and_older_is_not_configured(tls_server: TLSServer,
                                                         ca_file: str) -> None:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with (socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=10) as raw,
          ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
        assert tls.version() == "TLSv1.2"
        info = tls.cipher()
        assert info is not None
        assert "GCM" in info[0] or "CHACHA20" in info[0]
    server_ctx = build_context(str(tls_server.cert), str(tls_server.key))
    assert server_ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server_ctx.options & ssl.OP_NO_COMPRESSION


def test_starttls_without_tls_configured(url: str) -> None:
    conn = connect(url)
    with pytest.raises(ldap.PROTOCOL_ERROR):
        conn.start_tls_s()
    [(_, attrs)] = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["supportedExtension"])
    assert STARTTLS not in attrs["supportedExtension"]


# --------------------------------------------------------------------------- REST over HTTPS


def test_rest_https(tls_server: TLSServer, ca_file: str) -> None:
    with httpx.Client(verify=ssl.create_default_context(cafile=ca_file)) as client:
        resp = client.get(f"https://127.0.0.1:{tls_server.https_port}/api/v1/health")
    assert resp.status_code == 200
    with httpx.Client() as plain:
        assert plain.get(f"http://127.0.0.1:{tls_server.rest_port}/api/v1/health").is_success


# --------------------------------------------------------------------------- reload


def handshake_ok(port: int, cafile: str) -> bool:
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
              ctx.wrap_socket(raw, server_hostname="127.0.0.1")):
            return True
    except (ssl.SSLError, OSError):
        return False


def test_certificate_reload_without_restart(tmp_path: Path) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    old_file, new_file = tmp_path / "old.pem", tmp_path / "new.pem"
    old_ca.cert_pem.write_to_path(str(old_file))
    new_ca.cert_pem.write_to_path(str(new_file))
    srv = make_tls_server(old_ca, tmp_path / "w", require_tls=False)
    srv.start()
    try:
        assert handshake_ok(srv.tls_port, str(old_file))
        held = tls_connect(srv.ldaps_url, str(old_file))
        held.simple_bind_s(ROOT_DN, ROOT_PW)
        # a broken file: logged, and the old certificate stays in force
        srv.cert.write_text("not a certificate\n")
        wait_until(lambda: "TLS certificate reload failed" in srv.log_tail(100000), 15,
                   "the reload failure to be logged")
        assert handshake_ok(srv.tls_port, str(old_file))
        # a new pair: new connections (LDAPS, StartTLS and HTTPS) see it, no restart
        write_pair(new_ca, srv.cert, srv.key)
        wait_until(lambda: handshake_ok(srv.tls_port, str(new_file)), 15,
                   "LDAPS to serve the new certificate")
        assert not handshake_ok(srv.tls_port, str(old_file))
        done = tool("ldapwhoami", ["-ZZ", "-H", srv.url], str(new_file))
        assert done.returncode == 0, done.stderr
        assert handshake_ok(srv.https_port, str(new_file))
        # the connection made before the change still works
        assert held.whoami_s() == f"dn:{ROOT_DN}"
        held.unbind_s()
    finally:
        srv.stop()


def test_require_tls_refuses_rest_passwords_over_plain_http(tmp_path: Path) -> None:
    from .rest_support import RestServer

    srv = RestServer("oba", tmp_path / "plain", rest_extra="security:\n  requireTLS: true\n")
    srv.start()
    try:
        with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as plain:
            assert plain.get("/health").status_code == 200  # no password, no refusal
            r = plain.get("/stats", auth=(ROOT_DN, ROOT_PW))
            assert r.status_code == 403 and r.json()["error"] == "confidentiality_required"
            r = plain.post("/auth/bind", json={"dn": ROOT_DN, "password": ROOT_PW})
            assert r.status_code == 403 and r.json()["error"] == "confidentiality_required"
            # a TLS-terminating proxy (127.0.0.1 is in rest.trustedProxies) says https
            proxied = {"X-Forwarded-Proto": "https"}
            r = plain.post("/auth/bind", json={"dn": ROOT_DN, "password": ROOT_PW},
                           headers=proxied)
            assert r.status_code == 200, r.text
            token = r.json()["token"]
            assert plain.get("/stats", auth=(ROOT_DN, ROOT_PW),
                             headers=proxied).status_code == 200
            # a token is not a password: it passes on plain HTTP
            assert plain.get("/stats", headers={
                "Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        srv.stop()
