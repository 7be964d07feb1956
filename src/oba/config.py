"""Oba's configuration: pydantic models, YAML loading with line numbers, overrides, rendering.

Rules for this module:
- Key names are the original Oba's camelCase names (`server.tlsAddress`, `directory.baseDN`).
- Sources are applied in the original's order: built-in defaults, then the YAML file (after
  `${VAR}` / `${VAR:-default}` substitution), then command-line overrides, then `OBA_*`
  environment variables, which win over everything.
- Every problem becomes a `ConfigError` whose lines read `ORIGIN: section.key: message`, where
  ORIGIN is `FILE:LINE` for values from the file, `<env NAME>` or `<command line>` otherwise.
- Unknown keys, wrong types and malformed durations or sizes are errors, never ignored.
- The reference page (docs/configuration.md), `oba config init` and the environment variable
  names are all generated from the models below, so they cannot drift apart.
- A configuration loaded from a file remembers each value as the file wrote it (`_FileSource`),
  so that `render_config_file` (what `POST /api/v1/config/save` writes) puts `${VAR}`
  references back as references, and never writes a secret the file did not hold itself (one
  from an `OBA_*` variable or a resolved `${VAR}`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo

__all__ = [
    "ENV_PREFIX",
    "MASK",
    "Config",
    "ConfigError",
    "DirectoryConfig",
    "LoggingConfig",
    "ServerConfig",
    "StorageConfig",
    "default_config",
    "dump_config",
    "env_variables",
    "format_duration",
    "load_config",
    "parse_duration",
    "parse_size",
    "render_config_file",
    "render_config_reference",
    "render_default_yaml",
]

ENV_PREFIX = "OBA_"
MASK = "********"


class ConfigError(Exception):
    """One or more configuration problems; `errors` holds one formatted line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------- value types

_DURATION_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(value: object) -> timedelta:
    """Parse `150ms`, `30s`, `5m`, `1h`, `2d`, compounds like `1h30m`, or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h, got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("duration must not be negative")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {type(value).__name__}")
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return timedelta(seconds=float(text))
    pos = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(
            f"invalid duration {value!r} (use a number with a unit: ms, s, m, h, d, e.g. 30s)"
        )
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a duration the way a person writes it: `30s`, `1h30m`, `150ms`, `2d`."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts)


_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_size(value: object) -> int:
    """Parse a byte count: an integer, or a string like `10MiB`, `256MB`, `16GiB`."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes, got a boolean")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size in bytes, got {type(value).__name__}")
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", value)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r} (use bytes or a unit: KiB, MiB, GiB, MB, ...)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


@dataclass(frozen=True)
class _Kind:
    """Field metadata: how the reference page names the type, and special handling."""

    name: str
    path: bool = False
    secret: bool = False


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    _Kind("duration"),
]
Size = Annotated[int, BeforeValidator(parse_size), Field(gt=0), _Kind("size (bytes)")]
PathStr = Annotated[str, _Kind("path", path=True)]
Secret = Annotated[str, _Kind("string (secret)", secret=True)]
IndexType = Literal["eq", "pres", "sub"]


def _check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {value!r}: expected HOST:PORT or :PORT")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"invalid address {value!r}: put IPv6 hosts in brackets, [::1]:389")
    return value


_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")  # a name or IPv4


def _check_peer_address(value: str) -> str:
    """A peer's address must be dialable: HOST:PORT with a host and a port > 0."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"invalid address {value!r}: expected HOST:PORT, e.g. node1:4445")
    if not host:
        raise ValueError(f"invalid address {value!r}: a peer needs a host (HOST:PORT, "
                         "e.g. node1:4445)")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"invalid address {value!r}: {host} is no IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"invalid address {value!r}: put IPv6 hosts in brackets, [::1]:4445")
    elif not _HOST.fullmatch(host):
        raise ValueError(f"invalid address {value!r}: {host!r} is not a host name or address")
    return value


Address = Annotated[str, _Kind("host:port")]


def _file_problem(path: str) -> str | None:
    """Why ``path`` is not a readable file, or None."""
    if not os.path.exists(path):
        return f"file not found: {path}"
    if not os.path.isfile(path):
        return f"not a file: {path}"
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None


def _encrypted_key() -> bytes:
    # load_cert_chain would otherwise prompt on the terminal for the key's password
    raise ValueError("the private key is encrypted; give an unencrypted key file")


def _key_pair_problem(cert: str, key: str, names: tuple[str, str]) -> tuple[str, str] | None:
    """(config key, message) when the PEM certificate ``cert`` and key ``key`` (both readable
    files) do not load together as a TLS server's certificate; None when they do."""
    import ssl

    cert_name, key_name = names
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key,
                                                                password=_encrypted_key)
    except ValueError as exc:
        return key_name, str(exc)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in (exc.reason or ""):
            return key_name, f"{key} is not the private key of the certificate in {cert_name} " \
                             f"({cert})"
        if "-----BEGIN CERTIFICATE-----" not in Path(cert).read_text(errors="replace"):
            return cert_name, f"no PEM certificate in {cert}"
        if "PRIVATE KEY-----" not in Path(key).read_text(errors="replace"):
            return key_name, f"no PEM private key in {key}"
        return cert_name, f"cannot load {cert} with the key {key}: {exc}"
    return None


