"""Reading feedback files: CSV/TSV, JSONL, Parquet and Excel, one file or a folder.

A file becomes a :class:`SourceFile`: its encoding, its columns and one :class:`RawRow` per
record. A record that cannot be read (a malformed CSV line, a broken JSON line, bytes that do not
decode) is kept as a RawRow with an ``error`` so that it reaches the quarantine instead of being
lost. Problems with the file as a whole (missing, unsupported, unreadable) raise
:class:`SourceError` with a one-line message naming the file.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

CSV_SUFFIXES = {".csv", ".tsv"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
EXCEL_SUFFIXES = {".xlsx"}
SUPPORTED_SUFFIXES = CSV_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES | EXCEL_SUFFIXES

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class SourceError(ValueError):
    """A file or folder that cannot be ingested at all."""


@dataclass
class RawRow:
    """One record as read: its fields, or the reason it could not be read."""

    locator: str                          # "file.csv:12" (line) or "file.xlsx:row 7"
    fields: dict[str, object] | None
    error: str | None = None
    raw: str | None = None                # the raw line, for the quarantine payload


@dataclass
class SourceFile:
    path: Path
    sha256: str
    size_bytes: int
    encoding: str | None
    columns: list[str]
    rows: list[RawRow] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def discover(path: str | Path) -> list[Path]:
    """The supported files at ``path`` (a file, or a folder searched recursively, sorted)."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise SourceError(f"{p}: unsupported file type {p.suffix or '(none)'}; "
                              f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))}")
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not files:
        raise SourceError(f"{p}: folder has no supported files ({', '.join(sorted(SUPPORTED_SUFFIXES))})")
    return files


def file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


# -- encodings ----------------------------------------------------------------------------------
def detect_encoding(data: bytes) -> str:
    """``utf-8-sig``, ``utf-16``, ``utf-8`` or ``gb18030`` (which covers GBK and GB2312).

    A file that decodes cleanly as one of them gets it. Otherwise the encoding under which more
    lines decode wins, and the lines that do not decode are quarantined, not the whole file."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for enc in ("utf-8", "gb18030"):
        try:
            data.decode(enc)
            return enc
        except UnicodeDecodeError:
            pass
    score = {"utf-8": 0, "gb18030": 0}
    for line in data.splitlines():
        if line.isascii():
            continue
        for enc in score:
            try:
                line.decode(enc)
                score[enc] += 1
            except UnicodeDecodeError:
                pass
    return "utf-8" if score["utf-8"] >= score["gb18030"] else "gb18030"


_UNDECODABLE_RE = re.compile("[\udc80-\udcff]")  # bytes kept by errors="surrogateescape"


def has_undecodable(value: object) -> bool:
    """True if a decoded string carries bytes that did not decode (surrogate escapes)."""
    return isinstance(value, str) and not value.isascii() and _UNDECODABLE_RE.search(value) is not None


def mark_undecodable(text: str) -> str:
    """``text`` with every byte that did not decode shown as U+FFFD."""
    return _UNDECODABLE_RE.sub("\ufffd", text)


def _header(record: list[str]) -> list[str]:
    return [c.strip().lstrip("\ufeff") for c in record]


def _decode(path: Path, data: bytes) -> tuple[str, str]:
    enc = detect_encoding(data)
    try:
        return data.decode(enc, errors="surrogateescape"), enc
    except UnicodeError as e:  # utf-16 with an odd byte count
        raise SourceError(f"{path}: cannot decode as {enc}: {e}") from None


# -- readers ------------------------------------------------------------------------------------
def read_file(path: str | Path) -> SourceFile:
    """Read one supported file into a :class:`SourceFile`."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{p}: no such file")
    sha, size = file_digest(p)
    suffix = p.suffix.lower()
    try:
        if suffix in CSV_SUFFIXES:
            return _read_csv(p, sha, size, delimiter="\t" if suffix == ".tsv" else ",")
        if suffix in JSONL_SUFFIXES:
            return _read_jsonl(p, sha, size)
        if suffix in PARQUET_SUFFIXES:
            return _read_parquet(p, sha, size)
        if suffix in EXCEL_SUFFIXES:
            return _read_excel(p, sha, size)
    except SourceError:
        raise
    except Exception as e:  # a library error on a damaged file: name the file, keep it one line
        raise SourceError(f"{p}: cannot read {suffix[1:]} file: {type(e).__name__}: {e}") from None
    raise SourceError(f"{p}: unsupported file type {suffix or '(none)'}")


