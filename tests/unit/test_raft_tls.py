"""Raft mutual TLS (oba.raft.tls): who is accepted as a peer, checked with real TLS handshakes
over loopback TCP in both directions, and the start-up errors naming the config key to fix.

Certificates are made with `cryptography` (trustme's dependency) so each case is explicit: a
shared self-signed certificate (what `openssl req -x509` gives), per-node certificates with
their CA in the same file, a CA in raftTLSCA, an intermediate without its root, foreign ones.
"""

from __future__ import annotations

import datetime
import re
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from oba.raft.tls import RaftTLSError, check, describe_trust, make_ssl_contexts

NOW = datetime.datetime.now(datetime.UTC)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Cert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def make_cert(name: str, issuer: Cert | None = None, *, ca: bool = False,
              days: tuple[int, int] = (-1, 30), eku: bool = True) -> Cert:
    """A certificate for ``name``: self-signed when ``issuer`` is None, else signed by it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + datetime.timedelta(days=days[0]))
        .not_valid_after(NOW + datetime.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    elif eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return Cert(builder.sign(signer_key, hashes.SHA256()), key)


class Files:
    """Writes certificate and key files into one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def node(self, name: str, leaf: Cert, *chain: Cert) -> tuple[str, str]:
        """(cert file holding ``leaf`` then ``chain``, key file)."""
        cert_file, key_file = self.root / f"{name}.crt", self.root / f"{name}.key"
        cert_file.write_bytes(leaf.pem + b"".join(c.pem for c in chain))
        key_file.write_bytes(leaf.key_pem)
        key_file.chmod(0o600)
        return str(cert_file), str(key_file)

    def ca(self, name: str, *certs: Cert) -> str:
        path = self.root / f"{name}.pem"
        path.write_bytes(b"".join(c.pem for c in certs))
        return str(path)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


# --------------------------------------------------------------------------- handshakes


