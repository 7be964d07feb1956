"""Execute a case against one server through python-ldap and record normalised outcomes.

Rules: every op yields one record ``{"op": summary, "result": name, "matched": dn, ...}``;
``ldap.LDAPError`` is caught and its ``result``/``matched``/``desc``/``info`` recorded, never
raised; searches read entries one by one so that entries before an error (sizeLimitExceeded) are
kept. Connections are cached per identity for the duration of one case and all unbound at the
end. The case's subtree is built from ``tree.ldif`` before the ops and removed afterwards.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import ldap
import ldap.extop
import ldap.ldapobject
import ldap.modlist
import ldif  # type: ignore[import-untyped]
from ldap.controls import RequestControl
from ldap.controls.libldap import SimplePagedResultsControl
from ldap.controls.sss import SSSRequestControl, SSSResponseControl

from .._support import ROOT_DN, ROOT_PW, connect
from .model import Case, tree_ldif
from .normalise import norm_attrs, norm_dn, project

RESULT_NAMES: dict[int, str] = {
    0: "success",
    1: "operationsError",
    2: "protocolError",
    3: "timeLimitExceeded",
    4: "sizeLimitExceeded",
    5: "compareFalse",
    6: "compareTrue",
    7: "authMethodNotSupported",
    8: "strongerAuthRequired",
    10: "referral",
    11: "adminLimitExceeded",
    12: "unavailableCriticalExtension",
    13: "confidentialityRequired",
    14: "saslBindInProgress",
    16: "noSuchAttribute",
    17: "undefinedAttributeType",
    18: "inappropriateMatching",
    19: "constraintViolation",
    20: "attributeOrValueExists",
    21: "invalidAttributeSyntax",
    32: "noSuchObject",
    33: "aliasProblem",
    34: "invalidDNSyntax",
    36: "aliasDereferencingProblem",
    48: "inappropriateAuthentication",
    49: "invalidCredentials",
    50: "insufficientAccessRights",
    51: "busy",
    52: "unavailable",
    53: "unwillingToPerform",
    54: "loopDetect",
    64: "namingViolation",
    65: "objectClassViolation",
    66: "notAllowedOnNonLeaf",
    67: "notAllowedOnRDN",
    68: "entryAlreadyExists",
    69: "objectClassModsProhibited",
    71: "affectsMultipleDSAs",
    80: "other",
    -1: "serverDown",
    -5: "timeout",
}
SCOPES = {"base": ldap.SCOPE_BASE, "one": ldap.SCOPE_ONELEVEL, "sub": ldap.SCOPE_SUBTREE}
MOD_OPS = {
    "add": ldap.MOD_ADD,
    "delete": ldap.MOD_DELETE,
    "replace": ldap.MOD_REPLACE,
    "increment": ldap.MOD_INCREMENT,
}
WHOAMI_OID = "1.3.6.1.4.1.4203.1.11.3"


def result_name(code: int) -> str:
    return RESULT_NAMES.get(code, f"code{code}")


def _values(raw: Any) -> list[bytes]:
    """Values of a case: strings (sent as UTF-8), or ``{base64: ...}`` for binary ones."""
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    return [base64.b64decode(v["base64"]) if isinstance(v, dict) else str(v).encode()
            for v in items]


def _error_record(exc: ldap.LDAPError) -> dict[str, Any]:
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    code = info.get("result", -1)
    return {
        "result": result_name(code),
        "matched": norm_dn(info.get("matched", "") or ""),
        "desc": str(info.get("desc", "")),
        "info": str(info.get("info", "")),
    }


def _ok() -> dict[str, Any]:
    return {"result": "success", "matched": ""}


class Session:
    """Connections of one case against one server, keyed by identity or session name."""

    def __init__(self, url: str, users: dict[str, tuple[str, str]]) -> None:
        self.url = url
        self.users = users
        self.conns: dict[str, ldap.ldapobject.LDAPObject] = {}

    def conn(self, who: str) -> ldap.ldapobject.LDAPObject:
        if who not in self.conns:
            if who == "root":
                self.conns[who] = connect(self.url, ROOT_DN, ROOT_PW)
            elif who == "anon":
                self.conns[who] = connect(self.url)
            elif who in self.users:
                dn, pw = self.users[who]
                self.conns[who] = connect(self.url, dn, pw)
            else:
                raise KeyError(f"unknown identity or session {who!r}")
        return self.conns[who]

    def close(self) -> None:
        for c in self.conns.values():
            with suppress(ldap.LDAPError):
                c.unbind_s()
        self.conns.clear()


def _summary(op: dict[str, Any]) -> str:
    keys = ("dn", "base", "filter", "newrdn", "newsuperior", "attr", "value", "user", "oid")
    parts = [str(op["op"]), f"as={op.get('as', 'root')}"]
    parts += [f"{k}={op[k]}" for k in keys if k in op]
    if "changes" in op:
        parts.append(
            "changes="
            + ";".join(
                f"{next(k for k in c if k != 'values')}:{c[next(k for k in c if k != 'values')]}"
                for c in op["changes"]
            )
        )
    for k in ("scope", "attrs", "sort", "page", "sizelimit"):
        if k in op:
            parts.append(f"{k}={op[k]}")
    return " ".join(parts)


def _decode_ctrls(ctrls: list[Any]) -> dict[str, Any]:
    """Response controls by OID; accepts decoded objects and raw (oid, crit, value) tuples."""
    classes = {c.controlType: c for c in (SSSResponseControl, SimplePagedResultsControl)}
    out: dict[str, Any] = {}
    for ctrl in ctrls:
        if isinstance(ctrl, tuple):
            oid, _crit, value = ctrl
            if oid not in classes or not value:
                continue
            obj = classes[oid]()
            obj.decodeControlValue(value)
            out[oid] = obj
        else:
            out[ctrl.controlType] = ctrl
    return out


def _search(conn: ldap.ldapobject.LDAPObject, op: dict[str, Any]) -> dict[str, Any]:
    attrs = op.get("attrs")
    ctrls: list[Any] = []
    if "sort" in op:
        ctrls.append(SSSRequestControl(True, list(op["sort"])))
    for spec in op.get("controls", []):
        ctrls.append(RequestControl(spec["oid"], bool(spec.get("critical", False)), None))
    page = int(op.get("page", 0))
    paged = SimplePagedResultsControl(True, page, b"") if page else None
    entries: list[dict[str, Any]] = []
    pages: list[int] = []
    rec = _ok()
    sort_result: str | None = None
    while True:
        msgid = conn.search_ext(
            op["base"],
            SCOPES[op.get("scope", "sub")],
            op.get("filter", "(objectClass=*)"),
            attrs,
            serverctrls=ctrls + ([paged] if paged else []),
            sizelimit=int(op.get("sizelimit", 0)),
        )
        got = 0
        resp_ctrls: list[Any] = []
        try:
            while True:
                rtype, rdata, _mid, rctrls = conn.result3(msgid, all=0)
                if rtype == ldap.RES_SEARCH_ENTRY:
                    for dn, ents in rdata:
                        entries.append({"dn": norm_dn(dn), "attrs": norm_attrs(ents)})
                        got += 1
                elif rtype == ldap.RES_SEARCH_RESULT:
                    resp_ctrls = rctrls or []
                    break
        except ldap.LDAPError as exc:
            rec = _error_record(exc)
            info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            resp_ctrls = info.get("ctrls", []) or []
        pages.append(got)
        decoded = _decode_ctrls(resp_ctrls)
        if SSSResponseControl.controlType in decoded:
            sort_result = result_name(decoded[SSSResponseControl.controlType].sortResult)
        cookie = b""
        if paged is not None and SimplePagedResultsControl.controlType in decoded:
            cookie = decoded[SimplePagedResultsControl.controlType].cookie
        if paged is None or not cookie or rec["result"] != "success" or len(pages) > 100:
            break
        paged = SimplePagedResultsControl(True, page, cookie)
    ordered = bool(op.get("ordered", "sort" in op))
    if not ordered:
        entries.sort(key=lambda e: e["dn"])
    if "project" in op:
        for e in entries:
            e["attrs"] = project(e["attrs"], op["project"])
    if rec["result"] == "sizeLimitExceeded":
        rec["count"] = len(entries)  # which entries come first is implementation-defined
    else:
        rec["entries"] = entries
    if paged is not None:
        rec["pages"] = pages
    if "sort" in op:
        rec["sortResult"] = sort_result
    return rec


def _passwd(conn: ldap.ldapobject.LDAPObject, op: dict[str, Any]) -> dict[str, Any]:
    msgid = conn.passwd(op.get("user"), op.get("old"), op.get("new"))
    _oid, value = conn.extop_result(msgid, all=1, timeout=conn.timeout)
    rec = _ok()
    rec["generated"] = bool(value)  # generated values differ by design: compare presence only
    return rec


def _run_op(sess: Session, op: dict[str, Any]) -> dict[str, Any]:
    kind = op["op"]
    if kind == "bind":
        name = op.get("session")
        conn = sess.conns.get(name) if name else None
        if conn is None:
            conn = connect(sess.url)
            if name:
                sess.conns[name] = conn
        try:
            conn.simple_bind_s(op["dn"], str(op["password"]))
            return _ok()
        finally:
            if not name:
                with suppress(ldap.LDAPError):
                    conn.unbind_s()
    conn = sess.conn(str(op.get("as", "root")))
    if kind == "add":
        conn.add_s(op["dn"], [(k, _values(v)) for k, v in op["attrs"].items()])
    elif kind == "modify":
        mods = []
        for change in op["changes"]:
            mkind = next(k for k in change if k != "values")
            vals = _values(change.get("values"))
            mods.append((MOD_OPS[mkind], change[mkind], vals or None))
        conn.modify_ext_s(op["dn"], mods)
    elif kind == "delete":
        conn.delete_s(op["dn"])
    elif kind == "modrdn":
        conn.rename_s(
            op["dn"], op["newrdn"], op.get("newsuperior"), int(bool(op.get("deleteoldrdn", True)))
        )
    elif kind == "compare":
        same = conn.compare_s(op["dn"], op["attr"], str(op["value"]).encode())
        return {"result": "compareTrue" if same else "compareFalse", "matched": ""}
    elif kind == "search":
        return _search(conn, op)
    elif kind == "whoami":
        who = conn.whoami_s() or ""
        rec = _ok()
        rec["authzid"] = "dn:" + norm_dn(who[3:]) if who.startswith("dn:") else who
        return rec
    elif kind == "passwd":
        return _passwd(conn, op)
    elif kind == "extended":
        value = str(op["value"]).encode() if "value" in op else None
        conn.extop_s(ldap.extop.ExtendedRequest(op["oid"], value))
    return _ok()


def _check_expectations(op: dict[str, Any], rec: dict[str, Any]) -> list[str]:
    problems = []
    if "expect" in op and rec["result"] != op["expect"]:
        problems.append(f"expected {op['expect']}, got {rec['result']}")
    entries = rec.get("entries")
    if "count" in op:
        n = len(entries) if entries is not None else rec.get("count")
        if n != op["count"]:
            problems.append(f"expected {op['count']} entries, got {n}")
    if "dns" in op and entries is not None:
        want = [norm_dn(d) for d in op["dns"]]
        have = [e["dn"] for e in entries]
        if not op.get("ordered", "sort" in op):
            want.sort()
        if want != have:
            problems.append(f"expected DNs {want}, got {have}")
    return problems


def tree_entries(name: str) -> list[tuple[str, dict[str, list[bytes]]]]:
    parser = ldif.LDIFRecordList(io.StringIO(tree_ldif(name)))
    parser.parse()
    return [(dn, attrs) for dn, attrs in parser.all_records]


@contextmanager
def case_tree(url: str, case: Case) -> Iterator[None]:
    """Build the case's subtree (fresh) and remove it afterwards, as root."""
    conn = connect(url, ROOT_DN, ROOT_PW)
    try:
        _remove_subtree(conn, case.base)
        for dn, attrs in tree_entries(case.name):
            try:
                conn.add_s(dn, ldap.modlist.addModlist(attrs))
            except ldap.LDAPError as exc:
                raise RuntimeError(f"{url}: initial tree: add {dn}: {exc}") from None
        yield
    finally:
        with suppress(ldap.LDAPError):
            _remove_subtree(conn, case.base)
        conn.unbind_s()


