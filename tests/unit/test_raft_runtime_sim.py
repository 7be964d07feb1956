"""The deterministic simulation of the Raft runtime (``raftnet``): real ``RaftNode``s, their
transport, log and snapshot store, in virtual time over a faulty in-memory network.

By default random seeds run until a wall-clock budget of ``BUDGET_S`` seconds;
``OBA_RAFT_RUNTIME_SEEDS=N`` runs exactly N seeds (no budget), ``OBA_RAFT_RUNTIME_SEED=k``
replays one seed (as printed by a failure). The targeted scenarios below
each pin one fault that the runtime must survive; the ``test_simulation_detects_*`` ones break
the runtime on purpose and check that the simulation notices.

Three scenarios pin runtime bugs this simulation found (fixed with them):
``test_snapshot_stream_silently_lost_mid_transfer`` (the sender waited 30 s for the answer
of a lost snapshot stream), ``test_crash_between_state_machine_install_and_log_save`` (a
stale log suffix taken as committed after a restart) and
``test_compaction_point_outlives_its_snapshot_files`` (the snapshot the log is compacted to
was pruned).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import raftnet
from raftnet import Cluster, Host, SimConfig, Violation

from oba.raft import node as node_mod
from oba.raft import transport as transport_mod
from oba.raft.types import MsgType, Ready, to_wire

pytestmark = pytest.mark.timeout(600)

BUDGET_S = 20.0


@pytest.fixture
def simdir(tmp_path: Path) -> Iterator[Path]:
    """A directory for the nodes' LMDB files: tmpfs when there is one (the log fsyncs every
    Ready; on tmpfs that costs nothing)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="oba-raftnet-", dir=shm))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path


def _fresh(base: Path, name: str) -> Path:
    d = base / name
    shutil.rmtree(d, ignore_errors=True)
    return d


def _follower(c: Cluster, leader: Host) -> Host:
    return next(h for h in c.hosts.values() if h is not leader)


# ------------------------------------------------------------------------------ many seeds


def test_runtime_simulation_many_seeds(simdir: Path) -> None:
    one = os.environ.get("OBA_RAFT_RUNTIME_SEED")
    wanted = os.environ.get("OBA_RAFT_RUNTIME_SEEDS")
    if one is not None:
        seeds: range = range(int(one), int(one) + 1)
        deadline = float("inf")
    elif wanted is not None:
        seeds = range(int(wanted))
        deadline = float("inf")
    else:
        seeds = range(10_000)
        deadline = time.monotonic() + BUDGET_S
    start = time.monotonic()
    ran = 0
    virtual = 0.0
    totals: Counter[str] = Counter()
    for seed in seeds:
        if time.monotonic() > deadline:
            break
        res = raftnet.run(seed, _fresh(simdir, f"s{seed}"), chaos=raftnet.chaos_for(seed))
        shutil.rmtree(simdir / f"s{seed}", ignore_errors=True)
        ran += 1
        virtual += res.virtual_s
        totals.update(res.stats)
    took = time.monotonic() - start
    totals["crash_points"] = sum(v for k, v in totals.items() if k.startswith("crash_point_"))
    keys = ("elections", "crashes", "crash_points", "acked", "acked_forwarded", "reads",
            "transfers", "snapshots_taken", "snapshot_sends", "snapshots_installed",
            "snapshot_received_while_installing", "holds", "partitions", "resets", "drops",
            "blackholes", "pause_writing", "watchdog_reconnects", "dials", "refused",
            "syn_held", "box_dials", "box_target_down", "sm_lost_applies", "apply_skipped",
            "checked_apply", "checked_send")
    print(f"\nraft runtime simulation: {ran} seeds, {virtual:.0f} virtual s in {took:.1f}s; "
          + ", ".join(f"{k}={totals[k]}" for k in keys))
    assert ran >= min(3, len(seeds))
    if len(seeds) > 1:  # the runs did real work and met the faults they are about
        assert totals["elections"] > ran and totals["acked"] > 50 * ran and totals["reads"] > 0
        assert totals["crashes"] > ran and totals["crash_points"] > 0
        assert totals["snapshots_installed"] > 0 and totals["snapshot_sends"] > 0
        assert totals["holds"] > 0 and totals["resets"] > 0 and totals["drops"] > 0
        assert totals["watchdog_reconnects"] > 0 and totals["pause_writing"] > 0
        assert totals["box_dials"] > 0 and totals["refused"] > 0 and totals["syn_held"] > 0
        assert totals["checked_apply"] > 0 and totals["checked_send"] > 0


