"""Pain point ranking, the backlog lifecycle and verification after a fix, on constructed data in a
real DuckDB file; the backlog commands as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from test_loop_support import MODEL, START, rows_for, write

from pipelines import backlog
from pipelines.config import LoopConfig
from pipelines.painpoints import Chunk, chunk_plan, compute_pain_points
from pipelines.records import text_key
from pipelines.verify import verify_items
from pipelines.warehouse import Warehouse


def test_smoothing_ranks_a_big_steady_pain_above_a_tiny_new_one(tmp_path: Path) -> None:
    rows = []
    for week in range(5):
        rows += rows_for("wait_time", week, neg=10, other=15, channel="hotline")  # 10/25 every week
        rows += rows_for("filler", week, neg=0, other=10)
    rows += rows_for("digital_experience", 4, neg=3, channel="social")  # 3/3, new this week
    wh = write(tmp_path / "cx.duckdb", rows)
    compute_pain_points(wh, MODEL, "run-1")
    top = wh.query("SELECT topic, neg_count, volume, neg_rate_smoothed, growth_factor, urgency_factor, trend, "
                   "priority, growth FROM v_pain_points WHERE period_start = ? ORDER BY priority DESC",
                   [START + timedelta(weeks=4)]).to_pylist()
    assert [r["topic"] for r in top[:2]] == ["wait_time", "digital_experience"]
    tiny = top[1]
    assert tiny["growth"] == 2  # the raw factors that used to rank it first (3 × 100 % × 2 = 6 > 10 × 40 % = 4)
    assert tiny["neg_rate_smoothed"] < 0.7 and tiny["trend"] == pytest.approx(1.0)
    for r in top:
        assert r["priority"] == pytest.approx(r["neg_count"] * r["neg_rate_smoothed"] * r["growth_factor"]
                                              * r["urgency_factor"], abs=0.01)


def test_cube_rollups_journey_stages_and_nps_drivers(tmp_path: Path) -> None:
    rows = (rows_for("logistics", 0, neg=4, other=2, channel="app_review", nps=2)
            + rows_for("logistics", 0, neg=2, other=0, channel="hotline", product="生鲜")
            + rows_for("price_fees", 0, neg=0, other=6, channel="survey", nps=10)
            + rows_for(["wait_time", "digital_experience"], 0, neg=3, channel="online_chat"))
    wh = write(tmp_path / "cx.duckdb", rows)
    compute_pain_points(wh, MODEL, "run-1")
    cells = {(r["period"], r["channel"], r["product"]): r for r in wh.query(
        "SELECT * FROM v_topic_trend WHERE topic = 'logistics'").to_pylist()}
    assert cells[("week", "*", "*")]["volume"] == 8 and cells[("week", "*", "*")]["neg_count"] == 6
    assert cells[("week", "hotline", "*")]["volume"] == 2 and cells[("month", "*", "生鲜")]["volume"] == 2
    assert cells[("week", "*", "*")]["net_sentiment"] == pytest.approx((2 - 6) / 8)
    assert wh.scalar("SELECT sum(volume) FROM v_topic_trend WHERE topic = 'logistics' AND period = 'day' "
                     "AND channel = '*' AND product = '*'") == 8
    usage = wh.query("SELECT volume, neg_count FROM v_journey_stages WHERE period = 'week' AND stage = 'usage' "
                     "AND channel = '*'").to_pylist()
    assert usage == [{"volume": 3, "neg_count": 3}]  # two usage topics in one feedback count once
    drivers = {r["topic"]: r for r in wh.query("SELECT * FROM v_nps_drivers").to_pylist()}
    assert drivers["logistics"]["nps"] == pytest.approx(-100.0) and drivers["price_fees"]["nps"] == 100.0
    # without logistics' 4 negative detractors the survey NPS goes from (6-6)/12 to 6/8 promoters
    assert drivers["logistics"]["overall_nps"] == pytest.approx(0.0)
    assert drivers["logistics"]["nps_impact"] == pytest.approx(50.0)
    assert drivers["price_fees"]["nps_impact"] == pytest.approx(0.0)


def _weeks(topic: str, negs: list[int], first: int = 0) -> list[dict]:
    return [r for i, n in enumerate(negs) for r in rows_for(topic, first + i, neg=n, channel="online_chat")]


def _filler(weeks: range) -> list[dict]:
    return [r for w in weeks for r in rows_for("filler", w, neg=0, other=20, channel="online_chat")]


def test_a_human_decision_survives_a_rerun_and_every_change_is_history(tmp_path: Path) -> None:
    wh = write(tmp_path / "cx.duckdb", _weeks("wait_time", [6, 6, 7]) + _filler(range(3)))
    compute_pain_points(wh, MODEL, "run-1")
    item = backlog.backlog_item_id("wait_time", "online_chat")
    backlog.set_status(wh, item, "triaged", actor="alice", note="owner meeting")
    backlog.assign(wh, item, "热线优化小组", due=date(2026, 3, 1), actor="alice")
    backlog.add_note(wh, item, "接入排队回拨", actor="bob")
    write(tmp_path / "cx.duckdb", _weeks("wait_time", [9], first=3) + _filler(range(3, 4)))
    compute_pain_points(wh, MODEL, "run-2")
    row = wh.query("SELECT * FROM v_backlog WHERE item_id = ?", [item]).to_pylist()[0]
    assert (row["status"], row["owner_team"], row["due_date"]) == ("triaged", "热线优化小组", date(2026, 3, 1))
    assert row["neg_count"] == 9 and row["last_seen_period"] == START + timedelta(weeks=3)  # evidence refreshed
    hist = [(h["actor"], h["action"], h["old_value"], h["new_value"]) for h in backlog.history(wh, item)]
    assert hist == [("cxloop", "created", None, "new"), ("alice", "status", "new", "triaged"),
                    ("alice", "assign", "运营团队", "热线优化小组"), ("alice", "due", None, "2026-03-01"),
                    ("bob", "note", None, None)]
    with pytest.raises(backlog.BacklogError, match="cannot move .* from triaged to verified"):
        backlog.set_status(wh, item, "verified")
    with pytest.raises(backlog.BacklogError, match="no backlog item"):
        backlog.set_status(wh, "BL-nope", "triaged")


def test_verification_says_verified_reopened_or_waiting(tmp_path: Path) -> None:
    rows = (_weeks("logistics", [12, 12, 12, 12, 3, 3, 3, 3])        # fixed at week 4
            + _weeks("wait_time", [6, 6, 6, 6, 6, 6, 6, 6])          # "fixed" at week 4, flat
            + _weeks("price_fees", [5, 5, 5, 5, 5, 5, 5, 1])         # fixed at week 7: one week of data after
            + _filler(range(8)))
    wh = write(tmp_path / "cx.duckdb", rows)
    compute_pain_points(wh, MODEL, "run-1")
    fix = datetime.combine(START + timedelta(weeks=4), datetime.min.time())
    late = datetime.combine(START + timedelta(weeks=7), datetime.min.time())
    with wh.transaction() as con:
        ids = {t: backlog.ensure_item(con, t, "*", "run-1", datetime.now()) for t in ("logistics", "wait_time",
                                                                                      "price_fees")}
        for topic, when in (("logistics", fix), ("wait_time", fix), ("price_fees", late)):
            backlog.change_status(con, ids[topic], "resolved", "alice", at=when)
    config = LoopConfig()
    assert verify_items(wh, config, "run-2") == {"checked": 3, "verified": 1, "reopened": 1, "waiting": 1,
                                                 "still_verified": 0}
    status = {r["topic"]: r for r in wh.query("SELECT * FROM v_backlog WHERE channel = '*'").to_pylist()}
    assert status["logistics"]["status"] == "verified" and status["logistics"]["p_value"] < 0.05
    assert status["logistics"]["baseline_rate"] > 2 * status["logistics"]["after_rate"]
    assert status["wait_time"]["status"] == "reopened" and "persists" in status["wait_time"]["last_check_reason"]
    assert status["price_fees"]["status"] == "resolved" and status["price_fees"]["last_check"] == "waiting"
    numbers = wh.query("SELECT baseline_n, baseline_neg, after_n, after_neg FROM verifications "
                       "WHERE item_id = ?", [ids["logistics"]]).to_pylist()
    assert numbers == [{"baseline_n": 4 * 43, "baseline_neg": 48, "after_n": 3 * 34 + 30, "after_neg": 12}]
    # complaints without a usable time carry their (much later) ingest time: they are in no window, and a
    # re-run with nothing else new keeps the decision whatever the date
    write(tmp_path / "cx.duckdb", rows_for("logistics", 20, neg=60, channel="online_chat",
                                           flags=["created_at_missing"]))
    assert verify_items(wh, config, "run-2b") == {"checked": 2, "verified": 0, "reopened": 0, "waiting": 1,
                                                  "still_verified": 1}
    # the problem comes back: the verified item is reopened on a later run
    write(tmp_path / "cx.duckdb", _weeks("logistics", [12, 12, 12, 12], first=8) + _filler(range(8, 12)))
    assert verify_items(wh, config, "run-3")["reopened"] == 1
    row = wh.query("SELECT status, last_check_reason FROM v_backlog WHERE item_id = ?",
                   [ids["logistics"]]).to_pylist()[0]
    assert row["status"] == "reopened" and "returned" in row["last_check_reason"]
    assert backlog.history(wh, ids["logistics"])[-1]["actor"] == "cxloop verify"


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CXLOOP_HOME": str(home), "COLUMNS": "200", "CXLOOP_USER": "cli-user"}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_backlog_commands(tmp_path: Path, home: Path) -> None:
    wh = write(home / "cx.duckdb", _weeks("wait_time", [6, 6, 7]) + _filler(range(3)))
    compute_pain_points(wh, MODEL, "run-1")
    item = backlog.backlog_item_id("wait_time", "online_chat")
    for args, message in ((["set-status", item, "verified"], "set by verification"),
                          (["set-status", item, "resolved", "--at", "last tuesday"], "is not a date"),
                          (["note", "BL-nope", "x"], "no backlog item 'BL-nope'")):
        r = _cli("backlog", *args, home=home)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r
    r = _cli("backlog", "assign", item, "热线优化小组", "--due", "2026-03-01", home=home)
    assert r.returncode == 0, r.stderr
    assert _cli("backlog", "set-status", item, "resolved", "--at", "2026-01-20", "--note", "加坐席",
                home=home).returncode == 0
    r = _cli("backlog", "show", item, home=home)
    assert r.returncode == 0 and "热线优化小组" in r.stdout and "cli-user" in r.stdout and "加坐席" in r.stdout
    r = _cli("backlog", "--status", "resolved", home=home)
    assert r.returncode == 0 and item in r.stdout
    assert wh.scalar("SELECT resolved_at FROM backlog WHERE item_id = ?", [item]) == datetime(2026, 1, 20)


def _cube(wh: Warehouse) -> list[dict]:
    return sorted(wh.query("SELECT * EXCLUDE (run_id, computed_at) FROM pain_points").to_pylist(),
                  key=lambda r: (r["period"], str(r["period_start"]), r["topic"], r["channel"], r["product"]))


def test_the_cube_computed_in_small_chunks_equals_the_cube_in_one_statement(tmp_path: Path) -> None:
    rows = []
    for week in range(10):
        for i, (topic, channel) in enumerate([("logistics", "app_review"), ("wait_time", "hotline"),
                                              ("price_fees", "survey"), ("filler", "online_chat")]):
            rows += rows_for(topic, week, neg=(week * 3 + i) % 5 + (6 if topic == "wait_time" else 0),
                             other=2 + (week + i) % 3, channel=channel, product=["外卖", "生鲜"][week % 2],
                             keywords=[topic, f"词{(week + i) % 4}"])
        rows += rows_for(["logistics", "wait_time"], week, neg=week % 3, channel="social")
    wh = write(tmp_path / "cx.duckdb", rows)
    whole = compute_pain_points(wh, MODEL, "run-1")
    expected = _cube(wh)
    assert whole["pain_points"] == len(expected) > 100

    counts = wh.query("SELECT topic, CAST(date_trunc('day', created_at) AS DATE) AS s, count(*) AS n FROM feedback "
                      "JOIN (SELECT feedback_id, unnest(topics) AS topic FROM feedback_nlp) USING (feedback_id) "
                      "GROUP BY ALL").to_pylist()
    plan = chunk_plan([(r["topic"], r["s"], r["n"]) for r in counts], limit=40)
    assert any(c.lo is not None for c in plan)                       # a topic too big for one chunk: split by time
    assert any(c.topics and len(c.topics) > 1 for c in plan) or len(plan) > 4
    split = compute_pain_points(wh, MODEL, "run-2", chunk_mentions=40)
    assert (split["pain_points"], split["latest_period"]) == (whole["pain_points"], whole["latest_period"])
    assert _cube(wh) == expected


def test_chunk_plan_packs_topics_and_splits_a_big_one_by_consecutive_periods() -> None:
    d = [date(2026, 1, 5) + timedelta(days=i) for i in range(4)]
    counts = [("a", d[0], 3), ("b", d[0], 4), ("c", d[0], 5), ("c", d[1], 5), ("c", d[2], 5), ("c", d[3], 1)]
    assert chunk_plan(counts, limit=100) == [Chunk()]
    assert chunk_plan([], limit=100) == []
    assert set(chunk_plan(counts, limit=10)) == {Chunk(("a", "b")), Chunk(("c",), d[0], d[1]),
                                                  Chunk(("c",), d[2], d[3])}
    assert set(chunk_plan([("a", d[0], 50), ("b", d[1], 1)], limit=10)) == {Chunk(("a",), d[0], d[0]), Chunk(("b",))}


def test_a_cell_too_big_to_split_is_computed_within_a_small_memory_cap(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No chunk plan can split one (topic, period) cell: at 1M rows one month of product_quality had
    255,000 mentions, and its statement ran out of memory under CXLOOP_DB_MEMORY=512MB. The same
    shape scaled down: 60,000 mentions of one topic in one month under a 100 MB cap (the earlier
    statement failed here; the cube now keeps no more than a cell's top keywords and quotes)."""
    import hashlib

    import pyarrow as pa

    monkeypatch.setenv("CXLOOP_DB_MEMORY", "100MB")
    n = 60_000
    ids = [hashlib.sha1(f"r{i}".encode()).hexdigest()[:16] for i in range(n)]
    created = [datetime(2026, 3, 2) + timedelta(seconds=20 * i) for i in range(n)]   # 14 days of March
    texts = [f"质量问题第{i}条，做工太差，用了{i % 30}天就坏了" for i in range(n)]
    sentiment = ["neg" if i % 3 else "pos" for i in range(n)]
    channels = ["app_review", "hotline", "online_chat", "social"]
    feedback = pa.table({
        "feedback_id": ids, "source": ["t"] * n, "source_id": [str(i) for i in range(n)], "created_at": created,
        "channel": [channels[i % 4] for i in range(n)], "product": [f"p{i % 5}" for i in range(n)],
        "customer_key": [f"c{i % 5000}" for i in range(n)], "text": texts,
        "text_key": [text_key(t) for t in texts],
        "flags": [[] for _ in range(n)], "ingested_at": created, "run_id": ["b"] * n})
    nlp = pa.table({
        "feedback_id": ids, "tokens": [""] * n,
        "keywords": [[f"词{i % 997}", f"词{i % 389}", f"词{i % 61}", "质量", f"词{i % 13}"] for i in range(n)],
        "sentiment": sentiment, "sentiment_score": [-0.8 if s == "neg" else 0.8 for s in sentiment],
        "p_neg": [0.1] * n, "p_neu": [0.1] * n, "p_pos": [0.1] * n, "topics": [["product_quality"]] * n,
        "model_version": [MODEL] * n, "enriched_at": created, "run_id": ["b"] * n,
        "topic_sentiments": [[{"topic": "product_quality", "sentiment": s, "score": -0.8 if s == "neg" else 0.8}]
                             for s in sentiment],
        "emotion": ["none"] * n, "emotion_evidence": [[] for _ in range(n)], "urgent": [False] * n,
        "urgency_reasons": [[] for _ in range(n)]})
    wh = Warehouse(tmp_path / "cx.duckdb")
    with wh.transaction() as con:
        Warehouse.insert_arrow(con, "feedback", feedback)
        Warehouse.insert_arrow(con, "feedback_nlp", nlp)
    assert compute_pain_points(wh, MODEL, "run-1", chunk_mentions=1_000)["pain_points"] > 0
    cell = wh.query("SELECT volume, neg_count, keywords, quotes FROM pain_points WHERE period = 'month' "
                    "AND channel = '*' AND product = '*'").to_pylist()
    assert cell == [{"volume": n, "neg_count": 40_000, "keywords": cell[0]["keywords"], "quotes": cell[0]["quotes"]}]
    assert cell[0]["keywords"][0] == "质量" and len(cell[0]["keywords"]) == 8 and len(cell[0]["quotes"]) == 3
