"""Reading files in every supported format and encoding, and what happens to bad rows."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nlp import dedup_key
from pipelines.records import ColumnMap, parse_score, parse_timestamp, prepare_file, text_key
from pipelines.sources import SourceError, discover, read_file

HEADER = "id,created_at,channel,rating,text\n"


def _prep(path: Path, columns: ColumnMap | None = None):
    return prepare_file(read_file(path), path.stem, columns or ColumnMap(), run_id="r1", salt=b"s",
                        now=datetime(2026, 11, 1, 12))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"])
def test_csv_encodings(tmp_path: Path, encoding: str) -> None:
    f = tmp_path / "x.csv"
    f.write_bytes((HEADER + "1,2026-10-01 10:00,hotline,2,客户反映排队太久了\n").encode(encoding))
    p = _prep(f)
    assert p.feedback.column("text").to_pylist() == ["客户反映排队太久了"]
    assert p.quarantine.num_rows == 0


def test_undecodable_line_is_quarantined_not_the_file(tmp_path: Path) -> None:
    f = tmp_path / "mixed.csv"
    good = (HEADER + "1,2026-10-01,app_review,1,闪退严重\n2,2026-10-02,app_review,5,很好用\n").encode()
    f.write_bytes(good + b"3,2026-10-03,app_review,3,\xff\xfe\xfa bad\n")
    p = _prep(f)
    assert p.feedback.num_rows == 2
    assert p.quarantine.column("reason").to_pylist() == ["undecodable bytes (file read as utf-8)"]
    assert "\ufffd" in p.quarantine.column("payload")[0].as_py()


def test_bad_rows_each_get_a_reason(tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    long_text = "长" * 100_000
    f.write_text(HEADER + "\n".join([
        "1,2026-10-01,hotline,1,",                      # empty text
        "2,2026-10-01,hotline,1,   ",                   # whitespace only
        f"3,2026-10-01,hotline,1,{long_text}",           # 100,000 characters
        "4,2026-10-01,hotline,1,a,b,c",                 # malformed line
        "5,2026-10-01,hotline,five stars,评分写错了但内容有用",  # wrong-typed rating: kept, flagged
        "6,,hotline,3,没有时间的反馈",                   # missing time: ingest time, flagged
        "7,2026-10-01,hotline,4,电话13812345678请回电",   # PII: redacted
    ]) + "\n", encoding="utf-8")
    p = _prep(f)
    reasons = p.quarantine.column("reason").to_pylist()
    assert reasons == ["empty text", "empty text", "text too long: 100000 chars (limit 20000)",
                       "malformed CSV line: expected 5 fields, got 7"]
    rows = {r["source_id"]: r for r in p.feedback.to_pylist()}
    assert rows["5"]["rating"] is None and rows["5"]["flags"] == ["rating_invalid"]
    assert rows["6"]["flags"] == ["created_at_missing"] and rows["6"]["created_at"] == datetime(2026, 11, 1, 12)
    assert rows["7"]["text"] == "电话<PHONE>请回电" and json.loads(rows["7"]["pii_found"]) == {"phone": 1}
    assert sum(len(x.as_py()) for x in p.quarantine.column("payload")) < 10_000


def test_pii_never_reaches_the_quarantine(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": 1, "text": "", "note": "13812345678"}\n{"id": 2, "text": "电话13912345678\n',
                 encoding="utf-8")
    p = _prep(f)
    assert p.quarantine.num_rows == 2
    for payload in p.quarantine.column("payload").to_pylist():
        assert "1381234" not in payload and "1391234" not in payload and "<PHONE>" in payload


def test_jsonl_parquet_excel(tmp_path: Path) -> None:
    rows = [{"id": "a", "created_at": datetime(2026, 10, 1, 9), "text": "物流太慢", "nps": 3},
            {"id": "b", "created_at": datetime(2026, 10, 2, 9), "text": "很满意", "nps": 10}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    import pandas as pd

    pd.DataFrame(rows).to_excel(tmp_path / "x.xlsx", index=False)
    (tmp_path / "j.jsonl").write_text("\n".join(json.dumps({**r, "created_at": str(r["created_at"])})
                                                for r in rows) + "\n", encoding="utf-8")
    for name in ("p.parquet", "x.xlsx", "j.jsonl"):
        p = _prep(tmp_path / name)
        assert p.feedback.column("text").to_pylist() == ["物流太慢", "很满意"], name
        assert p.feedback.column("nps").to_pylist() == [3, 10], name


def test_duplicates_in_one_file(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_text(HEADER + "1,2026-10-01,hotline,1,一样的内容\n1,2026-10-01,hotline,1,一样的内容\n"
                 "1,2026-10-01,hotline,1,同一个编号不同的内容\n", encoding="utf-8")
    p = _prep(f)
    assert p.feedback.num_rows == 1 and p.duplicates == 1
    assert p.quarantine.column("reason").to_pylist() == ["duplicate id '1' with a different text"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=("Cs",)), max_size=40), min_size=1, max_size=20))
def test_text_key_is_what_migration_007_stores(keys: list[str]) -> None:
    """Ingest's text_key of a dedup key is the number migration 007 turned stored keys into, so a text
    ingested before an upgrade and one ingested after it keep one key."""
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE k (i INTEGER, key VARCHAR)")
        con.executemany("INSERT INTO k VALUES (?, ?)", list(enumerate(keys)))
        migrated = [v for _, v in con.execute("SELECT i, left(md5(key), 16) FROM k ORDER BY i").fetchall()]
    finally:
        con.close()
    assert migrated == [text_key(k) for k in keys]


def test_one_text_key_for_texts_that_differ_in_width_case_and_punctuation(tmp_path: Path) -> None:
    f = tmp_path / "w.jsonl"
    f.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                         for t in ("物流太慢了！ＡＢＣ", "物流太慢了!abc", "物流太慢了。。abc", "物流太快了 abc")),
                 encoding="utf-8")
    p = _prep(f)
    stored = p.feedback.column("text_key").to_pylist()
    assert p.feedback.num_rows == 2 and p.duplicates == 2   # no id: the same key is the same feedback
    assert stored[0] == text_key(dedup_key("物流太慢了abc")) and stored[0] != stored[1] and len(stored[0]) == 16


def test_column_mapping_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("编号,内容\n1,很好\n", encoding="utf-8")
    assert _prep(f).feedback.column("text").to_pylist() == ["很好"]  # Chinese header aliases
    with pytest.raises(SourceError, match=r"x.csv: no column 'body'"):
        _prep(f, ColumnMap(text="body"))
    g = tmp_path / "y.csv"
    g.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(SourceError, match="no text column found"):
        _prep(g)


def test_discover_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        discover(tmp_path / "missing.csv")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="no supported files"):
        discover(tmp_path)
    with pytest.raises(SourceError, match="unsupported file type"):
        discover(tmp_path / "notes.txt")


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-10-01 08:30:00", datetime(2026, 10, 1, 8, 30)), ("2026/10/01 08:30", datetime(2026, 10, 1, 8, 30)),
    ("2026年10月1日", datetime(2026, 10, 1)), ("2026-10-01T00:30:00Z", datetime(2026, 10, 1, 8, 30)),
    (1790000000, datetime(2026, 9, 21, 22, 13, 20)), ("yesterday", None), (None, None),
])
def test_timestamps(value: object, expected: datetime | None) -> None:
    assert parse_timestamp(value) == expected


def test_scores() -> None:
    assert parse_score("4", 1, 5) == (4, True)
    assert parse_score("5星", 1, 5) == (5, True)
    assert parse_score(4.0, 1, 5) == (4, True)
    assert parse_score("五星", 1, 5) == (None, False)
    assert parse_score(15, 0, 10) == (None, False)
    assert parse_score("", 0, 10) == (None, True)


def test_quarantine_payload_is_the_right_line_after_unicode_line_separators(tmp_path: Path) -> None:
    f = tmp_path / "sep.csv"
    f.write_text(HEADER + "1,2026-10-01,hotline,1,第一行\u2028还是第一条\n2,2026-10-01,hotline,1,a,b\n",
                 encoding="utf-8")
    p = _prep(f)
    assert p.quarantine.column("payload").to_pylist() == ["2,2026-10-01,hotline,1,a,b"]


def test_a_file_is_read_as_its_records_are_iterated(tmp_path: Path) -> None:
    """read_file gives the columns at once and reads the records from disk on each pass (a file of a
    million rows is never held whole); a quote left open resumes on the next line of the stream."""
    f = tmp_path / "s.csv"
    f.write_text(HEADER + "1,2026-10-01,hotline,1,\"引号没有关上\n2,2026-10-01,hotline,1,第二条\n"
                 "3,2026-10-01,app_review,2,\"第三条,有逗号\"\n", encoding="utf-8")
    src = read_file(f)
    assert src.columns == HEADER.strip().split(",") and not isinstance(src.rows, list)
    first = list(src.rows)
    assert [(r.locator, r.error is not None) for r in first] == [("s.csv:2", True), ("s.csv:3", False),
                                                                 ("s.csv:4", False)]
    assert first[2].fields["text"] == "第三条,有逗号" and first[0].raw.startswith("1,2026-10-01")
    assert list(src.rows) == first
    lines = (tmp_path / "j.jsonl")
    lines.write_text('{"text": "一"}\n\n{"text": "二", "渠道": "app"}\n', encoding="utf-8")
    src = read_file(lines)
    assert src.columns == ["text", "渠道"]  # every key any line has, found before the records are prepared
    assert [r.locator for r in src.rows] == ["j.jsonl:1", "j.jsonl:3"]


def test_parallel_preparation_gives_the_serial_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records are prepared in blocks by worker processes while this process finds duplicates in file order:
    every table and count equals the in-process result, and for a CSV file the result with every record parsed
    by this process, for the sample data, the bad-input corpus, and a file whose duplicates (the same text, or
    the same id with another text) fall in other blocks and across chunk boundaries; and a block taken whole
    (``records._all_new``) gives what its records give one by one."""
    from fixtures.bad_input import make_corpus

    import pipelines.records as records

    monkeypatch.setattr(records, "BLOCK_ROWS", 4)            # tiny blocks: every file of a dozen records forks
    monkeypatch.setattr(records, "PARALLEL_MIN_BLOCKS", 2)
    make_corpus(tmp_path / "bad")
    dup = tmp_path / "dup.csv"
    lines = [f"{i % 9},2026-10-{1 + i % 28:02d},hotline,{1 + i % 5},第{i % 9}个问题"
             + ("，换了说法" if i % 13 == 5 else "") for i in range(60)]
    lines += ["x,2026-10-01,hotline,9,", "y,not a date,hotline,2,<PHONE> 13812345678 还没回电"]
    dup.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    files = [dup, *sorted(sample.iterdir()), *sorted((tmp_path / "bad").rglob("*.*"))]
    compared = 0

    def prep(src, name: str, workers: int):
        return list(records.prepare_chunks(src, name, ColumnMap(), run_id="r1", salt=b"s",
                                           now=datetime(2026, 11, 1, 12), chunk_rows=7, workers=workers))

    for path in files:
        if path.suffix not in (".csv", ".jsonl", ".parquet", ".xlsx", ".json", ".txt", ".tsv"):
            continue
        try:
            src_a, src_b = read_file(path), read_file(path)
        except SourceError:
            continue
        try:
            serial = prep(src_a, path.stem, 1)
        except SourceError:
            continue
        parallel = prep(src_b, path.stem, 2)
        parsed = read_file(path)   # a CSV file's records all parsed by this process (no lines left to the workers)
        parsed.items = None
        with monkeypatch.context() as m:   # every block a record at a time, none taken whole
            m.setattr(records, "_all_new", lambda *_: False)
            one_by_one = prep(read_file(path), path.stem, 2)
        for other in (parallel, prep(parsed, path.stem, 2), one_by_one):
            assert len(serial) == len(other), path
            for a, b in zip(serial, other, strict=True):
                assert a.feedback.equals(b.feedback) and a.quarantine.equals(b.quarantine), path
                assert (a.duplicates, a.flagged, a.reasons, a.read) == (b.duplicates, b.flagged, b.reasons, b.read), \
                    path
        compared += sum(p.read for p in serial)
    d = _prep(dup)
    assert d.duplicates > 30 and "duplicate id" in " ".join(d.quarantine.column("reason").to_pylist())
    assert compared > 300


_CSV_PIECES = st.sampled_from([",", '"', '""', "\n", "\r\n", "\r", "\t", " ", "\x00", "a", "好评", "\u2028", "1",
                               "\udcff"])


@settings(max_examples=300, deadline=None)
@given(body=st.lists(_CSV_PIECES, max_size=60).map("".join), tsv=st.booleans())
def test_csv_lines_left_unparsed_become_the_records_the_reader_gives(body: str, tsv: bool) -> None:
    """``SourceFile.items`` leaves a CSV file's plain lines (no quote) for the workers to
    parse: each such line, parsed by ``CsvLayout.row``, is the record the csv reader gives, in the
    same place among the others, on any text (quotes left open, blank lines, NULs, every line end)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / ("f.tsv" if tsv else "f.csv")
        path.write_text(("id\ttext\n" if tsv else "id,text\n") + body, encoding="utf-8", errors="surrogateescape",
                        newline="")
        src = read_file(path)
        assert src.csv_layout is not None and src.items is not None
        assert [src.csv_layout.row(i) if isinstance(i, tuple) else i for i in src.items] == list(src.rows)
