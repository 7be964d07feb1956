"""The writer <-> worker channel (``oba.server.channel``) and the merged LDAP counters."""

from __future__ import annotations

import asyncio
import socket

import pytest

from oba.server.channel import Channel, ChannelClosed, Message
from oba.server.node import Stats


async def _pair(on_a: object, on_b: object) -> tuple[Channel, Channel, list[str]]:
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    closed: list[str] = []
    _, a = await loop.connect_accepted_socket(
        lambda: Channel(on_a, lambda: closed.append("a")), left)  # type: ignore[arg-type]
    _, b = await loop.connect_accepted_socket(
        lambda: Channel(on_b, lambda: closed.append("b")), right)  # type: ignore[arg-type]
    return a, b, closed


def test_calls_are_answered_in_any_order_and_messages_keep_their_order() -> None:
    async def main() -> None:
        got: list[Message] = []
        holder: list[Channel] = []

        def server(msg: Message) -> None:
            got.append(msg)
            if msg["t"] == "echo":
                holder[0].reply(msg, {"t": "echoed", "v": msg["v"] * 2, "b": msg["b"]})

        a, b, _ = await _pair(lambda msg: None, server)
        holder.append(b)
        for i in range(5):
            a.send({"t": "note", "i": i})
        answers = await asyncio.gather(*(a.call({"t": "echo", "v": i, "b": bytes([i])}, 5)
                                         for i in range(50)))
        assert [m["v"] for m in answers] == [2 * i for i in range(50)]
        assert [m["b"] for m in answers] == [bytes([i]) for i in range(50)]
        assert [m["i"] for m in got if m["t"] == "note"] == list(range(5))
        a.close()
        b.close()

    asyncio.run(main())


def test_an_unanswered_call_times_out_and_a_closed_peer_fails_pending_calls() -> None:
    async def main() -> None:
        a, b, closed = await _pair(lambda msg: None, lambda msg: None)
        with pytest.raises(TimeoutError):
            await a.call({"t": "nobody answers"}, 0.05)
        pending = asyncio.ensure_future(a.call({"t": "nobody answers"}, 30))
        await asyncio.sleep(0)
        b.close()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(pending, 5)
        assert closed.count("a") == 1
        with pytest.raises(ChannelClosed):
            await a.call({"t": "after close"}, 1)

    asyncio.run(main())


def test_merged_stats_add_the_workers_counters() -> None:
    mine, theirs = Stats(), Stats()
    mine.connections, theirs.connections = 2, 3
    mine.operations["search"] = 4
    theirs.operations["search"] = 5
    theirs.operations["bind"] = 1
    mine.observe("search", 0, 0.0001)
    theirs.observe("search", 0, 0.0001)
    theirs.observe("bind", 49, 2.0)
    both = mine.merged([theirs.snapshot()])
    assert both.connections == 5
    assert both.operations == {"search": 9, "bind": 1}
    assert both.op_results[("search", 0)] == 2 and both.op_results[("bind", 49)] == 1
    assert sum(both.latency_counts["search"]) == 2
    assert both.latency_sums["bind"] == pytest.approx(2.0)
    assert mine.connections == 2 and mine.operations["search"] == 4  # unchanged