def test_runtime_simulation_is_deterministic(simdir: Path) -> None:
    a = raftnet.run(7, _fresh(simdir, "a"), chaos=4.0)
    b = raftnet.run(7, _fresh(simdir, "b"), chaos=4.0)
    assert a.trace == b.trace and a.stats == b.stats
    c = raftnet.run(8, _fresh(simdir, "c"), chaos=4.0)
    assert c.trace != a.trace


# ------------------------------------------------------------------------------ scenarios


def _run(seed: int, base: Path, body: raftnet.Body, cfg: SimConfig) -> raftnet.Result:
    return raftnet.run(seed, base, body, cfg)


def _held_link_body(middlebox: bool) -> raftnet.Body:
    async def body(c: Cluster) -> None:
        ld = await c.wait_leader()
        f = _follower(c, ld)
        c.net.link(ld.id, f.id).middlebox = middlebox
        for conn in c.net.conns_of(ld.id, f.id):
            c.net.reset(conn)  # the next connection goes through the box
        await asyncio.sleep(0.5)
        c.net.hold(ld.id, f.id)
        c.start_clients()
        await asyncio.sleep(4.0)  # > dead_after and > connect_timeout: redials time out
        await c.stop_clients()
        assert c.net.stats["pause_writing"] > 0, "the held link never filled its buffer"
        assert ld.node is not None and f.sm is not None
        assert ld.node.core.commit > f.sm.applied
        # the outage outlived the NAT/proxy state of the connections it held: they stay
        # silent for ever (only the sender's own watchdog can end them)
        for conn in c.net.conns_of(ld.id, f.id):
            c.net.blackhole(conn)
        c.net.unhold(ld.id, f.id)
        took = await c.wait_converged(3.0)
        c.final_checks()
        c.stats["took_ms"] = int(took * 1000)

    return body


@pytest.mark.parametrize("middlebox", [False, True])
def test_held_link_blocks_drain_then_reconnects_after_heal(simdir: Path, middlebox: bool) -> None:
    """The leader's link to a follower is blackholed long enough for its writes to fill the
    send buffer (drain() blocks) and for redials to time out; the connections it held never
    come back. After the heal the link is redialled and the follower catches up within the
    bound."""
    cfg = SimConfig(hwm=4096, big_payload_p=0.5, forward_p=0.0, snapshot_every=10_000)
    res = _run(11, simdir, _held_link_body(middlebox), cfg)
    assert res.stats["watchdog_reconnects"] > 0 and res.stats["blackholes"] > 0
    assert res.stats["acked"] > 50


@pytest.mark.parametrize("mode", ["reset", "eof", "hang", "sink"])
def test_middlebox_accepting_for_a_dead_target(simdir: Path, mode: str) -> None:
    """Every link to node 3 goes through a middlebox that accepts while node 3 is down; once
    node 3 restarts, every peer reaches it (and it them) within the bound."""
    cfg = SimConfig(forward_p=0.0)

    async def body(c: Cluster) -> None:
        await c.wait_leader()
        for j in (1, 2):
            link = c.net.link(j, 3)
            link.middlebox, link.box_mode = True, mode
            for conn in c.net.conns_of(j, 3):
                c.net.reset(conn)
        await asyncio.sleep(0.5)
        await c.crash(3)
        c.start_clients()
        await asyncio.sleep(3.0)
        assert c.net.stats["box_target_down"] > 0
        await c.restart(3)
        t0 = c.now()
        while c.now() - t0 < 2.0:
            nodes = [h.node for h in c.hosts.values()]
            if all(n is not None and all(n.transport.connected(p) for p in (1, 2, 3)
                                         if p != n.id) for n in nodes):
                break
            await asyncio.sleep(0.01)
        else:
            c.fail(f"node 3 not reached within 2 s of its restart: {c.describe()}")
        c.stats["reach_ms"] = int((c.now() - t0) * 1000)
        await c.stop_clients()
        await c.wait_converged()
        c.final_checks()

    res = _run(12, simdir, body, cfg)
    assert res.stats["box_dials"] > 0 and res.stats["reach_ms"] < 2000