class _RawScalar(str):
    """A scalar as the config file wrote it (``${VAR}`` references unresolved), with its YAML
    style (None: plain, or ' " | >), so that it is written back the same way."""

    style: str | None = None
    reference: bool = False


@dataclass
class _FileSource:
    """What a configuration file said: ``raw`` maps each scalar's path (``rest.jwtSecret``,
    ``cluster.peers[1].addr``) to its text before ``${VAR}`` substitution (None when that text
    is no YAML the loader could read); ``loaded`` is the effective configuration (JSON form)
    right after loading, to tell the values changed since (``PATCH``) from the file's own."""

    raw: dict[str, _RawScalar] | None
    loaded: dict[str, Any]


# --------------------------------------------------------------------------- models


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class ServerConfig(_Section):
    """LDAP listeners and connection limits."""

    address: Address = Field(
        default=":389", description="LDAP listen address (HOST:PORT, or :PORT for all)."
    )
    tlsAddress: Address = Field(
        default=":636",
        description="LDAPS listen address; used when tlsCert and tlsKey are set.",
    )
    tlsCert: PathStr = Field(default="", description="PEM certificate file for LDAPS and StartTLS.")
    tlsKey: PathStr = Field(default="", description="PEM private key file for tlsCert.")
    maxConnections: int = Field(default=10000, gt=0, description="Most client connections at once.")
    readTimeout: Duration = Field(
        default=timedelta(seconds=30),
        description="Idle time after which a client connection is closed.",
    )
    writeTimeout: Duration = Field(
        default=timedelta(seconds=30),
        description="Longest wait for a client to accept a response.",
    )
    anonymousIdleTimeout: Duration = Field(
        default=timedelta(seconds=5),
        description=(
            "Idle time after which a connection without an authenticated identity (never "
            "bound, bound anonymously, or its last bind failed) is closed, applied only while "
            "at least half of maxConnections are open: below that readTimeout alone applies, "
            "so pooled anonymous clients keep their connections. 0: off."
        ),
    )
    pidFile: PathStr = Field(
        default="", description="Write the process id to this file (empty: none)."
    )
    maxMessageSize: Size = Field(
        default=10 * 1024 * 1024,
        description="Largest LDAP request accepted, in bytes.",
    )
    workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description=(
            "LDAP listener processes reading the same database: the node process accepts each "
            "LDAP/LDAPS connection and hands it to the process with the fewest open "
            "connections; writes go to the node process (the one writer). 0: one per CPU "
            "core; 1: a single process (what `oba cluster local` writes: its nodes share the "
            "machine's cores)."
        ),
    )

    @field_validator("address", "tlsAddress")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return _check_address(value)


class DirectoryConfig(_Section):
    """The naming context served and its administrator."""

    baseDN: str = Field(default="", description="Suffix of the tree, e.g. dc=example,dc=com.")
    rootDN: str = Field(default="", description="Administrator DN, not subject to access control.")
    rootPassword: Secret = Field(
        default="",
        description="Administrator password: cleartext or a {SCHEME} hash.",
    )
    schemaFiles: list[PathStr] = Field(
        default_factory=list,
        description="Extra schema files (RFC 4512 syntax) loaded after the bundled ones.",
    )


class StorageConfig(_Section):
    """The LMDB database (ObaDB)."""

    dataDir: PathStr = Field(default="/var/lib/oba", description="Directory holding the database.")
    indexes: dict[str, list[IndexType]] | None = Field(
        default=None,
        description="Attribute → index types (eq, pres, sub); unset: the built-in default set.",
    )
    mapSize: Size = Field(
        default=16 * 1024**3,
        description="LMDB map size: the largest the database may grow, in bytes.",
    )


PasswordScheme = Literal[
    "{ARGON2}", "{SSHA512}", "{SSHA384}", "{SSHA256}", "{SSHA}", "{CLEARTEXT}"
]


class PasswordPolicyConfig(_Section):
    """Rules every new password must meet (enforced on Add, Modify and Password Modify)."""

    enabled: bool = Field(default=False, description="Enforce the password policy.")
    minLength: int = Field(default=8, ge=0, description="Fewest characters.")
    requireUppercase: bool = Field(default=True, description="Need an upper-case letter.")
    requireLowercase: bool = Field(default=True, description="Need a lower-case letter.")
    requireDigit: bool = Field(default=True, description="Need a digit.")
    requireSpecial: bool = Field(default=False, description="Need a non-alphanumeric character.")
    maxAge: Duration = Field(
        default=timedelta(0), description="Password lifetime (0: passwords never expire)."
    )
    historyCount: int = Field(
        default=0, ge=0, description="Earlier passwords that may not be reused (0: none kept)."
    )


class RateLimitConfig(_Section):
    """Account lockout after failed binds (LDAP and REST alike)."""

    enabled: bool = Field(default=False, description="Lock accounts after failed binds.")
    maxAttempts: int = Field(default=5, gt=0, description="Failed binds before the lock.")
    lockoutDuration: Duration = Field(
        default=timedelta(minutes=15), description="How long a locked account stays locked."
    )


