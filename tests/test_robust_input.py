"""Input nobody cleaned: every record of every bad file ends in ``feedback`` or in ``quarantine``
(or is recognised as a duplicate), the counts add up, nothing crashes, a file no reader can open
is named and the others are still stored, and no customer's phone, ID card, bank card or e-mail
reaches any table or view. The corpus is generated (tests/fixtures/bad_input.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from fixtures.bad_input import Case, make_corpus
from fixtures.warehouse_checks import scan_pii
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlp import redact
from pipelines.records import ColumnMap, prepare_chunks, prepare_file
from pipelines.sources import SourceError, read_file

NOW = datetime(2026, 11, 1, 12)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    folder = tmp_path_factory.mktemp("bad-input") / "corpus"
    return folder, make_corpus(folder, seed=7)


def _prepare(path: Path, source: str):
    src = read_file(path)
    return src, prepare_file(src, source, ColumnMap(), run_id="r", salt=b"s", now=NOW)


def test_corpus_covers_every_category(corpus: tuple[Path, list[Case]]) -> None:
    _, cases = corpus
    categories = Counter(c.category for c in cases)
    assert len(categories) >= 20, categories
    assert sum(c.records for c in cases) >= 100


def test_every_record_of_every_file_is_accounted_for(corpus: tuple[Path, list[Case]]) -> None:
    folder, cases = corpus
    for case in cases:
        if case.fails:
            with pytest.raises(SourceError, match=case.path):
                read_file(folder / case.path)
            continue
        src, p = _prepare(folder / case.path, case.source)
        got = (len(list(src.rows)), p.read, p.feedback.num_rows, p.quarantine.num_rows, p.duplicates)
        assert got == (case.records, case.records, case.stored, case.quarantined, case.duplicates), case
        assert all(p.quarantine.column("reason").to_pylist()), case  # every quarantined row says why


def test_records_prepared_in_small_chunks_are_the_records_prepared_at_once(corpus: tuple[Path, list[Case]]) -> None:
    """Ingest prepares a file a chunk at a time; duplicates are still found across chunks."""
    folder, cases = corpus
    for case in cases:
        if case.fails:
            continue
        src, whole = _prepare(folder / case.path, case.source)
        parts = list(prepare_chunks(src, case.source, ColumnMap(), run_id="r", salt=b"s", now=NOW, chunk_rows=3))
        n = len(list(src.rows))
        assert [p.read for p in parts] == [3] * (n // 3) + [n % 3] * (n % 3 > 0 or n == 0), case
        assert pa.concat_tables([p.feedback for p in parts]).equals(whole.feedback), case
        assert pa.concat_tables([p.quarantine for p in parts]).equals(whole.quarantine), case
        assert sum(p.duplicates for p in parts) == whole.duplicates, case


def test_what_becomes_of_the_tricky_records(corpus: tuple[Path, list[Case]]) -> None:
    folder, _ = corpus

    def texts(name: str) -> list[str]:
        return _prepare(folder / name, Path(name).stem)[1].feedback.column("text").to_pylist()

    def reasons(name: str) -> list[str]:
        return _prepare(folder / name, Path(name).stem)[1].quarantine.column("reason").to_pylist()

    assert "客服态度太差了,电话一直没人接" in texts("big5.csv")  # Big5, read as Big5, simplified
    assert any("𠮷" in t for t in texts("gb18030.csv"))
    assert reasons("mixed_lines.csv") == ["undecodable bytes (file read as utf-8)"] * 2
    assert reasons("truncated_utf8.csv") == ["undecodable bytes (file read as utf-8)"]
    assert reasons("truncated_utf16.csv") == ["undecodable bytes (file read as utf-16)"]
    assert "中间有空字节的反馈,App闪退" in texts("nul_bytes.csv")
    quotes = reasons("csv_quotes.csv")  # an unclosed quote no longer swallows the lines after it
    assert quotes[0].startswith("malformed CSV line: unbalanced quote") and quotes[1].startswith("malformed CSV")
    assert len(texts("csv_quotes.csv")) == 4 and not any("\n" in t for t in texts("csv_quotes.csv"))
    assert reasons("huge_json.jsonl") == ["text too long: 1000000 chars (limit 20000)"]
    emoji = texts("emoji_zero_width.csv")
    assert "😡😡😡 App又闪退了!!👎" in emoji and "送餐太慢了(零宽字符)" in emoji
    rows = {r["source_id"]: r for r in _prepare(folder / "dates.csv", "dates")[1].feedback.to_pylist()}
    assert rows["dt-0"]["created_at"] == datetime(2026, 10, 1, 10)
    assert rows["dt-2"]["created_at"] == datetime(2026, 10, 3, 14, 30)
    assert rows["dt-5"]["created_at"] == datetime(2026, 10, 5, 16)  # 08:00Z is 16:00 in Shanghai
    assert rows["dt-8"]["flags"] == ["created_at_future"]
    assert rows["dt-9"]["flags"] == ["created_at_invalid"] and rows["dt-10"]["flags"] == ["created_at_missing"]
    ratings = {r["source_id"]: (r["rating"], r["flags"])
               for r in _prepare(folder / "ratings.csv", "ratings")[1].feedback.to_pylist()}
    assert ratings["rt-0"] == (None, ["rating_invalid"]) and ratings["rt-5"] == (4, [])
    assert ratings["rt-4"] == (None, ["rating_invalid"]) and ratings["rt-8"] == (None, [])
    excel = _prepare(folder / "excel_merged.xlsx", "excel_merged")[1].feedback.to_pylist()
    assert all(json.loads(r["meta"])["联系电话"] == "<PHONE>" for r in excel)  # a phone typed as a number


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".xlsx", ".parquet"]),
       prefix=st.sampled_from([b"", b"id,text\n", b"\xef\xbb\xbfid,text\n", b"\xff\xfe", b'{"text": "']))
def test_random_bytes_never_crash_the_reader(tmp_path: Path, data: bytes, suffix: str, prefix: bytes) -> None:
    f = tmp_path / f"fuzz{suffix}"
    f.write_bytes(prefix + data)
    try:
        src, p = _prepare(f, "fuzz")
    except SourceError as e:  # a file that cannot be read at all: one line naming it
        assert str(f) in str(e) and "\n" not in str(e)
        return
    assert len(list(src.rows)) == p.read == p.feedback.num_rows + p.quarantine.num_rows + p.duplicates


def test_the_whole_corpus_through_the_cli(corpus: tuple[Path, list[Case]], tmp_path: Path) -> None:
    """``cxloop run`` on the corpus: the damaged file is named on one ``error:`` line (exit 1), every
    other file is stored with its counts, and the PII scan finds nothing in any table or view."""
    folder, cases = corpus
    home = tmp_path / "home"
    env = {**os.environ, "CXLOOP_HOME": str(home), "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(folder), "--model", "baseline"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "corrupt.xlsx" in errors[0], r.stderr[-3000:]
    db = home / "cx.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = dict(con.execute("SELECT source, count(*) FROM feedback GROUP BY 1").fetchall())
        quarantined = dict(con.execute("SELECT source, count(*) FROM quarantine GROUP BY 1").fetchall())
        files = {Path(p).name: (read, dup) for p, read, dup in con.execute(
            "SELECT path, rows_read, rows_duplicate FROM source_files").fetchall()}
        scored = con.execute("SELECT count(*) FROM feedback_nlp").fetchone()[0]
        ingest = con.execute("SELECT status, error FROM runs WHERE flow = 'ingest'").fetchall()
    finally:
        con.close()
    pii_source = "pii_fields"  # the source name is stored redacted only where it holds PII: not here
    for c in cases:
        name = Path(c.path).name
        if c.fails:
            assert name not in files  # not marked as ingested: the next run tries it again
            continue
        assert files[name] == (c.records, c.duplicates), c
        assert (stored.get(c.source, 0), quarantined.get(c.source, 0)) == (c.stored, c.quarantined), c
    assert pii_source in stored
    assert scored == sum(stored.values()) == sum(c.stored for c in cases)
    assert ingest == [("partial", ingest[0][1])] and "corrupt.xlsx" in ingest[0][1]
    cells, found = scan_pii(db)
    assert cells > 1000 and found == [], found[:5]


@pytest.mark.usefixtures("prefect_server")
def test_a_failing_file_is_recorded_the_others_stored_and_the_next_run_retries_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest flow itself: a file that fails after its retries does not stop the files after it;
    a transient error is retried; the failed file is not marked ingested, so a later run takes it."""
    import openpyxl

    from pipelines import ingest

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text("id,text\n1,送餐太慢了\n2,客服很好\n", encoding="utf-8")
    (folder / "b.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    (folder / "c.csv").write_text("id,text\n3,App闪退\n", encoding="utf-8")
    flaky = {"c.csv": 1}  # c.csv fails once (a file still being copied), then reads
    real = ingest.ingest_file

    def sometimes_failing(wh, path, **kw):  # noqa: ANN001, ANN202
        if flaky.get(path.name):
            flaky[path.name] -= 1
            raise OSError(f"{path}: resource temporarily unavailable")
        return real(wh, path, **kw)

    monkeypatch.setattr(ingest, "ingest_file", sometimes_failing)
    db = tmp_path / "cx.duckdb"
    r = ingest.ingest_flow(paths=[str(folder)], db=str(db), home=str(tmp_path))
    c = r["counts"]
    assert (c["files"], c["files_failed"], c["stored"]) == (3, 1, 3)
    assert c["failed_files"][0]["path"].endswith("b.xlsx") and "b.xlsx: cannot read xlsx file" in \
        c["failed_files"][0]["error"]
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT status FROM runs WHERE flow = 'ingest'").fetchone() == ("partial",)
        assert con.execute("SELECT count(*) FROM source_files").fetchone() == (2,)
    finally:
        con.close()
    wb = openpyxl.Workbook()
    wb.active.append(["id", "text"])
    wb.active.append(["4", "退款一直没到账"])
    wb.save(folder / "b.xlsx")  # fixed: the next run takes it, and only it
    r = ingest.ingest_flow(paths=[str(folder)], db=str(db), home=str(tmp_path))
    assert (r["counts"]["files_failed"], r["counts"]["files_skipped"], r["counts"]["stored"]) == (0, 2, 1)


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**40, max_value=10**40),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
              st.datetimes(timezones=st.one_of(st.none(), st.timezones())), st.dates(),
              st.sampled_from(["13812345678", "2026-10-05T08:00:00+08:00", "0001-01-01T00:00:00+08:00", "5星", "",
                               " "])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
