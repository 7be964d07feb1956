"""Parallel preparation of an offline import: the input cut into chunks, prepared by workers.

Rules for this module:
- The input is a buffer (an ``mmap`` of the file, or bytes) cut into chunks that start on a
  blank line, so every chunk holds whole LDIF blocks and parses exactly as the same lines do
  in one pass; each chunk carries the file line number of its first line.
- A worker runs only the pure per-record work (``prepare`` given to ``prepared_chunks``): no
  LMDB access, no shared state. Workers are forked processes (``fork`` context) that inherit
  the buffer and the preparation state, so a task is three integers; a chunk's result is
  pickled into a file of a private spool directory (in /dev/shm when there is one) that the
  consumer reads and deletes. Results come back in input order, at most ``WINDOW`` chunks
  ahead of the consumer; the spool directory is removed at the end.
- Workers ignore SIGINT (the parent decides) and are always terminated when the consumer stops,
  fails or is interrupted.
"""

from __future__ import annotations

import io
import mmap
import multiprocessing
import os
import pickle
import shutil
import signal
import stat
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Iterator
from multiprocessing.pool import AsyncResult
from typing import IO, Any

Buffer = bytes | mmap.mmap
Task = tuple[int, int, int]  # (start offset, end offset, line number of the first line)

CHUNK_BYTES = 192 * 1024
WINDOW = 6  # chunks per worker in flight (results waiting for the consumer included)

_PREPARE: Callable[[bytes, int], Any] | None = None  # set in the parent before forking
_BUFFER: Buffer = b""
_SPOOL = ""  # directory of the result files


def buffer_of(source: IO[bytes]) -> Buffer | None:
    """The rest of ``source`` as a buffer: a read-only mmap of a regular file (from the
    current position), the bytes of an in-memory stream; None for a pipe or terminal."""
    if isinstance(source, io.BytesIO):
        return source.read()
    try:
        fd = source.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        pos = source.tell()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    size = os.fstat(fd).st_size
    if size - pos <= 0:
        return b""
    mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    if pos == 0:
        return mapped
    try:
        return mapped[pos:]
    finally:
        mapped.close()


def tasks(buf: Buffer, chunk_bytes: int | None = None) -> Iterator[Task]:
    """Chunks of ``buf`` of about ``chunk_bytes`` (default ``CHUNK_BYTES``), each starting at
    the beginning of a line, every one but the first starting at a blank line."""
    if chunk_bytes is None:
        chunk_bytes = CHUNK_BYTES
    size = len(buf)
    start = 0
    line = 1
    while start < size:
        end = _boundary(buf, start + chunk_bytes, size)
        yield start, end, line
        line += buf[start:end].count(b"\n")
        start = end


def _boundary(buf: Buffer, pos: int, size: int) -> int:
    """The offset of the first blank line (``\\n`` or ``\\r\\n``) at or after ``pos``
    (searched in growing windows: a file without CRLF must not be scanned to its end)."""
    window = 4096
    lo = pos - 1
    while lo < size:
        hi = min(size, lo + window)
        hits = [i for i in (buf.find(b"\n\n", lo, hi), buf.find(b"\n\r\n", lo, hi)) if i >= 0]
        if hits:
            return min(hits) + 1
        lo = hi - 2  # a separator may straddle the window's end
        window *= 2
        if hi == size:
            break
    return size


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _worker_start(init: Callable[[], None] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if init is not None:
        init()


def _run(task: Task) -> str:
    """Prepare one chunk; the result goes through a spool file (one write, one read) rather
    than the pool's pipe, which the parent's result thread would drain 64 KB per GIL turn."""
    start, end, line = task
    assert _PREPARE is not None
    payload = pickle.dumps(_PREPARE(_BUFFER[start:end], line), protocol=pickle.HIGHEST_PROTOCOL)
    fd, path = tempfile.mkstemp(dir=_SPOOL)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return path


def _collect(path: str) -> Any:
    with open(path, "rb") as fh:
        payload = fh.read()
    os.unlink(path)
    return pickle.loads(payload)


def _spool_dir() -> str:
    """A private directory for results, in memory (/dev/shm) when there is one."""
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix="oba-import-", dir=base)


def prepared_chunks(buf: Buffer, todo: Iterator[Task], prepare: Callable[[bytes, int], Any],
                    workers: int, init: Callable[[], None] | None = None
                    ) -> Generator[Any, None, None]:
    """``prepare(chunk bytes, first line)`` of every task, in task order; with ``workers`` > 0
    in that many forked processes (each runs ``init`` first: e.g. to drop state that must
    not be shared, such as pre-drawn random values). Closing the iterator stops the
    workers."""
    if workers <= 0:
        for start, end, line in todo:
            yield prepare(buf[start:end], line)
        return
    global _PREPARE, _BUFFER, _SPOOL
    _PREPARE, _BUFFER, _SPOOL = prepare, buf, _spool_dir()
    try:
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start,
                                                           initargs=(init,))
        try:
            waiting: deque[AsyncResult[str]] = deque()
            for task in todo:
                waiting.append(pool.apply_async(_run, (task,)))
                if len(waiting) >= WINDOW * workers:
                    yield _collect(waiting.popleft().get())
            while waiting:
                yield _collect(waiting.popleft().get())
        finally:
            pool.terminate()
            pool.join()
    finally:
        shutil.rmtree(_SPOOL, ignore_errors=True)
        _PREPARE, _BUFFER, _SPOOL = None, b"", ""
