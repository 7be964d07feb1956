"""Session fixtures for the integration suite.

Rules: one shared server per session (``server``); tests write only under their own DNs; the
restart/durability tests build private servers with ``make_server``, which stops each of them by
PID at teardown. ``OBA_TEST_TARGET=slapd`` swaps Oba for a private OpenLDAP slapd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ._support import LdapServer, target_kind


@pytest.fixture(scope="session")
def target() -> str:
    """``oba`` or ``slapd``."""
    return target_kind()


@pytest.fixture(scope="session")
def server(target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    """The shared server of this session, already answering."""
    srv = LdapServer(target, tmp_path_factory.mktemp(f"{target}-shared"))
    failure = ""
    try:
        srv.start()
    except RuntimeError as exc:
        failure = str(exc)
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def url(server: LdapServer) -> str:
    return server.url


@pytest.fixture
def make_server(target: str, tmp_path: Path) -> Iterator[Callable[[], LdapServer]]:
    """Factory of private (not yet started) servers; all are stopped at teardown."""
    made: list[LdapServer] = []

    def factory() -> LdapServer:
        srv = LdapServer(target, tmp_path / f"srv{len(made)}")
        made.append(srv)
        return srv

    yield factory
    for srv in made:
        srv.stop()
