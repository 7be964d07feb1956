"""Secrets never reach the log, even at debug level.

Rules: one private Oba with ``logging.level: debug`` and the REST API; the test performs every
operation that carries a secret (binds good and bad over LDAP and REST, adds and modifies of
``userPassword``, Password Modify, REST entry writes), stops the server (so everything is
flushed), then looks for each secret (and its base64 form) in the log.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import ldap
import ldap.extop.passwd
import ldap.modlist

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect
from .rest_support import JWT_SECRET, RestServer

USER_PW = "User-Secret-4711"
NEW_PW = "Changed-Secret-0815"
WRONG_PW = "Wrong-Secret-2222"
REST_PW = "Rest-Secret-3333"


class DebugRestServer(RestServer):
    def command(self) -> list[str]:
        cmd = super().command()
        conf = self.config_path
        conf.write_text(conf.read_text().replace('level: "info"', 'level: "debug"'))
        return cmd


def test_secrets_never_logged(tmp_path: Path) -> None:
    srv = DebugRestServer("oba", tmp_path / "srv")
    srv.start()
    user = f"uid=secret-user,{BASE_DN}"
    try:
        admin = connect(srv.url, ROOT_DN, ROOT_PW)
        admin.add_s(user, ldap.modlist.addModlist({
            "objectClass": [b"inetOrgPerson"], "uid": [b"secret-user"], "cn": [b"s"],
            "sn": [b"s"], "userPassword": [USER_PW.encode()]}))
        conn = connect(srv.url, user, USER_PW)
        conn.passwd_s(user, USER_PW, NEW_PW)
        conn.unbind_s()
        bad = connect(srv.url)
        try:
            bad.simple_bind_s(user, WRONG_PW)
        except ldap.INVALID_CREDENTIALS:
            pass
        admin.modify_s(user, [(ldap.MOD_REPLACE, "userPassword", [USER_PW.encode()])])
        admin.unbind_s()
        with httpx.Client(base_url=srv.base_url + "/api/v1", timeout=30) as http:
            ok = http.post("/auth/bind", json={"dn": user, "password": USER_PW})
            assert ok.status_code == 200, ok.text
            assert http.post("/auth/bind", json={"dn": user, "password": WRONG_PW}
                             ).status_code == 401
            auth = base64.b64encode(f"{ROOT_DN}:{ROOT_PW}".encode()).decode()
            http.get("/entries/" + user, headers={"Authorization": f"Basic {auth}"})
            r = http.patch("/entries/" + user, headers={"Authorization": f"Basic {auth}"},
                           json={"changes": [{"operation": "replace",
                                              "attribute": "userPassword", "values": [REST_PW]}]})
            assert r.status_code == 200, r.text
            token = ok.json()["token"]
            http.get("/entries/" + user, headers={"Authorization": f"Bearer {token}"})
    finally:
        srv.stop()
    log = srv.log_path.read_text(errors="replace")
    assert "DEBUG" in log, "the server did not log at debug level"
    assert f"BindRequest dn='{user}'" in log  # the operations themselves are logged
    for secret in (ROOT_PW * 2, USER_PW, NEW_PW, WRONG_PW, REST_PW, JWT_SECRET):
        # ROOT_PW ("secret") is a common word: look for it where it would leak, doubled
        # passwords excepted; the others are unique strings
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            assert form not in log, f"{secret!r} appears in the log"
    assert f"'{ROOT_PW}'" not in log and f'"{ROOT_PW}"' not in log
