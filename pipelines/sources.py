"""Reading feedback files: CSV/TSV, JSONL, Parquet and Excel, one file or a folder.

A file becomes a :class:`SourceFile`: its encoding, its columns and its records, one
:class:`RawRow` each, read from disk as they are iterated (:class:`Records`), so a file of any
length costs the memory of one record. A record that cannot be read (a malformed CSV line, a
broken JSON line, bytes that do not decode) is kept as a RawRow with an ``error`` so that it
reaches the quarantine instead of being lost. Problems with the file as a whole (missing, unsupported, unreadable) raise
:class:`SourceError` with a one-line message naming the file.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import json
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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


@dataclass(slots=True)
class RawRow:
    """One record as read: its fields, or the reason it could not be read."""

    locator: str                          # "file.csv:12" (line) or "file.xlsx:row 7"
    fields: dict[str, object] | None
    error: str | None = None
    raw: str | None = None                # the raw line, for the quarantine payload

    def __reduce__(self) -> tuple[type[RawRow], tuple[str, dict[str, object] | None, str | None, str | None]]:
        # records go to ingest's worker processes in blocks: pickled as the class and its four
        # values, a record costs 1.5 µs instead of 2.7 to pickle (and half as much to unpickle)
        return RawRow, (self.locator, self.fields, self.error, self.raw)


CsvLine = tuple[int, str]   # a CSV record left unparsed: its line number and the line (SourceFile.items)


@dataclass(frozen=True)
class CsvLayout:
    """What a :data:`CsvLine` needs to become its :class:`RawRow` (:meth:`row`): the file's name
    (for locators), its header as read, its delimiter."""

    name: str
    header: list[str]
    delimiter: str

    def row(self, item: CsvLine) -> RawRow:
        """The RawRow the CSV reader yields for this line: the line split at the delimiter (it holds
        no quote, so that is what ``csv`` does with it)."""
        number, line = item
        return _csv_row(f"{self.name}:{number}", line.rstrip("\r\n").split(self.delimiter), self.header, line)


@dataclass
class SourceFile:
    path: Path
    sha256: str
    size_bytes: int
    encoding: str | None
    columns: list[str]
    rows: Iterable[RawRow] = field(default_factory=list)   # Records when read from a file: iterate, don't index
    # a CSV file's records with the plain ones left unparsed (CsvLine), for ingest's workers to parse
    # (``csv_layout.row``); None for other files
    items: Iterable[RawRow | CsvLine] | None = None
    csv_layout: CsvLayout | None = None

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
# frequent characters of Chinese text (both scripts) and of customer feedback: how many a decoding yields tells
# GB18030 from Big5, since most Big5 byte pairs are also valid GB18030 (and decode to rare characters)
_COMMON_CHARS = frozenset(
    "的一是不了在人有我他这這个個们們中来來上大为為和国國地到以说說时時要就出会會可也你对對生能而子那得于"
    "於着著下自之年过過后後作里裡用道行所然家种種事成方多经經么麼去法学學如都同现現当當没沒动動面起看定天分"
    "还還进進好小部其些主样樣理心本前开開但因只从從想实實日意无無力它与與长長把机機十公此已工使情明性知全"
    "三又关關点點正业業外将將两兩高间間由问問很最重并並物手应應向头頭文体體相见見被利什二等产產或新己身果"
    "加话話合回特代内內信表化老给給位次度门門任常先通原东東提立及比员員解水名真处處走各入几幾口认認条條平"
    "气氣题題活更别別打变變四总總何电電数數安少报報才结結反受目太量再感建务務做接必场場件计計管期直资資金"
    "指许許便空决決非则則听聽白却卻达達光放强強即像难難且完设設式色路记記品住告类類求据據程该該交规規取拉"
    "望觉覺领領确確今切让讓识識候带帶导導运運笑步改收根造言联聯持每车車亲親极極服快办辦往证證近失转轉准準"
    "始怎呢存未远遠叫单單具字爱愛流备備连連调調深商算质質需价價花级級离離况況请請际際约約复復息线線似断斷"
    "精满滿支视視消越容照须須增写寫称稱功吗嗎包片查轻輕易早除找装裝显顯吧标標谈談吃图圖念引首另周较較注语"
    "語仅僅考落随隨选選列响響虽雖推希构構半节節投某案维維致足态態护護验驗责責营營够夠章音跟底站严嚴例防供"
    "效续續留讲講型料终終答紧緊绝絕察段依批群项項故按围圍害双雙客举舉送急伤傷适適夜省喜险險待置居财財排福"
    "欢歡获獲充负負停游疑层層冷退既衣您差富配修降审審善买買免压壓银銀养養乱亂帮幫优優怪香货貨付慢换換忙坏"
    "壞错錯试試拿预預谁誰继繼素客服款订訂单單递遞评評价價诉訴验驗题題闪閃录錄码碼账賬户戶钱錢费費店员員"
)


def _common_count(text: str) -> int:
    return sum(c in _COMMON_CHARS for c in text)


def detect_encoding(data: bytes) -> str:
    """``utf-8-sig``, ``utf-16``, ``utf-8``, ``gb18030`` (which covers GBK and GB2312) or ``cp950``
    (Big5, as Windows writes it).

    A BOM decides; then a file that is valid UTF-8 is UTF-8. Otherwise the encoding under which the
    text reads as Chinese wins: the one that yields the most frequent Chinese characters. Validity
    alone cannot decide, since most Big5 byte pairs (and many UTF-8 sequences) are valid GB18030
    too and decode to fluent nonsense. Lines that do not decode in the winner are quarantined,
    not the whole file; a file with no Chinese at all goes to the encoding more lines decode in."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    return _by_common_chars(data[:1 << 18]) or _by_decodable_lines(data.splitlines())