class Argon2Config(_Section):
    """Cost of new {ARGON2} hashes (Argon2id): what every bind of such a user costs."""

    iterations: int = Field(
        default=3, ge=1, le=100,
        description="Passes over the memory (Argon2 t); the CPU per hash grows linearly "
        "with it. The default (t=3, m=4096 KiB, p=1) is OpenLDAP's argon2 module's, about "
        "6 ms of CPU per bind (docs/security.md: measured costs, how to tune). Hashes made "
        "with other parameters still verify, and are re-made with these on the next "
        "successful bind (security.rehashOnBind).",
    )
    memoryKiB: int = Field(
        default=4096, ge=8, le=4 * 1024 * 1024,
        description="Memory per hash in KiB (Argon2 m, at least 8 per lane); the cost grows "
        "linearly with it, and every hash running at once holds this much.",
    )
    parallelism: int = Field(
        default=1, ge=1, le=64,
        description="Lanes per hash (Argon2 p), computed by as many threads at once with the "
        "memory split among them: a hash takes less time, not less CPU (and concurrent binds "
        "already use every core).",
    )

    @field_validator("parallelism")
    @classmethod
    def _enough_memory(cls, value: int, info: ValidationInfo) -> int:
        memory = info.data.get("memoryKiB")
        if isinstance(memory, int) and memory < 8 * value:
            raise ValueError(f"{value} lanes need memoryKiB of at least 8 x {value} = "
                             f"{8 * value} (it is {memory})")
        return value


class SecurityConfig(_Section):
    """Password storage and authentication rules."""

    passwordHash: PasswordScheme = Field(
        default="{ARGON2}",
        description="Scheme used to hash passwords written in cleartext (Add, Modify, "
        "Password Modify); values already in {SCHEME} form are stored as given.",
    )
    argon2: Argon2Config = Field(
        default_factory=Argon2Config, description="Argon2 cost parameters."
    )
    rehashOnBind: bool = Field(
        default=True,
        description="On a successful simple bind, store the password again with passwordHash "
        "(and security.argon2) when the stored value was made with a weaker scheme ({SSHA}, "
        "cleartext...) or other Argon2 parameters; never to a weaker scheme. A server "
        "bookkeeping write: no password change (pwdChangedTime, history, tokens untouched), "
        "one audit record.",
    )
    hashThreads: int = Field(
        default=0, ge=0, le=256,
        description="Password hashes and verifications run at once per listener process "
        "(binds, and cleartext passwords written by Add, Modify, Password Modify). 0: the "
        "CPU cores divided among the listener processes (server.workers), at least 1.",
    )
    hashQueue: int = Field(
        default=128, ge=0, le=100000,
        description="Password checks that may wait for a hashing thread per listener process; "
        "beyond it (or after 5 s of waiting) a bind gets busy (51; REST 503) at once instead "
        "of piling up.",
    )
    requireTLS: bool = Field(
        default=False,
        description="Refuse passwords sent in the clear: LDAP simple binds over plaintext "
        "connections (confidentialityRequired, 13), REST Basic auth and POST /auth/bind over "
        "plain HTTP (403 confidentiality_required).",
    )
    passwordPolicy: PasswordPolicyConfig = Field(
        default_factory=PasswordPolicyConfig, description="Password quality rules."
    )
    rateLimit: RateLimitConfig = Field(
        default_factory=RateLimitConfig, description="Failed-bind lockout."
    )


class LogStoreConfig(_Section):
    """The replicated audit log (its own LMDB sub-database)."""

    enabled: bool = Field(default=True, description="Keep an audit trail.")
    dbPath: PathStr = Field(
        default="", description="Unused: the audit log lives in the node's database."
    )
    maxEntries: int = Field(default=100000, gt=0, description="Records kept before archiving.")
    archiveDir: PathStr = Field(
        default="", description="Where records beyond maxEntries are archived (empty: dropped)."
    )
    compress: bool = Field(default=False, description="gzip archive files.")
    retainDays: int = Field(
        default=0, ge=0, description="Delete archives older than this (0: keep)."
    )


class WebConfig(_Section):
    """The web admin, served by the node itself."""

    enabled: bool = Field(default=False, description="Serve the web admin.")
    address: Address = Field(default=":3000", description="Web admin listen address.")

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return _check_address(value)


