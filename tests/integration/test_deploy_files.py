"""Checks of the deployment artefacts: Dockerfile, Compose files, node configs, HAProxy configs.

Rules: every config file is checked by the real tools (`oba config validate`, `haproxy -c`); a
missing haproxy binary fails naming the Debian package. `docker compose config` runs only when a
docker client with the Compose plugin is present (skipped otherwise, with the reason); the Compose
files are always parsed with PyYAML and checked against issue 8's list. The local HAProxy config
is also run for real in front of stand-in nodes to measure how fast a dead node leaves rotation.
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ldap
import pytest
import yaml

from oba.cluster.haproxy import (
    HEALTH_PATH,
    HaproxyNode,
    HaproxyPorts,
    default_local_nodes,
    render_docker_haproxy,
    render_local_haproxy,
)
from oba.config import load_config

from ._support import free_port, require_tool, wait_until

ROOT = Path(__file__).resolve().parents[2]
NODE_CONFIGS = [ROOT / f"docker-cluster/node{i}/config.yaml" for i in (1, 2, 3)]
IMAGE_CONFIG = ROOT / "deploy/docker/config.yaml"
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("OBA_")}


def _haproxy() -> str:
    return require_tool("haproxy", "haproxy")


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _sections(text: str) -> dict[str, list[str]]:
    """haproxy.cfg as {"backend ldap_back": [body lines]}, comments and blanks dropped."""
    out: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            current = line.strip()
            out[current] = []
        else:
            out[current].append(" ".join(line.split()))
    return out


def _ms(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s)?", value)
    assert match, value
    return int(match.group(1)) * (1.0 if match.group(2) == "ms" else 1000.0)


# --------------------------------------------------------------------------- node configs


@pytest.mark.parametrize("path", [*NODE_CONFIGS, IMAGE_CONFIG], ids=lambda p: p.parent.name)
def test_config_file_passes_oba_config_validate(path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oba", "config", "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        env=CLEAN_ENV,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{path}: valid"


@pytest.mark.parametrize("node_id", [1, 2, 3])
def test_node_config_holds_the_spec_cluster_block(node_id: int) -> None:
    cfg = load_config(str(NODE_CONFIGS[node_id - 1]), env={})
    cluster = cfg.cluster
    assert cluster.enabled and cluster.nodeID == node_id
    assert cluster.raftAddr == "0.0.0.0:4445"
    assert [(p.id, p.addr) for p in cluster.peers] == [(i, f"oba-node{i}:4445") for i in (1, 2, 3)]
    assert cluster.electionTimeout.total_seconds() == 0.150
    assert cluster.heartbeatTimeout.total_seconds() == 0.050
    assert cluster.snapshotInterval == 10000
    assert cluster.dataDir == "/var/lib/oba/raft"
    assert cfg.server.address == ":1389"
    assert cfg.rest.enabled and cfg.rest.address == ":8080"
    assert cfg.rest.jwtSecret == "change-me"
    assert cfg.storage.dataDir.startswith("/var/lib/oba/")
    secret = load_config(str(NODE_CONFIGS[node_id - 1]), env={"OBA_JWT_SECRET": "s3cret"})
    assert secret.rest.jwtSecret == "s3cret"


def test_node_configs_differ_only_in_node_id() -> None:
    texts = [re.sub(r"\b(?:[1-3]389|808[1-3])\b", "PORT", p.read_text()) for p in NODE_CONFIGS]
    normalised = [
        re.sub(rf"(nodeID: ){i}\b|node {i}\b|oba-node{i}(?=[,)])", "X", t)
        for i, t in enumerate(texts, start=1)
    ]
    assert normalised[0] == normalised[1] == normalised[2]


# --------------------------------------------------------------------------- Compose files


def test_single_node_compose_file() -> None:
    data = _load_yaml(ROOT / "docker-compose.yml")
    oba = data["services"]["oba"]
    assert oba["build"] == "."
    assert oba["restart"] == "unless-stopped"
    assert set(oba["ports"]) == {"1389:1389", "8080:8080", "3000:3000"}
    assert "oba-data:/var/lib/oba" in oba["volumes"]
    assert "oba-data" in data["volumes"]


def test_cluster_compose_file_lists_the_issue_services() -> None:
    data = _load_yaml(ROOT / "docker-compose.cluster.yml")
    services = data["services"]
    assert set(services) == {"oba-node1", "oba-node2", "oba-node3", "haproxy"}
    for i in (1, 2, 3):
        node = services[f"oba-node{i}"]
        assert node["hostname"] == f"node{i}"
        assert node["restart"] == "unless-stopped"
        assert node["ports"] == [f"{i}389:1389", f"808{i}:8080"]
        assert "4445" in node["expose"]  # Raft stays inside the network
        mount = f"./docker-cluster/node{i}/config.yaml:/etc/oba/config.yaml:ro"
        assert mount in node["volumes"]
        assert f"oba-node{i}-data:/var/lib/oba" in node["volumes"]
        assert f"oba-node{i}-data" in data["volumes"]
        assert node["networks"]["oba"]["aliases"] == [f"node{i}"]
    proxy = services["haproxy"]
    assert proxy["restart"] == "unless-stopped"
    assert set(proxy["ports"]) == {"389:389", "8080:8080", "3000:3000", "8404:8404"}
    assert "./docker-cluster/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
    for volume in (v for service in services.values() for v in service["volumes"]):
        source = volume.split(":", 1)[0]
        if source.startswith("./"):
            assert (ROOT / source).is_file(), f"{source} is mounted but missing"


def _compose_available() -> str:
    """Empty when `docker compose` works, else why not."""
    try:
        result = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        return "no docker client on PATH"
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        return "docker client has no compose plugin: " + (reason[0] if reason else "?")
    return ""


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_docker_compose_config_validates(name: str) -> None:
    reason = _compose_available()
    if reason:
        print(f"skipping `docker compose -f {name} config`: {reason}")
        pytest.skip(reason)
    result = subprocess.run(
        ["docker", "compose", "-f", name, "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- Dockerfile


def _final_stage(text: str) -> list[str]:
    lines = re.sub(r"\\\n\s*", " ", text).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    return [line for line in lines[starts[-1] :] if line and not line.startswith("#")]


def test_dockerfile_runtime_stage() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["python:3.11-slim", "python:3.11-slim"]
    final = _final_stage(text)
    joined = "\n".join(final)
    assert "build-essential" not in joined and "python-ldap" not in joined
    assert "[test]" not in text  # test extras never reach the image
    assert "USER oba" in final
    assert final.index("USER oba") < next(i for i, x in enumerate(final) if "ENTRYPOINT" in x)
    assert 'ENTRYPOINT ["oba"]' in final
    assert 'CMD ["serve", "--config", "/etc/oba/config.yaml"]' in final
    expose = next(x for x in final if x.startswith("EXPOSE "))
    assert expose.split()[1:] == ["1389", "636", "8080", "3000", "4445"]
    assert 'VOLUME ["/var/lib/oba"]' in final
    assert "COPY deploy/docker/config.yaml /etc/oba/config.yaml" in final


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            top = source.split("/", 1)[0]
            assert source not in ignored and top not in ignored, f"{source} is in .dockerignore"
            assert (ROOT / source).exists(), source
    assert {".venv", ".git", "tests"} <= ignored


class _QuietServer(ThreadingHTTPServer):
    """An HTTP server that ignores clients resetting the connection (HAProxy's checks do)."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/api/v1/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_dockerfile_healthcheck_command(status: int, healthy: bool) -> None:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    match = re.search(r"^HEALTHCHECK .*CMD \[\"python\", \"-c\", \"(.+)\"\]$", text, re.M)
    assert match, "HEALTHCHECK must run python -c"
    code = match.group(1)
    assert "http://127.0.0.1:8080/api/v1/health" in code
    handler = type("H", (_Health,), {"status": status})
    httpd = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        port = httpd.server_address[1]
        code = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (result.returncode == 0) is healthy


# --------------------------------------------------------------------------- HAProxy configs


def test_docker_haproxy_cfg_is_the_generated_one() -> None:
    committed = (ROOT / "docker-cluster/haproxy.cfg").read_text()
    assert committed == render_docker_haproxy(), (
        "regenerate: python -m oba.cluster.haproxy > docker-cluster/haproxy.cfg"
    )


def test_docker_haproxy_cfg_routes_as_designed() -> None:
    sections = _sections((ROOT / "docker-cluster/haproxy.cfg").read_text())
    assert "bind *:389" in sections["frontend ldap_front"]
    assert "bind *:8080" in sections["frontend rest_front"]
    assert "bind *:8404" in sections["frontend stats"]
    assert "stats enable" in sections["frontend stats"]
    ldap = sections["backend ldap_back"]
    assert "balance leastconn" in ldap or "balance roundrobin" in ldap
    servers = [x for x in ldap if x.startswith("server ")]
    assert servers == [f"server node{i} oba-node{i}:1389 check" for i in (1, 2, 3)]
    default = next(x for x in ldap if x.startswith("default-server "))
    words = default.split()
    inter, fall = _ms(words[words.index("inter") + 1]), int(words[words.index("fall") + 1])
    assert inter * fall <= 500, "a dead node must leave rotation well within a second"
    assert "init-addr last,libc,none" in default
    assert "on-marked-down shutdown-sessions" in default
    defaults = sections["defaults"]
    assert any(x.startswith("option redispatch") for x in defaults)
    assert any(x.startswith("retries ") for x in defaults)
    for kind in ("connect", "client", "server"):
        assert any(x.startswith(f"timeout {kind} ") for x in defaults)
    rest = sections["backend rest_back"]
    assert f"option httpchk GET {HEALTH_PATH}" in rest
    assert "http-check expect status 200" in rest
    assert [x for x in rest if x.startswith("server ")] == [
        f"server node{i} oba-node{i}:8080 check" for i in (1, 2, 3)
    ]
    assert not any(" backup" in x for x in ldap + rest)


def _haproxy_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_haproxy(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=60
    )


def test_haproxy_accepts_docker_cfg() -> None:
    result = _haproxy_check(ROOT / "docker-cluster/haproxy.cfg")
    assert result.returncode == 0, result.stderr
    # Outside Docker the oba-nodeN names do not resolve: init-addr none keeps that a warning.
    for line in result.stderr.splitlines():
        if "[WARNING]" in line:
            assert "could not resolve address 'oba-node" in line, line


def test_haproxy_accepts_local_cfg_without_warnings(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_local_haproxy())
    result = _haproxy_check(path)
    assert result.returncode == 0, result.stderr
    assert "[WARNING]" not in result.stderr and "[ALERT]" not in result.stderr


def test_render_local_haproxy_defaults() -> None:
    sections = _sections(render_local_haproxy())
    assert "bind 127.0.0.1:10389" in sections["frontend ldap_front"]
    assert "bind 127.0.0.1:8080" in sections["frontend rest_front"]
    assert "bind 127.0.0.1:8404" in sections["frontend stats"]
    assert [x for x in sections["backend ldap_back"] if x.startswith("server ")] == [
        "server node1 127.0.0.1:1389 check",
        "server node2 127.0.0.1:2389 check",
        "server node3 127.0.0.1:3389 check",
    ]
    assert [x for x in sections["backend rest_back"] if x.startswith("server ")] == [
        f"server node{i} 127.0.0.1:808{i} check" for i in (1, 2, 3)
    ]
    assert not any(s.startswith("resolvers") for s in sections)
    assert "frontend web_front" not in sections


def test_render_local_haproxy_custom_ports_and_same_design_as_docker() -> None:
    text = render_local_haproxy(
        default_local_nodes(5), HaproxyPorts(ldap=3890, rest=18080, stats=18404)
    )
    sections = _sections(text)
    assert "bind *:3890" in sections["frontend ldap_front"]
    assert len([x for x in sections["backend ldap_back"] if x.startswith("server ")]) == 5
    docker = _sections(render_docker_haproxy())
    for name in ("defaults", "backend ldap_back", "backend rest_back"):
        strip = re.compile(r" resolvers dns resolve-prefer ipv4$")
        assert [strip.sub("", x) for x in sections[name] if not x.startswith("server ")] == [
            strip.sub("", x) for x in docker[name] if not x.startswith("server ")
        ]


@pytest.mark.parametrize(
    ("nodes", "ports", "message"),
    [
        ([], HaproxyPorts(), "at least one node"),
        ([HaproxyNode("a", "h"), HaproxyNode("a", "h")], HaproxyPorts(), "unique"),
        ([HaproxyNode("a b", "h")], HaproxyPorts(), "invalid node name"),
        ([HaproxyNode("a", "h")], HaproxyPorts(ldap=8080), "must differ"),
        ([HaproxyNode("a", "h", ldap_port=70000)], HaproxyPorts(), "invalid port"),
    ],
)
def test_render_local_haproxy_rejects_bad_input(
    nodes: list[HaproxyNode], ports: HaproxyPorts, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_local_haproxy(nodes, ports)


# --------------------------------------------------------------------------- docs


def test_deployment_doc_files_exist_and_python_example_runs() -> None:
    doc = (ROOT / "docs/deployment.md").read_text()
    files_table = doc.split("\n## ", 1)[0]
    for name in re.findall(r"^\| `([^`]+)`", files_table, re.M):
        for path in re.sub(r"\{([^}]*)\}", lambda m: m.group(1).split(",")[0], name).split(", "):
            assert (ROOT / path).exists(), f"docs/deployment.md names missing {path}"
    examples = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert examples
    for example in examples:
        scope: dict[str, Any] = {}
        exec(example, scope)
        assert "server node3 127.0.0.1:3389 check" in scope["text"]


# --------------------------------------------------------------------------- HAProxy for real


@dataclass
class _StandIn:
    """A fake node: a TCP listener that writes its name (LDAP stand-in) and an HTTP server whose
    cluster health answers 200 only while `leader` is set."""

    name: str
    leader: bool = False
    ldap: socket.socket = field(init=False)
    rest: ThreadingHTTPServer = field(init=False)

    def __post_init__(self) -> None:
        self.ldap = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, args=(self.ldap,), daemon=True).start()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path != HEALTH_PATH or outer.leader
                body = outer.name.encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.rest = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.rest.serve_forever, daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.name.encode())

    def node(self) -> HaproxyNode:
        return HaproxyNode(
            self.name, "127.0.0.1", self.ldap.getsockname()[1], self.rest.server_address[1]
        )

    def kill_ldap(self) -> None:
        """Stop listening at once (shutdown also wakes the thread blocked in accept)."""
        self.ldap.shutdown(socket.SHUT_RDWR)
        self.ldap.close()

    def close(self) -> None:
        if self.ldap.fileno() != -1:
            self.kill_ldap()
        self.rest.shutdown()
        self.rest.server_close()


