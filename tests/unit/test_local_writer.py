"""The standalone writer (``LocalReplicator``) answers every waiting caller after its commit
and keeps running when a caller gave up waiting (a client that disconnected while its write
was queued): that write still commits and the writes behind it are answered."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

from oba.cluster.replicator import Change, LocalReplicator
from oba.directory.apply import ApplyContext, ApplyResult
from oba.directory.commands import AddCommand
from oba.schema import Schema
from oba.storage import Store

SCHEMA = Schema.default()


def _add(dn: str) -> AddCommand:
    attr, value = dn.split(",")[0].split("=")
    oc = b"organization" if attr == "o" else b"organizationalUnit"
    return AddCommand(dn, ((attr, (value.encode(),)), ("objectClass", (b"top", oc))),
                      "req", "cn=admin", "20240101000000Z", str(uuid.uuid4()))


def test_a_cancelled_waiter_does_not_stop_the_writer(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", SCHEMA, map_size=1 << 24)
    gate = threading.Event()
    held = threading.Event()

    def hold(change: Change) -> None:  # runs in the writer thread after each commit
        if change.command.dn == "o=test":
            held.set()
            gate.wait(10)

    async def main() -> None:
        rep = LocalReplicator(store, ApplyContext(SCHEMA, ("o=test",)))
        rep.add_listener(hold)
        rep.start()
        first = asyncio.ensure_future(rep.submit(_add("o=test")))
        assert await asyncio.get_running_loop().run_in_executor(None, held.wait, 10)
        # the writer thread is held: these queue up behind it
        gone = asyncio.ensure_future(rep.submit(_add("ou=a,o=test")))
        await asyncio.sleep(0)
        gone.cancel()  # the caller goes away while its write is queued
        later = [asyncio.ensure_future(rep.submit(_add(f"ou=b{i},o=test"))) for i in range(5)]
        await asyncio.sleep(0)
        gate.set()
        assert (await asyncio.wait_for(first, 10)).code == 0
        results = await asyncio.wait_for(asyncio.gather(*later), 10)
        assert [r.code for r in results] == [0] * 5
        assert gone.cancelled()
        after = await asyncio.wait_for(rep.submit(_add("ou=c,o=test")), 10)
        assert after.code == 0
        await rep.stop()

    asyncio.run(main())
    with store.read() as txn:  # the abandoned write committed too
        for dn in ("ou=a,o=test", "ou=c,o=test", *(f"ou=b{i},o=test" for i in range(5))):
            assert txn.get_by_ndn(dn) is not None, dn
    store.close()


def test_submit_then_answers_on_the_loop_and_survives_a_failing_callback(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "db", SCHEMA, map_size=1 << 24)

    async def main() -> list[tuple[int, bool]]:
        loop = asyncio.get_running_loop()
        rep = LocalReplicator(store, ApplyContext(SCHEMA, ("o=test",)))
        rep.start()
        seen: list[tuple[int, bool]] = []
        done = asyncio.Event()

        def broken(result: object) -> None:
            raise RuntimeError("a callback bug")

        def record(result: ApplyResult) -> None:
            # runs on the loop's own thread, not the writer's
            seen.append((result.code, asyncio.get_running_loop() is loop))
            if len(seen) == 2:
                done.set()

        rep.submit_then(_add("o=test"), broken)
        rep.submit_then(_add("ou=a,o=test"), record)
        rep.submit_then(_add("ou=a,o=test"), record)  # exists by then: 68
        await asyncio.wait_for(done.wait(), 10)
        after = await asyncio.wait_for(rep.submit(_add("ou=b,o=test")), 10)
        assert after.code == 0
        await rep.stop()
        return seen

    assert asyncio.run(main()) == [(0, True), (68, True)]
    store.close()