@dataclass
class Outcome:
    server_error: BaseException | None
    client_error: BaseException | None

    @property
    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None

    def refused_by(self, side: str) -> bool:
        """The handshake failed because ``side`` ("server"/"client") refused the other's
        certificate (and not for some other reason)."""
        error = self.server_error if side == "server" else self.client_error
        return isinstance(error, ssl.SSLCertVerificationError)


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> Outcome:
    """One TLS connection over loopback TCP; the server sends b"ok" once its handshake (which
    includes verifying the client's certificate) is done, the client reads it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    result: dict[str, BaseException | None] = {"server": None}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(5)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
                tls.recv(1)
        except (OSError, ssl.SSLError) as exc:
            result["server"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    client_error: BaseException | None = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                client_ctx.wrap_socket(raw) as tls:
            if tls.recv(2) != b"ok":
                raise ConnectionError("the server closed the connection")
    except (OSError, ssl.SSLError) as exc:
        client_error = exc
    thread.join(10)
    listener.close()
    return Outcome(result["server"], client_error)


def permissive(cert: str, key: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A foreign node that accepts anything: (server, client) contexts presenting ``cert``. A
    refusal against it can only come from the other side."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    for ctx in (server, client):
        ctx.load_cert_chain(cert, key)
    client.verify_mode = ssl.CERT_NONE
    server.verify_mode = ssl.CERT_OPTIONAL
    server.load_verify_locations(cadata=Path(cert).read_text())  # asks for a client cert
    return server, client


def assert_refused_both_ways(good: tuple[str, str, str], foreign: tuple[str, str]) -> None:
    """``good`` (cert, key, ca) refuses ``foreign`` (cert, key) as a server and as a client,
    even though the foreign side accepts anything."""
    g_server, g_client = make_ssl_contexts(*good)
    f_server, f_client = permissive(*foreign)
    inbound = handshake(g_server, f_client)
    assert inbound.refused_by("server"), inbound
    outbound = handshake(f_server, g_client)
    assert outbound.refused_by("client"), outbound


def assert_peers(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    """Nodes configured with ``a`` and ``b`` accept each other, whoever dials."""
    a_server, a_client = make_ssl_contexts(*a)
    b_server, b_client = make_ssl_contexts(*b)
    assert handshake(a_server, b_client).ok
    assert handshake(b_server, a_client).ok


# --------------------------------------------------------------------------- who is a peer


def test_one_shared_self_signed_certificate_without_a_ca(files: Files) -> None:
    shared = make_cert("oba-raft", ca=True)
    cert, key = files.node("raft", shared)
    assert_peers((cert, key, ""), (cert, key, ""))
    # another self-signed certificate, even with the same subject, is not a peer
    assert_refused_both_ways((cert, key, ""), files.node("evil", make_cert("oba-raft", ca=True)))


def test_a_self_signed_certificate_that_is_no_ca_works_too(files: Files) -> None:
    cert, key = files.node("raft", make_cert("oba-raft", ca=False))
    assert_peers((cert, key, ""), (cert, key, ""))
    assert_refused_both_ways((cert, key, ""), files.node("evil", make_cert("oba-raft")))


def docs_openssl_blocks() -> list[str]:
    """The ```bash blocks of docs/cluster.md that make certificates with openssl."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)
    return [b for b in blocks if "openssl req" in b]


def test_the_openssl_commands_of_docs_cluster_md(tmp_path: Path) -> None:
    """Both setups of docs/cluster.md, made by running its commands: the shared self-signed
    certificate, and per-node certificates from a private CA (with raftTLSCA, or with the CA
    certificate appended to each node's file)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    blocks = docs_openssl_blocks()
    assert len(blocks) == 2
    for code in blocks:
        subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=tmp_path, check=True,
                       capture_output=True, timeout=60)
    f = {name: str(tmp_path / name) for name in (
        "raft.crt", "raft.key", "ca.crt", "node1.crt", "node1.key", "node2.crt", "node2.key",
        "node1-chain.crt", "node2-chain.crt")}
    shared = (f["raft.crt"], f["raft.key"], "")
    assert_peers(shared, shared)
    with_ca = [(f[f"node{n}.crt"], f[f"node{n}.key"], f["ca.crt"]) for n in (1, 2)]
    assert_peers(*with_ca)
    chained = [(f[f"node{n}-chain.crt"], f[f"node{n}.key"], "") for n in (1, 2)]
    assert_peers(*chained)
    assert_peers(with_ca[0], chained[1])
    # the two setups do not trust each other
    assert_refused_both_ways(shared, (f["node1-chain.crt"], f["node1.key"]))
    assert_refused_both_ways(chained[0], (f["raft.crt"], f["raft.key"]))
    assert check(f["node1.crt"], f["node1.key"], "")[0].key == "cluster.raftTLSCA"


def test_per_node_certificates_with_their_ca_in_the_same_file(files: Files) -> None:
    ca = make_cert("cluster CA", ca=True)
    a = (*files.node("a", make_cert("node1", ca), ca), "")
    b = (*files.node("b", make_cert("node2", ca), ca), "")
    assert_peers(a, b)
    other = make_cert("other CA", ca=True)
    assert_refused_both_ways(a, files.node("f", make_cert("node1", other), other))
    assert_refused_both_ways(a, files.node("g", make_cert("node1", ca=True)))


def test_per_node_certificates_with_an_intermediate_and_root_in_the_file(files: Files) -> None:
    root = make_cert("root", ca=True)
    inter = make_cert("intermediate", root, ca=True)
    a = (*files.node("a", make_cert("node1", inter), inter, root), "")
    b = (*files.node("b", make_cert("node2", inter), inter, root), "")
    assert_peers(a, b)


def test_raft_tls_ca_is_the_only_anchor(files: Files) -> None:
    ca, other = make_cert("cluster CA", ca=True), make_cert("other CA", ca=True)
    ca_file = files.ca("ca", ca)
    a = (*files.node("a", make_cert("node1", ca)), ca_file)
    b = (*files.node("b", make_cert("node2", ca)), ca_file)
    assert_peers(a, b)
    assert_refused_both_ways(a, files.node("f", make_cert("node3", other)))
    # with raftTLSCA set, the CA certificates in a peer's own file are not trusted
    assert_refused_both_ways(a, files.node("g", make_cert("node3", other), other))
    assert_refused_both_ways(a, files.node("h", make_cert("self", ca=True)))


def test_the_system_trust_store_is_never_used(files: Files, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """A certificate from a CA the system trusts (here: SSL_CERT_FILE) is not a peer."""
    public = make_cert("Public Root CA", ca=True)
    monkeypatch.setenv("SSL_CERT_FILE", files.ca("public", public))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    stranger = files.node("stranger", make_cert("anyone", public))
    shared = files.node("raft", make_cert("oba-raft", ca=True))
    assert_refused_both_ways((*shared, ""), stranger)
    ca = make_cert("cluster CA", ca=True)
    assert_refused_both_ways((*files.node("a", make_cert("n", ca)), files.ca("ca", ca)),
                             stranger)


def test_contexts_require_certificates_both_ways_and_tls_1_2(files: Files) -> None:
    cert, key = files.node("raft", make_cert("oba-raft", ca=True))
    for ctx in make_ssl_contexts(cert, key, ""):
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert not ctx.check_hostname
        assert not ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    server, _ = make_ssl_contexts(cert, key, "")
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.check_hostname, no_cert.verify_mode = False, ssl.CERT_NONE
    outcome = handshake(server, no_cert)  # a client without a certificate
    assert not outcome.ok and outcome.server_error is not None


# --------------------------------------------------------------------------- refused at start


def error_of(cert: str, key: str, ca: str) -> RaftTLSError:
    problems = check(cert, key, ca)
    assert len(problems) == 1, problems
    with pytest.raises(RaftTLSError) as info:
        make_ssl_contexts(cert, key, ca)
    assert str(info.value) == str(problems[0])
    assert isinstance(info.value, OSError)  # `oba serve` reports it as one line
    return info.value


def test_a_leaf_that_is_not_self_signed_needs_raft_tls_ca(files: Files) -> None:
    ca = make_cert("cluster CA", ca=True)
    cert, key = files.node("n1", make_cert("node1", ca))
    err = error_of(cert, key, "")
    assert err.key == "cluster.raftTLSCA"
    assert str(err).startswith(f"cluster.raftTLSCA: must be set: the certificate in "
                               f"cluster.raftTLSCert ({cert}) is not self-signed")
    assert check(cert, key, files.ca("ca", ca)) == []


def test_an_intermediate_is_no_trust_anchor(files: Files) -> None:
    """Without its root, the intermediate CA certificate in the file (a `fullchain.pem`)
    anchors nothing: VERIFY_X509_PARTIAL_CHAIN is not set on purpose."""
    root = make_cert("root", ca=True)
    inter = make_cert("intermediate", root, ca=True)
    cert, key = files.node("n1", make_cert("node1", inter), inter)
    assert error_of(cert, key, "").key == "cluster.raftTLSCA"
    root_file = files.ca("root", root)
    assert check(cert, key, root_file) == []
    assert_peers((cert, key, root_file), (*files.node("n2", make_cert("node2", inter), inter),
                                          root_file))


def test_a_certificate_outside_raft_tls_ca_is_a_warning_at_start(
        files: Files, caplog: pytest.LogCaptureFixture) -> None:
    """Its peers (with that raftTLSCA) refuse it; the node itself starts and says why."""
    ca, other = make_cert("cluster CA", ca=True), make_cert("other CA", ca=True)
    ca_file = files.ca("ca", ca)
    outsider = files.node("n1", make_cert("node1", other))
    assert check(*outsider, ca_file) == []
    with caplog.at_level("WARNING", logger="oba.raft"):
        make_ssl_contexts(*outsider, ca_file)
    assert (f"raft TLS: the certificate in {outsider[0]} does not chain to cluster.raftTLSCA "
            f"({ca_file}): peers that trust the same CA will refuse this node") in caplog.text
    assert_refused_both_ways((*files.node("n2", make_cert("node2", ca)), ca_file), outsider)
    caplog.clear()
    with caplog.at_level("WARNING", logger="oba.raft"):
        make_ssl_contexts(*files.node("n3", make_cert("node3", ca)), ca_file)
    assert caplog.text == ""


def test_an_expired_certificate_is_refused_at_start(files: Files) -> None:
    cert, key = files.node("old", make_cert("oba-raft", ca=True, days=(-30, -1)))
    err = error_of(cert, key, "")
    assert err.key == "cluster.raftTLSCert" and "expired" in str(err)


def test_missing_files_are_all_reported(files: Files, tmp_path: Path) -> None:
    missing = [str(tmp_path / n) for n in ("a.crt", "a.key", "ca.pem")]
    problems = [str(p) for p in check(*missing)]
    assert problems == [f"cluster.raftTLSCert: file not found: {missing[0]}",
                        f"cluster.raftTLSKey: file not found: {missing[1]}",
                        f"cluster.raftTLSCA: file not found: {missing[2]}"]
    with pytest.raises(RaftTLSError, match=r"cluster\.raftTLSCert: file not found"):
        make_ssl_contexts(*missing)
    cert, key = files.node("raft", make_cert("oba-raft", ca=True))
    assert [str(p) for p in check(cert, key, str(tmp_path))] == [
        f"cluster.raftTLSCA: not a file: {tmp_path}"]


def test_an_unreadable_file_is_reported(files: Files) -> None:
    cert, key = files.node("raft", make_cert("oba-raft", ca=True))
    Path(key).chmod(0)
    try:
        if Path(key).read_bytes():  # running as root: permissions do not apply
            pytest.skip("file permissions are not enforced for this user")
    except PermissionError:
        pass
    try:
        assert [str(p) for p in check(cert, key, "")] == [
            f"cluster.raftTLSKey: cannot read {key}: Permission denied"]
    finally:
        Path(key).chmod(0o600)


def test_a_key_of_another_certificate_is_refused(files: Files) -> None:
    cert, _ = files.node("a", make_cert("oba-raft", ca=True))
    _, other_key = files.node("b", make_cert("oba-raft", ca=True))
    err = error_of(cert, other_key, "")
    assert str(err) == (f"cluster.raftTLSKey: {other_key} is not the private key of the "
                        f"certificate in cluster.raftTLSCert ({cert})")


def test_files_that_are_not_pem_are_refused(files: Files, tmp_path: Path) -> None:
    cert, key = files.node("raft", make_cert("oba-raft", ca=True))
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    assert str(error_of(str(junk), key, "")) == f"cluster.raftTLSCert: no PEM certificate in {junk}"
    assert str(error_of(key, cert, "")) == f"cluster.raftTLSCert: no PEM certificate in {key}"
    assert str(error_of(cert, str(junk), "")) == f"cluster.raftTLSKey: no PEM private key in {junk}"
    assert str(error_of(cert, key, str(junk))).startswith(
        f"cluster.raftTLSCA: no usable PEM certificate in {junk}")


def test_an_encrypted_key_is_refused_without_prompting(files: Files, tmp_path: Path) -> None:
    leaf = make_cert("oba-raft", ca=True)
    cert, _ = files.node("raft", leaf)
    key = tmp_path / "encrypted.key"
    key.write_bytes(leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    err = error_of(cert, str(key), "")
    assert err.key == "cluster.raftTLSKey" and "encrypted" in str(err)


def test_describe_trust_names_the_anchor_file(files: Files) -> None:
    ca = make_cert("cluster CA", ca=True)
    cert, _ = files.node("n1", make_cert("node1", ca), ca)
    ca_file = files.ca("ca", ca)
    assert f"chaining to {ca_file} (cluster.raftTLSCA)" in describe_trust(cert, ca_file)
    text = describe_trust(cert, "")
    assert f"chaining to the 2 certificates in {cert} (cluster.raftTLSCert; no " \
           f"cluster.raftTLSCA set)" in text
    shared, _ = files.node("shared", make_cert("oba-raft", ca=True))
    assert f"chaining to the certificate in {shared}" in describe_trust(shared, "")