def _by_common_chars(sample: bytes) -> str | None:
    """The encoding under which ``sample`` yields the most frequent Chinese characters (ties: UTF-8,
    then GB18030); None when none yields any."""
    counts = {enc: _common_count(sample.decode(enc, errors="replace")) for enc in ("utf-8", "gb18030", "cp950")}
    best = max(counts, key=lambda enc: counts[enc])
    return best if counts[best] > 0 else None


def _by_decodable_lines(lines: Iterable[bytes]) -> str:
    """UTF-8 or GB18030, whichever more non-ASCII lines decode in."""
    score = {"utf-8": 0, "gb18030": 0}
    for line in lines:
        if line.isascii():
            continue
        for enc in score:
            with contextlib.suppress(UnicodeDecodeError):
                line.decode(enc)
                score[enc] += 1
    return "utf-8" if score["utf-8"] >= score["gb18030"] else "gb18030"


_UNDECODABLE_RE = re.compile("[\udc80-\udcff]")  # bytes that did not decode, kept as lone surrogates


def _keep_undecodable(e: UnicodeDecodeError) -> tuple[str, int]:
    """Codec error handler: each byte that does not decode becomes a lone surrogate U+DC80…U+DCFF
    (as ``surrogateescape`` does for bytes ≥ 0x80; the marker also covers a UTF-16 file cut in the
    middle of a character, which ``surrogateescape`` refuses), so that only its record is quarantined."""
    bad = e.object[e.start:e.end]
    return "".join(chr(0xDC80 | (b & 0x7F)) for b in bad), e.end


codecs.register_error("cxloop-undecodable", _keep_undecodable)


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
        return data.decode(enc, errors="cxloop-undecodable"), enc
    except UnicodeError as e:  # not expected with the handler above; keep the message one line
        raise SourceError(f"{path}: cannot decode as {enc}: {e}") from None


def detect_file_encoding(path: Path) -> str:
    """:func:`detect_encoding` for a file, read a megabyte at a time: a long UTF-8 file is checked
    without holding it in memory."""
    with path.open("rb") as f:
        head = f.read(1 << 18)
        if head.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return detect_encoding(head)
        check = codecs.getincrementaldecoder("utf-8")()
        try:
            check.decode(head)
            for block in iter(lambda: f.read(1 << 20), b""):
                check.decode(block)
            check.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            pass
    return _by_common_chars(head) or detect_encoding(path.read_bytes())


# -- readers ------------------------------------------------------------------------------------
class Records:
    """The records of one file, read from disk again each time they are iterated: a file of a
    million rows is never held in memory. A reading error part way names the file
    (:class:`SourceError`)."""

    def __init__(self, path: Path, read: Callable[[], Iterator[RawRow]]) -> None:
        self._path = path
        self._read = read

    def __iter__(self) -> Iterator[RawRow]:
        try:
            yield from self._read()
        except SourceError:
            raise
        except Exception as e:  # a library error on a damaged file: name the file, keep it one line
            raise SourceError(f"{self._path}: cannot read {self._path.suffix[1:]} file: "
                              f"{type(e).__name__}: {' '.join(str(e).split())}") from None