def _read_csv(path: Path, sha: str, size: int, delimiter: str) -> SourceFile:
    text, enc = _decode(path, path.read_bytes())
    lines = io.StringIO(text, newline="").readlines()  # split exactly as the csv reader counts lines
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    src = SourceFile(path, sha, size, enc, [])
    header: list[str] | None = None
    start = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            src.rows.append(RawRow(f"{path.name}:{start}", None, f"malformed CSV line: {e}",
                                   "".join(lines[start - 1:reader.line_num])))
            start = reader.line_num + 1
            continue
        raw = "".join(lines[start - 1:reader.line_num])
        locator = f"{path.name}:{start}"
        start = reader.line_num + 1
        if header is None:
            if not any(c.strip() for c in record):
                continue
            header = _header(record)
            src.columns = header
            continue
        if not any(c.strip() for c in record):
            continue  # a blank line is not a record
        if len(record) != len(header):
            src.rows.append(RawRow(locator, None,
                                   f"malformed CSV line: expected {len(header)} fields, got {len(record)}", raw))
            continue
        src.rows.append(RawRow(locator, dict(zip(header, record, strict=True)), None, raw))
    return src


def _read_jsonl(path: Path, sha: str, size: int) -> SourceFile:
    text, enc = _decode(path, path.read_bytes())
    src = SourceFile(path, sha, size, enc, [])
    columns: dict[str, None] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        locator = f"{path.name}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            src.rows.append(RawRow(locator, None, f"broken JSON line: {e.msg} at column {e.colno}", line))
            continue
        if not isinstance(obj, dict):
            src.rows.append(RawRow(locator, None, "JSON line is not an object", line))
            continue
        columns.update(dict.fromkeys(obj))
        src.rows.append(RawRow(locator, obj, None, line))
    src.columns = list(columns)
    return src


def _read_parquet(path: Path, sha: str, size: int) -> SourceFile:
    table = pq.read_table(path)
    src = SourceFile(path, sha, size, None, table.column_names)
    for i, rec in enumerate(table.to_pylist(), start=1):
        src.rows.append(RawRow(f"{path.name}:row {i}", rec, None, None))
    return src


def _excel_rows(path: Path) -> Iterator[tuple[int, list[str] | None, tuple]]:
    """(sheet row number, header, values) for every non-empty row after the header of the first
    sheet; the header itself comes first with empty values."""
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        header: list[str] | None = None
        for i, values in enumerate(wb.worksheets[0].iter_rows(values_only=True), start=1):
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue
            if header is None:
                header = [str(v).strip() if v is not None else f"column_{j + 1}" for j, v in enumerate(values)]
                yield i, header, ()
                continue
            yield i, header, values
    finally:
        wb.close()


def _read_excel(path: Path, sha: str, size: int) -> SourceFile:
    src = SourceFile(path, sha, size, None, [])
    for i, header, values in _excel_rows(path):
        if not values:
            src.columns = header or []
            continue
        src.rows.append(RawRow(f"{path.name}:row {i}", dict(zip(header or [], values, strict=False)), None, None))
    return src


def iter_files(paths: Iterable[str | Path]) -> list[Path]:
    """All supported files under several paths, each once, in a stable order."""
    seen: dict[Path, None] = {}
    for p in paths:
        for f in discover(p):
            seen.setdefault(f.resolve(), None)
    return list(seen)


def peek_columns(path: str | Path, sample_lines: int = 1000) -> list[str]:
    """The column names of a file, read cheaply (header, schema or the first JSON lines)."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix in CSV_SUFFIXES:
            with p.open("rb") as f:
                head = f.read(1 << 16)
            text, _ = _decode(p, head.rsplit(b"\n", 1)[0] if b"\n" in head else head)
            for record in csv.reader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ","):
                if any(c.strip() for c in record):
                    return _header(record)
            return []
        if suffix in JSONL_SUFFIXES:
            cols: dict[str, None] = {}
            with p.open("rb") as f:
                for i, line in enumerate(f):
                    if i >= sample_lines:
                        break
                    try:
                        obj = json.loads(line)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        continue
                    if isinstance(obj, dict):
                        cols.update(dict.fromkeys(obj))
            return list(cols)
        if suffix in PARQUET_SUFFIXES:
            return pq.read_schema(p).names
        if suffix in EXCEL_SUFFIXES:
            return next((header or [] for _, header, _ in _excel_rows(p)), [])
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file: name it
        raise SourceError(f"{p}: cannot read {suffix[1:]} file: {type(e).__name__}: {e}") from None
    raise SourceError(f"{p}: unsupported file type {suffix or '(none)'}")
