"""The cluster guide's (the spec's) shell commands, run verbatim against `make cluster-haproxy`.

Rules: the cluster is started and stopped through oba.cluster.local (the code behind `make
cluster` / `make cluster-haproxy`), whose ports are the spec's: node REST 8081/8082/8083, node
LDAP 1389/2389/3389, REST through HAProxy 8080. The commands run on those very ports when they
are all free; otherwise (another cluster, a developer's `make cluster`) every port is shifted by
one free offset (`OBA_LOCAL_PORT_OFFSET`, as scripts/doccheck.py does) and the same numbers are
rewritten in the commands, and nothing else. The only other rewrite: the spec's LDAP load
balancer is `ldap://localhost:389`, a privileged port a test cannot bind; the local HAProxy
listens on 10389 for it. Each command runs under `bash -e -o pipefail` with curl, jq and
ldap-utils; its output is checked against the shapes the spec prints. When the spec file is
beside the checkout (../shared/seed/), every `curl` line of it must be one of the commands run
here, so the copy below cannot drift from it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oba.cluster import local

from .test_haproxy_local import LocalCluster, _alive, _free_offset, _ports_free

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "seed" / "000_4f5493f482e747c8.txt"

# The spec's commands, verbatim (section -> shell text).
QUICK_START = "curl http://localhost:8080/api/v1/cluster/status"
CHECK_HEALTH = """\
for port in 8081 8082 8083; do
  echo "Node on port $port:"
  curl -s http://localhost:$port/api/v1/cluster/status | jq '{nodeId, state, term}'
done"""
FAILOVER_WATCH = "curl http://localhost:8082/api/v1/cluster/status"
ADD_DATA = """\
ldapadd -x -H ldap://localhost:389 -D "cn=admin,dc=example,dc=com" -w admin <<EOF
dn: cn=testuser,dc=example,dc=com
objectClass: inetOrgPerson
cn: testuser
sn: User
mail: testuser@example.com
EOF"""
VERIFY_REPLICATION = """\
for port in 1389 2389 3389; do
  echo "Node on port $port:"
  ldapsearch -x -H ldap://localhost:$port -b "dc=example,dc=com" "(cn=testuser)" cn
done"""
NOT_REPLICATING = """\
for port in 8081 8082 8083; do
  curl -s http://localhost:$port/api/v1/cluster/status | jq '{nodeId, commitIndex, lastApplied}'
done"""
# The REST section's requests ("GET /api/v1/cluster/...") as curl commands on the balancer.
ENDPOINTS = {name: f"curl -s http://localhost:8080/api/v1/cluster/{name}"
             for name in ("status", "health", "leader")}

SPEC_FIELDS = {"enabled": bool, "mode": str, "nodeId": int, "state": str, "term": int,
               "leaderId": int, "leaderAddr": str, "commitIndex": int, "lastApplied": int,
               "peers": list}
STANDARD_PORTS = (1389, 2389, 3389, 4445, 4446, 4447, 8080, 8081, 8082, 8083, 8404, 10389)
_PORT = re.compile(r"(?<!\d)(" + "|".join(str(p) for p in STANDARD_PORTS) + r")(?!\d)")


def _tool(name: str, package: str) -> None:
    if shutil.which(name) is None:
        pytest.fail(f"{name} not found: apt-get install {package}")


@pytest.fixture(scope="module")
def spec_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """`oba cluster local --haproxy --nodes 3` on the spec's ports when they are free."""
    for name, package in (("curl", "curl"), ("jq", "jq"), ("ldapadd", "ldap-utils")):
        _tool(name, package)
    try:
        local.haproxy_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    offset = 0 if _ports_free(0, 3) else _free_offset()
    print(f"\nspec commands on {'the spec ports' if not offset else f'ports shifted by {offset}'}")
    lc = LocalCluster(tmp_path_factory.mktemp("spec") / "cluster-data", offset)
    saved = os.environ.get(local.OFFSET_ENV)
    os.environ[local.OFFSET_ENV] = str(offset)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = local.main(["--haproxy", "--nodes", "3", "--data", str(lc.data)])
        lc.printed = out.getvalue()
        lc.started = list(lc.pids().values())
        assert code == 0, lc.printed
        yield lc
    finally:
        pids = lc.pids()
        with contextlib.redirect_stdout(io.StringIO()):
            local.main(["--stop", "--data", str(lc.data)])
        if saved is None:
            os.environ.pop(local.OFFSET_ENV, None)
        else:
            os.environ[local.OFFSET_ENV] = saved
        for pid in set(pids.values()) | set(lc.started):
            if _alive(pid):  # the stop above failed: do not leak it, then fail loudly
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"pid {pid} survived `--stop`")