def read_file(path: str | Path) -> SourceFile:
    """Open one supported file as a :class:`SourceFile`: its columns are read now, its records
    (``rows``) as they are iterated."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{p}: no such file")
    sha, size = file_digest(p)
    suffix = p.suffix.lower()
    try:
        if suffix in CSV_SUFFIXES:
            enc = detect_file_encoding(p)
            delimiter = "\t" if suffix == ".tsv" else ","
            return _opened(p, sha, size, enc, lambda unparsed=False: _csv_records(p, enc, delimiter, unparsed),
                           delimiter=delimiter)
        if suffix in JSONL_SUFFIXES:
            enc = detect_file_encoding(p)
            return _opened(p, sha, size, enc, lambda: _jsonl_records(p, enc))
        if suffix in PARQUET_SUFFIXES:
            names = pq.ParquetFile(p).schema_arrow.names
            return SourceFile(p, sha, size, None, names, Records(p, lambda: _parquet_records(p)))
        if suffix in EXCEL_SUFFIXES:
            return _opened(p, sha, size, None, lambda: _excel_records(p))
    except SourceError:
        raise
    except Exception as e:  # a library error on a damaged file: name the file, keep it one line
        raise SourceError(f"{p}: cannot read {suffix[1:]} file: {type(e).__name__}: {e}") from None
    raise SourceError(f"{p}: unsupported file type {suffix or '(none)'}")


def _opened(path: Path, sha: str, size: int, encoding: str | None,
            read: Callable[..., Iterator[RawRow | CsvLine | list[str]]], delimiter: str | None = None) -> SourceFile:
    """A SourceFile whose reader yields the column names (a list) among its records. The first
    pass reads up to them (a CSV or Excel header), or through the file (JSONL, whose columns are
    every key any line has). For a CSV file (``delimiter``), ``read(True)`` is the reader
    that leaves plain lines unparsed (``SourceFile.items``)."""
    columns: dict[str, None] = {}
    header: list[str] = []
    whole = path.suffix.lower() in JSONL_SUFFIXES
    for item in Records(path, read):
        if isinstance(item, list):
            header = header or item
            columns.update(dict.fromkeys(item))
            if not whole:
                break
    records = Records(path, lambda: (r for r in read() if isinstance(r, RawRow)))
    if delimiter is None:
        return SourceFile(path, sha, size, encoding, list(columns), records)
    items = Records(path, lambda: (r for r in read(True) if not isinstance(r, list)))
    return SourceFile(path, sha, size, encoding, list(columns), records, items, CsvLayout(path.name, header, delimiter))


_MAX_CSV_RESTARTS = 100


def _csv_records(path: Path, enc: str, delimiter: str,
                 unparsed: bool = False) -> Iterator[RawRow | CsvLine | list[str]]:
    """A CSV/TSV file: its header (the first non-blank record, as a list), then one RawRow per
    record. The reader is strict about quotes: a quote that opens a field and never closes
    properly would otherwise swallow the lines after it into one text (rows silently merged);
    instead its line is quarantined as ``unbalanced quote`` and reading resumes on the next line.

    With ``unparsed``, a record after the header that is one line with no quote comes as
    that line unparsed (a :data:`CsvLine`; :meth:`CsvLayout.row` makes it the same RawRow), and a
    blank one not at all: ingest's workers parse such lines, its reading process only finds
    where each record starts (about 2.5× less time a record, and a line pickles in a tenth of the
    time a RawRow does)."""
    with path.open(encoding=enc, errors="cxloop-undecodable", newline="") as f:
        again: deque[str] = deque()   # lines to read once more (after an unbalanced quote) before the file's next
        taken: list[str] = []         # the lines of the record being read
        last = 0                      # the number of the last line handed out

        def lines() -> Iterator[str]:
            nonlocal last
            while True:
                line = again.popleft() if again else f.readline()
                if not line:
                    return
                last += 1
                taken.append(line)
                yield line

        header: list[str] | None = None
        restarts = 0
        while True:
            reader = csv.reader(lines(), delimiter=delimiter, strict=True)
            resume = False
            while True:
                if unparsed and header is not None:   # at a record's start: a plain line is passed on as it is
                    line = again.popleft() if again else f.readline()
                    if line and '"' not in line:
                        last += 1
                        if line.replace(delimiter, "").strip():   # else blank: no record, as below
                            yield last, line
                        continue
                    if line:
                        again.appendleft(line)   # a quote in it: the csv reader reads it
                start = last + 1
                taken.clear()
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    locator, bad = f"{path.name}:{start}", taken[0] if taken else ""
                    if last > start:  # the bad record ran over several lines: a quote that never closed
                        yield RawRow(locator, None, f"malformed CSV line: unbalanced quote ({e})", bad)
                        again.extendleft(reversed(taken[1:]))
                        last = start
                        resume = True
                        break
                    yield RawRow(locator, None, f"malformed CSV line: {e}", bad)
                    continue
                if not any(map(str.strip, record)):
                    continue  # a blank line is not a record
                if header is None:
                    header = _header(record)
                    yield header
                    continue
                yield _csv_row(f"{path.name}:{start}", record, header, "".join(taken))
            if not resume:
                return
            restarts += 1
            if restarts > _MAX_CSV_RESTARTS:  # a file full of stray quotes: the rest line by line (linear)
                break
        for line in lines():  # one record per line from here
            locator = f"{path.name}:{last}"
            taken.clear()
            try:
                record = next(csv.reader([line], delimiter=delimiter, strict=True), [])
            except csv.Error as e:
                yield RawRow(locator, None, f"malformed CSV line: {e}", line)
                continue
            if header is not None and any(map(str.strip, record)):
                yield _csv_row(locator, record, header, line)


def _csv_row(locator: str, record: list[str], header: list[str], raw: str) -> RawRow:
    if len(record) != len(header):
        return RawRow(locator, None, f"malformed CSV line: expected {len(header)} fields, got {len(record)}", raw)
    return RawRow(locator, dict(zip(header, record, strict=True)), None, raw)


def _jsonl_records(path: Path, enc: str) -> Iterator[RawRow | list[str]]:
    """One RawRow per non-blank line, each object's keys (a list) before it."""
    with path.open(encoding=enc, errors="cxloop-undecodable", newline="") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            locator = f"{path.name}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield RawRow(locator, None, f"broken JSON line: {e.msg} at column {e.colno}", line)
                continue
            if not isinstance(obj, dict):
                yield RawRow(locator, None, "JSON line is not an object", line)
                continue
            yield list(obj)
            yield RawRow(locator, obj, None, line)


