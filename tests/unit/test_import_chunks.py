"""The import's input chunking and fast chunk parser agree with reading the file in one pass;
the import's entryUUIDs are RFC 4122 version-4 UUIDs; the CLI's record count."""

from __future__ import annotations

import base64
import io
import itertools
import uuid
from pathlib import Path

import pytest

from oba import ids
from oba.ldif import LDIFRecord
from oba.tools import bulk, cli_commands, importworkers


def _ldif(n: int, newline: str = "\n") -> bytes:
    parts = ["version: 1", ""]
    for i in range(n):
        parts += [f"dn: uid=u{i},ou=people,dc=example,dc=com", "objectClass: account",
                  f"uid: u{i}"]
        if i % 3 == 0:
            parts += ["# a comment", "description: folded", "  over two lines"]
        if i % 4 == 0:
            parts.append("cn:: " + base64.b64encode(f"Jürgen {i}".encode()).decode())
        parts.append("")
        if i % 5 == 0:
            parts += ["", ""]  # more blank lines
    if n % 2:
        parts.pop()  # no newline at the very end
    return newline.join(parts).encode("utf-8")


def _view(items: list[LDIFRecord | bulk.BadRecord]) -> list[tuple[object, ...]]:
    return [(i.line, i.dn, tuple(i.attributes)) if isinstance(i, LDIFRecord)
            else (i.line, i.dn, i.message) for i in items]


def _chunked(buf: bytes, size: int) -> tuple[list[LDIFRecord | bulk.BadRecord], int]:
    out: list[LDIFRecord | bulk.BadRecord] = []
    fast = 0
    for start, end, line in importworkers.tasks(buf, size):
        data = buf[start:end]
        one_pass = list(bulk.read_records(io.BytesIO(data), line, start == 0))
        quick = None if start == 0 else bulk._fast_chunk(data, line)
        if quick is not None:
            fast += 1
            assert _view(list(quick)) == _view(one_pass)
        out += one_pass
    return out, fast


@pytest.mark.parametrize("size", [1, 50, 333, 4096])
@pytest.mark.parametrize("n", [1, 7, 40])
def test_chunks_read_like_one_pass(size: int, n: int) -> None:
    buf = _ldif(n)
    whole = list(bulk.read_records(io.BytesIO(buf)))
    got, fast = _chunked(buf, size)
    assert _view(got) == _view(whole)
    assert len(whole) == n
    if n > 1 and size < 4096:
        assert fast > 0


def test_crlf_chunks_and_bad_records_keep_their_lines() -> None:
    buf = _ldif(30, "\r\n") + b"\r\n\r\ndn: uid=x,dc=example,dc=com\r\nno colon here\r\n"
    whole = list(bulk.read_records(io.BytesIO(buf)))
    got, fast = _chunked(buf, 200)
    assert _view(got) == _view(whole) and fast == 0  # CR: the one-pass reader reads them
    bad = [i for i in whole if isinstance(i, bulk.BadRecord)]
    assert [b.line for b in bad] == [buf.count(b"\n")]


def test_chunks_start_on_blank_lines() -> None:
    buf = _ldif(25)
    pieces = list(importworkers.tasks(buf, 100))
    assert pieces[0][0] == 0 and pieces[-1][1] == len(buf)
    for (_, end, _), (start, _, line) in itertools.pairwise(pieces):
        assert end == start and buf[start:start + 1] == b"\n"
        assert line == buf[:start].count(b"\n") + 1


def test_import_uuids_are_random_version_4() -> None:
    made = {ids.new_uuid() for _ in range(10_000)}
    assert len(made) == 10_000
    for text in list(made)[:500]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_count_records(tmp_path: Path) -> None:
    path = tmp_path / "in.ldif"
    path.write_bytes(b"DN: a=1\nx: y\n\n" + _ldif(3000) + b"\n\ndn: b=2\n")
    assert cli_commands._count_records(path) == 3002
    assert cli_commands._count_records(tmp_path / "missing") is None
