"""Mutual TLS between cluster nodes: the SSL contexts built from ``cluster.raftTLSCert``,
``cluster.raftTLSKey`` and ``cluster.raftTLSCA``, and the checks that refuse a setup that could
never form a cluster.

Rules for this module (who may be a peer):
- Both directions are verified: a node presents ``raftTLSCert`` when it dials and when it is
  dialled, and requires a certificate from the other side (``CERT_REQUIRED`` on the server and
  the client context). TLS >= 1.2. Host names are not checked: peers are addressed by IP and
  the trust anchors are the cluster's own.
- Trust anchors: with ``raftTLSCA`` set, exactly the certificates in that file. With it empty,
  the certificates in the ``raftTLSCert`` file itself: one self-signed certificate shared by
  every node (``openssl req -x509 ...``), or each node's certificate followed by the CA
  certificate(s) that issued it, up to the self-signed root. Never the system trust store (a
  certificate from a public CA must not make anyone a cluster member).
- Only a self-signed certificate is an anchor: ``VERIFY_X509_PARTIAL_CHAIN`` is deliberately
  NOT set, so an intermediate CA certificate found in a file (a ``fullchain.pem``) does not
  make every certificate that intermediate ever issued a peer. A file whose certificate does
  not chain to a self-signed certificate in it therefore needs ``raftTLSCA``.
- Start-up self-check: a node runs one TLS handshake with itself in memory (its client context
  against its server context). Without ``raftTLSCA`` its peers' anchors come from the same kind
  of file, so a failure means they would refuse this node: it does not start (instead of
  running with no leader, silently); nor does it with a certificate no one accepts (expired,
  wrong purpose). With ``raftTLSCA`` set, a certificate that does not chain to it is logged as
  a warning at start (peers may be configured with another bundle; a foreign node is refused by
  its peers, whatever it thinks of itself).
- Every problem is a ``RaftTLSError`` whose text starts with the config key to fix
  (``cluster.raftTLSKey: ...``). It is an ``OSError``, which ``oba serve`` reports as one line
  ("cannot start: ..."); ``Config.validate_semantics`` reports the same texts from ``check``.
- Standard library only (``ssl``): no certificate parsing beyond finding PEM blocks.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from pathlib import Path

__all__ = ["RaftTLSError", "check", "describe_trust", "make_ssl_contexts"]

log = logging.getLogger("oba.raft")

CERT_KEY = "cluster.raftTLSCert"
KEY_KEY = "cluster.raftTLSKey"
CA_KEY = "cluster.raftTLSCA"

_CERT_BLOCK = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.S)
_KEY_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----")
# X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT (2), _DEPTH_ZERO_SELF_SIGNED_CERT (18),
# _SELF_SIGNED_CERT_IN_CHAIN (19), _UNABLE_TO_GET_ISSUER_CERT_LOCALLY (20): no trust anchor
_UNTRUSTED = (2, 18, 19, 20)


class RaftTLSError(OSError):
    """A Raft TLS setting that cannot work; ``str()`` is ``"<config key>: <problem>"``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


def _read(key: str, path: str) -> str:
    """The text of ``path`` or a ``RaftTLSError`` for ``key`` saying why it cannot be read."""
    if not os.path.exists(path):
        raise RaftTLSError(key, f"file not found: {path}")
    if not os.path.isfile(path):
        raise RaftTLSError(key, f"not a file: {path}")
    try:
        return Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise RaftTLSError(key, f"cannot read {path}: {exc.strerror or exc}") from None


def _no_password() -> bytes:
    # load_cert_chain would otherwise prompt on the terminal for an encrypted key
    raise RaftTLSError(KEY_KEY, "the private key is encrypted; give an unencrypted key file "
                                "(readable by the oba user only)")


def _load_pair(ctx: ssl.SSLContext, cert: str, key: str, key_text: str) -> None:
    try:
        ctx.load_cert_chain(cert, key, password=_no_password)
    except RaftTLSError:
        raise
    except ssl.SSLError as exc:
        reason = exc.reason or ""
        if "KEY_VALUES_MISMATCH" in reason or "key values mismatch" in str(exc):
            raise RaftTLSError(KEY_KEY, f"{key} is not the private key of the certificate in "
                                        f"{CERT_KEY} ({cert})") from None
        if _KEY_BLOCK.search(key_text) is None:
            raise RaftTLSError(KEY_KEY, f"no PEM private key in {key}") from None
        raise RaftTLSError(CERT_KEY, f"cannot load {cert} with the key {key}: {exc}") from None