FIELDS = ["id", "text", "created_at", "channel", "product", "customer_id", "rating", "nps", "extra"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(FIELDS), JSONISH, max_size=len(FIELDS)), max_size=8))
def test_any_field_values_end_stored_or_quarantined_and_redacted(records: list[dict]) -> None:
    """Records as JSON lines, Parquet or Excel hand them over (numbers, infinities, dates in any time
    zone, lists, objects): preparing them never raises, every record is accounted for, and no
    stored or quarantined cell holds a validated phone, ID card, bank card or e-mail."""
    from pipelines.sources import RawRow, SourceFile

    src = SourceFile(Path("any.jsonl"), "sha", 0, "utf-8", FIELDS,
                     [RawRow(f"any.jsonl:{i}", {**r, "text": r.get("text", "") if r else None}, None, None)
                      for i, r in enumerate(records, start=1)])
    p = prepare_file(src, "any", ColumnMap(), run_id="r", salt=b"s", now=NOW)
    assert len(records) == p.feedback.num_rows + p.quarantine.num_rows + p.duplicates
    for table in (p.feedback, p.quarantine):
        for name in table.column_names:
            if name in ("feedback_id", "text_key", "customer_key", "quarantine_id"):
                continue
            for v in table.column(name).to_pylist():
                if isinstance(v, str):
                    assert not redact(v).found, (name, v)


def test_customer_ids_are_salted_hashes_and_the_salt_stays_out_of_git(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.config import PROJECT_ROOT, Settings
    from pipelines.records import pseudonymise

    monkeypatch.delenv("CXLOOP_SALT", raising=False)
    salt = Settings(home=tmp_path).salt()
    assert (tmp_path / ".salt").stat().st_mode & 0o077 == 0  # readable by its owner only
    assert Settings(home=tmp_path).salt() == salt  # kept: the same customer keeps the same key
    key = pseudonymise("C000123", salt)
    assert "C000123" not in key and key != pseudonymise("C000123", b"another salt")
    if (PROJECT_ROOT / ".git").exists():
        r = subprocess.run(["git", "check-ignore", "-q", "data/.salt"], cwd=PROJECT_ROOT)
        assert r.returncode == 0, "data/.salt must be ignored by git"