class RestConfig(_Section):
    """The REST API (JSON over HTTP, served on the node's own event loop)."""

    enabled: bool = Field(default=False, description="Serve the REST API.")
    address: Address = Field(default=":8080", description="REST listen address.")
    tlsAddress: Address | Literal[""] = Field(
        default="", description="HTTPS listen address (uses server.tlsCert/tlsKey); empty: off."
    )
    jwtSecret: Secret = Field(
        default="", description="HS256 key for tokens; empty: a random key per process start."
    )
    tokenTTL: Duration = Field(default=timedelta(hours=24), description="Lifetime of a token.")
    rateLimit: int = Field(
        default=100, ge=0, description="Requests per second per client IP (0: no limit)."
    )
    corsOrigins: list[str] = Field(
        default_factory=lambda: ["*"], description="Origins allowed by CORS."
    )
    trustedProxies: list[str] = Field(
        default_factory=list,
        description="Peers (IPs or CIDRs) whose X-Forwarded-For is believed for rate limits.",
    )
    clusterStatusAuth: bool = Field(
        default=False,
        description=(
            "Ask for credentials (a token or Basic) on GET /api/v1/cluster/status and "
            "/api/v1/cluster/leader. Off: they answer anyone, as the cluster guide's "
            "`curl http://localhost:8080/api/v1/cluster/status` expects; they show node ids, "
            "Raft states, terms, log indexes and Raft addresses (HOST:PORT of every member), "
            "no secret and no directory data. Turn it on when the Raft addresses should stay "
            "private. /api/v1/cluster/health and /ready (HAProxy's checks) stay public either "
            "way; the web admin always sends its token. Hot-reloadable (PATCH "
            "/api/v1/config/rest)."
        ),
    )
    maxBodySize: Size = Field(
        default=8 * 1024 * 1024,
        description=(
            "Largest request body accepted by the REST API (and the web admin's /api/), in "
            "bytes: a larger Content-Length is answered 413 payload_too_large before the body "
            "is read, a chunked body is counted as it arrives and cut off at the limit."
        ),
    )

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return _check_address(value)


class PeerConfig(_Section):
    """One cluster member."""

    id: int = Field(gt=0, description="Node id (unique, > 0).")
    # HOST:PORT is checked by Config.validate_semantics, so that one `oba config validate` run
    # reports a bad address together with the other problems (missing TLS files...)
    addr: str = Field(description="Raft address HOST:PORT of this member.")


class ClusterConfig(_Section):
    """Raft cluster mode (high availability)."""

    enabled: bool = Field(default=False, description="Run as a member of a Raft cluster.")
    nodeID: int = Field(default=0, ge=0, description="This node's id; must appear in peers.")
    raftAddr: Address = Field(default=":4445", description="Raft RPC listen address.")
    peers: list[PeerConfig] = Field(
        default_factory=list, description="All cluster members, this node included."
    )
    electionTimeout: Duration = Field(
        default=timedelta(milliseconds=150),
        description="Election timeout T (randomised in [T, 2T)).",
    )
    heartbeatTimeout: Duration = Field(
        default=timedelta(milliseconds=50), description="Leader heartbeat interval."
    )
    snapshotInterval: int = Field(
        default=10000, gt=0, description="Applied entries between snapshots."
    )
    proposalTimeout: Duration = Field(
        default=timedelta(seconds=5),
        description="How long a write waits for a leader and a commit before failing with "
        "unavailable (LDAP 52 / HTTP 503).",
    )
    dataDir: PathStr = Field(
        default="", description="Raft log and snapshots; empty: <storage.dataDir>/raft."
    )
    raftTLSCert: PathStr = Field(
        default="",
        description="PEM certificate this node presents to its peers (mutual TLS, set with "
        "raftTLSKey). Without raftTLSCA, the certificates in this file are also the only ones "
        "peers may chain to: one self-signed certificate shared by every node, or the node's "
        "certificate followed by its CA certificate(s) up to the self-signed root.",
    )
    raftTLSKey: PathStr = Field(default="", description="PEM private key of raftTLSCert.")
    raftTLSCA: PathStr = Field(
        default="",
        description="PEM CA certificate(s), the self-signed root included, that peers' "
        "certificates must chain to: the only ones trusted (never the system store). Empty: "
        "the certificates in raftTLSCert.",
    )

    @field_validator("raftAddr")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        return _check_address(value)


class LoggingConfig(_Section):
    """Server log output."""

    level: Literal["debug", "info", "warn", "error"] = Field(
        default="info", description="Lowest level logged."
    )
    format: Literal["json", "text"] = Field(
        default="text", description="One JSON object per line, or plain text."
    )
    output: PathStr = Field(
        default="stdout", description="stdout, stderr, or a file path to append to."
    )
    store: LogStoreConfig = Field(
        default_factory=LogStoreConfig, description="Replicated audit log."
    )