def test_second_snapshot_arrives_while_installing(simdir: Path) -> None:
    """A lagging follower installs a snapshot slowly while the leader takes newer ones and the
    follower's replies are slow: a second snapshot arrives during the install. The Raft loop
    must survive it (``node.failed`` stays None) and converge."""
    cfg = SimConfig(snapshot_every=15, forward_p=0.0, client_gap=(0.002, 0.006))

    async def body(c: Cluster) -> None:
        for attempt in range(6):
            ld = await c.wait_leader()
            f = _follower(c, ld)
            pairs = c._all_links(f.id)
            for a, b in pairs:
                c.net.hold(a, b)
            c.start_clients()
            await asyncio.sleep(1.5)  # the leader compacts well past the follower
            f.slow_install_until = c.now() + 30
            back = c.net.link(f.id, ld.id)
            back.spike, back.spike_until = 0.3, c.now() + 30  # its acks come late
            for a, b in pairs:
                c.net.unhold(a, b)
            t0 = c.now()
            while c.now() - t0 < 8 and not c.stats["snapshot_received_while_installing"]:
                await asyncio.sleep(0.05)
            await c.stop_clients()
            f.slow_install_until = 0.0
            back.spike_until = 0.0
            await c.wait_converged()
            if c.stats["snapshot_received_while_installing"]:
                break
            c.trace("retry", attempt)
        c.final_checks()

    res = _run(13, simdir, body, cfg)
    assert res.stats["snapshot_received_while_installing"] > 0
    assert res.stats["snapshots_installed"] >= 2


@pytest.mark.parametrize("who", ["follower", "leader"])
def test_crash_between_persist_and_apply(simdir: Path, who: str) -> None:
    """Entries are durable (and committed) but the state machine has not applied them when
    the node crashes, and its store loses the unsynced applies too: the restarted node
    applies each of them exactly once, in order."""
    cfg = SimConfig(sync_p=0.0, snapshot_every=10_000, forward_p=0.0)

    async def body(c: Cluster) -> None:
        ld = await c.wait_leader()
        h = ld if who == "leader" else _follower(c, ld)
        c.start_clients()
        await asyncio.sleep(0.5)
        h.slow_apply_until = c.now() + 60
        await asyncio.sleep(0.7)
        node, sm = h.node, h.sm
        assert node is not None and sm is not None
        durable = node.log.last_index()
        assert node.core.commit > sm.applied and durable > sm.applied, (
            node.core.commit, durable, sm.applied)
        before = sm.applied
        await c.crash(h.id)
        c.stats["lost"] = before - len(h.disk.log)
        c.stats["unapplied"] = node.core.commit - before
        await c.restart(h.id)
        h.slow_apply_until = 0.0
        sm2 = h.sm
        assert sm2 is not None
        first = sm2.applied
        await asyncio.sleep(1.0)
        await c.stop_clients()
        await c.wait_converged()
        c.final_checks()
        assert sm2.seq == list(range(first + 1, sm2.applied + 1)), "not once, in order"
        assert sm2.applied > before

    res = _run(14, simdir, body, cfg)
    assert res.stats["unapplied"] > 0


