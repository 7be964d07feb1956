"""A node whose database lost its last commits recovers them. In cluster mode a commit of the
applied state skips LMDB's meta-page fsync (the Raft log is the durable record), so after a
system crash a node's database may be a few commits behind its log; here that state is made
on purpose (the node's ``data.mdb`` put back to an older copy while it is stopped) and the node
must come back with every write, equal to the leader."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Cluster, add_person, dump, rejoined, uids, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "c")
    try:
        yield c
    finally:
        c.close()


def test_a_node_whose_database_is_behind_its_log_catches_up(cluster: Cluster,
                                                            tmp_path: Path) -> None:
    cluster.start()
    lead = cluster.wait_ready()
    node = next(nd for nd in cluster.nodes if nd is not lead)
    add_person(lead, "alice")
    wait_for(lambda: "alice" in uids(node), 10, "alice on the follower")
    data = node.dir / "data" / "data.mdb"
    node.stop()
    shutil.copyfile(data, tmp_path / "older.mdb")
    node.start()
    wait_for(lambda: rejoined(node), 30, "follower back")
    for uid in ("bob", "carol", "dave"):
        add_person(lead, uid)
    wait_for(lambda: {"bob", "carol", "dave"} <= uids(node), 10, "writes on the follower")
    node.stop()
    shutil.copyfile(tmp_path / "older.mdb", data)  # the database loses its last commits
    node.start()
    wait_for(lambda: rejoined(node), 30, "follower back with the older database")
    wait_for(lambda: {"alice", "bob", "carol", "dave"} <= uids(node), 10,
             "every write on the follower again")
    wait_for(lambda: dump(node) == dump(lead), 10, "the follower equal to the leader")
