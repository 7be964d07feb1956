"""Hot-path shortcuts (issue 10) keep their results: the whole-entry encoding memo never mixes
up an entry and a filtered view of it, and adaptive group commit gathers concurrent writers
but never makes a lone writer wait."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, cast

from oba.cluster.replicator import LocalReplicator
from oba.directory.entry import Entry
from oba.protocol.codec import decode_message
from oba.protocol.messages import SearchResultEntry
from oba.schema import Schema
from oba.server.connection import AttributeSelector

SCHEMA = Schema.default()


def _selector(attrs: tuple[str, ...]) -> AttributeSelector:
    node = SimpleNamespace(schema=SCHEMA, is_operational=lambda attr: False)
    return AttributeSelector(cast(Any, SimpleNamespace(node=node)), attrs, False)


def _decoded(pdu: bytes) -> tuple[int, str, dict[str, tuple[bytes, ...]]]:
    msg = decode_message(pdu)
    op = msg.op
    assert isinstance(op, SearchResultEntry)
    return msg.message_id, op.dn, {name: tuple(vals) for name, vals in op.attributes}


def test_entry_memo_keeps_entry_and_view_apart() -> None:
    attrs = {"cn": [b"Ann"], "mail": [b"ann@example.com"], "userPassword": [b"{SSHA}x"]}
    entry = Entry(7, "uid=ann,dc=example,dc=com", attrs, {})
    view = Entry(7, entry.dn, {k: v for k, v in attrs.items() if k != "userPassword"},
                 entry.enc)
    everything = _selector(())
    for _ in range(2):  # second round: from the memo
        assert _decoded(everything.encode(3, entry, None))[2] == {
            "cn": (b"Ann",), "mail": (b"ann@example.com",), "userPassword": (b"{SSHA}x",)}
        assert "userPassword" not in _decoded(everything.encode(4, view, None))[2]
    mid, dn, got = _decoded(_selector(("cn", "MAIL")).encode(300, view, None))
    assert (mid, dn, got) == (300, entry.dn, {"cn": (b"Ann",), "mail": (b"ann@example.com",)})
    assert _decoded(_selector(("cn",)).encode(9, entry, None))[2] == {"cn": (b"Ann",)}


def _writer() -> LocalReplicator:
    return LocalReplicator(cast(Any, None), cast(Any, None))


def test_group_commit_waits_for_the_writers_of_the_last_commit() -> None:
    rep = _writer()
    q = rep._queue
    q.put("a")

    def late() -> None:
        time.sleep(0.01)
        q.put("b")
        q.put("c")

    thread = threading.Thread(target=late)
    thread.start()
    batch: list[object] = [q.get()]
    assert rep._gather(batch, writers=3, wait=5.0) is False
    thread.join()
    assert batch == ["a", "b", "c"]


def test_a_lone_writer_never_waits() -> None:
    rep = _writer()
    batch: list[object] = ["only"]
    started = time.monotonic()
    assert rep._gather(batch, writers=1, wait=5.0) is False
    assert batch == ["only"] and time.monotonic() - started < 1.0


def test_group_commit_wait_is_bounded() -> None:
    rep = _writer()
    batch: list[object] = ["one"]
    started = time.monotonic()
    assert rep._gather(batch, writers=16, wait=0.02) is False
    assert batch == ["one"] and time.monotonic() - started < 1.0