def test_snapshot_stream_silently_lost_mid_transfer(simdir: Path) -> None:
    """A lagging follower is sent a snapshot; its connection is silently lost (a NAT or proxy
    forgot it) right after the sender wrote the data. The follower answers heartbeats all
    along: it must be caught up within the usual bound, not after ``snapshot_ack``."""
    cfg = SimConfig(snapshot_every=15, forward_p=0.0)

    async def body(c: Cluster) -> None:
        ld = await c.wait_leader()
        f = _follower(c, ld)
        pairs = c._all_links(f.id)
        for a, b in pairs:
            c.net.hold(a, b)
        c.start_clients()
        await asyncio.sleep(1.5)  # the leader compacts past the follower
        await c.stop_clients()
        lost: list[float] = []

        def lose_first_snapshot(conn: raftnet._Conn, owner: int, frame: dict[str, object]
                                ) -> None:
            if frame.get("k") == "snapc" and owner == ld.id and not lost:
                lost.append(c.now())
                c.net.blackhole(conn)

        c.net.frame_hook = lose_first_snapshot
        for a, b in pairs:
            c.net.unhold(a, b)
        await c.wait_converged(10.0)
        assert lost, "no snapshot was sent"
        c.final_checks()

    _run(21, simdir, body, cfg)


def _stale_suffix_then_snapshot_body(crash_after_install: bool) -> raftnet.Body:
    """5 nodes: the leader and one follower F are cut off together; F appends entries from
    the old leader that are never committed; the majority elects a new leader, commits other
    entries at those indexes and compacts past them. After the heal F is sent a snapshot that
    covers its stale suffix; with ``crash_after_install`` F dies right after its state machine
    installed the snapshot and before the log recorded it (the node installs store first,
    log after). F must catch up within the bound either way."""

    async def body(c: Cluster) -> None:
        old = await c.wait_leader()
        f = _follower(c, old)
        rest = [h.id for h in c.hosts.values() if h.id not in (old.id, f.id)]
        cut = [(a, b) for a in (old.id, f.id) for b in rest] + \
            [(b, a) for a in (old.id, f.id) for b in rest]
        for a, b in cut:
            c.net.hold(a, b)
        for _ in range(150):  # the old leader appends them (F too), nobody can commit them
            c.spawn(c.propose(old, old.id, c.payload()))
        await asyncio.sleep(0.5)
        fn = f.node
        assert fn is not None and fn.core.last_index() > fn.core.commit + 100
        new = await c.wait_leader()
        assert new.id in rest and new.node is not None
        c.start_clients()  # the majority commits other entries there and compacts past them
        while new.node.core.offset <= fn.core.commit:
            await asyncio.sleep(0.005)
        await c.stop_clients()
        # F's stale suffix covers the index of the snapshot it is about to be sent
        assert fn.core.commit < new.node.core.offset <= fn.core.last_index()
        if crash_after_install:
            c.forced_crashes[(f.id, "installed")] = True
        for a, b in cut:
            c.net.unhold(a, b)
        if crash_after_install:
            t0 = c.now()
            while f.node is not None and c.now() - t0 < 3:
                await asyncio.sleep(0.01)
            assert f.node is None, "the follower was not sent a snapshot"
            await c.restart(f.id)
        # (bound kept short: a stuck follower has the leader re-probe it at full speed)
        c.stats["took_ms"] = int(await c.wait_converged(1.5) * 1000)
        c.final_checks()

    return body


def test_stale_suffix_replaced_by_a_snapshot(simdir: Path) -> None:
    cfg = SimConfig(n=5, snapshot_every=15, forward_p=0.0, client_gap=(0.002, 0.006))
    res = _run(22, simdir, _stale_suffix_then_snapshot_body(False), cfg)
    assert res.stats["snapshots_installed"] > 0 and res.stats["took_ms"] < 1000


def test_crash_between_state_machine_install_and_log_save(simdir: Path) -> None:
    cfg = SimConfig(n=5, snapshot_every=15, forward_p=0.0, client_gap=(0.002, 0.006))
    _run(22, simdir, _stale_suffix_then_snapshot_body(True), cfg)


