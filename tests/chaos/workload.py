"""Workloads of the chaos harness: LDAP clients that record a history for the checker.

Rules for this module:
- Each client is a thread with its own python-ldap connection to ONE node (its LDAP port,
  no load balancer), bound as the root DN; it runs one operation at a time with a bounded
  timeout and records invoke/complete times (``time.monotonic``) and the outcome.
- Outcomes: ``ok`` (success); ``fail`` (the directory definitely did not apply it: a CAS
  whose old value is absent, LDAP 16, or "the change was not applied" in a 52 answer);
  ``info`` for everything else (timeout, connection lost, "the outcome is unknown"): it may
  or may not have been applied. After an ``info`` the client takes a new process id (its
  operation may still be pending, so its next one could overlap it).
- A client whose connect or bind fails sends nothing: no operation is recorded.
- Register workload: keys ``cn=r<k>,ou=chaos,<base>`` (organizationalRole) hold one
  ``description`` value from a small domain; ``write`` is a modify-replace; ``cas`` is a modify
  that deletes the old value and adds the new one (atomic: it fails as a whole when the old
  value is absent). Not idempotent: a CAS applied twice shows in the history (ABA).
- Set workload: unique adds ``uid=<client>-<n>,ou=set,<base>``.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ldap

from .checker import RegOp, SetAdd
from .cluster import ADMIN, BASE, PASSWORD, ChaosCluster

REG_BASE = f"ou=chaos,{BASE}"
SET_BASE = f"ou=set,{BASE}"
VALUES = ("0", "1", "2", "3", "4")
OP_TIMEOUT = 10.0  # > proposalTimeout (5 s): the server answers first when it can


def reg_dn(key: str) -> str:
    return f"cn={key},{REG_BASE}"


def connect(url: str, timeout: float = OP_TIMEOUT) -> Any:
    conn = ldap.initialize(url)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 2.0)
    conn.set_option(ldap.OPT_TIMEOUT, timeout)
    conn.set_option(ldap.OPT_RESTART, 0)
    conn.simple_bind_s(ADMIN, PASSWORD)
    return conn


def _info(exc: ldap.LDAPError) -> str:
    arg = exc.args[0] if exc.args else {}
    return str(arg.get("info", "")) if isinstance(arg, dict) else str(arg)


def not_applied(exc: ldap.LDAPError) -> bool:
    return isinstance(exc, ldap.UNAVAILABLE) and "not applied" in _info(exc)


@dataclass
class History:
    reg: list[RegOp] = field(default_factory=list)
    adds: list[SetAdd] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def new_pid(self) -> int:
        with self.lock:
            return next(self._pids)


class Client(threading.Thread):
    def __init__(self, cid: int, url: str, kind: str, keys: list[str], history: History,
                 stop: threading.Event, seed: int) -> None:
        super().__init__(name=f"client-{cid}", daemon=True)
        self.cid = cid
        self.url = url
        self.kind = kind
        self.keys = keys
        self.h = history
        self.stop_event = stop
        self.rng = random.Random(f"client/{seed}/{cid}")
        self.pid = cid
        self.conn: Any = None
        self.n = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            if self.conn is None:
                try:
                    self.conn = connect(self.url)
                except ldap.LDAPError:
                    self.conn = None
                    self.stop_event.wait(0.2)
                    continue
            if self.kind == "set":
                self._add()
            else:
                self._register_op()
            self.stop_event.wait(self.rng.uniform(0.005, 0.03))
        if self.conn is not None:
            try:
                self.conn.unbind_s()
            except ldap.LDAPError:
                pass

    def _lost(self) -> None:
        """The last operation's outcome is unknown: new process id, new connection."""
        self.pid = self.h.new_pid()
        try:
            self.conn.unbind_s()
        except ldap.LDAPError:
            pass
        self.conn = None

    def _add(self) -> None:
        self.n += 1
        uid = f"{self.cid}-{self.n}"
        attrs = [("objectClass", [b"inetOrgPerson"]), ("uid", [uid.encode()]),
                 ("cn", [uid.encode()]), ("sn", [b"chaos"])]
        t0 = time.monotonic()
        outcome = "info"
        try:
            self.conn.add_s(f"uid={uid},{SET_BASE}", attrs)
            outcome = "ok"
        except ldap.ALREADY_EXISTS:
            self.h.anomalies.append(f"add {uid}: already exists (applied twice?)")
        except ldap.LDAPError as exc:
            if not_applied(exc):
                outcome = "fail"
        t1 = time.monotonic()
        with self.h.lock:
            self.h.adds.append(SetAdd(uid, outcome, self.pid, t0,  # type: ignore[arg-type]
                                      t1 if outcome != "info" else None))
        if outcome == "info":
            self._lost()

    def _register_op(self) -> None:
        key = self.rng.choice(self.keys)
        dn = reg_dn(key)
        if self.rng.random() < 0.25:
            f, new = "write", self.rng.choice(VALUES)
            arg: Any = new
            mods = [(ldap.MOD_REPLACE, "description", [new.encode()])]
        else:
            old, new = self.rng.sample(VALUES, 2)
            f, arg = "cas", (old, new)
            mods = [(ldap.MOD_DELETE, "description", [old.encode()]),
                    (ldap.MOD_ADD, "description", [new.encode()])]
        t0 = time.monotonic()
        outcome = "info"
        try:
            self.conn.modify_s(dn, mods)
            outcome = "ok"
        except ldap.NO_SUCH_ATTRIBUTE:
            outcome = "fail" if f == "cas" else "info"
        except ldap.LDAPError as exc:
            if not_applied(exc):
                return  # definitely no effect, and no observation: nothing to check
        t1 = time.monotonic()
        with self.h.lock:
            self.h.reg.append(RegOp(key, self.pid, f, arg, t0,  # type: ignore[arg-type]
                                    t1 if outcome != "info" else None, outcome))  # type: ignore[arg-type]
        if outcome == "info":
            self._lost()