class Config(BaseModel):
    """Oba's whole configuration. Later sections (security, rest, cluster, acl, web) are added
    here, one model each, as their features land."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    server: ServerConfig = Field(default_factory=ServerConfig, description="LDAP listeners.")
    directory: DirectoryConfig = Field(
        default_factory=DirectoryConfig, description="Naming context."
    )
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Database.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    security: SecurityConfig = Field(
        default_factory=SecurityConfig, description="Passwords and authentication."
    )
    rest: RestConfig = Field(default_factory=RestConfig, description="REST API.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Cluster mode.")
    web: WebConfig = Field(default_factory=WebConfig, description="Web admin.")
    aclFile: PathStr = Field(
        default="",
        description="ACL rules file (YAML: version, defaultPolicy, rules); empty: the built-in "
        "default policy (root all, userPassword self/auth only, everything else readable).",
    )

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _source: _FileSource | None = PrivateAttr(default=None)

    def validate_semantics(self) -> None:
        """Cross-field checks; raises `ConfigError` listing every problem found."""
        from oba.protocol.dn import parse_dn

        errors: list[str] = []

        def fail(path: str, message: str, at: str | None = None) -> None:
            errors.append(f"{self._origin_of(at or path)}: {path}: {message}")

        directory = self.directory
        for path, value in (
            ("directory.baseDN", directory.baseDN),
            ("directory.rootDN", directory.rootDN),
        ):
            if value:
                try:
                    parse_dn(value)
                except ValueError as exc:
                    fail(path, f"invalid DN {value!r}: {exc}")
        if not directory.baseDN:
            fail("directory.baseDN", "must be set (the suffix this server holds)")
        if directory.rootDN and not directory.rootPassword:
            fail(
                "directory.rootPassword",
                "must be set when directory.rootDN is set",
                at="directory.rootDN",
            )
        if bool(self.server.tlsCert) != bool(self.server.tlsKey):
            fail("server.tlsCert", "tlsCert and tlsKey must be set together")
        self._check_pem_files(fail, ("server.tlsCert", self.server.tlsCert),
                              ("server.tlsKey", self.server.tlsKey))
        if not self.storage.dataDir:
            fail("storage.dataDir", "must be set")
        cluster = self.cluster
        if cluster.enabled:
            ids = [p.id for p in cluster.peers]
            if not cluster.peers:
                fail("cluster.peers", "must list every member (this node included)")
            elif cluster.nodeID not in ids:
                fail("cluster.nodeID", f"node {cluster.nodeID} is not in cluster.peers")
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                fail("cluster.peers", f"duplicate ids {dup}")
            if cluster.heartbeatTimeout >= cluster.electionTimeout:
                fail("cluster.heartbeatTimeout", "must be shorter than cluster.electionTimeout")
            for index, peer in enumerate(cluster.peers):
                try:
                    _check_peer_address(peer.addr)
                except ValueError as exc:
                    fail(f"cluster.peers[{index}].addr", str(exc))
            self._check_raft_tls(fail)
        if errors:
            raise ConfigError(errors)

    def _check_pem_files(self, fail: Callable[..., None], cert: tuple[str, str],
                         key: tuple[str, str]) -> None:
        """Each file set must be readable; a certificate and key set together must load."""
        readable = True
        for path, value in (cert, key):
            if value and (problem := _file_problem(value)) is not None:
                fail(path, problem)
                readable = False
        if readable and cert[1] and key[1]:
            bad = _key_pair_problem(cert[1], key[1], (cert[0], key[0]))
            if bad is not None:
                fail(*bad)

    def _check_raft_tls(self, fail: Callable[..., None]) -> None:
        """Raft TLS files (cluster mode): readable, matching, and a node whose certificate its
        own peers would accept (the checks `oba.raft.tls.make_ssl_contexts` makes at start)."""
        c = self.cluster
        if bool(c.raftTLSCert) != bool(c.raftTLSKey):
            fail("cluster.raftTLSCert", "raftTLSCert and raftTLSKey must be set together")
        if c.raftTLSCA and not (c.raftTLSCert or c.raftTLSKey):
            fail("cluster.raftTLSCA", "is set but raftTLSCert and raftTLSKey are not: Raft "
                 "traffic would not be encrypted")
        if not (c.raftTLSCert and c.raftTLSKey):
            for path, value in (("cluster.raftTLSCert", c.raftTLSCert),
                                ("cluster.raftTLSKey", c.raftTLSKey),
                                ("cluster.raftTLSCA", c.raftTLSCA)):
                if value and (problem := _file_problem(value)) is not None:
                    fail(path, problem)
            return
        from oba.raft.tls import check  # standard library only; the same checks as at start

        for issue in check(c.raftTLSCert, c.raftTLSKey, c.raftTLSCA):
            unset = issue.key == "cluster.raftTLSCA" and not c.raftTLSCA
            fail(issue.key, issue.problem, at="cluster.raftTLSCert" if unset else None)

    def _origin_of(self, path: str) -> str:
        return _origin_in(self._origins, path)


# --------------------------------------------------------------------------- model walking


@dataclass(frozen=True)
class _Leaf:
    path: str  # dotted, with aliases: "server.tlsAddress"
    attrs: tuple[str, ...]  # python attribute names: ("server", "tlsAddress")
    info: FieldInfo
    kind: _Kind | None
    section_doc: str


def _key(name: str, info: FieldInfo) -> str:
    return info.alias or name


def _kind(info: FieldInfo) -> _Kind | None:
    for meta in info.metadata:
        if isinstance(meta, _Kind):
            return meta
    return None


def _leaves(
    model: type[BaseModel] = Config, prefix: str = "", attrs: tuple[str, ...] = ()
) -> Iterator[_Leaf]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{_key(name, info)}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaves(annotation, path + ".", (*attrs, name))
        else:
            yield _Leaf(path, (*attrs, name), info, _kind(info), model.__doc__ or "")


def _is_scalar(leaf: _Leaf) -> bool:
    annotation = leaf.info.annotation
    union = get_origin(annotation) in (Union, UnionType)
    candidates = get_args(annotation) if union else (annotation,)
    return not any(get_origin(candidate) in (dict, list) for candidate in candidates)


def _upper_snake(key: str) -> str:
    key = re.sub(r"([KMG])iB$", r"\1ib", key)  # memoryKiB -> MEMORY_KIB, not MEMORY_KI_B
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", key).upper()


def env_variables() -> dict[str, str]:
    """Every `OBA_*` environment variable Oba reads, mapped to the dotted key it sets."""
    return {
        ENV_PREFIX + "_".join(_upper_snake(part) for part in leaf.path.split(".")): leaf.path
        for leaf in _leaves()
        if _is_scalar(leaf)
    }


def _get(cfg: BaseModel, attrs: tuple[str, ...]) -> Any:
    value: Any = cfg
    for attr in attrs:
        value = getattr(value, attr)
    return value


# --------------------------------------------------------------------------- YAML with lines

_SUBST = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(text: str, env: Mapping[str, str]) -> str:
    """Replace `${VAR}` (empty if unset) and `${VAR:-default}` (default if unset or empty)."""

    def repl(match: re.Match[str]) -> str:
        value = env.get(match.group(1), "")
        if match.group(2) is not None and not value:
            return match.group(2)
        return value

    return _SUBST.sub(repl, text)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and list item by path
    (`cluster.peers[1].addr`, see `_display_path`)."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.file = file
        self.lines: dict[str, int] = {}
        self.problems: list[str] = []

    def record(self, node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.SequenceNode):
            base = prefix.removesuffix(".")
            for index, item in enumerate(node.value):
                path = f"{base}[{index}]"
                self.lines[path] = item.start_mark.line + 1
                self.record(item, path + ".")
            return
        if not isinstance(node, yaml.MappingNode):
            return
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            path = f"{prefix}{key}"
            line = key_node.start_mark.line + 1
            if key in seen:
                self.problems.append(f"{self.file}:{line}: {path}: duplicate key")
            seen.add(key)
            self.lines[path] = line
            self.record(value_node, path + ".")


def _load_yaml(text: str, file: str) -> tuple[dict[str, Any], dict[str, int]]:
    loader = _LineLoader(text, file)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        loader.record(node, "")
        if loader.problems:
            raise ConfigError(loader.problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([f"{file}:{line}: invalid YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{file}:1: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{file}:{node.start_mark.line + 1}: the top level must be a mapping of sections"]
        )
    return data, loader.lines


def _raw_scalars(text: str) -> dict[str, _RawScalar] | None:
    """Every scalar of the config file ``text`` by path, as written: ``${VAR}`` references
    are parsed as stand-in words (a reference is not always valid YAML where it stands, in a
    flow list for instance) and put back afterwards. None when the text cannot be read so."""
    refs: list[str] = []
    nonce = "obaref" + secrets.token_hex(4)
    while nonce in text:
        nonce = "obaref" + secrets.token_hex(4)
    stand_in = re.compile(re.escape(nonce) + r"(\d+)x")

    def hold(match: re.Match[str]) -> str:
        refs.append(match.group(0))
        return f"{nonce}{len(refs) - 1}x"

    try:
        root = yaml.compose(_SUBST.sub(hold, text), Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    out: dict[str, _RawScalar] = {}

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.ScalarNode):
            value = str(node.value)
            raw = _RawScalar(stand_in.sub(lambda m: refs[int(m.group(1))], value))
            raw.style = node.style or None
            raw.reference = stand_in.search(value) is not None
            out[path] = raw
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(key_node.value)
                walk(value_node, f"{path}.{key}" if path else key)

    if root is not None:
        walk(root, "")
    return out


# --------------------------------------------------------------------------- loading


def _set_dotted(data: dict[str, Any], path: str, value: object) -> None:
    parts = path.split(".")
    target = data
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    target[parts[-1]] = value


def _flatten(overrides: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _display_path(loc: tuple[int | str, ...]) -> str:
    """`("cluster", "peers", 1, "addr")` → `cluster.peers[1].addr` (list items by index)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _origin_in(origins: Mapping[str, str], path: str) -> str:
    """Where `path` (or its closest enclosing key) was set."""
    parts = path.split(".")
    while parts:
        origin = origins.get(".".join(parts))
        if origin is not None:
            return origin
        last = parts.pop()
        if "[" in last:  # cluster.peers[1] → cluster.peers
            parts.append(last[: last.index("[")])
    return origins.get("", "<defaults>")


