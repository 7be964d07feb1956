"""LDIF (RFC 2849) reading and writing.

Rules for this module:
- Values are `bytes`; DNs and attribute descriptions are `str`. Attribute options stay in the
  name as written (`cn;lang-en`).
- The reader unfolds continuation lines (a line starting with one space), skips comments
  (and their continuations), accepts `version: 1`, `::` base64 values and, only when asked,
  `:<` file URLs. Records are separated by blank lines. Every error is an `LDIFError` naming
  the line it was found on; each record carries the line of its `dn:`.
- Change records (`changetype: add|delete|modify|modrdn|moddn`) are parsed into
  `LDIFRecord.changes` / `LDIFRecord.modrdn`; `control:` lines into `LDIFRecord.controls`.
- The writer emits only ASCII: a value is base64-encoded when it is not a safe string (a
  control or non-ASCII byte, a leading space, colon or `<`, or a trailing space). Lines are
  folded at 76 columns.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast
from urllib.parse import unquote, urlparse

__all__ = [
    "LDIFControl",
    "LDIFError",
    "LDIFModRDN",
    "LDIFModification",
    "LDIFRecord",
    "parse_ldif",
    "write_ldif",
]

FOLD_WIDTH = 76
CHANGE_TYPES = ("add", "delete", "modify", "modrdn", "moddn")
MOD_OPS = ("add", "delete", "replace", "increment")

_ATTR_DESC = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*)(?:;[A-Za-z0-9-]+)*$")
_OID = re.compile(r"^[0-9]+(?:\.[0-9]+)*$")


class LDIFError(ValueError):
    """Malformed LDIF; `line` is the 1-based line where the problem was found."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}")


@dataclass(frozen=True)
class LDIFModification:
    """One `add:` / `delete:` / `replace:` / `increment:` block of a modify record."""

    op: str
    attribute: str
    values: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class LDIFModRDN:
    """The body of a modrdn/moddn record."""

    new_rdn: str
    delete_old_rdn: bool
    new_superior: str | None = None


@dataclass(frozen=True)
class LDIFControl:
    """A `control:` line: OID, criticality and optional value."""

    oid: str
    critical: bool = False
    value: bytes | None = None


@dataclass
class LDIFRecord:
    """A content record (`changetype` None) or a change record."""

    dn: str
    attributes: list[tuple[str, bytes]] = field(default_factory=list)
    line: int = field(default=0, compare=False)
    changetype: str | None = None
    changes: list[LDIFModification] = field(default_factory=list)
    modrdn: LDIFModRDN | None = None
    controls: list[LDIFControl] = field(default_factory=list)

    def get(self, name: str) -> list[bytes]:
        """Values of attribute `name` (case-insensitive, options must match exactly)."""
        wanted = name.lower()
        return [value for attr, value in self.attributes if attr.lower() == wanted]


# --------------------------------------------------------------------------- reading

_Line = tuple[int, str]  # (line number of the logical line's start, unfolded text)


def _physical_lines(source: str | bytes | IO[str] | IO[bytes]) -> Iterator[tuple[int, str]]:
    stream: Iterable[str | bytes]
    if isinstance(source, str):
        stream = io.StringIO(source)
    elif isinstance(source, bytes):
        stream = io.BytesIO(source)
    else:
        stream = cast(Iterable[str | bytes], source)
    for number, raw in enumerate(stream, start=1):
        if isinstance(raw, str):
            text = raw
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise LDIFError(number, "line is not valid UTF-8") from None
        yield number, text.rstrip("\r\n")


def _record_blocks(source: str | bytes | IO[str] | IO[bytes]) -> Iterator[list[_Line]]:
    """Group unfolded logical lines into blank-line-separated blocks, comments dropped."""
    block: list[_Line] = []
    start, text, comment, pending = 0, "", False, False
    for number, raw in _physical_lines(source):
        if raw.startswith(" "):
            if not pending:
                raise LDIFError(number, "continuation line without a line to continue")
            text += raw[1:]
            continue
        if pending and not comment:
            block.append((start, text))
        pending = False
        if raw == "":
            if block:
                yield block
                block = []
            continue
        start, text, comment, pending = number, raw, raw.startswith("#"), True
    if pending and not comment:
        block.append((start, text))
    if block:
        yield block


