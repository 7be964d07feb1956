"""``oba user`` operations over the REST API, and the offline user listing.

Rules for this module: online operations go through the server (``/api/v1``) so access rules,
password hashing and replication apply; the only offline operation is ``list_offline``, which
refuses a data directory a server holds. A user is an entry with objectClass person,
organizationalPerson or inetOrgPerson; ``locked`` means ``obaDisabled: TRUE`` (what the REST
``disable``/``enable`` routes set and what bind refuses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from oba.protocol.filter import parse_filter
from oba.tools import offline
from oba.tools.client import Api

USER_FILTER = "(|(objectClass=person)(objectClass=organizationalPerson)(objectClass=inetOrgPerson))"
_TRUE = ("TRUE", "1", "YES")


def _path(dn: str) -> str:
    return "/entries/" + quote(dn, safe="")


def add(api: Api, dn: str, password: str, attrs: dict[str, list[str]]) -> dict[str, Any]:
    rdn_attr, _, rdn_value = dn.split(",", 1)[0].partition("=")
    attributes: dict[str, list[str]] = {
        "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson"],
    }
    attributes.update(attrs)
    attributes.setdefault(rdn_attr.strip(), [rdn_value.strip()])
    attributes.setdefault("cn", [rdn_value.strip()])
    attributes.setdefault("sn", [rdn_value.strip()])
    if password:
        attributes["userPassword"] = [password]
    body: dict[str, Any] = api.request("POST", "/entries",
                                       json={"dn": dn, "attributes": attributes}).json()
    return body


def delete(api: Api, dn: str) -> None:
    api.request("DELETE", _path(dn))


def passwd(api: Api, dn: str, password: str) -> None:
    api.request("PUT", _path(dn), json={"changes": [
        {"operation": "replace", "attribute": "userPassword", "values": [password]}]})


def lock(api: Api, dn: str) -> None:
    api.request("POST", _path(dn) + "/disable")


def unlock(api: Api, dn: str) -> None:
    api.request("POST", _path(dn) + "/enable")


def _row(dn: str, attrs: dict[str, list[str]]) -> dict[str, Any]:
    def first(name: str) -> str:
        for key, values in attrs.items():
            if key.lower() == name.lower() and values:
                return values[0]
        return ""

    return {"dn": dn, "uid": first("uid"), "cn": first("cn"), "mail": first("mail"),
            "locked": first("obaDisabled").upper() in _TRUE}


def list_online(api: Api, base: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        params: dict[str, str | int] = {"filter": USER_FILTER, "offset": offset, "limit": 1000,
                                        "attributes": "uid,cn,mail,obaDisabled"}
        if base:
            params["baseDN"] = base
        page = api.request("GET", "/search", params=params).json()
        rows += [_row(e["dn"], e["attributes"]) for e in page["entries"]]
        if not page.get("hasMore"):
            return rows
        offset += len(page["entries"])


def list_offline(data_dir: str | Path, base: str | None, config_path: str | None
                 ) -> list[dict[str, Any]]:
    from oba.tools.bulk import iter_entries

    offline.refuse_if_live(data_dir, "reading it offline")
    if not (Path(data_dir) / "data.mdb").exists():
        raise FileNotFoundError(f"{data_dir} holds no Oba database (no data.mdb)")
    config = offline.config_for(config_path, data_dir)
    store = offline.open_store(config)
    try:
        with store.read() as txn:
            out = []
            for entry in iter_entries(txn, base, parse_filter(USER_FILTER)):
                attrs = {k: [v.decode("utf-8", "replace") for v in vs]
                         for k, vs in entry.attrs.items()}
                out.append(_row(entry.dn, attrs))
            return out
    finally:
        store.close()
