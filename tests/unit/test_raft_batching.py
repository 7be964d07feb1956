"""The write path's batching: the core tells followers a new commit index at ``ready()`` time
(on the APPs already queued, else one empty APP each), and ``RaftNode`` hands every proposal
queued between two Readies to the core as one batch, never appending one that timed out."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from raftsim import Net

from oba.raft.node import NodeConfig, NotLeader, RaftNode
from oba.raft.types import Entry, Message, MsgType, SnapshotMeta


def _leader_with_acks() -> tuple[Net, list[Message]]:
    """A 3-node leader that proposed one entry; the followers' acks, not yet delivered."""
    net = Net(3)
    ld = net.elect(1)
    net.stabilize()
    ld.propose(b"a")
    net.deliver(net.process(1))
    acks = net.process(2) + net.process(3)
    assert all(m.type == MsgType.APP_RESP and not m.reject for m in acks)
    return net, acks


def test_commit_rides_on_the_apps_queued_before_ready() -> None:
    net, acks = _leader_with_acks()
    ld = net.cores[1]
    before = ld.commit
    net.deliver(acks[:1])  # a majority: the commit index moves
    assert ld.commit == before + 1
    ld.propose(b"b")  # queues one APP with the new entry per follower
    msgs = net.process(1)
    apps = [m for m in msgs if m.type == MsgType.APP]
    assert sorted(m.to for m in apps) == [2, 3]  # no extra commit-only APP
    assert all(m.commit == ld.commit and [e.data for e in m.entries] == [b"b"] for m in apps)


def test_commit_without_queued_apps_sends_one_empty_app_each() -> None:
    net, acks = _leader_with_acks()
    ld = net.cores[1]
    net.deliver(acks)
    msgs = net.process(1)
    apps = [m for m in msgs if m.type == MsgType.APP]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(not m.entries and m.commit == ld.commit for m in apps)
    net.deliver(msgs)
    net.stabilize()
    assert net.cores[2].commit == net.cores[3].commit == ld.commit


class _Machine:
    """Applies entries on the node's loop at once, answering each with its data."""

    def __init__(self) -> None:
        self.node: RaftNode | None = None
        self.applied = 0
        self.calls: list[list[int]] = []

    def applied_index(self) -> int:
        return self.applied

    def apply_entries(self, entries: list[Entry]) -> None:
        node = self.node
        assert node is not None
        fresh = [e for e in entries if e.index > self.applied]
        if not fresh:
            return
        self.calls.append([e.index for e in fresh])
        self.applied = fresh[-1].index
        node.call_soon(node.on_applied, [(e.index, e.term, e.data) for e in fresh])

    async def install_snapshot(self, meta: SnapshotMeta, data_file: Path) -> None:
        raise AssertionError("no snapshots in this test")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _single_node(tmp_path: Path) -> tuple[RaftNode, _Machine]:
    addr = f"127.0.0.1:{_port()}"
    sm = _Machine()
    node = RaftNode(NodeConfig(1, addr, {1: addr}, tmp_path), sm)
    sm.node = node
    await node.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not node.is_leader():
        assert loop.time() < deadline, "no leader"
        await asyncio.sleep(0.01)
    return node, sm


def test_node_batches_concurrent_proposals(tmp_path: Path) -> None:
    async def main() -> list[Any]:
        node, sm = await _single_node(tmp_path)
        try:
            first = node.core.last_index() + 1
            results = await asyncio.gather(
                *(node.propose(b"cmd%d" % k, 5.0) for k in range(20)))
            assert [r[0] for r in results] == list(range(first, first + 20))
            assert [r[1] for r in results] == [b"cmd%d" % k for k in range(20)]
            # all twenty were queued before the loop ran: one Ready, one hand-off
            assert [c for c in sm.calls if c[0] >= first] == [list(range(first, first + 20))]
            return [e.data for e in node.core.log[first - node.core.offset - 1:]]
        finally:
            await node.stop()

    assert asyncio.run(main()) == [b"cmd%d" % k for k in range(20)]


def test_timed_out_queued_proposal_is_never_appended(tmp_path: Path) -> None:
    async def main() -> None:
        node, _ = await _single_node(tmp_path)
        try:
            last = node.core.last_index()
            with pytest.raises(TimeoutError):
                await node.propose(b"late", 0)  # times out before the loop ever runs
            await asyncio.sleep(0.05)
            assert node.core.last_index() == last
            assert not node._propose_queue
        finally:
            await node.stop()

    asyncio.run(main())


def test_follower_refuses_proposals_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        addr, other = f"127.0.0.1:{_port()}", f"127.0.0.1:{_port()}"
        sm = _Machine()
        node = RaftNode(NodeConfig(1, addr, {1: addr, 2: other}, tmp_path), sm)
        sm.node = node
        await node.start()
        try:
            with pytest.raises(NotLeader):
                await node.propose(b"x", 1.0)
            assert not node._propose_queue
        finally:
            await node.stop()

    asyncio.run(main())
