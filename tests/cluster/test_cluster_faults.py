"""Faults on real processes: a paused leader, all nodes killed under write load, repeated
leader kills (failover time), mutual TLS with a foreign certificate."""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ldap
import pytest
import trustme

from .support import BASE, Cluster, add_person, dump, has_entry, rejoined, uids, wait_for

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def test_paused_leader_is_replaced_and_steps_down(cluster: Cluster) -> None:
    """SIGSTOP the leader: a write sent through a follower (forwarded to the hung leader) is
    answered by the new leader within about an election, not after proposalTimeout; a read
    queued on the old leader while it is stopped is answered after SIGCONT with the new value
    or "unavailable", never the stale one; the old leader steps down and catches up."""
    cluster.start()
    old = cluster.wait_ready()
    add_person(old, "p0")
    reader = old.conn()  # connected and bound before the pause
    old.signal(signal.SIGSTOP)
    paused_at = time.monotonic()
    others = [nd for nd in cluster.nodes if nd is not old]
    follower = others[0]
    c = follower.conn()
    t0 = time.monotonic()
    c.modify_s(f"uid=p0,{BASE}", [(ldap.MOD_REPLACE, "sn", [b"Fresh"])])  # forwarded
    forwarded_s = time.monotonic() - t0
    c.unbind_s()
    print(f"write through a follower while the leader is stopped: {forwarded_s * 1000:.0f} ms")
    assert forwarded_s < 2.0, f"{forwarded_s:.2f} s: the write waited for the hung leader"
    new = cluster.wait_leader(5, among=others)
    acked = {"p0"}
    for i in range(1, 6):
        add_person(others[i % 2], f"p{i}")
        acked.add(f"p{i}")
    # a read the old leader finds in its socket buffer when it resumes
    msgid = reader.search(f"uid=p0,{BASE}", ldap.SCOPE_BASE, "(objectClass=*)", ["sn"])
    time.sleep(max(0.0, paused_at + 3.0 - time.monotonic()))  # a pause of ~3 s (the spec's)
    old.signal(signal.SIGCONT)
    try:
        _, res = reader.result(msgid, all=1, timeout=10)
        assert res[0][1]["sn"] == [b"Fresh"], f"stale read from the resumed old leader: {res}"
    except ldap.UNAVAILABLE:
        pass  # it could not confirm its leadership: refusing is right
    finally:
        reader.unbind_s()
    wait_for(lambda: (st := old.status()) is not None and st["state"] == "follower"
             and st["leaderId"] == new.id, 10, "old leader steps down")
    for nd in cluster.nodes:
        wait_for(lambda nd=nd: acked <= uids(nd), 10, f"acknowledged writes on node {nd.id}")
    wait_for(lambda: dump(cluster.nodes[0]) == dump(cluster.nodes[1]) == dump(cluster.nodes[2]),
             10, "identical databases")


def test_kill_all_during_writes_loses_no_acknowledged_write(cluster: Cluster) -> None:
    cluster.start()
    cluster.wait_ready()
    acked: set[str] = set()
    stop = threading.Event()

    def writer(k: int) -> None:
        nd = cluster.nodes[k % 3]
        i = 0
        while not stop.is_set():
            uid = f"w{k}-{i}"
            i += 1
            try:
                add_person(nd, uid, timeout=2.0)
            except ldap.LDAPError:
                continue
            acked.add(uid)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 40, 30, "some acknowledged writes")
    for nd in cluster.nodes:
        nd.kill()
    stop.set()
    for t in threads:
        t.join(10)
    cluster.start()
    cluster.wait_ready(20)
    for nd in cluster.nodes:
        wait_for(lambda nd=nd: acked <= uids(nd), 20, f"acknowledged writes on node {nd.id}")
    # all three converge to identical databases (full dump with operational attributes)
    wait_for(lambda: dump(cluster.nodes[0]) == dump(cluster.nodes[1]) == dump(cluster.nodes[2]),
             20, "identical databases")


def test_failover_time_over_repeated_leader_kills(cluster: Cluster) -> None:
    """Kill the leader 5 times; each time a write through a survivor must succeed quickly.
    (bench/failover.py runs the same measurement 20+ times and prints min/median/max.)"""
    cluster.start()
    cluster.wait_ready()
    times = []
    for round_ in range(5):
        lead = cluster.wait_leader(10)
        survivor = next(nd for nd in cluster.nodes if nd is not lead)
        lead.kill()
        t0 = time.monotonic()
        add_person(survivor, f"f{round_}", timeout=5.0)
        times.append(time.monotonic() - t0)
        lead.start()
        wait_for(lambda lead=lead: rejoined(lead), 20, "restarted node rejoins")
    print(f"failover (kill -> write acknowledged) s: min {min(times):.3f} "
          f"median {statistics.median(times):.3f} max {max(times):.3f}")
    assert max(times) < 2.0
    # and after five leader changes every node holds every acknowledged write, once
    acked = {f"f{r}" for r in range(5)}
    for nd in cluster.nodes:
        wait_for(lambda nd=nd: acked <= uids(nd), 20, f"acknowledged writes on node {nd.id}")
    wait_for(lambda: dump(cluster.nodes[0]) == dump(cluster.nodes[1]) == dump(cluster.nodes[2]),
             20, "identical databases")


def test_mutual_tls_refuses_a_node_with_a_foreign_certificate(tmp_path: Path) -> None:
    ca, other_ca = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls: dict[int, tuple[str, str, str]] = {}
    for node_id in (1, 2, 3):
        issuer = other_ca if node_id == 3 else ca
        cert = issuer.issue_cert("127.0.0.1", "localhost")
        cert_file, key_file = tmp_path / f"n{node_id}.crt", tmp_path / f"n{node_id}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        tls[node_id] = (str(cert_file), str(key_file), str(ca_file))
    c = Cluster(tmp_path / "c", tls=tls)
    try:
        c.start()
        good = [c.node(1), c.node(2)]
        lead = c.wait_leader(15, among=good)
        wait_for(lambda: has_entry(lead, BASE), 15, "base entry on the leader")
        add_person(lead, "secure")
        for nd in good:
            wait_for(lambda nd=nd: "secure" in uids(nd), 10, f"replicated to node {nd.id}")
        st = wait_for(c.node(3).status, 15, "node 3's status file")  # it may start last
        assert st["state"] != "leader" and st["commitIndex"] == 0 and st["lastApplied"] == 0
        for nd in good:
            s = nd.status()
            assert s is not None and 3 not in s["connected"]
    finally:
        c.close()