def _localize(command: str, offset: int) -> str:
    """The command for the local cluster: 389 (privileged) -> HAProxy's 10389, then every
    standard port shifted by ``offset`` (nothing else changes)."""
    command = command.replace("ldap://localhost:389 ", "ldap://localhost:10389 ")
    if not offset:
        return command
    return _PORT.sub(lambda m: str(int(m.group(1)) + offset), command)


def run(lc: LocalCluster, command: str, timeout: float = 30.0) -> str:
    res = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", _localize(command, lc.offset)],
                         capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{command}\nexit {res.returncode}\n{res.stdout}{res.stderr}"
    return res.stdout


def _json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects printed one after the other (jq's pretty output, or curl's)."""
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    pos = 0
    while True:
        start = text.find("{", pos)
        if start < 0:
            return out
        obj, pos = decoder.raw_decode(text, start)
        out.append(obj)


def _status_shape(doc: dict[str, Any]) -> None:
    for field, kind in SPEC_FIELDS.items():
        assert isinstance(doc.get(field), kind), (field, doc)
    assert doc["enabled"] is True and doc["mode"] == "cluster"
    assert doc["state"] in ("leader", "follower", "candidate")
    assert {p["id"] for p in doc["peers"]} == {1, 2, 3}
    for peer in doc["peers"]:
        assert isinstance(peer["addr"], str) and re.fullmatch(r"[\w.-]+:\d+", peer["addr"])


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def test_spec_commands_are_the_spec_s() -> None:
    """Every curl line of the spec is run by this module (when the spec is at hand)."""
    if not SPEC.exists():
        pytest.skip(f"the spec is not beside the checkout ({SPEC})")
    text = SPEC.read_text()
    ours = "\n".join([QUICK_START, CHECK_HEALTH, FAILOVER_WATCH, ADD_DATA, VERIFY_REPLICATION,
                      NOT_REPLICATING])
    for block in (QUICK_START, CHECK_HEALTH, FAILOVER_WATCH, ADD_DATA, VERIFY_REPLICATION,
                  NOT_REPLICATING):
        assert block in text, f"not in the spec verbatim:\n{block}"
    for line in text.splitlines():
        if re.search(r"\b(curl|jq)\b", line) and not line.lstrip().startswith("#"):
            assert line in ours, f"spec command not run by this test: {line!r}"
    for name in ENDPOINTS:
        assert f"GET /api/v1/cluster/{name}" in text


def test_quick_start_status_through_haproxy(spec_cluster: LocalCluster) -> None:
    """`curl http://localhost:8080/api/v1/cluster/status`: no credentials, the leader's view
    (HAProxy sends REST to the leader), every field of the spec's response."""
    def leader_answers() -> dict[str, Any] | None:
        doc = json.loads(run(spec_cluster, QUICK_START))
        return doc if doc.get("state") == "leader" else None

    doc = _wait(leader_answers, 20, "HAProxy to route REST to the leader")
    _status_shape(doc)
    assert doc["leaderId"] == doc["nodeId"]
    assert doc["commitIndex"] >= 1 and doc["lastApplied"] <= doc["commitIndex"]