@dataclass
class _Proxy:
    ports: HaproxyPorts
    stand_ins: list[_StandIn]

    def ldap_hit(self) -> str:
        with socket.create_connection(("127.0.0.1", self.ports.ldap), timeout=5) as sock:
            return sock.recv(64).decode()

    def rest_hit(self) -> str:
        url = f"http://127.0.0.1:{self.ports.rest}/api/v1/cluster/status"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"

    def status(self, backend: str) -> dict[str, str]:
        url = f"http://127.0.0.1:{self.ports.stats}/;csv"
        with urllib.request.urlopen(url, timeout=5) as response:
            rows = csv.reader(io.StringIO(response.read().decode().lstrip("# ")))
            header = next(rows)
            at_name, at_status = header.index("svname"), header.index("status")
            return {
                r[at_name]: r[at_status].split()[0]
                for r in rows
                if r and r[0] == backend and r[at_name] not in ("FRONTEND", "BACKEND")
            }


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[_Proxy]:
    haproxy = _haproxy()
    stand_ins = [_StandIn(f"node{i}", leader=i == 1) for i in (1, 2, 3)]
    ports = HaproxyPorts(
        ldap=free_port(), rest=free_port(), stats=free_port(), bind_host="127.0.0.1"
    )
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_local_haproxy([s.node() for s in stand_ins], ports))
    log = (tmp_path / "haproxy.log").open("w")
    process = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=log, stderr=log)
    result = _Proxy(ports, stand_ins)
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "haproxy.log").read_text()
            try:
                up = result.status("ldap_back")
            except OSError:
                return False
            rest = result.status("rest_back")
            return list(up.values()) == ["UP"] * 3 and rest == {
                "node1": "UP",
                "node2": "DOWN",
                "node3": "DOWN",
            }

        wait_until(ready, 15, "haproxy to see all stand-in nodes up")
        yield result
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        for stand_in in stand_ins:
            stand_in.close()