def setup(cluster: ChaosCluster, keys: list[str], timeout: float = 60.0) -> None:
    """Create the two subtrees and the registers (value "0") through the leader."""
    deadline = time.monotonic() + timeout
    todo: list[tuple[str, list[tuple[str, list[bytes]]]]] = [
        (REG_BASE, [("objectClass", [b"organizationalUnit"]), ("ou", [b"chaos"])]),
        (SET_BASE, [("objectClass", [b"organizationalUnit"]), ("ou", [b"set"])]),
    ]
    todo += [(reg_dn(k), [("objectClass", [b"organizationalRole"]), ("cn", [k.encode()]),
                          ("description", [b"0"])]) for k in keys]
    while todo:
        if time.monotonic() > deadline:
            raise TimeoutError(f"setup not done: {cluster.describe()}")
        lead = cluster.leader()
        if not lead:
            time.sleep(0.1)
            continue
        try:
            conn = connect(cluster.node(lead).url)
            try:
                while todo:
                    dn, attrs = todo[0]
                    try:
                        conn.add_s(dn, attrs)
                    except ldap.ALREADY_EXISTS:
                        pass
                    todo.pop(0)
            finally:
                conn.unbind_s()
        except ldap.LDAPError:
            time.sleep(0.2)


def read_registers(url: str, keys: list[str]) -> dict[str, list[str]]:
    conn = connect(url)
    try:
        out = {}
        for k in keys:
            res = conn.search_s(reg_dn(k), ldap.SCOPE_BASE, "(objectClass=*)", ["description"])
            out[k] = sorted(v.decode() for v in res[0][1].get("description", []))
        return out
    finally:
        conn.unbind_s()


def read_set(url: str) -> set[str]:
    conn = connect(url, timeout=30.0)
    try:
        res = conn.search_s(SET_BASE, ldap.SCOPE_ONELEVEL, "(uid=*)", ["uid"])
        return {a["uid"][0].decode() for _, a in res}
    finally:
        conn.unbind_s()


def dump(url: str) -> list[tuple[str, dict[str, list[bytes]]]]:
    """Every entry with user and operational attributes, normalised for comparison."""
    conn = connect(url, timeout=30.0)
    try:
        res = conn.search_s(BASE, ldap.SCOPE_SUBTREE, "(objectClass=*)", ["*", "+"])
    finally:
        conn.unbind_s()
    return sorted((dn.lower(), {k.lower(): sorted(v) for k, v in a.items()}) for dn, a in res)
