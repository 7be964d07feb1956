"""The web admin end to end, in Debian's Chromium against a running node.

A user is created, found, put in a group and disabled through the pages; LDAP then refuses its
bind; the audit records of those actions appear in the log viewer.
"""

from __future__ import annotations

import ldap
import pytest
from playwright.sync_api import Page, expect

from .pages import WAIT_MS, go, login
from .support import BASE, WebNode

UID = "webuser1"
USER_DN = f"uid={UID},ou=users,{BASE}"
USER_PW = "s3cret-Web-pw"


def ldap_bind(node: WebNode, dn: str, password: str) -> None:
    conn = ldap.initialize(node.ldap_url)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
    conn.set_option(ldap.OPT_TIMEOUT, 5.0)
    try:
        conn.simple_bind_s(dn, password)
    finally:
        conn.unbind_s()


def test_static_files_and_api_share_one_origin(node: WebNode, page: Page) -> None:
    response = page.goto(node.url + "/")
    assert response is not None and response.ok
    assert "default-src 'self'" in (response.headers.get("content-security-policy") or "")
    missing = page.request.get(node.url + "/no-such-page.html")
    assert missing.status == 404
    api = page.request.get(node.url + "/api/v1/config/public")
    assert api.ok and api.json() == {"baseDN": BASE}


def test_bad_password_shows_a_readable_error(node: WebNode, page: Page) -> None:
    page.goto(node.url + "/#/login")
    page.get_by_label("Bind DN").fill(f"cn=admin,{BASE}")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Log in failed", timeout=WAIT_MS)
    assert "{" not in alert.inner_text()  # a sentence, not raw JSON
    expect(page.get_by_label("Bind DN")).to_be_visible()


def test_user_lifecycle_through_the_pages(node: WebNode, page: Page) -> None:
    login(page, node.url)
    expect(page.get_by_text("standalone")).to_be_visible(timeout=WAIT_MS)

    # create the user
    go(page, node.url, "users", "Users & groups")
    page.get_by_text("New user", exact=True).click()
    page.get_by_label("User ID").fill(UID)
    page.get_by_label("Given name").fill("Web")
    page.get_by_label("Surname").fill("User")
    page.get_by_label("Email").fill("web@example.com")
    page.get_by_label("Initial password").fill(USER_PW)
    page.get_by_role("button", name="Create user").click()
    users = page.get_by_role("table", name="Users")
    expect(users.locator(f'tr[data-dn="{USER_DN}"]')).to_contain_text("active", timeout=WAIT_MS)
    ldap_bind(node, USER_DN, USER_PW)  # the account works before it is disabled

    # find it in search
    go(page, node.url, "search", "Search")
    page.get_by_label("Filter").fill(f"(uid={UID})")
    page.get_by_role("button", name="Search", exact=True).click()
    results = page.get_by_label("Search results")
    expect(results.get_by_role("link", name=USER_DN)).to_be_visible(timeout=WAIT_MS)
    expect(results).to_contain_text("web@example.com")
    expect(page.get_by_text("1 entry found")).to_be_visible()

    # add it to a group
    go(page, node.url, "users", "Users & groups")
    page.get_by_role("button", name="Open group developers").click()
    page.get_by_label("Add member to developers").fill(UID)
    page.get_by_role("button", name="Add member").click()
    members = page.get_by_role("table", name="Members of developers")
    expect(members).to_contain_text(USER_DN, timeout=WAIT_MS)

    # disable it: LDAP refuses its bind from then on
    page.get_by_role("button", name=f"Disable {UID}").click()
    expect(users.locator(f'tr[data-dn="{USER_DN}"]')).to_contain_text("disabled",
                                                                       timeout=WAIT_MS)
    with pytest.raises(ldap.LDAPError):
        ldap_bind(node, USER_DN, USER_PW)

    # the audit trail shows those actions: creation, disable (a modify), the refused bind
    go(page, node.url, "logs", "Logs")
    records = page.get_by_role("table", name="Log records")
    show_logs(page, UID, [f"add {USER_DN}: success", f"modify {USER_DN}: success",
                          f"bind {USER_DN}: invalid_credentials"])
    expect(records.locator("tr", has_text=f"add {USER_DN}")).to_contain_text("rest")
    # ... and the membership change, made on the group
    show_logs(page, "developers", [f"modify cn=developers,ou=groups,{BASE}: success"])
    expect(records.locator("tr", has_text="modify cn=developers")).to_contain_text(
        "cn=admin,dc=example,dc=com")


def show_logs(page: Page, words: str, wanted: list[str]) -> None:
    """Filter the log viewer by ``words`` until every ``wanted`` text is listed (bounded)."""
    page.get_by_label("Search", exact=True).fill(words)
    records = page.get_by_role("table", name="Log records")
    for _ in range(30):  # the audit store commits asynchronously: re-filter, at most ~15 s
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("table", name="Log records")).to_be_visible(timeout=WAIT_MS)
        if all(w in records.inner_text() for w in wanted):
            break
        page.wait_for_timeout(500)
    for w in wanted:
        expect(records).to_contain_text(w, timeout=WAIT_MS)