def _time_until(cond: Any, timeout: float, what: str) -> float:
    start = time.monotonic()
    wait_until(cond, timeout, what, interval=0.01)
    return time.monotonic() - start


def test_local_haproxy_balances_ldap_over_all_nodes_and_drops_a_dead_one(proxy: _Proxy) -> None:
    assert {proxy.ldap_hit() for _ in range(9)} == {"node1", "node2", "node3"}
    proxy.stand_ins[1].kill_ldap()
    # Before the checks notice, a connection to the dead node is redispatched: no client error.
    assert {proxy.ldap_hit() for _ in range(6)} <= {"node1", "node3"}
    took = _time_until(
        lambda: proxy.status("ldap_back").get("node2") == "DOWN", 5, "node2 marked down"
    )
    print(f"dead LDAP node out of rotation after {took * 1000:.0f} ms")
    assert took < 1.0


def test_local_haproxy_sends_rest_to_the_leader_only(proxy: _Proxy) -> None:
    assert {proxy.rest_hit() for _ in range(6)} == {"node1"}
    proxy.stand_ins[0].leader = False
    proxy.stand_ins[2].leader = True
    took = _time_until(lambda: proxy.rest_hit() == "node3", 5, "REST to reach the new leader")
    print(f"REST followed the new leader after {took * 1000:.0f} ms")
    assert took < 1.0
    wait_until(lambda: proxy.status("rest_back")["node1"] == "DOWN", 5, "old leader marked down")
    assert {proxy.rest_hit() for _ in range(6)} == {"node3"}