def _split(number: int, text: str, read_urls: bool) -> tuple[str, bytes]:
    """Split `name: value`, `name:: base64` or `name:< url` into (name, value bytes)."""
    name, sep, rest = text.partition(":")
    if not sep:
        raise LDIFError(number, f"expected 'name: value', got {text[:40]!r}")
    if rest.startswith(":"):
        encoded = rest[1:].strip()
        try:
            return name, base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise LDIFError(number, f"invalid base64 value for {name!r}") from None
    if rest.startswith("<"):
        url = rest[1:].strip()
        if not read_urls:
            raise LDIFError(number, f"URL values are not accepted here ({url})")
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise LDIFError(number, f"only file:// URLs are supported, got {url!r}")
        try:
            return name, Path(unquote(parsed.path)).read_bytes()
        except OSError as exc:
            raise LDIFError(number, f"cannot read {url}: {exc.strerror or exc}") from None
    return name, rest.lstrip(" ").encode("utf-8")


def _text(number: int, name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise LDIFError(number, f"{name} is not valid UTF-8") from None


def _check_attr(number: int, name: str) -> str:
    if not _ATTR_DESC.match(name):
        raise LDIFError(number, f"invalid attribute description {name!r}")
    return name


def _parse_control(number: int, text: str) -> LDIFControl:
    # control: <oid> [true|false] [: value | :: base64 | :< url]
    body = text.split(":", 1)[1].lstrip(" ")
    head, sep, rest = body.partition(":")
    words = head.split()
    if not words or not _OID.match(words[0]) or len(words) > 2:
        raise LDIFError(number, f"invalid control line {text[:60]!r}")
    critical = False
    if len(words) == 2:
        if words[1] not in ("true", "false"):
            raise LDIFError(number, f"control criticality must be true or false, got {words[1]!r}")
        critical = words[1] == "true"
    value = _split(number, "value:" + rest, False)[1] if sep else None
    return LDIFControl(words[0], critical, value)


def _parse_modify(lines: list[_Line], read_urls: bool) -> list[LDIFModification]:
    changes: list[LDIFModification] = []
    index = 0
    while index < len(lines):
        number, text = lines[index]
        op, value = _split(number, text, read_urls)
        op = op.lower()
        if op not in MOD_OPS:
            raise LDIFError(number, f"expected add:, delete:, replace: or increment:, got {op!r}")
        attribute = _check_attr(number, _text(number, op, value).strip())
        values: list[bytes] = []
        index += 1
        while True:
            if index >= len(lines):
                break
            number, text = lines[index]
            if text.rstrip() == "-":
                index += 1
                break
            name, value = _split(number, text, read_urls)
            if name.lower() != attribute.lower():
                raise LDIFError(
                    number, f"value for {name!r} inside the {op} block for {attribute!r}"
                )
            values.append(value)
            index += 1
        changes.append(LDIFModification(op, attribute, values))
    return changes


def _parse_modrdn(lines: list[_Line], start: int) -> LDIFModRDN:
    fields: dict[str, tuple[int, str]] = {}
    for number, text in lines:
        name, value = _split(number, text, False)
        key = name.lower()
        if key not in ("newrdn", "deleteoldrdn", "newsuperior") or key in fields:
            raise LDIFError(number, f"unexpected {name!r} line in a modrdn record")
        fields[key] = (number, _text(number, name, value))
    if "newrdn" not in fields or "deleteoldrdn" not in fields:
        raise LDIFError(start, "a modrdn record needs newrdn: and deleteoldrdn:")
    number, flag = fields["deleteoldrdn"]
    if flag.strip() not in ("0", "1"):
        raise LDIFError(number, f"deleteoldrdn must be 0 or 1, got {flag!r}")
    superior = fields.get("newsuperior")
    return LDIFModRDN(fields["newrdn"][1], flag.strip() == "1", superior[1] if superior else None)


def _parse_record(block: list[_Line], read_urls: bool) -> LDIFRecord:
    number, text = block[0]
    name, value = _split(number, text, read_urls)
    if name.lower() != "dn":
        raise LDIFError(number, f"a record must start with 'dn:', got {name!r}")
    record = LDIFRecord(dn=_text(number, "dn", value).strip(), line=number)
    rest = block[1:]
    while rest and rest[0][1].lower().startswith("control:"):
        record.controls.append(_parse_control(*rest[0]))
        rest = rest[1:]
    if rest and rest[0][1].lower().startswith("changetype:"):
        change_line, change_text = rest[0]
        changetype = change_text.split(":", 1)[1].strip().lower()
        if changetype not in CHANGE_TYPES:
            raise LDIFError(change_line, f"unknown changetype {changetype!r}")
        record.changetype = changetype
        rest = rest[1:]
        if changetype == "delete":
            if rest:
                raise LDIFError(rest[0][0], "a delete record has no further lines")
            return record
        if changetype == "modify":
            record.changes = _parse_modify(rest, read_urls)
            return record
        if changetype in ("modrdn", "moddn"):
            record.modrdn = _parse_modrdn(rest, change_line)
            return record
    elif record.controls:
        raise LDIFError(block[0][0], "control: lines are only allowed in change records")
    for number, text in rest:
        name, value = _split(number, text, read_urls)
        if name.lower() in ("dn", "changetype"):
            raise LDIFError(number, f"unexpected {name!r} line inside a record")
        record.attributes.append((_check_attr(number, name), value))
    if record.changetype is None and not record.attributes:
        raise LDIFError(block[0][0], "a content record needs at least one attribute")
    return record


def parse_ldif(
    source: str | bytes | IO[str] | IO[bytes], *, read_urls: bool = False
) -> Iterator[LDIFRecord]:
    """Yield the records of an LDIF document (text, bytes or an open file), lazily."""
    first = True
    for block in _record_blocks(source):
        if first:
            first = False
            number, text = block[0]
            if text.lower().startswith("version:"):
                if text.split(":", 1)[1].strip() != "1":
                    raise LDIFError(number, "only LDIF version 1 is supported")
                block = block[1:]
                if not block:
                    continue
        yield _parse_record(block, read_urls)


# --------------------------------------------------------------------------- writing


def _is_safe(value: bytes) -> bool:
    if not value:
        return True
    if value[0] in b" :<" or value[-1:] == b" ":
        return False
    return all(0x20 <= byte < 0x7F for byte in value)


def _fold(line: str, width: int) -> list[str]:
    if len(line) <= width:
        return [line]
    parts = [line[:width]]
    rest = line[width:]
    while rest:
        parts.append(" " + rest[: width - 1])
        rest = rest[width - 1 :]
    return parts


def _attr_line(name: str, value: bytes) -> str:
    if _is_safe(value):
        return f"{name}: {value.decode('ascii')}" if value else f"{name}:"
    return f"{name}:: {base64.b64encode(value).decode('ascii')}"


def _record_lines(record: LDIFRecord) -> list[str]:
    lines = [_attr_line("dn", record.dn.encode("utf-8"))]
    for control in record.controls:
        text = f"control: {control.oid} {'true' if control.critical else 'false'}"
        if control.value is not None:
            value_line = _attr_line("", control.value)
            text += value_line
        lines.append(text)
    if record.changetype is not None:
        lines.append(f"changetype: {record.changetype}")
    if record.changetype in (None, "add"):
        lines += [_attr_line(name, value) for name, value in record.attributes]
    elif record.changetype == "modify":
        for change in record.changes:
            lines.append(f"{change.op}: {change.attribute}")
            lines += [_attr_line(change.attribute, value) for value in change.values]
            lines.append("-")
    elif record.changetype in ("modrdn", "moddn"):
        if record.modrdn is None:
            raise ValueError(f"{record.changetype} record for {record.dn!r} has no modrdn body")
        lines.append(_attr_line("newrdn", record.modrdn.new_rdn.encode("utf-8")))
        lines.append(f"deleteoldrdn: {1 if record.modrdn.delete_old_rdn else 0}")
        if record.modrdn.new_superior is not None:
            lines.append(_attr_line("newsuperior", record.modrdn.new_superior.encode("utf-8")))
    return lines


def write_ldif(
    records: Iterable[LDIFRecord], *, version: bool = True, width: int = FOLD_WIDTH
) -> str:
    """Render records as LDIF text (ASCII only, folded at `width` columns)."""
    out: list[str] = ["version: 1", ""] if version else []
    for record in records:
        for line in _record_lines(record):
            out += _fold(line, width)
        out.append("")
    return "\n".join(out) + ("\n" if out else "")
