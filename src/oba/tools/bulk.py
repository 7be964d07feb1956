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
- Export writes content records parents first (a walk of the ``children`` database, or the
  search order when a filter/base is given) with the operational attributes above, so that
  export -> import -> export is byte-identical.
"""

from __future__ import annotations

import base64
import binascii
import gc
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from oba.config import Config
from oba.directory.apply import SUCCESS, ApplyContext, apply
from oba.directory.commands import AddCommand
from oba.directory.entry import Entry
from oba.directory.search import SearchContext, search
from oba.ldif import LDIFError, LDIFRecord, parse_ldif, write_ldif
from oba.protocol.messages import Filter, Present, Scope
from oba.schema import Schema
from oba.storage import Store
from oba.storage.lmdbstore import IMPORT_MARKER, ReadTxn, WriteTxn
from oba.tools import offline
from oba.tools.fastload import MAX_HELD, BulkLoad, BulkTxn
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


def read_records(source: IO[bytes]) -> Iterator[LDIFRecord | BadRecord]:
    """Records of an LDIF file, or a ``BadRecord`` for each block that does not parse."""
    block: list[bytes] = []
    start = 0
    first = True
    number = 0
    for number, raw in enumerate(source, start=1):
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
    lines: list[tuple[int, str]] = []
    comment = False
    for offset, text in enumerate(text_block.split("\n")[: len(block)]):
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
    for name, value in rec.attributes:
        low = name.lower()
        if low in _KEPT_LOWER:
            kept[low] = value
            continue
        if low in COMPUTED:
            continue
        grouped.setdefault(name, []).append(value)
    when = kept.get("createtimestamp", b"").decode("ascii", "replace") or now or _now()
    who = kept.get("creatorsname", b"").decode("utf-8", "replace") or actor
    ident = kept.get("entryuuid", b"").decode("ascii", "replace") or str(uuid.uuid4())
    cmd = AddCommand(rec.dn, tuple((k, tuple(v)) for k, v in grouped.items()),
                     request_id or uuid.uuid4().hex, who, when, ident)
    return cmd, kept


def _now() -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime())


def _restore_modified(txn: WriteTxn, entry: Entry, kept: dict[str, bytes]) -> None:
    changed = dict(entry.attrs)
    for low, canon in (("modifiersname", "modifiersName"), ("modifytimestamp",
                                                             "modifyTimestamp")):
        value = kept.get(low)
        if value is not None and changed.get(canon) != [value]:
            changed[canon] = [value]
    if changed != entry.attrs:
        txn.put_entry(Entry(entry.id, entry.dn, changed), entry)


# --------------------------------------------------------------------------- offline import


def import_offline(
    source: IO[bytes],
    config: Config,
    *,
    batch: int = DEFAULT_BATCH,
    continue_on_error: bool = False,
    defer_indexes: bool = True,
    progress: Progress | None = None,
) -> ImportReport:
    """Load every record of ``source`` into the empty data directory of ``config``.

    Bulk path (``oba.tools.fastload``): lookups from memory, ``id2entry`` appended, ``dn2id``,
    ``children`` and every index written once at the end in key order; no fsync until the
    end. ``IMPORT_MARKER`` exists in the data directory from the first write until the final
    sync, so an interrupted import is refused by the server and restarted from scratch by the
    next import. ``defer_indexes`` is kept for compatibility: indexes are always built last."""
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
        now = _now()
        records = read_records(source)
        while not report.stopped:
            chunk = _take(records, batch)
            if not chunk:
                break
            with store.env.begin(write=True) as raw:
                txn = BulkTxn(store, raw, load)
                for item in chunk:
                    bad = _import_one(txn, item, ctx, now)
                    if bad is None:
                        report.added += 1
                        continue
                    report.failed.append(bad)
                    if not continue_on_error:
                        report.stopped = True
                        break
            if load.held > MAX_HELD:
                load.flush_indexes()
            if progress is not None:
                progress(len(chunk))
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


def _take(records: Iterator[LDIFRecord | BadRecord], n: int) -> list[LDIFRecord | BadRecord]:
    out: list[LDIFRecord | BadRecord] = []
    for item in records:
        out.append(item)
        if len(out) >= n:
            break
    return out


def _import_one(txn: WriteTxn, item: LDIFRecord | BadRecord, ctx: ApplyContext, now: str
                ) -> BadRecord | None:
    if isinstance(item, BadRecord):
        return item
    if item.changetype not in (None, "add"):
        return BadRecord(item.line, item.dn,
                         f"changetype {item.changetype} is not supported by import (adds only)")
    cmd, kept = add_command(item, now=now, request_id="import")
    if txn.count() == 0:  # the first entry names the tree (slapadd takes it from the config)
        try:
            ndn = ctx.schema.normalize_dn(item.dn)
        except Exception:  # an invalid DN: apply reports it
            ndn = ""
        if ndn and ndn not in ctx.suffixes:
            ctx.suffixes = (*ctx.suffixes, ndn)
    result = apply(txn, cmd, ctx)
    if result.code != SUCCESS:
        text = result.message or _code_name(result.code)
        return BadRecord(item.line, item.dn, f"{text} (LDAP result {result.code})")
    if result.entry is not None and kept:
        _restore_modified(txn, result.entry, kept)
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
