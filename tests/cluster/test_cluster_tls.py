"""Raft mutual TLS as the spec shows it: only `raftTLSCert`/`raftTLSKey`, no `raftTLSCA`.

Four node processes: nodes 1-3 share one self-signed certificate made with the command of
docs/cluster.md (`openssl req -x509 ...`); node 4 has its own self-signed certificate with the
same subject. Nodes 1-3 (a majority of the four members) elect a leader and replicate a write;
node 4 is refused both ways and never learns anything.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trustme

from .support import BASE, Cluster, add_person, has_entry, uids, wait_for

pytestmark = pytest.mark.timeout(90)


def self_signed(directory: Path, name: str) -> tuple[str, str]:
    """(cert, key) files of a new self-signed certificate for CN=oba-raft."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    if shutil.which("openssl"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
                        "-subj", "/CN=oba-raft", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
    else:  # a self-signed CA certificate and its key: the same thing for Oba
        ca = trustme.CA(organization_name="oba-raft")
        ca.cert_pem.write_to_path(str(cert))
        ca.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def test_one_shared_self_signed_certificate_without_raft_tls_ca(tmp_path: Path) -> None:
    shared = self_signed(tmp_path, "raft")
    foreign = self_signed(tmp_path, "foreign")
    tls = {1: (*shared, ""), 2: (*shared, ""), 3: (*shared, ""), 4: (*foreign, "")}
    c = Cluster(tmp_path / "c", n=4, tls=tls)
    try:
        c.start()
        good = [c.node(1), c.node(2), c.node(3)]
        lead = c.wait_leader(30, among=good)  # generous: a loaded CI machine starts slowly
        wait_for(lambda: has_entry(lead, BASE), 15, "base entry on the leader")
        add_person(lead, "tls-shared")
        for nd in good:
            wait_for(lambda nd=nd: "tls-shared" in uids(nd), 10, f"replicated to node {nd.id}")
        wait_for(lambda: all(sorted((nd.status() or {}).get("connected", [])) ==
                             [m.id for m in good if m is not nd] for nd in good),
                 10, "nodes 1-3 connected to each other")
        outsider = wait_for(c.node(4).status, 15, "node 4's status file")
        assert outsider["state"] != "leader"
        assert outsider["commitIndex"] == 0 and outsider["lastApplied"] == 0
        assert outsider["connected"] == [] and outsider["leaderId"] == 0
        for nd in good:
            st = nd.status()
            assert st is not None and 4 not in st["connected"]
        assert ("raft TLS: peers must present a certificate chaining to the certificate in "
                f"{shared[0]} (cluster.raftTLSCert; no cluster.raftTLSCA set)"
                in c.node(1).server_log())
    finally:
        c.close()