def test_compaction_point_outlives_its_snapshot_files(simdir: Path) -> None:
    """Every node but one crashes twice right after its state machine created a snapshot and
    before the log was compacted to it; then the last node, far behind, comes back and needs a
    snapshot from whichever node leads."""
    cfg = SimConfig(snapshot_every=15, forward_p=0.0, sync_p=1.0)

    async def body(c: Cluster) -> None:
        ld = await c.wait_leader()
        lag = _follower(c, ld)
        await c.crash(lag.id)
        others = [h for h in c.hosts.values() if h is not lag]
        c.start_clients()
        while not all(h.node is not None and h.node.log.snapshot() is not None
                      for h in others):  # one normal snapshot and compaction first
            await asyncio.sleep(0.01)
        for _ in range(2):
            before = c.stats["crash_point_snapshot_created"]
            for h in others:
                c.forced_crashes[(h.id, "snapshot_created")] = True
            t0 = c.now()
            while c.stats["crash_point_snapshot_created"] < before + len(others):
                assert c.now() - t0 < 10, "the snapshots were not taken"
                await asyncio.sleep(0.01)
            for h in others:
                await c.restart(h.id)
            await c.wait_leader()
        await c.stop_clients()
        await c.restart(lag.id)
        await c.wait_converged(5.0)
        c.final_checks()

    _run(23, simdir, body, cfg)


# ------------------------------------------------------------------------------ the checker


def test_simulation_detects_applying_before_persisting(simdir: Path, monkeypatch:
                                                       pytest.MonkeyPatch) -> None:
    """A runtime that hands committed entries to the state machine before its fsync is caught
    by the persist-before-apply check."""
    orig = node_mod.RaftNode._handle_ready

    async def broken(self: node_mod.RaftNode, rd: Ready) -> None:
        if rd.committed and rd.entries and rd.snapshot is None:
            self._hand_committed(list(rd.committed))
            rd.committed = []
        await orig(self, rd)

    monkeypatch.setattr(node_mod.RaftNode, "_handle_ready", broken)
    cfg = SimConfig(fsync=(0.002, 0.01))
    with pytest.raises(Violation, match="persist-before-apply"):
        raftnet.run(3, _fresh(simdir, "x"), cfg=cfg, chaos=4.0)


def test_simulation_detects_sending_before_persisting(simdir: Path, monkeypatch:
                                                      pytest.MonkeyPatch) -> None:
    """A runtime that sends a Ready's messages before its fsync is caught by the
    persist-before-send check."""
    orig = node_mod.RaftNode._handle_ready

    async def broken(self: node_mod.RaftNode, rd: Ready) -> None:
        for m in rd.messages:
            if m.type != MsgType.SNAP:
                self.transport.send(m.to, {"k": "m", "m": to_wire(m)})
        rd.messages = [m for m in rd.messages if m.type == MsgType.SNAP]
        await orig(self, rd)

    monkeypatch.setattr(node_mod.RaftNode, "_handle_ready", broken)
    cfg = SimConfig(fsync=(0.002, 0.01))
    with pytest.raises(Violation, match="persist-before-send"):
        raftnet.run(3, _fresh(simdir, "y"), cfg=cfg, chaos=4.0)


def test_simulation_detects_a_link_that_never_reconnects(simdir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A transport whose watchdog pings but never tears a silent connection down keeps a dead
    link "connected" for ever: the held-link scenario must catch it (no convergence)."""
    async def never_tears_down(self: transport_mod._Peer, writer: asyncio.StreamWriter,
                               conn: object) -> None:
        while True:
            await asyncio.sleep(self.t.timing.ping_interval)
            writer.write(transport_mod._PING)

    monkeypatch.setattr(transport_mod._Peer, "_watch", never_tears_down)
    cfg = SimConfig(hwm=4096, big_payload_p=0.5, forward_p=0.0, snapshot_every=10_000)
    with pytest.raises(Violation, match="no convergence"):
        _run(11, simdir, _held_link_body(False), cfg)
