"""The entry browser, the ACL editor and the config editor, in Chromium against a running node.

Rules: each step checks the server's state through the pages' own answers (and the REST API on
the same origin where the page shows no more than a message).
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .pages import WAIT_MS, go, login
from .support import BASE, WebNode


def test_entry_browser_add_move_delete(node: WebNode, page: Page) -> None:
    login(page, node.url)
    go(page, node.url, "entries", "Entries")
    tree = page.get_by_role("tree", name="Directory tree")
    expect(tree.get_by_role("link", name="ou=users")).to_be_visible(timeout=WAIT_MS)
    page.get_by_role("button", name=f"Expand ou=users,{BASE}").click()
    expect(tree.get_by_role("link", name="uid=alice")).to_be_visible(timeout=WAIT_MS)

    tree.get_by_role("link", name=BASE, exact=True).click()
    page.get_by_role("button", name="Add child").click()
    page.get_by_label("RDN").fill("ou=webtest")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name=f"ou=webtest,{BASE}")).to_be_visible(timeout=WAIT_MS)
    expect(tree.get_by_role("link", name="ou=webtest")).to_be_visible(timeout=WAIT_MS)

    page.get_by_role("button", name="Move / rename").click()
    page.get_by_label("New RDN").fill("ou=webmoved")
    page.get_by_role("button", name="Move", exact=True).click()
    expect(page.get_by_role("heading", name=f"ou=webmoved,{BASE}")).to_be_visible(
        timeout=WAIT_MS)
    table = page.get_by_role("table", name="Entry attributes")
    expect(table).to_contain_text("webmoved")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("alert")).to_contain_text(f"Deleted ou=webmoved,{BASE}",
                                                      timeout=WAIT_MS)
    expect(tree.get_by_role("link", name="ou=webmoved")).to_have_count(0, timeout=WAIT_MS)
    token = page.evaluate("sessionStorage.getItem('oba.token')")
    gone = page.request.get(f"{node.url}/api/v1/entries/ou=webmoved,{BASE}",
                            headers={"Authorization": f"Bearer {token}"})
    assert gone.status == 404


def test_missing_entry_error_is_readable(node: WebNode, page: Page) -> None:
    login(page, node.url)
    go(page, node.url, f"entries/uid=nobody,ou=users,{BASE}", "Entries")
    expect(page.locator(".detail")).to_contain_text("uid=nobody", timeout=WAIT_MS)
    text = page.locator(".detail").inner_text()
    assert "{" not in text and "Traceback" not in text


def test_acl_rule_and_config_edit(node: WebNode, page: Page) -> None:
    login(page, node.url)
    go(page, node.url, "acl", "Access control")
    page.get_by_role("button", name="Add rule").click()
    page.get_by_label("Target DN").first.fill(f"ou=users,{BASE}")
    page.get_by_label("Subject", exact=True).fill("authenticated")
    page.get_by_label("Rights").fill("read, search")
    page.get_by_role("button", name="Save rule").click()
    rules = page.get_by_role("table", name="ACL rules")
    expect(rules).to_contain_text(f"ou=users,{BASE}", timeout=WAIT_MS)
    expect(rules).to_contain_text("authenticated")

    form = page.get_by_role("form", name="Explain")
    form.get_by_label("Subject DN").fill(f"uid=bob,ou=users,{BASE}")
    form.get_by_label("Target DN").fill(f"uid=alice,ou=users,{BASE}")
    form.get_by_role("button", name="Explain").click()
    answer = form.locator("[aria-live]")
    expect(answer).to_contain_text("Allowed", timeout=WAIT_MS)
    expect(answer).to_contain_text("rule 0")
    form.get_by_label("Right").select_option("delete")
    form.get_by_role("button", name="Explain").click()
    expect(answer).to_contain_text("Denied", timeout=WAIT_MS)

    page.get_by_role("button", name="Delete rule 0").click()
    expect(rules).not_to_contain_text(f"ou=users,{BASE}", timeout=WAIT_MS)

    go(page, node.url, "config/logging", "Configuration")
    level = page.get_by_label("logging.level")
    expect(level).to_have_value("info", timeout=WAIT_MS)
    level.fill("debug")
    page.get_by_role("button", name="Apply changes").click()
    # the notice comes once the form shows the values in force (filling earlier would type
    # into the form that is being replaced)
    expect(page.get_by_role("alert")).to_contain_text("configuration updated", timeout=WAIT_MS)
    expect(page.get_by_label("logging.level")).to_have_value("debug", timeout=WAIT_MS)
    level = page.get_by_label("logging.level")
    level.fill("no-such-level")
    page.get_by_role("button", name="Apply changes").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Config change refused", timeout=WAIT_MS)
    assert "{" not in alert.inner_text()
