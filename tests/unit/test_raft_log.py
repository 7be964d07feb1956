"""RaftLog: durable hard state, entries with truncation, compaction and snapshot install."""

from __future__ import annotations

from pathlib import Path

from oba.raft.log import RaftLog
from oba.raft.types import Entry, EntryType, HardState, SnapshotMeta


def _entries(first: int, last: int, term: int) -> list[Entry]:
    return [Entry(i, term, EntryType.NORMAL, f"d{i}".encode()) for i in range(first, last + 1)]


def test_empty_log_loads_defaults(tmp_path: Path) -> None:
    log = RaftLog(tmp_path / "raft")
    assert log.load() == (HardState(), [], None)
    assert log.first_index() == 1
    assert log.last_index() == 0
    log.close()


def test_save_and_reload(tmp_path: Path) -> None:
    log = RaftLog(tmp_path / "raft")
    log.save(HardState(3, 2, 5), _entries(1, 5, 3))
    log.close()
    log = RaftLog(tmp_path / "raft")
    hs, entries, snap = log.load()
    assert hs == HardState(3, 2, 5)
    assert entries == _entries(1, 5, 3)
    assert snap is None
    assert log.entry(4) == Entry(4, 3, EntryType.NORMAL, b"d4")
    log.close()


def test_append_truncates_conflicting_suffix(tmp_path: Path) -> None:
    log = RaftLog(tmp_path / "raft")
    log.append(_entries(1, 10, 1))
    log.append([Entry(6, 2, EntryType.CONF_CHANGE, b"cc")])
    _, entries, _ = log.load()
    assert [e.index for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[-1] == Entry(6, 2, EntryType.CONF_CHANGE, b"cc")
    assert log.last_index() == 6
    log.close()


def test_compact_drops_prefix_and_records_snapshot(tmp_path: Path) -> None:
    log = RaftLog(tmp_path / "raft")
    log.save(HardState(2, 1, 10), _entries(1, 10, 2))
    log.compact(7, 2, (1, 2, 3))
    _, entries, snap = log.load()
    assert snap == SnapshotMeta(7, 2, (1, 2, 3))
    assert [e.index for e in entries] == [8, 9, 10]
    assert log.first_index() == 8
    log.compact(5, 2, (1, 2, 3))  # older than the current snapshot: ignored
    assert log.snapshot() == SnapshotMeta(7, 2, (1, 2, 3))
    log.compact(10, 2, (1, 2, 3))
    assert log.load()[1] == []
    assert log.last_index() == 10
    log.close()


def test_installing_a_snapshot_keeps_only_a_matching_suffix(tmp_path: Path) -> None:
    log = RaftLog(tmp_path / "raft")
    log.append(_entries(1, 10, 1))
    log.save(snapshot=SnapshotMeta(6, 1, (1, 2, 3)))
    assert [e.index for e in log.load()[1]] == [7, 8, 9, 10]
    log.save(HardState(4, 0, 20), snapshot=SnapshotMeta(20, 4, (1, 2, 3)),
             entries=_entries(21, 22, 4))
    hs, entries, snap = log.load()
    assert hs == HardState(4, 0, 20)
    assert snap == SnapshotMeta(20, 4, (1, 2, 3))
    assert [e.index for e in entries] == [21, 22]
    log.close()