def _format_errors(exc: ValidationError, origins: Mapping[str, str]) -> list[str]:
    lines: list[tuple[tuple[str, int], str]] = []
    for error in exc.errors():
        path = _display_path(error["loc"])
        origin = _origin_in(origins, path)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        elif error["type"] != "missing" and "input" in error:
            given = error["input"]
            if not isinstance(given, dict | list):
                message = f"{message} (got {given!r})"
        file, _, line = origin.rpartition(":")
        order = (file, int(line)) if line.isdigit() else (origin, 0)
        lines.append((order, f"{origin}: {path}: {message}"))
    return [text for _, text in sorted(lines)]


def _resolve_paths(cfg: Config, base: Path) -> None:
    for leaf in _leaves():
        if leaf.kind is None or not leaf.kind.path:
            continue
        value = _get(cfg, leaf.attrs)
        if not value or (value in ("stdout", "stderr") and leaf.path == "logging.output"):
            continue
        path = Path(value).expanduser()
        if not path.is_absolute():
            section = _get(cfg, leaf.attrs[:-1])
            setattr(section, leaf.attrs[-1], str(base / path))


def load_config(
    path: str | None,
    overrides: Mapping[str, object] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> Config:
    """Build the effective configuration: defaults < file < `overrides` (CLI) < environment.

    `overrides` maps dotted keys (`"server.address"`) or nested sections to values; `None`
    values are ignored. `env` defaults to `os.environ`; relative paths are resolved against
    `cwd` (default: the current directory).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read config file: {exc.strerror or exc}"]) from None
        except UnicodeDecodeError:
            raise ConfigError([f"{path}: config file is not UTF-8 text"]) from None
        data, lines = _load_yaml(substitute_env(text, environ), path)
        origins = {key: f"{path}:{line}" for key, line in lines.items()}
        origins[""] = f"{path}:1"
        for key, value in list(data.items()):
            if value is None:
                data[key] = {}
    for key, value in _flatten(overrides or {}):
        if value is not None:
            _set_dotted(data, key, value)
            origins[key] = "<command line>"
    for name, key in env_variables().items():
        if name in environ:
            _set_dotted(data, key, environ[name])
            origins[key] = f"<env {name}>"
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origins)) from None
    cfg._origins = origins
    _resolve_paths(cfg, Path(cwd) if cwd is not None else Path.cwd())
    if path is not None:
        cfg._source = _FileSource(_raw_scalars(text), cfg.model_dump(mode="json", by_alias=True))
    return cfg


def default_config() -> Config:
    """The built-in defaults, as used when no file is given."""
    return Config()


def _masked(cfg: Config) -> dict[str, Any]:
    data: dict[str, Any] = cfg.model_dump(mode="json", by_alias=True)
    for leaf in _leaves():
        if leaf.kind is not None and leaf.kind.secret:
            section = data
            for part in leaf.path.split(".")[:-1]:
                section = section[part]
            last = leaf.path.split(".")[-1]
            if section.get(last):
                section[last] = MASK
    return data


def dump_config(cfg: Config, fmt: str = "yaml", mask_secrets: bool = True) -> str:
    """Render a configuration as YAML or JSON (durations as `30s`; secrets as `********`)."""
    data = _masked(cfg) if mask_secrets else cfg.model_dump(mode="json", by_alias=True)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    raise ValueError(f"unknown format {fmt!r} (yaml or json)")


class _FileDumper(yaml.SafeDumper):
    """Writes ``_RawScalar`` values in the style the file had (plain stays plain, so that a
    reference standing for a number, a boolean or a list still does after substitution)."""


_FileDumper.add_representer(
    _RawScalar,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value),
                                                  style=value.style),
)


def _split_path(path: str) -> list[str | int]:
    """``cluster.peers[1].addr`` -> ``["cluster", "peers", 1, "addr"]``."""
    parts: list[str | int] = []
    for part in path.split("."):
        name, *indexes = part.split("[")
        parts.append(name)
        parts += [int(index.rstrip("]")) for index in indexes]
    return parts


_MISSING = object()


def _child(node: Any, part: str | int) -> Any:
    if isinstance(part, int):
        return node[part] if isinstance(node, list) and part < len(node) else _MISSING
    return node.get(part, _MISSING) if isinstance(node, dict) else _MISSING


def _lookup(data: Any, path: str) -> Any:
    """The value at ``path`` in the JSON form of a configuration, or ``_MISSING``."""
    for part in _split_path(path):
        data = _child(data, part)
        if data is _MISSING:
            break
    return data


def _replace_at(data: Any, path: str, value: Any) -> None:
    """Set the value at ``path`` when it exists; ``_MISSING`` removes a mapping key."""
    *parents, last = _split_path(path)
    for part in parents:
        data = _child(data, part)
    if _child(data, last) is _MISSING:
        return
    if value is _MISSING:
        del data[last]
    else:
        data[last] = value


def render_config_file(cfg: Config) -> str:
    """The YAML ``POST /api/v1/config/save`` writes: the effective configuration, except that
    - a key whose value the file took from ``${VAR}`` references keeps those references, as
      long as its value has not changed since (a hot key changed over the API is written as
      its new value);
    - a secret is written only as the file wrote it (a literal or a reference): one that came
      from an ``OBA_*`` variable or the command line is left out, so that a secret never reaches
      the file in clear text unless it was there already.
    Raises ``ConfigError`` when the file's text could not be read for its references."""
    data: dict[str, Any] = cfg.model_dump(mode="json", by_alias=True)
    source = cfg._source
    raw = source.raw if source is not None else {}
    if raw is None:
        raise ConfigError([f"{cfg._origin_of('')}: cannot tell the file's ${{VAR}} references "
                           "from their values; edit the file by hand"])
    loaded = source.loaded if source is not None else {}
    for leaf in _leaves():
        if leaf.kind is not None and leaf.kind.secret:
            if leaf.path in raw:
                _replace_at(data, leaf.path, raw[leaf.path])
            elif _lookup(data, leaf.path):  # not from the file: not written at all
                _replace_at(data, leaf.path, _MISSING)
            continue
        refs = [path for path, value in raw.items() if value.reference and (
            path == leaf.path or path.startswith((leaf.path + ".", leaf.path + "[")))]
        if refs and _lookup(data, leaf.path) == _lookup(loaded, leaf.path):
            for path in refs:
                _replace_at(data, path, raw[path])
    return yaml.dump(data, Dumper=_FileDumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False)


# --------------------------------------------------------------------------- rendering


def _type_name(leaf: _Leaf) -> str:
    if leaf.kind is not None:
        return leaf.kind.name
    annotation = leaf.info.annotation
    if get_origin(annotation) is Literal:
        return " \\| ".join(str(arg) for arg in get_args(annotation))
    if annotation is int:
        return "int"
    if annotation is bool:
        return "bool"
    if annotation is str:
        return "string"
    if leaf.path == "storage.indexes":
        return "mapping attribute → list of eq \\| pres \\| sub"
    if leaf.path == "cluster.peers":
        return "list of {id: int, addr: host:port}"
    if get_origin(annotation) is list:
        return "list of strings"
    return "string or empty"


def _json_default(leaf: _Leaf) -> Any:
    data: Any = Config().model_dump(mode="json", by_alias=True)
    for part in leaf.path.split("."):
        data = data[part]
    return data


def render_config_reference() -> str:
    """The Markdown reference page for every key (committed as docs/configuration.md)."""
    out = [
        "# Oba configuration reference",
        "",
        "<!-- Generated by oba.config.render_config_reference(); do not edit by hand. -->",
        "",
        "Oba reads one YAML file (`oba serve --config FILE`). Sources are applied in this order,",
        "later ones winning: built-in defaults, the file, command-line flags (`--address`,",
        "`--tls-address`, `--data-dir`, `--log-level`), then `OBA_*` environment variables.",
        "",
        "- `${VAR}` and `${VAR:-default}` in the file are replaced from the environment before",
        "  parsing (`${VAR}` is empty when VAR is unset; the default applies when unset or empty).",
        "  `POST /api/v1/config/save` writes such references back as they were written, and a",
        "  secret only as the file itself held it (never one from an `OBA_*` variable).",
        "- Durations: a number with a unit, `150ms`, `30s`, `5m`, `1h`, `2d`, or compounds such as",
        "  `1h30m`; a plain number means seconds.",
        "- Sizes: a number of bytes, or a number with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`,",
        "  `GB`).",
        "- Relative paths are resolved against the current directory.",
        "- Unknown keys, wrong types and bad values are errors, reported as",
        "  `FILE:LINE: section.key: message`.",
        "- `oba config show` prints the effective configuration with secrets masked.",
        "",
    ]
    sections = Config.model_fields
    for section_name, section_info in sections.items():
        model = section_info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue  # top-level keys are listed after the sections
        out += [f"## `{section_name}`", "", (model.__doc__ or "").strip(), ""]
        out += ["| Key | Type | Default | Environment | Description |", "|---|---|---|---|---|"]
        env_names = {key: name for name, key in env_variables().items()}
        for leaf in _leaves():
            if leaf.attrs[0] != section_name:
                continue
            default = _json_default(leaf)
            shown = "unset" if default is None else f"`{json.dumps(default, ensure_ascii=False)}`"
            env_name = f"`{env_names[leaf.path]}`" if leaf.path in env_names else "—"
            description = leaf.info.description or ""
            out.append(
                f"| `{leaf.path}` | {_type_name(leaf)} | {shown} | {env_name} | {description} |"
            )
        out.append("")
    top = [leaf for leaf in _leaves() if len(leaf.attrs) == 1]
    if top:
        out += ["## Top-level keys", ""]
        out += ["| Key | Type | Default | Environment | Description |", "|---|---|---|---|---|"]
        env_names = {key: name for name, key in env_variables().items()}
        for leaf in top:
            default = _json_default(leaf)
            shown = "unset" if default is None else f"`{json.dumps(default, ensure_ascii=False)}`"
            env_name = f"`{env_names[leaf.path]}`" if leaf.path in env_names else "—"
            out.append(f"| `{leaf.path}` | {_type_name(leaf)} | {shown} | {env_name} | "
                       f"{leaf.info.description or ''} |")
        out.append("")
    return "\n".join(out)


def render_default_yaml() -> str:
    """A commented YAML file holding every default (printed by `oba config init`)."""
    defaults = Config().model_dump(mode="json", by_alias=True)
    out = [
        "# Oba configuration. Every key is shown with its default value.",
        "# Reference: docs/configuration.md. Environment variables OBA_<SECTION>_<KEY>",
        "# override the file, and ${VAR} / ${VAR:-default} are substituted before parsing.",
    ]

    def emit(model: type[BaseModel], values: dict[str, Any], indent: str) -> None:
        for name, info in model.model_fields.items():
            key = _key(name, info)
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                if not indent:
                    out.append("")
                out.append(f"{indent}# {(annotation.__doc__ or key).strip()}")
                out.append(f"{indent}{key}:")
                emit(annotation, values[key], indent + "  ")
                continue
            if not indent:
                out.append("")
            out.append(f"{indent}# {info.description}")
            value = values[key]
            if value is None:
                out.append(f"{indent}# {key}:")
                out.append(f"{indent}#   uid: [eq, pres]")
            else:
                rendered = yaml.safe_dump({key: value}, default_flow_style=True, allow_unicode=True)
                out.append(indent + rendered.strip()[1:-1])

    emit(Config, defaults, "")
    return "\n".join(out) + "\n"