# --------------------------------------------------------------------------- shipped configs, live

# Container port -> the listener of a node config that must serve it.
_LISTENERS = {"server.address": "ldap", "server.tlsAddress": "ldaps", "rest.address": "rest",
              "web.address": "web", "cluster.raftAddr": "raft"}
_ENV_OF = {"server.address": "OBA_SERVER_ADDRESS", "server.tlsAddress": "OBA_SERVER_TLS_ADDRESS",
           "rest.address": "OBA_REST_ADDRESS", "web.address": "OBA_WEB_ADDRESS",
           "cluster.raftAddr": "OBA_CLUSTER_RAFT_ADDR"}


def _container_port(spec: str) -> int:
    """"8081:8080" -> 8080, "3000" -> 3000."""
    return int(str(spec).rsplit(":", 1)[-1].split("/", 1)[0])


def _published_ports() -> dict[Path, set[int]]:
    """Per shipped config file: the container ports its Compose service publishes or exposes
    (exposed ones are what HAProxy reaches: 3000 for the web admin, 4445 for Raft)."""
    single = _load_yaml(ROOT / "docker-compose.yml")["services"]["oba"]
    out = {IMAGE_CONFIG: {_container_port(p) for p in single["ports"]}}
    services = _load_yaml(ROOT / "docker-compose.cluster.yml")["services"]
    for i, path in enumerate(NODE_CONFIGS, start=1):
        node = services[f"oba-node{i}"]
        out[path] = {_container_port(p) for p in [*node["ports"], *node.get("expose", [])]}
    proxy = (ROOT / "docker-cluster/haproxy.cfg").read_text()
    routed = {int(p) for p in re.findall(r"server node\d oba-node\d:(\d+)", proxy)}
    for path in NODE_CONFIGS:
        out[path] |= routed
    return out


