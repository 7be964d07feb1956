"""Persistent search with Entry Change Notification (python-ldap's psearch controls).

Rules: entries live under ``ou=ps``; a persistent search runs on one connection while another
makes changes; notifications are awaited with a deadline. OpenLDAP has no persistent search, so
against slapd the request is refused as an unavailable critical extension (12).
"""

from __future__ import annotations

import time
from typing import Any

import ldap
import pytest
from ldap.controls.psearch import EntryChangeNotificationControl, PersistentSearchControl

from ._support import BASE_DN, ROOT_DN, ROOT_PW, connect

OU = f"ou=ps,{BASE_DN}"
ECN = {EntryChangeNotificationControl.controlType: EntryChangeNotificationControl}


def _person(uid: str) -> list[tuple[str, list[bytes]]]:
    return [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
            ("cn", [uid.encode()]), ("sn", [b"s"])]


def _collect(conn: ldap.ldapobject.LDAPObject, mid: int, want: int,
             timeout: float = 10.0) -> list[tuple[str, dict[str, list[bytes]], Any]]:
    got: list[tuple[str, dict[str, list[bytes]], Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"got {len(got)} of {want} notifications: {got}")
        try:
            _, data, _, _ = conn.result4(mid, all=0, timeout=0.5, add_ctrls=1,
                                         resp_ctrl_classes=ECN)[:4]
        except ldap.TIMEOUT:
            continue
        for item in data or []:
            dn, attrs, ctrls = item
            ecn = next((c for c in ctrls if isinstance(c, EntryChangeNotificationControl)), None)
            got.append((dn, attrs, ecn))
    return got


def test_persistent_search_notifications(url: str, target: str) -> None:
    admin = connect(url, ROOT_DN, ROOT_PW)
    admin.add_s(OU, [("objectClass", [b"organizationalUnit"]), ("ou", [b"ps"])])
    admin.add_s(f"uid=old,{OU}", _person("old"))
    watcher = connect(url, ROOT_DN, ROOT_PW)
    ctl = PersistentSearchControl(criticality=True, changeTypes=["add", "delete", "modify",
                                                                 "modDN"],
                                  changesOnly=True, returnECs=True)
    mid = watcher.search_ext(OU, ldap.SCOPE_SUBTREE, "(objectClass=inetOrgPerson)",
                             ["uid", "description"], serverctrls=[ctl])
    if target == "slapd":
        with pytest.raises(ldap.UNAVAILABLE_CRITICAL_EXTENSION):
            watcher.result4(mid, all=1, timeout=10)
        return
    # the search is registered once the server has answered a later request on its connection
    watcher.whoami_s()
    admin.add_s(f"uid=new,{OU}", _person("new"))
    admin.modify_s(f"uid=new,{OU}", [(ldap.MOD_REPLACE, "description", [b"changed"])])
    admin.rename_s(f"uid=new,{OU}", "uid=renamed", delold=1)
    admin.delete_s(f"uid=old,{OU}")
    admin.add_s(f"cn=outside,{OU}", [("objectClass", [b"organizationalRole"]),
                                     ("cn", [b"outside"])])  # filtered out
    events = _collect(watcher, mid, 4)
    kinds = [(dn.split(",", 1)[0], e.changeType if e else None) for dn, _, e in events]
    assert kinds == [("uid=new", 1), ("uid=new", 4), ("uid=renamed", 8), ("uid=old", 2)]
    ecns = [e for _, _, e in events]
    assert all(e is not None for e in ecns)
    numbers = [e.changeNumber for e in ecns if e is not None]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4
    assert ecns[2] is not None and ecns[2].previousDN == f"uid=new,{OU}"
    assert events[1][1].get("description") == [b"changed"]
    # abandon ends it silently; the connection stays usable
    watcher.abandon(mid)
    assert watcher.whoami_s() == f"dn:{ROOT_DN}"
    watcher.unbind_s()
    admin.unbind_s()


def test_persistent_search_initial_results_and_mask(url: str, target: str) -> None:
    if target == "slapd":
        conn = connect(url, ROOT_DN, ROOT_PW)
        with pytest.raises(ldap.UNAVAILABLE_CRITICAL_EXTENSION):
            conn.search_ext_s(BASE_DN, ldap.SCOPE_BASE, serverctrls=[
                PersistentSearchControl(True, ["add"], False, True)])
        return
    admin = connect(url, ROOT_DN, ROOT_PW)
    ou = f"ou=ps2,{BASE_DN}"
    admin.add_s(ou, [("objectClass", [b"organizationalUnit"]), ("ou", [b"ps2"])])
    admin.add_s(f"uid=a,{ou}", _person("a"))
    watcher = connect(url, ROOT_DN, ROOT_PW)
    ctl = PersistentSearchControl(criticality=True, changeTypes=["delete"], changesOnly=False,
                                  returnECs=False)
    mid = watcher.search_ext(ou, ldap.SCOPE_ONELEVEL, "(uid=*)", ["uid"], serverctrls=[ctl])
    [(dn, _, ecn)] = _collect(watcher, mid, 1)
    assert dn == f"uid=a,{ou}" and ecn is None  # the initial result, no notification control
    watcher.whoami_s()
    admin.add_s(f"uid=b,{ou}", _person("b"))  # not in the changeTypes mask
    admin.delete_s(f"uid=a,{ou}")
    [(dn, _, ecn)] = _collect(watcher, mid, 1)
    assert dn == f"uid=a,{ou}" and ecn is None
    watcher.unbind_s()
    admin.unbind_s()
