"""LDIF import and export: offline bulk load into an empty data directory, and export.

Rules for this module:
- Input is split into blank-line separated blocks here (so one malformed record does not end
  the whole parse) and each block goes through ``oba.ldif.parse_ldif``; every bad record is
  reported as ``(line, dn, message)`` with the line of its ``dn:`` in the file.
- Offline import applies real ``AddCommand``s through ``oba.directory.apply`` (same checks as
  the server) in large batches, one LMDB transaction per batch; it refuses a data directory
  that holds entries or that a live server has open. Operational attributes in the input
  (``entryUUID``, ``creatorsName``, ``createTimestamp``, ``modifiersName``,
  ``modifyTimestamp``) are kept, as ``slapadd`` keeps them; ones Oba computes
  (``structuralObjectClass``, ``memberOf``...) are dropped and recomputed. The first entry
  loaded is accepted as a naming context besides ``directory.baseDN``.
- The load itself is ``oba.tools.fastload`` (in-memory lookups, LMDB appends, every index
  written once at the end, one fsync); a marker file guards against using a half import.
- A large file is prepared in worker processes (``oba.tools.importworkers``): parsing, the add
  command, ``apply.prepare_add`` (every check that does not read the store), the encoded entry
  and its index keys. This process takes the results in file order and runs only
  ``apply.add_prepared`` (store checks, group work) and the writes, so results, errors, their
  line numbers and ``--continue-on-error`` are exactly those of the one-process path. Records
  before the first entry loaded are always handled here (that entry may name the tree).
- Export writes content records parents first (a walk of the ``children`` database, or the
  search order when a filter/base is given) with the operational attributes above, so that
  export -> import -> export is byte-identical.
"""

from __future__ import annotations

import base64
import binascii
import gc
import io
import mmap
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from oba import ids
from oba.config import Config
from oba.directory.apply import (
    SUCCESS,
    ApplyContext,
    ApplyResult,
    PreparedAdd,
    add_prepared,
    prepare_add,
)
from oba.directory.commands import AddCommand
from oba.directory.entry import Entry
from oba.directory.groups import MEMBER_ATTRS
from oba.directory.search import SearchContext, search
from oba.ldif import LDIFError, LDIFRecord, parse_ldif, write_ldif
from oba.protocol.messages import Filter, Present, Scope
from oba.schema import Schema
from oba.storage import Store
from oba.storage.lmdbstore import IMPORT_MARKER, ReadTxn, WriteTxn, _encode_entry, id_bytes
from oba.tools import importworkers, offline
from oba.tools.fastload import MAX_HELD, BulkLoad, BulkTxn, Pending
from oba.tools.fastschema import CachedSchema

# Operational attributes an export carries and an import restores (slapcat/slapadd's set).
KEPT_OPERATIONAL = ("entryUUID", "creatorsName", "createTimestamp", "modifiersName",
                    "modifyTimestamp")
# Operational attributes Oba computes: dropped on import.
COMPUTED = frozenset({"structuralobjectclass", "memberof", "entrydn", "entrycsn",
                      "hassubordinates", "subschemasubentry", "numsubordinates"})
_KEPT_LOWER = {a.lower(): a for a in KEPT_OPERATIONAL}
IMPORT_ACTOR = "cn=oba-import"
DEFAULT_BATCH = 10_000

Progress = Callable[[int], None]


class ImportRefused(RuntimeError):
    """The target data directory cannot take an offline import."""


@dataclass
class BadRecord:
    line: int
    dn: str
    message: str

    def __str__(self) -> str:
        where = f" ({self.dn})" if self.dn else ""
        return f"line {self.line}{where}: {self.message}"