def _parquet_records(path: Path) -> Iterator[RawRow]:
    i = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for rec in batch.to_pylist():
            i += 1
            yield RawRow(f"{path.name}:row {i}", rec, None, None)


def _excel_rows(path: Path) -> Iterator[tuple[int, list[str] | None, tuple]]:
    """(sheet row number, header, values) for every non-empty row after the header of the first
    sheet; the header itself comes first with empty values."""
    import openpyxl

    def filled(values: tuple) -> int:
        return sum(not (v is None or (isinstance(v, str) and not v.strip())) for v in values)

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        header: list[str] | None = None
        title: tuple[int, tuple] | None = None  # a first row with one cell: a title (often merged) or the header
        for i, values in enumerate(wb.worksheets[0].iter_rows(values_only=True), start=1):
            if not filled(values):
                continue
            if header is None and title is None and filled(values) == 1:
                title = (i, values)
                continue
            if header is None:
                if title is not None and filled(values) == 1:  # one column after all: the first row was its header
                    (i0, first), title = title, None
                    header = [str(v).strip() if v is not None else f"column_{j + 1}" for j, v in enumerate(first)]
                    yield i0, header, ()
                    yield i, header, values
                    continue
                # a title row above the header (a merged cell, "客户反馈汇总") is not the header
                header = [str(v).strip() if v is not None else f"column_{j + 1}" for j, v in enumerate(values)]
                yield i, header, ()
                continue
            yield i, header, values
        if header is None and title is not None:  # a one-cell sheet: a header without rows
            yield title[0], [str(v).strip() if v is not None else f"column_{j + 1}"
                             for j, v in enumerate(title[1])], ()
    finally:
        wb.close()


def _excel_records(path: Path) -> Iterator[RawRow | list[str]]:
    """The first sheet: its header (a list), then one RawRow per non-empty row."""
    for i, header, values in _excel_rows(path):
        if not values:
            yield header or []
            continue
        yield RawRow(f"{path.name}:row {i}", dict(zip(header or [], values, strict=False)), None, None)


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
                if any(map(str.strip, record)):
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
