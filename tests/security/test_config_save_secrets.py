"""``POST /api/v1/config/save`` keeps ``${VAR}`` references and never writes a secret the file
did not hold itself.

Rules: one private Oba whose config file takes its secrets (and a few other values) from
``${VAR}`` references, set in the environment of the test process (which the server inherits;
``OBA_*`` names are not used since the test harness strips them). The saved file is read back
as text (no secret in it), then loaded again with the same environment (same effective
configuration). Files-only cases (an ``OBA_*`` variable, a reference in a flow list) call the
loader and the save renderer directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from integration._support import ROOT_DN, ROOT_PW
from integration.rest_support import JWT_SECRET, RestServer, assert_error

ENV = {
    "SAVE_TEST_ROOT_PW": ROOT_PW,
    "SAVE_TEST_JWT": JWT_SECRET,
    "SAVE_TEST_LEVEL": "info",
}


class ReferencingServer(RestServer):
    """The usual test server, its secrets and some settings written as ``${VAR}``."""

    def command(self) -> list[str]:
        cmd = super().command()
        text = self.config_path.read_text(encoding="utf-8")
        for literal, reference in (
            (f'rootPassword: "{ROOT_PW}"', 'rootPassword: "${SAVE_TEST_ROOT_PW}"'),
            (f'jwtSecret: "{JWT_SECRET}"', "jwtSecret: ${SAVE_TEST_JWT}"),
            ('level: "info"', "level: ${SAVE_TEST_LEVEL:-debug}\n  format: ${SAVE_TEST_FMT:-text}"),
        ):
            assert literal in text, literal
            text = text.replace(literal, reference, 1)
        self.config_path.write_text(text, encoding="utf-8")
        return cmd


@pytest.fixture
def srv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReferencingServer]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SAVE_TEST_FMT", raising=False)
    server = ReferencingServer("oba", tmp_path / "srv")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_save_keeps_references_and_writes_no_resolved_secret(srv: ReferencingServer) -> None:
    from oba.config import load_config

    with srv.client() as root:  # Basic auth with the root password: the reference resolved
        r = root.patch("/config/server", json={"writeTimeout": "42s"})
        assert r.status_code == 200, r.text
        r = root.post("/config/save")
        assert r.status_code == 200, r.text
        text = srv.config_path.read_text(encoding="utf-8")
        for secret in (ROOT_PW, JWT_SECRET):
            assert secret not in text, f"{secret!r} written in clear:\n{text}"
        saved = yaml.safe_load(text)
        assert saved["directory"]["rootPassword"] == "${SAVE_TEST_ROOT_PW}"
        assert saved["rest"]["jwtSecret"] == "${SAVE_TEST_JWT}"
        assert saved["logging"]["level"] == "${SAVE_TEST_LEVEL:-debug}"
        assert saved["logging"]["format"] == "${SAVE_TEST_FMT:-text}"
        assert saved["server"]["writeTimeout"] == "42s"  # changed over the API: its new value
        # the saved file means the same configuration, with the same environment
        again = load_config(str(srv.config_path), env=ENV)
        assert again.directory.rootPassword == ROOT_PW
        assert again.rest.jwtSecret == JWT_SECRET
        assert again.logging.level == "info"
        assert again.server.writeTimeout.total_seconds() == 42
        # a reload of the saved file changes nothing, and a second save writes the same file
        r = root.post("/config/reload")
        assert r.status_code == 200, r.text
        assert r.json()["applied"] == [] and r.json()["restartRequired"] == []
        assert root.post("/config/save").status_code == 200
        assert srv.config_path.read_text(encoding="utf-8") == text
        assert root.get("/config/directory").json()["rootPassword"] == "********"
    with srv.client((ROOT_DN, "wrong")) as bad:
        assert_error(bad.get("/config"), 401)


def test_secret_from_an_oba_variable_is_not_written(tmp_path: Path) -> None:
    """``OBA_DIRECTORY_ROOT_PASSWORD`` overrides the file: the file keeps its own value, and a
    secret the file does not set at all is left out rather than written in clear."""
    from oba.config import load_config, render_config_file

    conf = tmp_path / "oba.yaml"
    conf.write_text('directory:\n  baseDN: "dc=example,dc=com"\n  rootDN: "cn=admin,dc=example,'
                    'dc=com"\n  rootPassword: "${ROOT_FROM_FILE:-file-default}"\n'
                    "storage:\n  dataDir: data\n", encoding="utf-8")
    env = {"OBA_DIRECTORY_ROOT_PASSWORD": "env-secret-1", "OBA_REST_JWT_SECRET": "env-secret-2"}
    cfg = load_config(str(conf), env=env, cwd=tmp_path)
    assert cfg.directory.rootPassword == "env-secret-1"
    text = render_config_file(cfg)
    assert "env-secret" not in text, text
    saved = yaml.safe_load(text)
    assert saved["directory"]["rootPassword"] == "${ROOT_FROM_FILE:-file-default}"
    assert "jwtSecret" not in saved["rest"]
    assert saved["storage"]["dataDir"] == str(tmp_path / "data")


def test_references_keep_their_place_and_style(tmp_path: Path) -> None:
    """References inside a flow list, inside a quoted string, or standing for a number or a
    list are written so that substitution gives the same configuration again."""
    from oba.config import load_config, render_config_file

    conf = tmp_path / "oba.yaml"
    conf.write_text(
        "server:\n"
        '  address: "127.0.0.1:${LDAP_PORT}"\n'
        "  maxConnections: ${MAX_CONN}\n"
        "rest:\n"
        '  corsOrigins: [${ORIGIN}, "https://fixed.example"]\n'
        "  trustedProxies: ${PROXIES}\n"
        "  jwtSecret: 'jwt-${JWT_PART}'\n"
        "storage:\n"
        "  dataDir: ${DATA_ROOT}/oba\n", encoding="utf-8")
    env = {"LDAP_PORT": "1389", "MAX_CONN": "77", "ORIGIN": "https://a.example",
           "PROXIES": '["10.0.0.0/8", "127.0.0.1"]', "JWT_PART": "xyz-secret",
           "DATA_ROOT": "/srv"}
    cfg = load_config(str(conf), env=env)
    text = render_config_file(cfg)
    assert "xyz-secret" not in text and "https://a.example" not in text, text
    for reference in ('"127.0.0.1:${LDAP_PORT}"', "${MAX_CONN}", "${ORIGIN}", "${PROXIES}",
                      "'jwt-${JWT_PART}'", "${DATA_ROOT}/oba"):
        assert reference in text, (reference, text)
    conf.write_text(text, encoding="utf-8")
    again = load_config(str(conf), env=env)
    assert again.model_dump() == cfg.model_dump()