def test_rest_endpoint_section(spec_cluster: LocalCluster) -> None:
    """GET status / health / leader as the spec's REST section shows them."""
    _status_shape(json.loads(run(spec_cluster, ENDPOINTS["status"])))
    health = json.loads(run(spec_cluster, ENDPOINTS["health"]))
    assert health["isLeader"] is True and health["status"] == "ok"
    leader = json.loads(run(spec_cluster, ENDPOINTS["leader"]))
    assert isinstance(leader["leaderId"], int) and leader["leaderId"] in (1, 2, 3)
    assert re.fullmatch(r"[\w.-]+:\d+", leader["leaderAddr"])
    # Leader returns 200 OK, followers return 503 Service Unavailable
    codes = {}
    for n in (1, 2, 3):
        code = run(spec_cluster, "curl -s -o /dev/null -w '%{http_code}' "
                   f"http://localhost:{8080 + n}/api/v1/cluster/health")
        codes[n] = code
    assert sorted(codes.values()) == ["200", "503", "503"], codes
    assert codes[leader["leaderId"]] == "200"


def test_checking_cluster_health(spec_cluster: LocalCluster) -> None:
    """The health loop: three `Node on port N:` headers, each followed by {nodeId, state,
    term}; one leader, all in the same term."""
    out = run(spec_cluster, CHECK_HEALTH)
    for port in (8081, 8082, 8083):
        assert f"Node on port {port + spec_cluster.offset}:" in out, out
    docs = _json_objects(out)
    assert [sorted(d) for d in docs] == [["nodeId", "state", "term"]] * 3, out
    assert [d["nodeId"] for d in docs] == [1, 2, 3]
    assert sorted(d["state"] for d in docs) == ["follower", "follower", "leader"], out
    assert len({d["term"] for d in docs}) == 1, out


def test_adding_data_and_verifying_replication(spec_cluster: LocalCluster) -> None:
    """ldapadd through the balancer (389 -> the local HAProxy's 10389), then the spec's
    ldapsearch loop over the nodes' own LDAP ports finds the entry on every node."""
    out = run(spec_cluster, ADD_DATA)
    assert 'adding new entry "cn=testuser,dc=example,dc=com"' in out

    def everywhere() -> str | None:
        found = run(spec_cluster, VERIFY_REPLICATION)
        return found if found.count("dn: cn=testuser,dc=example,dc=com") == 3 else None

    found = _wait(everywhere, 10, "cn=testuser on every node")
    assert found.count("cn: testuser") == 3


def test_data_not_replicating_loop(spec_cluster: LocalCluster) -> None:
    """{nodeId, commitIndex, lastApplied} of each node; equal once the cluster is idle."""
    def converged() -> list[dict[str, Any]] | None:
        docs = _json_objects(run(spec_cluster, NOT_REPLICATING))
        assert [sorted(d) for d in docs] == [["commitIndex", "lastApplied", "nodeId"]] * 3
        same = len({(d["commitIndex"], d["lastApplied"]) for d in docs}) == 1
        return docs if same else None

    docs = _wait(converged, 10, "commit and applied indexes to agree")
    assert [d["nodeId"] for d in docs] == [1, 2, 3]


def test_failover_watch(spec_cluster: LocalCluster) -> None:
    """The failover walkthrough: node 1 stopped (`docker compose stop` sends SIGTERM; here by
    its PID), `curl http://localhost:8082/api/v1/cluster/status` shows a leader among the
    others, and node 1 started again rejoins as a follower."""
    node1 = {s["node"]: s for s in local.status(spec_cluster.data)}["node1"]
    os.kill(int(node1["pid"]), signal.SIGTERM)
    _wait(lambda: not _alive(int(node1["pid"])), 15, "node1 to stop")

    def new_leader() -> dict[str, Any] | None:
        doc = json.loads(run(spec_cluster, FAILOVER_WATCH))
        return doc if doc.get("leaderId") in (2, 3) else None

    doc = _wait(new_leader, 15, "a leader among nodes 2 and 3")
    _status_shape(doc)
    assert doc["nodeId"] == 2
    local.start(spec_cluster.data, 3)
    spec_cluster.started += list(spec_cluster.pids().values())

    def rejoined() -> bool:
        back = {s["node"]: s for s in local.status(spec_cluster.data)}["node1"]
        return back.get("state") == "follower"

    _wait(rejoined, 20, "node1 to rejoin as a follower")
