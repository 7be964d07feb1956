"""The dashboard's cluster panel against a real 3-node cluster (tests/cluster/support.py).

The panel, viewed on a follower, lists three nodes with the leader marked; after the leader is
killed (SIGKILL by PID) it shows the newly elected leader.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Page, expect

from cluster.support import Cluster, NodeProc  # tests/ is on sys.path (rootdir insertion)

from .pages import login
from .support import free_port, wait_for, web_answers

PANEL_WAIT_MS = 20_000  # the dashboard refreshes every 5 s


def web_url(nd: NodeProc) -> str:
    cfg = yaml.safe_load(nd.config.read_text())
    return f"http://{cfg['web']['address']}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cl = Cluster(tmp_path, n=3, election_ms=300, heartbeat_ms=75)
    for nd in cl.nodes:
        cfg = yaml.safe_load(nd.config.read_text())
        cfg["web"] = {"enabled": True, "address": f"127.0.0.1:{free_port()}"}
        nd.config.write_text(yaml.safe_dump(cfg))
    try:
        cl.start()
        cl.wait_ready(30)
        for nd in cl.nodes:
            wait_for(lambda nd=nd: web_answers(web_url(nd)), 20, f"web admin of node {nd.id}")
        yield cl
    finally:
        cl.close()


def test_dashboard_follows_the_leader(cluster: Cluster, page: Page) -> None:
    leader = cluster.wait_leader()
    viewer = next(nd for nd in cluster.nodes if nd is not leader)
    url = web_url(viewer)
    login(page, url)

    table = page.get_by_role("table", name="Cluster nodes")
    expect(table.locator("tbody tr")).to_have_count(3, timeout=PANEL_WAIT_MS)
    for nd in cluster.nodes:
        expect(table.locator(f'tr[data-node="{nd.id}"]')).to_be_visible()
    marked = table.locator("tr.leader")
    expect(marked).to_have_count(1, timeout=PANEL_WAIT_MS)
    expect(marked).to_have_attribute("data-node", str(leader.id), timeout=PANEL_WAIT_MS)
    expect(marked).to_contain_text("leader")
    expect(page.get_by_test_id("cluster-leader")).to_contain_text(f"node {leader.id}")
    expect(table.locator(f'tr[data-node="{viewer.id}"]')).to_contain_text("this node")

    leader.kill()  # SIGKILL by PID
    survivors = [nd for nd in cluster.nodes if nd is not leader]
    new = cluster.wait_leader(timeout=20, among=survivors)
    assert new is not leader
    expect(page.get_by_test_id("cluster-leader")).to_contain_text(f"node {new.id}",
                                                                  timeout=PANEL_WAIT_MS)
    expect(marked).to_have_attribute("data-node", str(new.id), timeout=PANEL_WAIT_MS)
    expect(table.locator("tbody tr")).to_have_count(3)