def _contexts(cert: str, key: str, ca: str, cert_text: str, key_text: str
              ) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    anchors = [m.group(0) for m in _CERT_BLOCK.finditer(cert_text)]
    if not anchors:
        raise RaftTLSError(CERT_KEY, f"no PEM certificate in {cert}")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        # never VERIFY_X509_PARTIAL_CHAIN (see the module rules), whatever Python's default
        ctx.verify_flags &= ~ssl.VERIFY_X509_PARTIAL_CHAIN
        _load_pair(ctx, cert, key, key_text)
        if ca:
            try:
                ctx.load_verify_locations(cafile=ca)
            except ssl.SSLError as exc:
                raise RaftTLSError(
                    CA_KEY, f"no usable PEM certificate in {ca} ({exc.reason or exc})") from None
        else:
            try:
                ctx.load_verify_locations(cadata="\n".join(anchors) + "\n")
            except ssl.SSLError as exc:  # a block that is not a certificate after all
                raise RaftTLSError(CERT_KEY, f"cannot use the certificates in {cert}: {exc}"
                                   ) from None
    return server, client


def _self_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    """One TLS handshake of this node with itself, in memory; raises ``ssl.SSLError``."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    sides = [client.wrap_bio(c_in, c_out), server.wrap_bio(s_in, s_out, server_side=True)]
    done = [False, False]
    for _ in range(16):
        for i, side in enumerate(sides):
            if not done[i]:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            return
    raise ssl.SSLError("the TLS handshake with itself did not complete")


def _self_check(server: ssl.SSLContext, client: ssl.SSLContext, cert: str, ca: str
                ) -> str | None:
    """Raise when no peer configured like this node could accept it; return a warning when
    this node's certificate does not chain to its own ``raftTLSCA`` (the peers may trust
    another bundle, so that alone does not stop the node)."""
    try:
        _self_handshake(server, client)
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or str(exc)
        if exc.verify_code in _UNTRUSTED and not ca:
            raise RaftTLSError(
                CA_KEY, f"must be set: the certificate in {CERT_KEY} ({cert}) is not "
                f"self-signed and the file holds no CA certificate it chains to ({why}); set "
                f"{CA_KEY} to the CA certificate that issued the nodes' certificates, or append "
                f"that CA certificate to {cert}") from None
        if exc.verify_code in _UNTRUSTED:
            return (f"the certificate in {cert} does not chain to {CA_KEY} ({ca}): peers that "
                    f"trust the same CA will refuse this node ({why})")
        raise RaftTLSError(
            CERT_KEY, f"the certificate in {cert} fails its own verification, so the peers "
            f"would refuse this node: {why}") from None
    except ssl.SSLError as exc:
        raise RaftTLSError(CERT_KEY, f"a TLS handshake with {cert} fails: {exc}") from None
    return None


def _files(cert: str, key: str, ca: str) -> tuple[list[RaftTLSError], str, str]:
    problems: list[RaftTLSError] = []
    texts: dict[str, str] = {}
    for name, path in ((CERT_KEY, cert), (KEY_KEY, key), (CA_KEY, ca)):
        if not path:
            continue
        try:
            texts[name] = _read(name, path)
        except RaftTLSError as exc:
            problems.append(exc)
    return problems, texts.get(CERT_KEY, ""), texts.get(KEY_KEY, "")


def make_ssl_contexts(cert: str, key: str, ca: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for mutual TLS between nodes (see the module rules for who
    is trusted). Raises ``RaftTLSError`` (an ``OSError``) naming the config key to fix."""
    problems, cert_text, key_text = _files(cert, key, ca)
    if problems:
        raise problems[0]
    server, client = _contexts(cert, key, ca, cert_text, key_text)
    warning = _self_check(server, client, cert, ca)
    if warning is not None:
        log.warning("raft TLS: %s", warning)
    return server, client


def check(cert: str, key: str, ca: str) -> list[RaftTLSError]:
    """Every problem ``make_ssl_contexts`` would raise for these settings, unreadable files
    all at once (then the first problem with their contents); empty when they work (a
    warning ``make_ssl_contexts`` would log is not a problem)."""
    problems, cert_text, key_text = _files(cert, key, ca)
    if problems:
        return problems
    try:
        server, client = _contexts(cert, key, ca, cert_text, key_text)
        _self_check(server, client, cert, ca)
    except RaftTLSError as exc:
        return [exc]
    return []


def describe_trust(cert: str, ca: str) -> str:
    """How peers are verified, for the start-up log line."""
    if ca:
        return (f"peers must present a certificate chaining to {ca} ({CA_KEY}); this node "
                f"presents {cert}")
    try:
        count = len(_CERT_BLOCK.findall(Path(cert).read_text(encoding="ascii",
                                                              errors="replace")))
    except OSError:
        count = 0
    what = "the certificate" if count == 1 else f"the {count} certificates"
    return (f"peers must present a certificate chaining to {what} in {cert} ({CERT_KEY}; no "
            f"{CA_KEY} set), which this node presents too")