@dataclass
class ImportReport:
    added: int = 0
    failed: list[BadRecord] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False

    @property
    def rate(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- reading


def read_records(source: IO[bytes], first_line: int = 1, first: bool = True
                 ) -> Iterator[LDIFRecord | BadRecord]:
    """Records of an LDIF file, or a ``BadRecord`` for each block that does not parse.
    ``first_line``: the line number of the first line read; ``first``: whether the first
    block is the start of the file (where ``version:`` may stand)."""
    block: list[bytes] = []
    start = 0
    number = 0
    for number, raw in enumerate(source, start=first_line):
        if raw.strip(b"\r\n") == b"":
            if block:
                yield from _parse_block(block, start, first)
                first = False
                block = []
            continue
        if not block:
            start = number
        block.append(raw)
    if block:
        yield from _parse_block(block, start, first)


def _parse_block(block: list[bytes], start: int, first: bool
                 ) -> Iterator[LDIFRecord | BadRecord]:
    if not first:
        fast = _fast_content_record(block, start)
        if fast is not None:
            yield fast
            return
    data = b"".join(block)
    try:
        if first:
            records = list(parse_ldif(data))
        else:
            records = list(parse_ldif(b"version: 1\n\n" + data))  # keep "version:" first-only
            for rec in records:
                rec.line -= 2
    except LDIFError as exc:
        line = start + exc.line - (1 if first else 3)
        yield BadRecord(line, _block_dn(block), exc.message)
        return
    for rec in records:
        rec.line += start - 1
        yield rec


_ATTR_DESC = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*$")


_GOOD_NAMES: set[str] = set()  # attribute descriptions already accepted by the fast parser


def _fast_content_record(block: list[bytes], start: int) -> LDIFRecord | None:
    """The plain content record of ``block`` (first line at ``start``), parsed the way
    ``parse_ldif`` parses it; None for anything else (change records, controls, URL values,
    errors, comments inside folded lines...): the caller then uses ``parse_ldif``, which gives
    the same result or the exact error."""
    try:
        text_block = b"".join(block).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return _fast_text_record(text_block.split("\n")[: len(block)], start)


def _fast_chunk(data: bytes, line: int) -> list[LDIFRecord] | None:
    """The records of a chunk that holds only plain content records (no CR, valid UTF-8,
    every block one ``_fast_text_record`` accepts), its first line being ``line`` and not the
    file's first; None otherwise (then ``read_records`` reads it)."""
    if b"\r" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out: list[LDIFRecord] = []
    number = line
    # Without folded lines, comments, base64 or URL values every line is one "name: value".
    simple = not (text.startswith((" ", "#")) or "\n " in text or "\n#" in text
                  or "::" in text or ":<" in text)
    parse = _simple_text_record if simple else _fast_text_record
    for block in text.split("\n\n"):
        if block.startswith("\n"):  # more blank lines
            stripped = block.lstrip("\n")
            number += len(block) - len(stripped)
            block = stripped
        if block:
            texts = block.split("\n")
            if texts[-1] == "":  # the chunk's last line
                texts.pop()
            record = parse(texts, number)
            if record is None:
                return None
            out.append(record)
        number += block.count("\n") + 2
    return out


def _simple_text_record(texts: list[str], start: int) -> LDIFRecord | None:
    """``_fast_text_record`` of lines that are known to hold no folding, comment, CR, base64
    or URL value (``_fast_chunk`` checks the whole chunk)."""
    if len(texts) < 2:
        return None
    name, sep, rest = texts[0].partition(":")
    if not sep or name.lower() != "dn":
        return None
    attributes: list[tuple[str, bytes]] = []
    good = _GOOD_NAMES
    for text in texts[1:]:
        name, sep, rest = text.partition(":")
        if not sep or (name not in good and _bad_name(name)):
            return None
        attributes.append((name, rest.lstrip(" ").encode("utf-8")))
    return LDIFRecord(dn=_dn_of(texts[0]), attributes=attributes, line=start)


def _dn_of(text: str) -> str:
    """The DN of a ``dn:`` line (the value after the colon, spaces around it removed)."""
    return text.partition(":")[2].strip()


def _bad_name(name: str) -> bool:
    """Whether ``name`` may not start a plain attribute line (remembering good names)."""
    if name.lower() in ("dn", "changetype", "control") or not _ATTR_DESC.match(name):
        return True
    if len(_GOOD_NAMES) < 10_000:
        _GOOD_NAMES.add(name)
    return False


def _fast_text_record(texts: list[str], start: int) -> LDIFRecord | None:
    lines: list[tuple[int, str]] = []
    comment = False
    for offset, text in enumerate(texts):
        if text.endswith("\r"):
            text = text.rstrip("\r")
        if text.startswith(" "):
            if not lines and not comment:
                return None
            if not comment:
                number, head = lines[-1]
                lines[-1] = (number, head + text[1:])
            continue
        comment = text.startswith("#")
        if not comment:
            lines.append((start + offset, text))
    if len(lines) < 2:
        return None
    record: LDIFRecord | None = None
    attributes: list[tuple[str, bytes]] = []
    for number, text in lines:
        name, sep, rest = text.partition(":")
        if not sep or rest.startswith("<"):
            return None
        if rest.startswith(":"):
            try:
                value = base64.b64decode(rest[1:].strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
        else:
            value = rest.lstrip(" ").encode("utf-8")
        low = name.lower()
        if record is None:
            if low != "dn":
                return None
            try:
                record = LDIFRecord(dn=value.decode("utf-8").strip(), line=number)
            except UnicodeDecodeError:
                return None
            continue
        if name not in _GOOD_NAMES:
            if low in ("dn", "changetype", "control") or not _ATTR_DESC.match(name):
                return None
            if len(_GOOD_NAMES) < 10_000:
                _GOOD_NAMES.add(name)
        attributes.append((name, value))
    if record is None:
        return None
    record.attributes = attributes
    return record


def _block_dn(block: list[bytes]) -> str:
    for raw in block:
        if raw[:3].lower() == b"dn:":
            return raw[3:].strip().decode("utf-8", "replace")
    return ""


def add_command(rec: LDIFRecord, actor: str = IMPORT_ACTOR, now: str | None = None,
                request_id: str | None = None) -> tuple[AddCommand, dict[str, bytes]]:
    """The AddCommand for a content (or ``changetype: add``) record, plus the kept
    operational values (lower-cased name -> value) to restore after the add. The request id
    is random unless given (an offline import never replays commands)."""
    grouped: dict[str, list[bytes]] = {}
    kept: dict[str, bytes] = {}
    plain = _PLAIN_NAMES
    for name, value in rec.attributes:
        if name not in plain:
            low = name.lower()
            if low in _KEPT_LOWER:
                kept[low] = value
                continue
            if low in COMPUTED:
                continue
            if len(plain) < 10_000:
                plain.add(name)
        values = grouped.get(name)
        if values is None:
            grouped[name] = [value]
        else:
            values.append(value)
    when = kept.get("createtimestamp", b"").decode("ascii", "replace") or now or _now()
    who = kept.get("creatorsname", b"").decode("utf-8", "replace") or actor
    ident = kept.get("entryuuid", b"").decode("ascii", "replace") or ids.new_uuid()
    cmd = AddCommand(rec.dn, tuple((k, tuple(v)) for k, v in grouped.items()),
                     request_id or ids.command_id(), who, when, ident)
    return cmd, kept


_PLAIN_NAMES: set[str] = set()  # attribute names neither kept operational nor computed
def _now() -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime())


# --------------------------------------------------------------------------- offline import


def import_offline(
    source: IO[bytes],
    config: Config,
    *,
    batch: int = DEFAULT_BATCH,
    continue_on_error: bool = False,
    defer_indexes: bool = True,
    progress: Progress | None = None,
    workers: int | None = None,
) -> ImportReport:
    """Load every record of ``source`` into the empty data directory of ``config``.

    Bulk path (``oba.tools.fastload``): lookups from memory, ``id2entry`` appended, ``dn2id``,
    ``children`` and every index written once at the end in key order; no fsync until the
    end. ``IMPORT_MARKER`` exists in the data directory from the first write until the final
    sync, so an interrupted import is refused by the server and restarted from scratch by the
    next import. A file (or in-memory) input larger than ``PARALLEL_MIN_BYTES`` is prepared
    by ``workers`` forked processes (default: one per CPU, see ``importworkers``); this
    process only runs the checks against the store and writes. ``defer_indexes`` is kept
    for compatibility: indexes are always built last."""
    del defer_indexes
    data_dir = Path(config.storage.dataDir)
    if data_dir.exists():
        offline.refuse_if_live(data_dir, "an offline import")
        _wipe_interrupted(data_dir)
    real_schema = offline.schema_for(config)
    schema = cast(Schema, CachedSchema(real_schema))
    indexes = offline.index_config(config)
    store = Store(config.storage.dataDir, schema, indexes, map_size=int(config.storage.mapSize),
                  durable=False, importing=True)
    report = ImportReport()
    started = time.monotonic()
    marker = data_dir / IMPORT_MARKER
    collecting = gc.isenabled()
    gc.disable()  # millions of long-lived objects, no cycles: full collections cost O(n^2)
    try:
        with store.read() as rtxn:
            if rtxn.count():
                raise ImportRefused(f"{data_dir} already holds {rtxn.count()} entries: an "
                                    "offline import needs an empty data directory "
                                    "(use --url for a running server)")
        _write_marker(marker)
        load = BulkLoad(store)
        ctx = offline.apply_context(config, schema)
        loader = _Loader(store, load, ctx, _now(), report, batch, continue_on_error, progress)
        buf = importworkers.buffer_of(source)
        try:
            if buf is None:
                loader.sequential(read_records(source))
            else:
                loader.chunked(buf, workers)
        except BaseException:
            loader.abort()
            raise
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()
        loader.close()
        load.finish(report.added)
        store.env.sync(True)
    finally:
        store.close()
        if collecting:
            gc.enable()
    marker.unlink()
    _fsync_dir(data_dir)
    report.seconds = time.monotonic() - started
    return report


PARALLEL_MIN_BYTES = 4 * 1024 * 1024  # smaller inputs are prepared in this process

# A record prepared ahead of the writer: (line, dn, ndn, head, tail, attrs, time, late
# failure, pending); ``pending`` (see BulkTxn.pending) when the add may succeed, and then
# ``attrs`` is empty unless the entry has member attributes (group work reads them); or the
# BadRecord that preparing it found.
Prepared = tuple[int, str, str, str, str, dict[str, list[bytes]], str, ApplyResult | None,
                 Pending | None]


class _Loader:
    """The writer side of an import: records in input order, one write transaction per
    ``batch`` records."""

    def __init__(self, store: Store, load: BulkLoad, ctx: ApplyContext, now: str,
                 report: ImportReport, batch: int, continue_on_error: bool,
                 progress: Progress | None) -> None:
        self.store, self.load, self.ctx, self.now = store, load, ctx, now
        self.report, self.batch, self.go_on, self.progress = (report, batch, continue_on_error,
                                                              progress)
        self._raw: Any = None
        self._txn: BulkTxn | None = None
        self._in_txn = 0

    def _writer(self) -> BulkTxn:
        if self._txn is None:
            self._raw = self.store.env.begin(write=True)
            self._txn = BulkTxn(self.store, self._raw, self.load)
        return self._txn

    def _counted(self, n: int) -> None:
        """``n`` more records handled: commit (and report progress) every ``batch``."""
        self._in_txn += n
        if self._in_txn >= self.batch:
            self._commit()

    def _commit(self) -> None:
        if self._txn is None:
            return
        self._raw.commit()
        self._raw = self._txn = None
        done, self._in_txn = self._in_txn, 0
        if self.load.held > MAX_HELD:
            self.load.flush_indexes()
        if self.progress is not None:
            self.progress(done)

    def close(self) -> None:
        """Commit what was loaded (also when stopped at a bad record)."""
        self._commit()

    def abort(self) -> None:
        """On an exception: drop the open transaction (the marker stays: the import is
        unusable)."""
        if self._raw is not None:
            self._raw.abort()
            self._raw = self._txn = None

    def _failed(self, bad: BadRecord) -> bool:
        """Record ``bad``; True when the import stops here."""
        self.report.failed.append(bad)
        if not self.go_on:
            self.report.stopped = True
        return self.report.stopped

    def sequential(self, items: Iterable[LDIFRecord | BadRecord]) -> None:
        """Each record prepared and applied here (streams, and the start of a file)."""
        for item in items:
            bad = _import_one(self._writer(), item, self.ctx, self.now)
            self._counted(1)
            if bad is None:
                self.report.added += 1
            elif self._failed(bad):
                return

    def chunked(self, buf: importworkers.Buffer, workers: int | None) -> None:
        """The records of ``buf``: chunks applied here one record at a time until the first
        entry exists (it may name the tree), the rest prepared ahead, by workers when the
        input is large, and only checked against the store and written here."""
        todo = importworkers.tasks(buf)
        for start, end, line in todo:
            self.sequential(read_records(io.BytesIO(buf[start:end]), line, start == 0))
            if self.report.stopped or self.load.next_id > 1:
                break
        if self.report.stopped:
            return
        if workers is None:
            workers = importworkers.default_workers() if len(buf) >= PARALLEL_MIN_BYTES else 0
        ctx, now, load = self.ctx, self.now, self.load

        def prepare(data: bytes, line: int) -> Any:
            records = _fast_chunk(data, line)
            return _prepare_chunk(read_records(io.BytesIO(data), line, False)
                                  if records is None else records, ctx, now, load)

        chunks = importworkers.prepared_chunks(buf, todo, prepare, workers, ids.forget)
        try:
            for items, segments in chunks:
                if self._apply_chunk(items, segments):
                    return
        finally:
            chunks.close()

    def _apply_chunk(self, items: list[Prepared | BadRecord], segments: list[Segment]) -> bool:
        """Check and write prepared records, then record their index pairs (a segment's
        before the next group entry: group work may rewrite the entries before it); True
        when the import stops."""
        txn = self._writer()
        ctx = self.ctx
        load = self.load
        idbs: list[bytes | None] = []
        settled = 0
        for i, item in enumerate(items):
            while settled < len(segments) and segments[settled][0] <= i:
                load.add_grouped(segments[settled][1], idbs)
                settled += 1
            if isinstance(item, BadRecord):
                bad: BadRecord | None = item
            else:
                line, dn, ndn, head, tail, attrs, when, late, pending = item
                prep = PreparedAdd(ndn, head, tail, attrs, when, late)
                txn.pending = pending
                result = add_prepared(txn, prep, ctx, side_effects=False)
                txn.pending = None
                bad = None if result.code == SUCCESS else _bad_result(line, dn, result)
            if bad is None:
                self.report.added += 1
                idbs.append(id_bytes(load.next_id - 1))
            else:
                idbs.append(None)
                if self._failed(bad):
                    break
            self._counted(1)
            if self._txn is None:
                txn = self._writer()
        idbs.extend([None] * (len(items) - len(idbs)))  # records after a stop
        for _, grouped in segments[settled:]:
            load.add_grouped(grouped, idbs)
        if self.report.stopped:
            self._counted(1)
        return self.report.stopped


# The index keys of consecutive prepared records: (end index in the chunk, {attribute: {key:
# [indexes of the records with that key]}}).
Segment = tuple[int, dict[str, dict[bytes, list[int]]]]


def _prepare_chunk(records: Iterable[LDIFRecord | BadRecord], ctx: ApplyContext, now: str,
                   load: BulkLoad) -> tuple[list[Prepared | BadRecord], list[Segment]]:
    """The prepared records of one chunk, and their index keys grouped by key (a group
    entry keeps its own keys and ends a segment: see ``_Loader._apply_chunk``)."""
    items: list[Prepared | BadRecord] = []
    segments: list[Segment] = []
    grouped: dict[str, dict[bytes, list[int]]] = {}
    for record in records:
        item = _prepare(record, ctx, now, load)
        if not isinstance(item, BadRecord) and item[8] is not None:
            pending = item[8]
            if item[5]:  # member attributes: group work follows its add
                if grouped:
                    segments.append((len(items), grouped))
                    grouped = {}
            else:
                index = len(items)
                for attr, keys in pending[1]:
                    table = grouped.get(attr)
                    if table is None:
                        table = grouped[attr] = defaultdict(list)
                    for k in keys:
                        table[k].append(index)
                item = (*item[:8], (pending[0], [], pending[2], pending[3]))
        items.append(item)
    if grouped:
        segments.append((len(items), grouped))
    return items, segments


def _prepare(item: LDIFRecord | BadRecord, ctx: ApplyContext, now: str, load: BulkLoad
             ) -> Prepared | BadRecord:
    """Everything about one record that does not depend on the store (worker side)."""
    got = _prepare_add(item, ctx, now)
    if isinstance(got, BadRecord):
        return got
    prep = got
    assert isinstance(item, LDIFRecord)
    if prep.late is not None:
        return (item.line, item.dn, prep.ndn, prep.head, prep.tail, {}, prep.time, prep.late,
                None)
    attrs = prep.attrs
    dn = prep.head + ("," + prep.tail if prep.tail else "")
    if dn == item.dn:
        dn = item.dn  # one string object: pickled once
    pending = (prep.ndn, load.keys_of(attrs, prep.norms), dn,
               _encode_entry(Entry(0, dn, attrs)))
    sent = attrs if any(a in attrs for a in MEMBER_ATTRS) else {}
    return (item.line, item.dn, prep.ndn, prep.head, prep.tail, sent, prep.time, None, pending)


def _prepare_add(item: LDIFRecord | BadRecord, ctx: ApplyContext, now: str
                 ) -> PreparedAdd | BadRecord:
    if isinstance(item, BadRecord):
        return item
    if item.changetype not in (None, "add"):
        return BadRecord(item.line, item.dn,
                         f"changetype {item.changetype} is not supported by import (adds only)")
    cmd, kept = add_command(item, now=now, request_id="import")
    prep = prepare_add(cmd, ctx)
    if isinstance(prep, ApplyResult):
        return _bad_result(item.line, item.dn, prep)
    if kept and prep.late is None:  # as slapadd: the input's modifiersName/modifyTimestamp
        for low, canon in (("modifiersname", "modifiersName"),
                           ("modifytimestamp", "modifyTimestamp")):
            value = kept.get(low)
            if value is not None:
                prep.attrs[canon] = [value]
    return prep


def _bad_result(line: int, dn: str, result: ApplyResult) -> BadRecord:
    text = result.message or _code_name(result.code)
    return BadRecord(line, dn, f"{text} (LDAP result {result.code})")


def _write_marker(marker: Path) -> None:
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write("an offline import is writing this directory; if no import is running, it "
                 "was interrupted: the directory is not usable\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(marker.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wipe_interrupted(data_dir: Path) -> None:
    """An interrupted import (marker present) is thrown away: only it wrote these files."""
    if not (data_dir / IMPORT_MARKER).exists():
        return
    for name in ("data.mdb", "lock.mdb"):
        (data_dir / name).unlink(missing_ok=True)
    (data_dir / IMPORT_MARKER).unlink()


def _import_one(txn: WriteTxn, item: LDIFRecord | BadRecord, ctx: ApplyContext, now: str
                ) -> BadRecord | None:
    """Prepare and apply one record here (the first entry loaded also names a tree)."""
    if txn.count() == 0 and isinstance(item, LDIFRecord):
        # the first entry names the tree (slapadd takes it from the config)
        try:
            ndn = ctx.schema.normalize_dn(item.dn)
        except Exception:  # an invalid DN: apply reports it
            ndn = ""
        if ndn and ndn not in ctx.suffixes:
            ctx.suffixes = (*ctx.suffixes, ndn)
    prep = _prepare_add(item, ctx, now)
    if isinstance(prep, BadRecord):
        return prep
    result = add_prepared(txn, prep, ctx, side_effects=False)
    if result.code != SUCCESS:
        assert isinstance(item, LDIFRecord)
        return _bad_result(item.line, item.dn, result)
    return None


def _code_name(code: int) -> str:
    from oba.protocol.resultcodes import ResultCode

    try:
        return ResultCode(code).name.lower()
    except ValueError:
        return f"error {code}"


# --------------------------------------------------------------------------- export


def entry_record(entry: Entry, operational: Callable[[str], bool]) -> LDIFRecord:
    """An entry as an LDIF content record: user attributes plus ``KEPT_OPERATIONAL``."""
    attrs: list[tuple[str, bytes]] = []
    for name, values in entry.attrs.items():
        if operational(name) and name not in KEPT_OPERATIONAL:
            continue
        attrs.extend((name, v) for v in values)
    return LDIFRecord(entry.dn, attrs)


def walk(txn: ReadTxn) -> Iterator[Entry]:
    """Every entry, parents before children (depth first, children in id order)."""
    stack = sorted(txn.children(0), reverse=True)
    while stack:
        eid = stack.pop()
        entry = txn.get(eid)
        if entry is None:
            continue
        yield entry
        stack.extend(sorted(txn.children(eid), reverse=True))


def iter_entries(txn: ReadTxn, base: str | None = None, flt: Filter | None = None
                 ) -> Iterator[Entry]:
    if not base and flt is None:
        yield from walk(txn)
        return
    schema = txn.store.schema
    base_ndn = schema.normalize_dn(base) if base else ""
    yield from search(txn, SearchContext(schema), base_ndn, Scope.SUB,
                      flt if flt is not None else Present("objectClass"))


def operational_test(store: Store) -> Callable[[str], bool]:
    schema = store.schema

    def is_operational(name: str) -> bool:
        at = schema.attribute(name)
        return at is not None and bool(at.operational or at.no_user_modification)

    return is_operational


def export_store(store: Store, out: IO[str], *, base: str | None = None,
                 flt: Filter | None = None, progress: Progress | None = None) -> int:
    """Write the entries (all, or those under ``base`` matching ``flt``) as LDIF; returns the
    number written. One read transaction: the export is a consistent snapshot."""
    is_op = operational_test(store)
    count = 0
    out.write("version: 1\n\n")
    with store.read() as txn:
        for entry in iter_entries(txn, base, flt):
            out.write(write_ldif([entry_record(entry, is_op)], version=False))
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(1000)
    return count


def records_of(entries: Iterable[Entry], store: Store) -> Iterator[LDIFRecord]:
    is_op = operational_test(store)
    for entry in entries:
        yield entry_record(entry, is_op)
