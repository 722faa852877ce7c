"""The DuckDB warehouse: migrations, Arrow writes, transactions and lock handling."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.warehouse import (
    HeldWriter,
    Warehouse,
    WarehouseError,
    WarehouseLockedError,
    cap_memory,
    lake_sql,
    migrations,
    primary_keys,
)


def test_migrations_create_tables_and_views(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "cx.duckdb")
    with wh.connect():
        pass
    assert wh.schema_version() == max(v for v, _, _ in migrations())
    names = {r["table_name"] for r in wh.query("SELECT table_name FROM information_schema.tables").to_pylist()}
    for name in ("feedback", "feedback_nlp", "pain_points", "backlog", "quarantine", "runs", "topics",
                 "model_versions", "source_files", "v_feedback", "v_pain_points", "v_backlog"):
        assert name in names
    with wh.connect():  # re-opening applies nothing twice
        pass
    assert wh.scalar("SELECT count(*) FROM schema_migrations") == len(migrations())


def test_the_growing_tables_keep_their_keys_without_an_index(tmp_path: Path) -> None:
    """feedback and feedback_nlp have no PRIMARY KEY, an index DuckDB rewrites whole at every
    checkpoint (migration 008): their keys are declared for the writes, which keep them unique."""
    from datetime import datetime

    from pipelines.enrich import NLP_SCHEMA, write_nlp

    wh = Warehouse(tmp_path / "cx.duckdb")
    with wh.connect() as con:
        keyed = {t for (t,) in con.execute("SELECT table_name FROM duckdb_constraints() "
                                           "WHERE constraint_type = 'PRIMARY KEY'").fetchall()}
        assert con.execute("SELECT count(*) FROM duckdb_indexes()").fetchone() == (0,)
    assert not keyed & {"feedback", "feedback_nlp"} and {"runs", "quarantine", "source_files"} <= keyed
    assert primary_keys()["feedback"] == ("feedback_id",) == primary_keys()["feedback_nlp"]

    def nlp(ids: list[str], sentiment: str) -> pa.Table:
        return pa.Table.from_pylist([{
            "feedback_id": i, "tokens": "好", "keywords": [], "sentiment": sentiment, "sentiment_score": 0.0,
            "p_neg": 0.0, "p_neu": 1.0, "p_pos": 0.0, "topics": [], "model_version": "m",
            "enriched_at": datetime(2026, 1, 1), "run_id": "r", "topic_sentiments": [], "emotion": "none",
            "emotion_evidence": [], "urgent": False, "urgency_reasons": []} for i in ids], schema=NLP_SCHEMA)

    write_nlp(wh, nlp(["a", "b"], "neu"))
    write_nlp(wh, nlp(["b", "c"], "neg"))   # b again (a retried batch): replaced, not added
    assert wh.query("SELECT feedback_id, sentiment FROM feedback_nlp ORDER BY 1").to_pylist() == [
        {"feedback_id": "a", "sentiment": "neu"}, {"feedback_id": "b", "sentiment": "neg"},
        {"feedback_id": "c", "sentiment": "neg"}]
    assert lake_sql(next(sql for v, _, sql in migrations() if v == 8)) == ""   # DuckLake has no keys to drop


def test_arrow_insert_and_ignore_duplicates(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "cx.duckdb")
    rows = pa.table({"topic": ["a", "b"], "name": ["甲", "乙"], "stage": ["usage"] * 2, "team": ["t"] * 2,
                     "keywords": [["x"], ["y"]]})
    with wh.transaction() as con:
        assert Warehouse.insert_arrow(con, "topics", rows) == 2
    with wh.transaction() as con:
        assert Warehouse.insert_arrow(con, "topics", rows, on_conflict="ignore") == 0


def test_parquet_insert_keeps_the_first_of_a_key_in_the_order_the_files_are_given(tmp_path: Path) -> None:
    """Ingest loads its staged chunks with one statement: the same keys as one insert per file."""
    wh = Warehouse(tmp_path / "cx.duckdb")

    def topics(*pairs: tuple[str, str]) -> pa.Table:
        return pa.table({"topic": [k for k, _ in pairs], "name": [n for _, n in pairs],
                         "stage": ["usage"] * len(pairs), "team": ["t"] * len(pairs),
                         "keywords": [[k] for k, _ in pairs]})

    first, second = tmp_path / "z-first.parquet", tmp_path / "a-second.parquet"   # names sort the other way
    pq.write_table(topics(("a", "甲1"), ("b", "乙1"), ("b", "乙2")), first)
    pq.write_table(topics(("a", "甲3"), ("c", "丙3"), ("old", "旧3")), second)
    with wh.transaction() as con:
        Warehouse.insert_arrow(con, "topics", topics(("old", "旧0")))
        assert Warehouse.insert_parquet(con, "topics", [first, second], on_conflict="ignore") == 3
        assert Warehouse.insert_parquet(con, "topics", [first, second], on_conflict="ignore") == 0
        assert Warehouse.insert_parquet(con, "topics", [], on_conflict="ignore") == 0
    got = {r["topic"]: r["name"] for r in wh.query("SELECT topic, name FROM topics").to_pylist()}
    assert got == {"a": "甲1", "b": "乙1", "c": "丙3", "old": "旧0"}


@pytest.mark.parametrize(("configured", "expected_mib"), [("1GB", 244), ("128MB", 122), (None, 244)])
def test_cap_memory_lowers_a_connection_limit_but_never_raises_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  configured: str | None, expected_mib: int) -> None:
    if configured:
        monkeypatch.setenv("CXLOOP_DB_MEMORY", configured)
    else:
        monkeypatch.delenv("CXLOOP_DB_MEMORY", raising=False)
    wh = Warehouse(tmp_path / "cx.duckdb")
    limit = "SELECT parse_formatted_bytes(current_setting('memory_limit'))"
    with wh.connect() as con:
        before = con.execute(limit).fetchone()[0]
    with wh.connect(read_only=True) as con:
        cap_memory(con, "256MB")
        assert round(con.execute(limit).fetchone()[0] / 2**20) == expected_mib
    with wh.connect(read_only=True) as con:  # only for as long as that connection was open
        assert con.execute(limit).fetchone()[0] == before


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "cx.duckdb")
    rows = pa.table({"topic": ["a"], "name": ["甲"], "stage": ["usage"], "team": ["t"], "keywords": [["x"]]})
    with pytest.raises(RuntimeError), wh.transaction() as con:
        Warehouse.insert_arrow(con, "topics", rows)
        raise RuntimeError("boom")
    assert wh.scalar("SELECT count(*) FROM topics") == 0


def _topic(key: str) -> pa.Table:
    return pa.table({"topic": [key], "name": [key], "stage": ["usage"], "team": ["t"], "keywords": [[key]]})


def _opens(db: Path) -> bool:
    """Whether another process can open the file now."""
    probe = subprocess.run([sys.executable, "-c", f"import duckdb; duckdb.connect({str(db)!r}).close()"],
                           capture_output=True, text=True)
    return probe.returncode == 0


def test_held_writer_commits_each_batch_and_lets_go_of_the_file(tmp_path: Path) -> None:
    """``enrich`` writes its batches through one held connection: each batch is committed on its own
    (a failed one leaves the others), the file stays held between batches, and it is released (and
    checkpointed: no write-ahead log left) after ``max_seconds`` or on leaving the block."""
    db = tmp_path / "cx.duckdb"
    wh = Warehouse(db)
    with HeldWriter(wh, max_seconds=3600) as writer:
        with writer.transaction() as con:
            Warehouse.insert_arrow(con, "topics", _topic("a"))
        assert not _opens(db)                       # held between batches
        with pytest.raises(RuntimeError), writer.transaction() as con:
            Warehouse.insert_arrow(con, "topics", _topic("b"))
            raise RuntimeError("boom")
        assert _opens(db)                           # a failed batch lets go of the file
        with writer.transaction() as con:
            Warehouse.insert_arrow(con, "topics", _topic("c"))
            assert con.execute("SELECT current_setting('threads')").fetchone() == (1,)
    assert _opens(db) and not Path(f"{db}.wal").exists()
    assert sorted(r["topic"] for r in wh.query("SELECT topic FROM topics").to_pylist()) == ["a", "c"]
    with HeldWriter(wh, max_seconds=0) as writer:   # past its time after every batch: released each time
        with writer.transaction() as con:
            Warehouse.insert_arrow(con, "topics", _topic("d"))
        assert _opens(db)
    assert wh.scalar("SELECT count(*) FROM topics") == 3


def test_reading_a_missing_warehouse_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="does not exist yet"):
        Warehouse(tmp_path / "none.duckdb").query("SELECT 1")


def test_writer_waits_for_a_lock_then_gives_up_with_a_message(tmp_path: Path) -> None:
    db = tmp_path / "cx.duckdb"
    with Warehouse(db).connect():
        pass
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(db)!r}); "
                               "print('held', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(WarehouseLockedError, match="locked by another process"), \
                Warehouse(db, lock_timeout=1.5).connect():
            pass
        assert time.monotonic() - t0 >= 1.4
    finally:
        holder.kill()
        holder.wait()
    with Warehouse(db, lock_timeout=5).connect() as con:  # released: works again
        assert con.execute("SELECT 1").fetchone() == (1,)


def test_staged_files_sit_next_to_the_warehouse_and_are_removed(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest's staged chunks and the pain-point mentions go to a folder beside the warehouse file
    (the disk sized for the data, not a small system temp folder), and nothing is left behind."""
    from stored_rows import ingest_sample

    from pipelines.painpoints import compute_pain_points

    made: list[Path] = []
    scratch = Warehouse.scratch

    def spy(self: Warehouse, what: str):
        folder = scratch(self, what)
        made.append(Path(folder.name))
        return folder

    monkeypatch.setattr(Warehouse, "scratch", spy)
    home = tmp_path / "home"
    wh = ingest_sample(home / "cx.duckdb")
    compute_pain_points(wh, "any-model", "run-1")
    assert {p.parent for p in made} == {home}
    assert {p.name.split("-")[0] for p in made} == {".cx.duckdb.ingest", ".cx.duckdb.mentions"}
    assert not any(p.exists() for p in made)
    assert sorted(p.name for p in home.iterdir()) == ["cx.duckdb"]
