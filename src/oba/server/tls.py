"""TLS for the LDAP server: the server SSL context, its reload on file change, and LDAPS.

Rules for this module:
- ``build_context`` is the one place TLS settings are chosen: TLS 1.2 or later, forward-secret
  AEAD cipher suites for TLS 1.2 (TLS 1.3 suites are OpenSSL's), no compression, no
  renegotiation, server cipher preference.
- ``ServerTLS`` holds the current context. ``check`` (polled every ``POLL_INTERVAL`` seconds
  by ``watch``, and by ``context`` at every handshake: two ``stat`` calls) rebuilds it when the
  certificate or key file changes (mtime, size or inode); new connections get the new context,
  established ones keep theirs. Checking at the handshake makes every listener process
  (``server.workers``) serve the new pair from the first handshake after the change. A file
  that does not load logs an error and the previous context stays in force until the files
  change again.
- ``start_ldaps`` builds the context when ``server.tlsCert``/``tlsKey`` are set (a context that
  cannot be built fails the start), hands it to the LDAP listener (StartTLS) and opens LDAPS on
  ``server.tlsAddress``. Listeners take one fixed context; ``listener_context`` makes it switch
  every handshake to the current context (through the ClientHello callback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("oba.tls")

STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
POLL_INTERVAL = 1.0
# TLS 1.2 suites: ECDHE/DHE key exchange with AES-GCM or ChaCha20-Poly1305 only.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"

Signature = tuple[tuple[int, int, int], ...]


def build_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side context for ``cert``/``key`` (PEM); raises ``ssl.SSLError``/``OSError``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.load_cert_chain(cert, key)
    return ctx


def _signature(paths: tuple[str, ...]) -> Signature:
    out: list[tuple[int, int, int]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append((-1, -1, -1))
            continue
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class ServerTLS:
    """The current server context for one certificate/key pair, reloaded on change."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert = cert
        self.key = key
        self._seen = _signature((cert, key))
        self._context = build_context(cert, key)
        self.reloads = 0  # successful reloads since start
        self.failures = 0  # reload attempts that failed

    @property
    def context(self) -> ssl.SSLContext:
        """The context for a handshake starting now (LDAPS, StartTLS, HTTPS): the files are
        checked first, so every process serves a changed pair from its first handshake."""
        with contextlib.suppress(Exception):  # a failed reload keeps the current context
            self.check()
        return self._context

    def check(self) -> bool:
        """Reload when a file changed since the last look; True when a new context is in use."""
        sig = _signature((self.cert, self.key))
        if sig == self._seen:
            return False
        self._seen = sig
        try:
            ctx = build_context(self.cert, self.key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.failures += 1
            log.error("TLS certificate reload failed (%s, %s): %s; keeping the previous "
                      "certificate", self.cert, self.key, exc)
            return False
        self._context = ctx
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    async def watch(self, interval: float = POLL_INTERVAL) -> None:
        """Poll the files forever (cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
            except Exception:  # never let the watcher die
                log.exception("TLS certificate watcher error")

    def sni_switch(self, sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        """An ``sni_callback`` (OpenSSL calls it on every ClientHello, with None when the client
        sends no server name) that makes a listener's fixed context serve the current one."""
        current = self.context
        if ctx is not current:
            sslobj.context = current

    def listener_context(self) -> ssl.SSLContext:
        """The context to give a listener once: it switches each handshake to the current one."""
        ctx = build_context(self.cert, self.key)
        ctx.sni_callback = self.sni_switch
        return ctx


async def start_ldaps(runtime: Any) -> Callable[[], Awaitable[None]] | None:
    """Start LDAPS on ``server.tlsAddress`` when a certificate is configured; returns a stop
    callable, or None when TLS is off. Also enables StartTLS on the plain listener."""
    cfg = runtime.config.server
    if not (cfg.tlsCert and cfg.tlsKey):
        return None
    tls = ServerTLS(cfg.tlsCert, cfg.tlsKey)
    runtime.ldap.tls = tls
    runtime.tls = tls  # the REST HTTPS listener serves the same (reloaded) certificate
    await runtime.ldap.start(cfg.tlsAddress, implicit_tls=True)
    watcher = asyncio.create_task(tls.watch(), name="tls certificate watcher")

    async def stop() -> None:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    return stop
