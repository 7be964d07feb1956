"""Python cost of one LDAP request, without sockets: requests are fed to a real
``LDAPConnection`` (temp LMDB store, standalone writer, no audit trail) through the fake
transport of the connection fuzz tests, and the process CPU time is divided by the requests.

Usage: .venv/bin/python bench/inproc_bench.py [--users 2000] [--requests 10000]
       [--workloads search-base,search-eq,bind] [--profile tottime]

What it is for: the network benchmark (``run.py``) measures everything at once on a shared,
noisy machine; this one isolates the per-request Python work (decode, dispatch, ACL, store,
encode) so a change to it can be compared run against run, and ``--profile`` prints the
cProfile table of that work. About 30% of the server's CPU per bind or search under
``run.py`` is kernel time (send/recv), which this does not count.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.test_fuzz_connection import BASE, Harness  # noqa: E402

from oba import ids  # noqa: E402
from oba.directory.commands import AddCommand  # noqa: E402
from oba.protocol.codec import LDAPDecoder, encode_message  # noqa: E402
from oba.protocol.messages import (  # noqa: E402
    BindRequest,
    Equality,
    LDAPMessage,
    Present,
    ProtocolOp,
    Scope,
    SearchRequest,
)

USERS = f"ou=users,{BASE}"
WORKLOADS = ("search-base", "search-eq", "bind")


def _ssha(password: bytes) -> bytes:
    salt = b"inprocbn"
    return b"{SSHA}" + base64.b64encode(hashlib.sha1(password + salt).digest() + salt)


def load(h: Harness, users: int) -> None:
    """``users`` inetOrgPerson/posixAccount entries like bench/datagen.py's."""

    async def run() -> None:
        submit = h.runtime.replicator.submit
        when = "20240101000000Z"
        ou = (("objectClass", (b"top", b"organizationalUnit")), ("ou", (b"users",)))
        await submit(AddCommand(USERS, ou, ids.command_id(), "cn=admin", when, ids.new_uuid()))
        for i in range(users):
            attrs = (
                ("objectClass", (b"top", b"person", b"organizationalPerson", b"inetOrgPerson",
                                 b"posixAccount")),
                ("uid", (f"user{i}".encode(),)), ("cn", (f"First{i} Last{i}".encode(),)),
                ("sn", (f"Last{i}".encode(),)), ("givenName", (b"First",)),
                ("mail", (f"user{i}@example.com".encode(),)),
                ("uidNumber", (str(1000 + i).encode(),)), ("gidNumber", (b"100",)),
                ("homeDirectory", (f"/home/user{i}".encode(),)),
                ("userPassword", (_ssha(f"password{i}".encode()),)))
            result = await submit(AddCommand(f"uid=user{i},{USERS}", attrs, ids.command_id(),
                                             "cn=admin", when, ids.new_uuid()))
            if result.code != 0:
                raise SystemExit(f"loading user{i} failed: {result.code} {result.message}")

    h.loop.run_until_complete(run())


def requests(workload: str, users: int, count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for mid in range(1, count + 1):
        i = rng.randrange(users)
        op: ProtocolOp
        if workload == "search-base":
            op = SearchRequest(f"uid=user{i},{USERS}", Scope.BASE, 0, 0, 0, False,
                               Present("objectClass"), ())
        elif workload == "search-eq":
            op = SearchRequest(BASE, Scope.SUB, 0, 0, 0, False,
                               Equality("uid", f"user{i}".encode()), ("cn", "mail"))
        else:
            op = BindRequest(3, f"uid=user{i},{USERS}", f"password{i}".encode())
        out.append(encode_message(LDAPMessage(mid, op, ())))
    return out


def measure(h: Harness, workload: str, users: int, count: int, profile: str | None) -> float:
    conn, transport = h.connect()
    batch = requests(workload, users, count + count // 5)
    warm, timed = batch[: count // 5], batch[count // 5 :]

    def feed(items: list[bytes]) -> None:
        for data in items:
            conn.data_received(data)

    feed(warm)
    started = time.process_time()
    if profile:
        prof = cProfile.Profile()
        prof.runcall(feed, timed)
    else:
        feed(timed)
    elapsed = time.process_time() - started
    # every request must have been answered with success
    decoder = LDAPDecoder()
    decoder.feed(bytes(transport.out))
    done = 0
    while (msg := decoder.next_message()) is not None:
        result = getattr(msg.op, "result", None)
        if result is not None:  # a final response (search entries carry none)
            if int(result.code) != 0:
                raise SystemExit(f"{workload}: request {msg.message_id} answered {result.code}")
            done += 1
    if done != len(batch):
        raise SystemExit(f"{workload}: {done} of {len(batch)} requests answered")
    if profile:
        pstats.Stats(prof).sort_stats(profile).print_stats(25)
    return elapsed / len(timed) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=10_000, help="timed requests per workload")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--profile", metavar="SORT", help="print a cProfile table (e.g. tottime)")
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="oba-inproc-") as tmp:
        h = Harness(Path(tmp))
        # the users' {SSHA} values are the yardstick: verified as stored, not re-made
        h.node.config.security.rehashOnBind = False
        try:
            load(h, args.users)
            for workload in workloads:
                us = measure(h, workload, args.users, args.requests, args.profile)
                print(f"{workload:12} {us:7.1f} us CPU per request (no syscalls, no audit)")
        finally:
            h.loop.run_until_complete(h.runtime.replicator.stop())
            h.loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
