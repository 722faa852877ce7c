"""Upgrades: a warehouse written by the previous schema version (built at test time from
migrations 001 + 002, tests/fixtures/old_schema.py) is migrated in place with every row kept; a
migration that fails leaves the file exactly as it was, and says which migration and which file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest
from fixtures import old_schema

from pipelines import warehouse
from pipelines.painpoints import compute_pain_points
from pipelines.records import text_key
from pipelines.warehouse import Warehouse, WarehouseError, migrations

LATEST = max(v for v, _, _ in migrations())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def old_db(tmp_path: Path) -> Path:
    db = tmp_path / "old.duckdb"
    old_schema.build(db, version=2)
    return db


def _as_migrated(before: dict[str, list[tuple]], cols: dict[str, list[str]]) -> dict[str, list[tuple]]:
    """The old rows as the migrations leave them (sorted as ``old_schema.contents`` sorts): 006 stores
    each text's words space-separated, 007 each text's dedup key as a 64-bit number (the one ingest
    computes now)."""
    at = cols["feedback_nlp"].index("tokens")
    nlp = sorted(((*r[:at], " ".join(r[at]), *r[at + 1:]) for r in before["feedback_nlp"]), key=repr)
    at = cols["feedback"].index("text_key")
    feedback = sorted(((*r[:at], text_key(r[at]), *r[at + 1:]) for r in before["feedback"]), key=repr)
    return {**before, "feedback_nlp": nlp, "feedback": feedback}


def test_previous_version_is_migrated_in_place_with_every_row(old_db: Path) -> None:
    cols = old_schema.columns(old_db)
    before = old_schema.contents(old_db, {t: c for t, c in cols.items() if t != "schema_migrations"})
    assert sum(map(len, before.values())) > 450
    wh = Warehouse(old_db)
    with wh.connect():
        pass
    assert wh.schema_version() == LATEST
    after = old_schema.contents(old_db, {t: c for t, c in cols.items() if t != "schema_migrations"})
    assert after == _as_migrated(before, cols)
    con = duckdb.connect(str(old_db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM v_feedback WHERE sentiment IS NOT NULL").fetchone()[0] == 240
        assert con.execute("SELECT status, due_date, resolved_at FROM backlog WHERE item_id = 'BL-old00001'"
                           ).fetchone() == ("in_progress", None, None)
        assert con.execute("SELECT count(*) FROM v_backlog").fetchone()[0] == 2
        # pain_points is derived data: 003 recreates it with its wider key, the next run refills it
        assert con.execute("SELECT count(*) FROM pain_points").fetchone()[0] == 0
    finally:
        con.close()
    counts = compute_pain_points(wh, "sentiment-baseline-old", "run-new", top_n=5, min_negative=1)
    assert counts["pain_points"] > 0
    con = duckdb.connect(str(old_db), read_only=True)
    try:  # the person's decisions on the old items survive the first run of the new code
        assert con.execute("SELECT status FROM backlog WHERE item_id = 'BL-old00001'").fetchone() == ("in_progress",)
        assert con.execute("SELECT count(*) FROM v_pain_points").fetchone()[0] > 0
    finally:
        con.close()


def _failing(monkeypatch: pytest.MonkeyPatch, version: int, sql: str) -> None:
    shipped = migrations()
    bad = [(v, n, s) for v, n, s in shipped if v < version] + [(version, "broken", sql)]
    monkeypatch.setattr(warehouse, "migrations", lambda: bad)


def test_a_failing_migration_leaves_the_old_file_intact(old_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """003 itself, broken at its last statement after it dropped and recreated ``pain_points`` and
    altered ``backlog``: everything is rolled back, byte for byte."""
    sql_003 = next(s for v, _, s in migrations() if v == 3)
    _failing(monkeypatch, 3, sql_003 + "\nSELECT no_such_column FROM feedback;")
    cols = old_schema.columns(old_db, (*old_schema.OLD_TABLES, "pain_points"))
    before, digest = old_schema.contents(old_db, cols), _sha(old_db)
    with pytest.raises(WarehouseError, match=r"migration 003_broken failed on .*old\.duckdb"), \
            Warehouse(old_db).connect():
        pass
    assert _sha(old_db) == digest
    assert old_schema.columns(old_db, (*old_schema.OLD_TABLES, "pain_points")) == cols
    assert old_schema.contents(old_db, cols) == before
    monkeypatch.undo()  # the real 003 then applies
    wh = Warehouse(old_db)
    with wh.connect():
        pass
    assert wh.schema_version() == LATEST


def test_a_failing_future_migration_leaves_a_current_file_intact(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "cx.duckdb"
    old_schema.build(db)
    with Warehouse(db).connect():  # the shipped migrations
        pass
    cols = old_schema.columns(db)
    before = old_schema.contents(db, cols)
    _failing(monkeypatch, LATEST + 1, "ALTER TABLE feedback ADD COLUMN x INTEGER; DELETE FROM feedback; "
                                      "CREATE TABLE t (a INTEGER); SELECT error('boom');")
    with pytest.raises(WarehouseError, match=f"migration {LATEST + 1:03d}_broken failed on {db}: .*boom"), \
            Warehouse(db).connect():
        pass
    assert old_schema.columns(db) == cols and old_schema.contents(db, cols) == before
    assert Warehouse(db).schema_version() == LATEST


@pytest.mark.parametrize("point", [1, 2])  # 1: the file just opened, 2: inside 003's transaction, before COMMIT
def test_killed_during_the_upgrade_then_reopened(old_db: Path, point: int) -> None:
    """SIGKILL in the middle of migrating: the file is either still the old version with all its rows,
    or fully migrated; opening it again finishes the job."""
    import os
    import subprocess
    import sys

    cols = old_schema.columns(old_db)
    before = old_schema.contents(old_db, {t: c for t, c in cols.items() if t != "schema_migrations"})
    trace = old_db.parent / "trace.txt"
    env = {**os.environ, "CXLOOP_FAULT_KILL_AT": f"cli:{point}", "CXLOOP_FAULT_TRACE": str(trace)}
    r = subprocess.run([sys.executable, "-c", "import sys; from pipelines.warehouse import Warehouse; "
                        "Warehouse(sys.argv[1]).connect().__enter__()", str(old_db)], env=env, timeout=120)
    assert r.returncode == -9
    last = trace.read_text().splitlines()[-1]
    assert last.startswith("cli\t") and ("migration 003 before commit" in last or "open" in last), last
    con = duckdb.connect(str(old_db), read_only=True)
    try:
        version = con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    finally:
        con.close()
    assert version in (2, LATEST)
    assert old_schema.contents(old_db, {t: c for t, c in cols.items() if t != "schema_migrations"}) == before
    wh = Warehouse(old_db)
    with wh.connect():
        pass
    assert wh.schema_version() == LATEST
    after = old_schema.contents(old_db, {t: c for t, c in cols.items() if t != "schema_migrations"})
    assert after == _as_migrated(before, cols)
