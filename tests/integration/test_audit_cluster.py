"""The audit trail in a 3-node cluster (real node processes, ``tests/cluster/support.py``):
records made on a follower replicate to every node with the follower's nodeId, and records
made while there is no leader are buffered and committed once there is one again.

Rules: each node also serves the REST API; every wait polls under a deadline; processes are
stopped by PID (``Cluster.close``).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ldap
import pytest
import yaml

from cluster.support import ADMIN, BASE, PASSWORD, Cluster, NodeProc, free_ports, wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, dict[int, str]]]:
    c = Cluster(tmp_path, 3)
    urls: dict[int, str] = {}
    for nd, port in zip(c.nodes, free_ports(3), strict=True):
        cfg = yaml.safe_load(nd.config.read_text())
        cfg["rest"] = {"enabled": True, "address": f"127.0.0.1:{port}", "rateLimit": 100000}
        nd.config.write_text(yaml.safe_dump(cfg))
        urls[nd.id] = f"http://127.0.0.1:{port}/api/v1"
    c.start()
    try:
        c.wait_ready(20)
        yield c, urls
    finally:
        c.close()


def failed_bind(nd: NodeProc, dn: str) -> None:
    conn = ldap.initialize(nd.url)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
    try:
        with pytest.raises(ldap.INVALID_CREDENTIALS):
            conn.simple_bind_s(dn, "not-the-password")
    finally:
        conn.unbind_s()


def records(url: str, user: str) -> list[dict[str, Any]] | None:
    try:
        resp = httpx.get(url + "/logs", params={"user": user}, auth=(ADMIN, PASSWORD),
                         timeout=3)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    entries: list[dict[str, Any]] = resp.json()["entries"]
    return entries


def on_all_nodes(urls: dict[int, str], user: str, timeout: float) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for node_id, url in urls.items():
        out[node_id] = wait_for(lambda url=url: records(url, user), timeout,
                                f"the record of {user} on node {node_id}")
    return out


def test_follower_records_replicate_and_survive_no_leader(
        cluster: tuple[Cluster, dict[int, str]]) -> None:
    c, urls = cluster
    lead = c.wait_leader()
    follower = next(nd for nd in c.nodes if nd is not lead)
    marker = f"cn=marker-{uuid.uuid4().hex[:8]},{BASE}"
    failed_bind(follower, marker)
    seen = on_all_nodes(urls, marker, 20)
    for node_id, recs in seen.items():
        assert len(recs) == 1, (node_id, recs)
        assert recs[0]["nodeId"] == follower.id and recs[0]["source"] == "ldap"
        assert recs[0]["level"] == "warn" and recs[0]["fields"]["resultCode"] == 49
    assert len({r[0]["id"] for r in seen.values()}) == 1  # same id everywhere

    # no leader: freeze the two other nodes, audit on the survivor, then thaw them
    others = [nd for nd in c.nodes if nd is not follower]
    lonely = f"cn=lonely-{uuid.uuid4().hex[:8]},{BASE}"
    for nd in others:
        nd.signal(signal.SIGSTOP)
    try:
        failed_bind(follower, lonely)

        def buffered() -> bool:
            resp = httpx.get(urls[follower.id] + "/logs/stats", auth=(ADMIN, PASSWORD),
                             timeout=5)
            body = resp.json()
            return bool(body["retry_buffer_size"] + body["pending_entries"] > 0)

        wait_for(buffered, 10, "the record to wait in the retry buffer")
        assert not records(urls[follower.id], lonely)
    finally:
        for nd in others:
            nd.signal(signal.SIGCONT)
    c.wait_leader(20)
    seen = on_all_nodes(urls, lonely, 30)
    for node_id, recs in seen.items():
        assert len(recs) == 1, (node_id, recs)
        assert recs[0]["nodeId"] == follower.id