def _remove_subtree(conn: ldap.ldapobject.LDAPObject, base: str) -> None:
    try:
        found = conn.search_s(base, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["1.1"])
    except ldap.NO_SUCH_OBJECT:
        return
    for dn, _ in sorted(found, key=lambda item: -len(ldap.dn.str2dn(item[0]))):
        conn.delete_s(dn)


def run_case(url: str, case: Case) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every op of ``case``; return the records and the broken expectations."""
    users = {
        dn_attrs[1]["uid"][0].decode(): (dn_attrs[0], dn_attrs[1]["cleartext"][0].decode())
        for dn_attrs in _users(case.name)
    }
    records: list[dict[str, Any]] = []
    broken: list[str] = []
    with case_tree(url, case):
        sess = Session(url, users)
        try:
            for i, op in enumerate(case.ops):
                try:
                    rec = _run_op(sess, op)
                except ldap.LDAPError as exc:
                    rec = _error_record(exc)
                rec = {"op": f"#{i} {_summary(op)}", **rec}
                records.append(rec)
                broken += [f"#{i} {_summary(op)}: {p}" for p in _check_expectations(op, rec)]
        finally:
            sess.close()
    return records, broken


def _users(name: str) -> list[tuple[str, dict[str, list[bytes]]]]:
    """Users of the tree: entries whose ``description`` is ``password <cleartext>``."""
    out = []
    for dn, attrs in tree_entries(name):
        for desc in attrs.get("description", []):
            if desc.startswith(b"password "):
                out.append((dn, {"uid": attrs["uid"], "cleartext": [desc[len("password ") :]]}))
    return out
