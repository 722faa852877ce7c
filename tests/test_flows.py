"""End-to-end: the main job on the sample data against a real DuckDB file and a real Prefect API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nlp import default_segmenter, redact, split_words
from pipelines.warehouse import Warehouse

pytestmark = pytest.mark.usefixtures("prefect_server")

HASH_COLUMN = re.compile(r"(_id|_ids|_key|sha256)$")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from pipelines.flows import cx_loop_flow

    home = tmp_path_factory.mktemp("home")
    db = home / "cx.duckdb"
    result = cx_loop_flow(db=str(db), home=str(home))
    return db, result


def test_main_job_stores_scores_ranks_and_fills_the_backlog(first_run: tuple[Path, dict]) -> None:
    db, result = first_run
    counts = result["ingest"]["counts"]
    assert counts["files"] == 6
    assert counts["read"] == counts["stored"] + counts["duplicates"] + counts["quarantined"]
    assert counts["stored"] > 800 and counts["duplicates"] >= 10 and 3 <= counts["quarantined"] <= 10
    wh = Warehouse(db)
    assert wh.scalar("SELECT count(*) FROM feedback") == counts["stored"]
    assert wh.scalar("SELECT count(*) FROM feedback_nlp") == counts["stored"]
    assert wh.scalar("SELECT count(*) FROM v_feedback WHERE sentiment IS NULL") == 0
    assert wh.scalar("SELECT count(DISTINCT channel) FROM feedback") >= 5
    assert result["pain_points"]["backlog_items"] == 10
    top = wh.query("SELECT topic, channel FROM v_pain_points WHERE period_start = DATE '2026-10-26' "
                   "ORDER BY priority DESC LIMIT 3").to_pylist()
    assert any(r["topic"] == "digital_experience" for r in top)  # the App 8.2 spike leads
    # ingest, enrich, pain_points, verify, suggest_topics
    assert wh.scalar("SELECT count(*) FROM runs WHERE status = 'completed'") == 5
    import pipelines.enrich

    assert pipelines.enrich._PRELOAD is None   # the model preloaded during ingest was used, no thread left


def test_stored_tokens_split_into_the_segmenters_words(first_run: tuple[Path, dict]) -> None:
    db, _ = first_run
    rows = Warehouse(db).query("SELECT f.text, n.tokens, string_split(n.tokens, ' ') AS listed FROM feedback f "
                               "JOIN feedback_nlp n USING (feedback_id)").to_pylist()
    words = default_segmenter().cut_many([r["text"] for r in rows])
    assert len(rows) > 800
    assert [split_words(r["tokens"]) for r in rows] == words
    assert [r["listed"] for r in rows if r["tokens"]] == [w for w in words if w]   # the same in SQL


def test_the_gbk_file_reads_as_chinese(first_run: tuple[Path, dict]) -> None:
    db, _ = first_run
    texts = Warehouse(db).query("SELECT text FROM feedback WHERE source = 'hotline_notes_gbk'").column("text")
    assert len(texts) > 100 and all("客户" in t or "来电" in t for t in texts.to_pylist()[:20])


def test_no_pii_in_any_text_column(first_run: tuple[Path, dict]) -> None:
    db, _ = first_run
    wh = Warehouse(db)
    cols = wh.query("SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE data_type IN ('VARCHAR', 'VARCHAR[]', 'JSON')").to_pylist()
    assert cols
    scanned = 0
    for c in cols:
        if HASH_COLUMN.search(c["column_name"]):  # hex digests, not customer text
            continue
        values = wh.query(f'SELECT CAST("{c["column_name"]}" AS VARCHAR) AS v FROM "{c["table_name"]}"').column("v")
        for v in values.to_pylist():
            assert v is None or not redact(v).found, (c, v)  # a validated phone/ID/card/e-mail left behind
            scanned += v is not None
    assert scanned > 5000
    assert wh.scalar("SELECT count(*) FROM feedback WHERE pii_found IS NOT NULL") >= 20


def test_second_run_adds_nothing_and_keeps_human_decisions(first_run: tuple[Path, dict], tmp_path: Path) -> None:
    from pipelines.flows import cx_loop_flow

    db, _ = first_run
    wh = Warehouse(db)
    item = wh.query("SELECT item_id FROM backlog ORDER BY priority DESC LIMIT 1").column("item_id")[0].as_py()
    with wh.transaction() as con:
        con.execute("UPDATE backlog SET status = 'in_progress', owner_team = '手机银行项目组' WHERE item_id = ?",
                    [item])
    before = {t: wh.scalar(f"SELECT count(*) FROM {t}") for t in ("feedback", "quarantine", "backlog",
                                                                   "feedback_nlp", "pain_points")}
    result = cx_loop_flow(db=str(db), home=str(db.parent))
    assert result["ingest"]["counts"]["stored"] == 0 and result["enrich"]["scored"] == 0
    after = {t: wh.scalar(f"SELECT count(*) FROM {t}") for t in before}
    assert after == before
    row = wh.query("SELECT status, owner_team FROM backlog WHERE item_id = ?", [item]).to_pylist()[0]
    assert row == {"status": "in_progress", "owner_team": "手机银行项目组"}


def test_renamed_copy_of_a_file_adds_no_rows(first_run: tuple[Path, dict], sample_copy: Path) -> None:
    from pipelines.ingest import ingest_flow

    db, _ = first_run
    before = Warehouse(db).scalar("SELECT count(*) FROM feedback")
    f = sample_copy / "app_reviews.csv"
    f.write_bytes(f.read_bytes() + b"\n")  # different bytes, same records
    r = ingest_flow(paths=[str(f)], db=str(db), home=str(db.parent), source="app_reviews")
    assert r["counts"]["stored"] == 0 and r["counts"]["duplicates"] > 200
    assert Warehouse(db).scalar("SELECT count(*) FROM feedback") == before


def test_unchanged_inputs_keep_the_ranking_and_new_feedback_recomputes_it(first_run: tuple[Path, dict],
                                                                          tmp_path: Path) -> None:
    from pipelines.emerging import suggest_topics_flow
    from pipelines.enrich import enrich_flow
    from pipelines.ingest import ingest_flow
    from pipelines.painpoints import pain_points_flow

    db, _ = first_run
    common = {"db": str(db), "home": str(db.parent)}
    wh = Warehouse(db)
    cube = "SELECT * EXCLUDE (run_id, computed_at) FROM pain_points ORDER BY ALL"
    pain_points_flow(**common)
    suggest_topics_flow(**common)
    rows = wh.query(cube)
    again = pain_points_flow(**common)
    assert again["unchanged"] is True and again["alerts_new"] == 0 and wh.query(cube) == rows
    assert suggest_topics_flow(**common)["unchanged"] is True

    newest = wh.scalar("SELECT max(created_at) FROM feedback")
    f = tmp_path / "late.csv"
    f.write_text("id,created_at,channel,text\n"
                 f"LATE-1,{newest:%Y-%m-%d %H:%M:%S},app_review,快递一个星期都没到，物流太慢了，客服也不回复\n",
                 encoding="utf-8")
    assert enrich_flow(**common)["unchanged"] is True   # nothing new: no join over the whole table
    ingest_flow(paths=[str(f)], source="late", **common)
    scored = enrich_flow(**common)
    assert scored["unchanged"] is False and scored["scored"] == 1
    after = pain_points_flow(**common)
    assert after["unchanged"] is False and wh.query(cube) != rows
    assert suggest_topics_flow(**common)["unchanged"] is False


def test_feedback_stored_while_enrich_scores_is_scored_by_the_next_run(first_run: tuple[Path, dict], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.enrich as enrich_mod
    from pipelines.ingest import ingest_flow

    db, _ = first_run
    common = {"db": str(db), "home": str(db.parent)}
    files = []
    for n in range(2):
        files.append(tmp_path / f"during-{n}.csv")
        files[-1].write_text(f"id,created_at,channel,text\nDURING-{n},2026-09-01 10:00:00,app_review,"
                             f"第{n}次反馈：退款申请提交一周了还没有到账\n", encoding="utf-8")
    real = enrich_mod._enrich

    def scoring_while_a_file_arrives(*args: object, **kwargs: object) -> dict:
        out = real(*args, **kwargs)
        ingest_flow(paths=[str(files[1])], source="during", **common)   # another process, as far as enrich knows
        return out

    ingest_flow(paths=[str(files[0])], source="during", **common)
    monkeypatch.setattr(enrich_mod, "_enrich", scoring_while_a_file_arrives)
    assert enrich_mod.enrich_flow(**common)["scored"] == 1
    monkeypatch.setattr(enrich_mod, "_enrich", real)
    late = enrich_mod.enrich_flow(**common)
    assert late["unchanged"] is False and late["scored"] == 1
    assert Warehouse(db).scalar("SELECT count(*) FROM feedback f ANTI JOIN feedback_nlp USING (feedback_id)") == 0
    assert enrich_mod.enrich_flow(**common)["unchanged"] is True