def _listening(path: Path, port: int) -> str:
    """The config key whose listener serves container port ``port`` (fails when none does)."""
    cfg = load_config(str(path), env={})
    enabled = {"server.address": True, "server.tlsAddress": bool(cfg.server.tlsCert),
               "rest.address": cfg.rest.enabled, "web.address": cfg.web.enabled,
               "cluster.raftAddr": cfg.cluster.enabled}
    for key, on in enabled.items():
        section, name = key.split(".")
        address = getattr(getattr(cfg, section), name)
        if on and int(address.rsplit(":", 1)[1]) == port:
            return key
    raise AssertionError(f"{path.relative_to(ROOT)}: the Compose files publish or route port "
                         f"{port}, but no enabled listener of this config serves it")


def _reach_ldap(port: int) -> None:
    url = f"ldap://127.0.0.1:{port}"
    conn = ldap.initialize(url)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
    try:
        found = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
        assert found[0][1]["namingContexts"] == [b"dc=example,dc=com"]
        conn.simple_bind_s("cn=admin,dc=example,dc=com", "admin")
        assert conn.whoami_s() == "dn:cn=admin,dc=example,dc=com"
    finally:
        conn.unbind_s()
    tool = require_tool("ldapsearch", "ldap-utils")
    res = subprocess.run([tool, "-x", "-LLL", "-H", url, "-b", "", "-s", "base",
                          "namingContexts"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "namingContexts: dc=example,dc=com" in res.stdout, res


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def _reach(kind: str, port: int) -> None:
    if kind == "ldap":
        _reach_ldap(port)
    elif kind == "rest":
        code, body = _get(f"http://127.0.0.1:{port}/api/v1/health")
        assert code == 200 and b'"status":"ok"' in body.replace(b" ", b""), body
    elif kind == "web":
        code, body = _get(f"http://127.0.0.1:{port}/")
        assert code == 200 and b"<html" in body.lower(), body[:200]
        code, body = _get(f"http://127.0.0.1:{port}/api/v1/health")  # the API on one origin
        assert code == 200, body
    elif kind == "raft":
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    else:
        raise AssertionError(f"no client for {kind}")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", [*NODE_CONFIGS, IMAGE_CONFIG], ids=lambda p: p.parent.name)
def test_shipped_config_serves_every_published_port(path: Path, tmp_path: Path) -> None:
    """A node started from the shipped file, its listen addresses (and data directories)
    moved to loopback by OBA_* variables, answers on every container port the Compose files
    publish or route to it: LDAP (python-ldap and ldapsearch), REST, the web admin (page and
    API), Raft. A cluster node alone has no leader (its peers' names do not resolve here):
    what is checked is that each port is served."""
    wanted = _published_ports()[path]
    listeners = {port: _listening(path, port) for port in sorted(wanted)}
    env = dict(CLEAN_ENV, OBA_STORAGE_DATA_DIR=str(tmp_path / "data"),
               OBA_CLUSTER_DATA_DIR=str(tmp_path / "raft"), OBA_SERVER_WORKERS="1")
    local_ports = {}
    for port, key in listeners.items():
        local_ports[port] = free_port()
        env[_ENV_OF[key]] = f"127.0.0.1:{local_ports[port]}"
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "oba", "serve", "--config", str(path)],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        for port, key in listeners.items():
            kind = _LISTENERS[key]
            here = local_ports[port]

            def served(kind: str = kind, here: int = here) -> bool:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    _reach(kind, here)
                except Exception:  # not up yet (refused, or an answer still missing)
                    return False
                return True

            wait_until(served, 90, f"{kind} (container port {port}) on 127.0.0.1:{here}", 0.2)
            _reach(kind, here)  # once more, raising the real error if it fails now
        print(f"{path.relative_to(ROOT)}: " + ", ".join(
            f"{_LISTENERS[k]} {p}->{local_ports[p]}" for p, k in listeners.items()))
        assert {_LISTENERS[k] for k in listeners.values()} >= {"ldap", "rest", "web"}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
