"""From raw records to feedback rows: column mapping, validation, normalisation, redaction.

``prepare_file`` (or ``prepare_chunks``, a chunk of records at a time) turns a
:class:`~pipelines.sources.SourceFile` into two Arrow tables: ``feedback``
rows ready to store (text normalised and PII-redacted, customer id pseudonymised) and
``quarantine`` rows (reason + redacted payload). Every input record ends in exactly one of them,
or is counted as a duplicate of a record in the same file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pyarrow as pa

from models.parallel import ForkPool
from nlp import dedup_key, normalize_text, redact
from pipelines.config import worker_count
from pipelines.sources import CsvLayout, CsvLine, RawRow, SourceError, SourceFile, has_undecodable, mark_undecodable

UNDATED_FLAGS = ("created_at_missing", "created_at_invalid")   # created_at is the ingest time, not the customer's


def dated_sql(alias: str = "") -> str:
    """SQL condition: the ``feedback`` row (``alias.``) carries the customer's own time, not its
    ingest time. Trends, windows and "the newest feedback" use these rows only."""
    flags = ", ".join(f"'{f}'" for f in UNDATED_FLAGS)
    return f"NOT list_has_any(coalesce({alias + '.' if alias else ''}flags, []), [{flags}])"


# the newest customer time (the newest ingest time when no row has one)
NEWEST_SQL = f"SELECT coalesce(max(created_at) FILTER (WHERE {dated_sql()}), max(created_at)) FROM feedback"

MAX_TEXT_CHARS = 20_000
MAX_PAYLOAD_CHARS = 4_000
LOCAL_TZ = ZoneInfo("Asia/Shanghai")

# accepted header names per field (lower-cased); a user's --*-col option overrides them
ALIASES: dict[str, tuple[str, ...]] = {
    "text": ("text", "content", "comment", "review", "feedback", "message", "body", "内容", "评论", "评价",
             "反馈", "反馈内容", "投诉内容", "文本", "留言", "备注"),
    "source_id": ("id", "source_id", "feedback_id", "review_id", "ticket_id", "编号", "工单号", "评论id", "序号"),
    "created_at": ("created_at", "time", "date", "datetime", "timestamp", "created", "时间", "日期", "来电时间",
                   "评论时间", "创建时间", "提交时间"),
    "channel": ("channel", "渠道", "来源渠道", "触点"),
    "product": ("product", "产品", "业务", "商品", "品类"),
    "customer_id": ("customer_id", "user_id", "customer", "客户号", "客户id", "用户id", "会员号"),
    "rating": ("rating", "score", "stars", "评分", "星级"),
    "nps": ("nps", "nps_score", "推荐度", "推荐意愿"),
}
FIELDS = tuple(ALIASES)

FEEDBACK_SCHEMA = pa.schema([
    ("feedback_id", pa.string()), ("source", pa.string()), ("source_id", pa.string()),
    ("created_at", pa.timestamp("us")), ("channel", pa.string()), ("product", pa.string()),
    ("customer_key", pa.string()), ("rating", pa.int8()), ("nps", pa.int8()), ("text", pa.string()),
    ("text_key", pa.string()), ("pii_found", pa.string()), ("flags", pa.list_(pa.string())),
    ("meta", pa.string()), ("ingested_at", pa.timestamp("us")), ("run_id", pa.string()),
])
QUARANTINE_SCHEMA = pa.schema([
    ("quarantine_id", pa.string()), ("source", pa.string()), ("locator", pa.string()),
    ("reason", pa.string()), ("payload", pa.string()), ("run_id", pa.string()),
    ("quarantined_at", pa.timestamp("us")),
])


@dataclass(frozen=True)
class ColumnMap:
    """Which input column feeds which feedback field; ``None`` means: find it by its usual names."""

    text: str | None = None
    source_id: str | None = None
    created_at: str | None = None
    channel: str | None = None
    product: str | None = None
    customer_id: str | None = None
    rating: str | None = None
    nps: str | None = None

    def resolve(self, src: SourceFile) -> dict[str, str]:
        """Field → column for this file. A named column that the file lacks, or a file without
        any text column, is a :class:`SourceError`."""
        return self.resolve_columns(src.path, src.columns, has_rows=any(r.fields for r in src.rows))

    def resolve_columns(self, path: object, columns: list[str], has_rows: bool = True) -> dict[str, str]:
        """Field → column for a file with these ``columns`` (see :meth:`resolve`)."""
        lower = {c.lower().strip(): c for c in columns}
        out: dict[str, str] = {}
        for f in FIELDS:
            wanted = getattr(self, f)
            if wanted is not None:
                col = wanted if wanted in columns else lower.get(wanted.lower())
                if col is None:
                    raise SourceError(f"{path}: no column {wanted!r} for {f} "
                                      f"(columns: {', '.join(columns) or 'none'})")
                out[f] = col
                continue
            for alias in ALIASES[f]:
                if alias in lower:
                    out[f] = lower[alias]
                    break
        if "text" not in out and has_rows and columns:
            raise SourceError(f"{path}: no text column found (columns: {', '.join(columns)}); "
                              "name it with --text-col")
        return out


@dataclass
class Prepared:
    """The result of preparing one file."""

    feedback: pa.Table
    quarantine: pa.Table
    duplicates: int
    flagged: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    read: int = 0                 # the records read (each is stored, quarantined or a duplicate)


# -- field parsers ------------------------------------------------------------------------------
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                 "%Y/%m/%d", "%Y.%m.%d %H:%M:%S", "%Y.%m.%d", "%Y%m%d %H:%M:%S", "%Y%m%d",
                 "%Y年%m月%d日 %H:%M:%S", "%Y年%m月%d日 %H:%M", "%Y年%m月%d日 %H时%M分", "%Y年%m月%d日")


def _local(dt: datetime) -> datetime | None:
    """``dt`` as a naive Asia/Shanghai time; None when that falls outside years 1–9999
    (``0001-01-01T00:00+08:00`` used to raise and fail its whole file)."""
    try:
        return dt.astimezone(LOCAL_TZ).replace(tzinfo=None) if dt.tzinfo else dt
    except (OverflowError, ValueError):
        return None


_EPOCH_RE = re.compile(r"\d{10}(\d{3})?")                                  # epoch seconds or milliseconds
_SCORE_RE = re.compile(r"(\d+(?:\.0+)?)\s*(?:星|分|stars?)?", re.IGNORECASE)  # "4", "4.0", "4 星", "5 stars"


def parse_timestamp(value: object) -> datetime | None:
    """A naive local (Asia/Shanghai) datetime from the common shapes of a time value, else None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, datetime):
        return _local(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds or seconds
        try:
            return datetime.fromtimestamp(seconds, tz=UTC).astimezone(LOCAL_TZ).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            return None
    s = normalize_text(str(value)).strip()
    if not s:
        return None
    if _EPOCH_RE.fullmatch(s):
        return parse_timestamp(int(s))
    try:
        return _local(datetime.fromisoformat(s.replace("Z", "+00:00")))
    except ValueError:
        pass
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            continue
    return None


def parse_score(value: object, lo: int, hi: int) -> tuple[int | None, bool]:
    """(score, ok): an integer in [lo, hi]; ``ok`` is False when a value was given but unusable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, True
    if isinstance(value, str):
        s = normalize_text(value).strip()
        if not s:
            return None, True
        m = _SCORE_RE.fullmatch(s)
        if not m:
            return None, False
        value = float(m.group(1))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, False
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():  # infinity used to raise and fail the file
            return None, False
        value = int(value)
    return (value, True) if lo <= value <= hi else (None, False)


def _clean_str(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    s = normalize_text(str(value)).strip()
    return s or None


def _redacted(value: str | None) -> str | None:
    """A short field as stored: ids, channels and products may carry a phone number too."""
    return redact(value).text if value else value


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:24]


def feedback_id(source: str, source_id: str | None, key: str) -> str:
    """Stable id: hash of (source, source_id), or of the text's dedup key (``nlp.dedup_key``) when
    there is no id."""
    return _hash("id", source, source_id) if source_id else _hash("text", key)


def text_key(key: str) -> str:
    """``feedback.text_key``: the first 16 hex digits of the MD5 of a text's dedup key
    (``nlp.dedup_key``), DuckDB's ``left(md5(key), 16)``, with which migration 007 converted the
    keys stored before. Equal for texts that differ only in width, script, case, spacing or
    punctuation; 16 characters a row instead of the text again (migration 007 says what that saves)."""
    return hashlib.md5(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def pseudonymise(customer_id: str, salt: bytes) -> str:
    """Salted hash of a customer id (the same id gives the same key under the same salt)."""
    return hashlib.blake2b(customer_id.encode(), key=salt[:64], digest_size=12).hexdigest()


def safe_payload(row: RawRow) -> str:
    """The original record for the quarantine: undecodable bytes shown as U+FFFD, PII redacted."""
    raw = row.raw if row.raw is not None else json.dumps(row.fields, ensure_ascii=False, default=str)
    size, cut = len(raw), 2 * MAX_PAYLOAD_CHARS
    # cut before redacting (a 1 MB record costs no more than a short one), and drop the digits the
    # cut ends in: the start of a phone number is not one, redaction would let it through
    text = redact(normalize_text(mark_undecodable(raw[:cut]))).text
    if size > cut:
        text = text.rstrip("0123456789 -+")
    return text if size <= MAX_PAYLOAD_CHARS and len(text) <= MAX_PAYLOAD_CHARS \
        else text[:MAX_PAYLOAD_CHARS] + f"…[{size} chars]"


# -- the preparation ----------------------------------------------------------------------------
def prepare_file(src: SourceFile, source: str, columns: ColumnMap, *, run_id: str, salt: bytes,
                 default_channel: str | None = None, now: datetime | None = None) -> Prepared:
    """Validate, normalise, redact and key every record of one file, as one :class:`Prepared`."""
    parts = list(prepare_chunks(src, source, columns, run_id=run_id, salt=salt, default_channel=default_channel,
                                now=now))
    total: dict[str, dict[str, int]] = {"flagged": {}, "reasons": {}}
    for part in parts:
        for name, counts in total.items():
            for k, v in getattr(part, name).items():
                counts[k] = counts.get(k, 0) + v
    return Prepared(pa.concat_tables([p.feedback for p in parts]) if parts else FEEDBACK_SCHEMA.empty_table(),
                    pa.concat_tables([p.quarantine for p in parts]) if parts else QUARANTINE_SCHEMA.empty_table(),
                    sum(p.duplicates for p in parts), total["flagged"], total["reasons"], sum(p.read for p in parts))


CHUNK_ROWS = 50_000   # records prepared (and stored, by ingest) at a time: memory stays flat however long the file


BLOCK_ROWS = 2_000          # records per unit of work for a worker process
PARALLEL_MIN_BLOCKS = 3     # a file of fewer blocks is prepared in-process (forking would cost more)


@dataclass(frozen=True)
class _FileContext:
    """What every record of one file needs (worker processes inherit it when they are forked)."""

    source: str
    source_stored: str | None
    mapping: dict[str, str]
    channel_default: str
    encoding: str
    run_id: str
    salt: bytes
    now: datetime
    csv_layout: CsvLayout | None = None   # a CSV file's: turns the lines left unparsed into records

    def record(self, item: RawRow | CsvLine) -> RawRow:
        """The record of an item of the file (a CSV line left unparsed is parsed here)."""
        return item if isinstance(item, RawRow) else self.csv_layout.row(item)  # type: ignore[union-attr]


@dataclass
class _Block:
    """Records prepared on their own, duplicates not yet looked for (that needs the whole file, in
    order). Per record, ``outcome`` is the index of its row in ``feedback`` (and in ``ids``,
    ``text_keys``, ``flags``), or ``-1 - i`` when it was quarantined with
    ``quarantined[i]`` (reason, payload)."""

    feedback: pa.Table
    ids: list[str]
    text_keys: list[str]
    flags: list[list[str]]
    outcome: list[int]
    quarantined: list[tuple[str, str]]


_CATEGORIES: dict[object, str | None] = {}   # channel, product: a handful of values on thousands of rows


def _category(value: object) -> str | None:
    """A low-cardinality field as stored (normalised, redacted), worked out once per value."""
    if type(value) not in (str, int, float):   # None, lists, dicts: not worth keeping (or unhashable)
        return _redacted(_clean_str(value))
    if value not in _CATEGORIES:
        if len(_CATEGORIES) >= 10_000:
            _CATEGORIES.clear()
        _CATEGORIES[value] = _redacted(_clean_str(value))
    return _CATEGORIES[value]


def _prepare_block(ctx: _FileContext, items: list[RawRow | CsvLine]) -> _Block:
    """Validate, normalise, redact and key each record of ``items`` (in a worker, or in-process)."""
    mapping = ctx.mapping
    rows = [ctx.record(item) for item in items]
    block = _Block(FEEDBACK_SCHEMA.empty_table(), [], [], [], [], [])
    fb_rows: list[dict] = []

    def quarantine(row: RawRow, reason: str) -> None:
        block.outcome.append(-1 - len(block.quarantined))
        block.quarantined.append((reason, safe_payload(row)))

    for row in rows:
        if row.error or row.fields is None:
            quarantine(row, row.error or "unreadable record")
            continue
        get = row.fields.get
        raw_text = get(mapping["text"]) if "text" in mapping else None
        if "text" in mapping and mapping["text"] not in row.fields:
            quarantine(row, f"missing text field {mapping['text']!r}")
            continue
        if any(has_undecodable(v) for v in row.fields.values()):
            quarantine(row, f"undecodable bytes (file read as {ctx.encoding})")
            continue
        text = normalize_text("" if raw_text is None else str(raw_text))
        if not text:
            quarantine(row, "empty text")
            continue
        if len(text) > MAX_TEXT_CHARS:
            quarantine(row, f"text too long: {len(text)} chars (limit {MAX_TEXT_CHARS})")
            continue
        red = redact(text)
        flags: list[str] = []
        created = parse_timestamp(get(mapping["created_at"])) if "created_at" in mapping else None
        if created is None:
            has_value = "created_at" in mapping and _clean_str(get(mapping["created_at"])) is not None
            flags.append("created_at_invalid" if has_value else "created_at_missing")
            created = ctx.now
        elif created > ctx.now + timedelta(days=1):
            flags.append("created_at_future")
        rating, ok = parse_score(get(mapping["rating"]), 1, 5) if "rating" in mapping else (None, True)
        if not ok:
            flags.append("rating_invalid")
        nps, ok = parse_score(get(mapping["nps"]), 0, 10) if "nps" in mapping else (None, True)
        if not ok:
            flags.append("nps_invalid")
        sid = _clean_str(get(mapping["source_id"])) if "source_id" in mapping else None
        key = dedup_key(red.text, normalized=True)
        fid = feedback_id(ctx.source, sid, key)
        tkey = text_key(key)
        cust = _clean_str(get(mapping["customer_id"])) if "customer_id" in mapping else None
        extra = {k: v for k, v in row.fields.items() if k not in mapping.values()}
        block.outcome.append(len(fb_rows))
        block.ids.append(fid)
        block.text_keys.append(tkey)
        block.flags.append(flags)
        fb_rows.append({
            # the id is hashed from the original values; what is stored is redacted
            "feedback_id": fid, "source": ctx.source_stored, "source_id": _redacted(sid), "created_at": created,
            "channel": (_category(get(mapping["channel"])) if "channel" in mapping else None)
                       or _redacted(ctx.channel_default),
            "product": _category(get(mapping["product"])) if "product" in mapping else None,
            "customer_key": pseudonymise(cust, ctx.salt) if cust else None,
            "rating": rating, "nps": nps, "text": red.text, "text_key": tkey,
            "pii_found": json.dumps(red.found) if red.found else None, "flags": flags,
            "meta": _meta_json(extra), "ingested_at": ctx.now, "run_id": ctx.run_id,
        })
    block.feedback = pa.Table.from_pylist(fb_rows, schema=FEEDBACK_SCHEMA)
    return block


def prepare_chunks(src: SourceFile, source: str, columns: ColumnMap, *, run_id: str, salt: bytes,
                   default_channel: str | None = None, now: datetime | None = None,
                   chunk_rows: int = CHUNK_ROWS, workers: int | None = None) -> Iterator[Prepared]:
    """:func:`prepare_file` ``chunk_rows`` records at a time (duplicates are still found across the
    whole file); each :class:`Prepared` counts its own records only.

    Records are prepared ``BLOCK_ROWS`` at a time by ``workers`` processes (default
    ``CXLOOP_WORKERS``; a file of fewer than ``PARALLEL_MIN_BLOCKS`` blocks in-process): the per-record
    work (normalise, redact, parse, key) is Python that holds the GIL. This process reads the
    records, and finds duplicates in the order of the file, so the result does not depend on the
    number of workers (``tests/test_sources_records.py``). Of a CSV file it reads only where each
    record starts: plain lines are parsed by the workers (``SourceFile.items``)."""
    now = now or datetime.now()
    ctx = _FileContext(source, _redacted(source), columns.resolve(src), default_channel or "unknown",
                       src.encoding, run_id, salt, now, src.csv_layout)
    seen: dict[str, str] = {}   # id → its text_key (not the text: a long file's ids stay small)
    parts: list[tuple[pa.Table, list[int]]] = []   # this chunk's stored rows: (a block's rows, which)
    q_rows: list[dict] = []
    duplicates = 0
    flagged: dict[str, int] = {}
    reasons: dict[str, int] = {}
    read = 0

    def quarantine(item: RawRow | CsvLine, reason: str, payload: str | None = None) -> None:
        row = ctx.record(item)
        kind = reason.split(":")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
        q_rows.append({"quarantine_id": _hash("q", source, row.locator, reason), "source": source,
                       "locator": row.locator, "reason": reason,
                       "payload": safe_payload(row) if payload is None else payload,
                       "run_id": run_id, "quarantined_at": now})

    def chunk() -> Prepared:
        nonlocal duplicates, flagged, reasons, read
        # rows holds increasing row numbers: as many as the table has is every row
        tables = [table if len(rows) == table.num_rows else table.take(rows) for table, rows in parts if rows]
        out = Prepared(pa.concat_tables(tables) if tables else FEEDBACK_SCHEMA.empty_table(),
                       pa.Table.from_pylist(q_rows, schema=QUARANTINE_SCHEMA), duplicates, flagged, reasons, read)
        parts.clear()
        q_rows.clear()
        duplicates, flagged, reasons, read = 0, {}, {}, 0
        return out

    blocks = _record_blocks(src.rows if src.items is None else src.items)
    first = list(itertools.islice(blocks, PARALLEL_MIN_BLOCKS))
    n = (worker_count() if workers is None else workers) if len(first) == PARALLEL_MIN_BLOCKS else 1
    in_flight: deque[list[RawRow | CsvLine]] = deque()

    def submitted() -> Iterator[list[RawRow | CsvLine]]:
        for rows in itertools.chain(first, blocks):
            in_flight.append(rows)
            yield rows

    with ForkPool(ctx, n) as pool:
        for block in pool.imap(_prepare_block, submitted()):
            rows = in_flight.popleft()
            if _all_new(block, seen, chunk_rows - read):
                # the usual block, at once: the loop below gives the same for it, a record at a
                # time (about 2 µs each in this process, which the workers wait on)
                seen.update(zip(block.ids, block.text_keys, strict=True))
                for f in itertools.chain.from_iterable(block.flags):
                    flagged[f] = flagged.get(f, 0) + 1
                parts.append((block.feedback, list(range(len(block.ids)))))
                read += len(rows)
                continue
            keep = []
            parts.append((block.feedback, keep))
            for i, row in enumerate(rows):
                if read == chunk_rows:
                    yield chunk()
                    keep = []
                    parts.append((block.feedback, keep))
                read += 1
                o = block.outcome[i]
                if o < 0:
                    quarantine(row, *block.quarantined[-1 - o])
                    continue
                fid = block.ids[o]
                if fid in seen:
                    if seen[fid] == block.text_keys[o]:
                        duplicates += 1
                    else:
                        sid = block.feedback.column("source_id")[o].as_py()   # as stored: redacted
                        quarantine(row, f"duplicate id {sid!r} with a different text")
                    continue
                seen[fid] = block.text_keys[o]
                for f in block.flags[o]:
                    flagged[f] = flagged.get(f, 0) + 1
                keep.append(o)
    yield chunk()


def _all_new(block: _Block, seen: dict[str, str], room: int) -> bool:
    """Whether every record of ``block`` is stored as it is: none quarantined, no id seen before or
    twice in the block, and no more records than the ``room`` left in the current chunk."""
    return (not block.quarantined and len(block.outcome) <= room and seen.keys().isdisjoint(block.ids)
            and len(set(block.ids)) == len(block.ids))


def _record_blocks(rows: Iterable[RawRow | CsvLine]) -> Iterator[list[RawRow | CsvLine]]:
    it = iter(rows)
    while block := list(itertools.islice(it, BLOCK_ROWS)):
        yield block


def _meta_json(extra: dict[str, object]) -> str | None:
    """Unmapped columns, kept as JSON with their text values redacted."""
    if not extra:
        return None
    clean = {}
    for k, v in extra.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, int | float) and not isinstance(v, bool):  # a phone number typed as a number
            red = redact(str(v))
            v = red.text if red.found else v
        elif not isinstance(v, str | bool):  # lists, objects, dates: kept, unless they hold PII
            red = redact(normalize_text(json.dumps(v, ensure_ascii=False, default=str)))
            v = red.text if red.found else v
        clean[redact(normalize_text(str(k))).text] = redact(normalize_text(v)).text if isinstance(v, str) else v
    return json.dumps(clean, ensure_ascii=False, default=str) if clean else None
