"""Fixtures of the browser tests: one Chromium per session, one node per module.

Rules: Chromium is Debian's (/usr/bin/chromium); a missing browser fails the tests naming the
package. Nodes are real processes, stopped by PID at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from .support import WebNode, launch_options


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    try:
        options = launch_options()
    except AssertionError as exc:
        pytest.fail(str(exc), pytrace=False)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(**options)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    nd = WebNode(Path(tmp_path_factory.mktemp("web-node")))
    nd.start()
    try:
        yield nd
    finally:
        nd.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
