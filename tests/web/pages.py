"""Page-object helpers shared by the browser tests and the screenshot script.

Rules: elements are found by their accessible label, role or text (as a user would); every wait
is Playwright's own bounded wait (``expect`` with a timeout) or ``support.wait_for``.
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .support import ADMIN, PASSWORD

WAIT_MS = 15_000


def login(page: Page, base_url: str, dn: str = ADMIN, password: str = PASSWORD) -> None:
    page.goto(base_url + "/#/login")
    page.get_by_label("Bind DN").fill(dn)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible(timeout=WAIT_MS)


def go(page: Page, base_url: str, route: str, heading: str) -> None:
    page.goto(f"{base_url}/#/{route}")
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=WAIT_MS)
