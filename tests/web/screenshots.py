"""Save a 1280x800 screenshot of each web admin page under docs/images/.

Run: ``.venv/bin/python -m tests.web.screenshots`` (starts a private node with the example tree,
stops it by PID at the end). Rules: the pages are driven exactly as a user would (see pages.py);
each shot waits for its page's content, never for a fixed time.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml
from playwright.sync_api import Page, expect, sync_playwright
from tests.cluster.support import Cluster

from .pages import WAIT_MS, go, login
from .support import WebNode, free_port, launch_options, wait_for, web_answers

OUT = Path(__file__).resolve().parents[2] / "docs" / "images"


def shoot(page: Page, name: str) -> None:
    page.screenshot(path=str(OUT / f"web-{name}.png"))
    print(f"saved docs/images/web-{name}.png")


def shoot_cluster(root: Path, errors: list[str]) -> None:
    """The dashboard of a follower in a local 3-node cluster."""
    cluster = Cluster(root, n=3, election_ms=300, heartbeat_ms=75)
    urls = {}
    for nd in cluster.nodes:
        cfg = yaml.safe_load(nd.config.read_text())
        urls[nd.id] = f"http://127.0.0.1:{free_port()}"
        cfg["web"] = {"enabled": True, "address": urls[nd.id].removeprefix("http://")}
        nd.config.write_text(yaml.safe_dump(cfg))
    try:
        cluster.start()
        leader = cluster.wait_ready(30)
        viewer = next(nd for nd in cluster.nodes if nd is not leader)
        wait_for(lambda: web_answers(urls[viewer.id]), 20, "the web admin")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(**launch_options())
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            login(page, urls[viewer.id])
            marked = page.get_by_role("table", name="Cluster nodes").locator("tr.leader")
            expect(marked).to_have_count(1, timeout=WAIT_MS)
            shoot(page, "dashboard-cluster")
            browser.close()
    finally:
        cluster.close()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        node = WebNode(Path(tmp))
        node.start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(**launch_options())
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(node.url + "/#/login")
                expect(page.get_by_label("Bind DN")).to_be_visible(timeout=WAIT_MS)
                shoot(page, "login")
                login(page, node.url)
                expect(page.get_by_text("standalone")).to_be_visible(timeout=WAIT_MS)
                shoot(page, "dashboard")
                go(page, node.url, "entries/" + "uid=alice,ou=users,dc=example,dc=com", "Entries")
                expect(page.get_by_role("table", name="Entry attributes")).to_be_visible(
                    timeout=WAIT_MS)
                shoot(page, "entries")
                go(page, node.url, "search", "Search")
                page.get_by_label("Filter").fill("(objectClass=inetOrgPerson)")
                page.get_by_label("Attributes").fill("uid,cn,mail")
                page.get_by_role("button", name="Search", exact=True).click()
                expect(page.get_by_text("entries found")).to_be_visible(timeout=WAIT_MS)
                shoot(page, "search")
                go(page, node.url, "users", "Users & groups")
                expect(page.get_by_role("table", name="Users")).to_be_visible(timeout=WAIT_MS)
                page.get_by_role("button", name="Open group admins").click()
                expect(page.get_by_role("table", name="Members of admins")).to_be_visible(
                    timeout=WAIT_MS)
                shoot(page, "users")
                go(page, node.url, "acl", "Access control")
                expect(page.get_by_role("table", name="ACL rules")).to_be_visible(timeout=WAIT_MS)
                shoot(page, "acl")
                go(page, node.url, "config", "Configuration")
                expect(page.get_by_label("logging.level")).to_be_visible(timeout=WAIT_MS)
                shoot(page, "config")
                go(page, node.url, "logs", "Logs")
                expect(page.get_by_role("table", name="Log records")).to_contain_text(
                    "bind", timeout=WAIT_MS)
                shoot(page, "logs")
                page.set_viewport_size({"width": 390, "height": 800})
                go(page, node.url, "dashboard", "Dashboard")
                expect(page.get_by_text("standalone")).to_be_visible(timeout=WAIT_MS)
                shoot(page, "narrow")
                browser.close()
        finally:
            node.stop()
        shoot_cluster(Path(tmp) / "cluster", errors)
    for err in errors:
        print(f"page error: {err}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
