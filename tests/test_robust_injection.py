"""Injection: source names, channel names, topic names, column names and CLI filters that carry
quotes, SQL or HTML are stored as they are and queried with parameters, never spliced into SQL
(nor into the report's HTML)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from nlp import TaxonomyError, load_taxonomy
from pipelines.config import Settings
from pipelines.enrich import enrich_pending, sync_topics
from pipelines.ingest import ingest_file
from pipelines.painpoints import compute_pain_points
from pipelines.records import ColumnMap
from pipelines.report import build_report
from pipelines.warehouse import Warehouse

SQL = "x'); DROP TABLE feedback; --"
CHANNEL = "<img src=x onerror=alert(1)>'\"; DELETE FROM backlog; --"
TEAM = "客服'); DROP TABLE topics; --"
TEXT_COL = 'te"xt\'; --'

TAXONOMY = f"""
topics:
  wait_time:
    name: "等待时长'); DROP TABLE pain_points; --"
    stage: after_sales
    team: "{TEAM}"
    keywords: [排队, "等了'很久", 太慢]
  app:
    name: <b>App</b>
    stage: usage
    team: 数字渠道部
    keywords: [闪退, "' OR '1'='1"]
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse whose names are all hostile: ingested, scored and ranked in-process."""
    root = tmp_path_factory.mktemp("inject")
    home = root / "home"
    home.mkdir()
    tax = root / "taxonomy.yaml"
    tax.write_text(TAXONOMY, encoding="utf-8")
    f = root / "hostile.csv"
    lines = [f'id,created_at,channel,"{TEXT_COL.replace(chr(34), chr(34) * 2)}"']
    for i in range(30):
        week = 1 + (i % 3) * 7
        lines.append(f'"{SQL}{i}",2026-10-{week:02d} 10:00,"{CHANNEL.replace(chr(34), chr(34) * 2)}",'
                     f'"排队太慢了，App闪退 \' OR \'1\'=\'1 第{i}次"')
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = home / "cx.duckdb"
    wh = Warehouse(db)
    res = ingest_file(wh, f, source=SQL, columns=ColumnMap(text=TEXT_COL), channel=None, run_id="r1", salt=b"s")
    assert res.stored == 30
    settings = Settings.resolve(home, db, tax)
    sync_topics(wh, settings)
    os.environ["CXLOOP_TAXONOMY"] = str(tax)
    try:
        scored = enrich_pending.fn(str(db), str(home), "baseline", "r2")
    finally:
        del os.environ["CXLOOP_TAXONOMY"]
    compute_pain_points(wh, scored["model_version"], "r3", top_n=5, min_negative=0)
    return db


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args, "--db", str(db)], capture_output=True,
                          text=True, env={**os.environ, "CXLOOP_HOME": str(db.parent), "COLUMNS": "250"}, timeout=120)


def _count(db: Path, sql: str, params: list | None = None) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchone()[0]
    finally:
        con.close()


def test_hostile_names_are_stored_as_they_are(db: Path) -> None:
    assert _count(db, "SELECT count(*) FROM feedback WHERE source = ? AND channel = ?", [SQL, CHANNEL]) == 30
    assert _count(db, "SELECT count(*) FROM feedback WHERE starts_with(source_id, ?)", [SQL]) == 30
    assert _count(db, "SELECT count(*) FROM topics WHERE team = ?", [TEAM]) == 1
    assert _count(db, "SELECT count(*) FROM v_pain_points WHERE channel = ? AND neg_count >= 0", [CHANNEL]) > 0
    assert _count(db, "SELECT count(*) FROM backlog WHERE channel = ?", [CHANNEL]) > 0
    for table in ("feedback", "topics", "pain_points", "backlog"):
        assert _count(db, f"SELECT count(*) FROM {table}") > 0  # nothing was dropped or emptied


def test_cli_filters_are_parameters(db: Path) -> None:
    everything = _cli(db, "backlog")
    assert everything.returncode == 0 and "BL-" in everything.stdout, everything.stderr
    injected = _cli(db, "backlog", "--status", "new' OR '1'='1")
    assert injected.returncode == 0 and "BL-" not in injected.stdout  # no status is called that
    r = _cli(db, "backlog", "show", "BL-x' OR '1'='1")
    assert r.returncode == 1 and r.stderr.startswith("error: no backlog item")
    r = _cli(db, "painpoints", "--week", "2026-10-26'; DROP TABLE feedback; --")
    assert r.returncode == 1 and [ln for ln in r.stderr.splitlines() if ln.strip()][0].startswith("error:")
    item = duckdb.connect(str(db), read_only=True).execute("SELECT item_id FROM backlog LIMIT 1").fetchone()[0]
    r = _cli(db, "backlog", "note", item, "'); DROP TABLE backlog_history; --", "--by", "o'brien\"; --")
    assert r.returncode == 0, r.stderr
    assert _count(db, "SELECT count(*) FROM backlog_history WHERE note = ? AND actor = ?",
                  ["'); DROP TABLE backlog_history; --", "o'brien\"; --"]) == 1
    assert _count(db, "SELECT count(*) FROM feedback") == 30


@pytest.mark.parametrize("query", ["DELETE FROM feedback", "DROP TABLE feedback",
                                   "SELECT 1; DROP TABLE feedback", "CREATE TABLE x AS SELECT 1"])
def test_cxloop_sql_is_read_only(db: Path, query: str) -> None:
    r = _cli(db, "sql", query)
    assert r.returncode == 1 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _count(db, "SELECT count(*) FROM feedback") == 30


def test_the_report_escapes_what_customers_and_taxonomies_wrote(db: Path) -> None:
    page, _ = build_report(db)
    assert "<img src=x" not in page and "<b>App</b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page or "&lt;img" in page


def test_topic_keys_cannot_carry_sql(tmp_path: Path) -> None:
    f = tmp_path / "taxonomy.yaml"
    f.write_text("topics:\n  \"a'; DROP TABLE topics; --\":\n    name: x\n    stage: usage\n    team: t\n"
                 "    keywords: [x]\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="must be lower_snake_case"):
        load_taxonomy(f)
