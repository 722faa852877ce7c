"""The warehouse in DuckLake (``--db ducklake:CATALOG``): the main job gives what it gives on a DuckDB
file, a re-run adds nothing, the data lands as Parquet under the data path, the migrations are
translated for a lake, and a missing extension or a lock is one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import warehouse
from pipelines.config import Settings
from pipelines.warehouse import (
    Warehouse,
    WarehouseError,
    WarehouseLockedError,
    ducklake_extension,
    lake_sql,
    migrations,
    primary_keys,
)

# columns a run stamps with its own id or clock: they differ between any two runs
VOLATILE = {"run_id", "verification_id", "computed_at", "created_at", "updated_at", "ingested_at", "enriched_at",
            "changed_at", "checked_at", "status_changed_at", "suggested_at", "quarantined_at", "decided_at",
            "verified_at"}
COMPARED = ("feedback", "feedback_nlp", "quarantine", "pain_points", "backlog", "backlog_history", "alerts",
            "verifications", "topics", "topic_candidates", "source_files")


def _lake(folder: Path) -> str:
    return f"ducklake:{folder / 'cx.ducklake'}"


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> dict[str, tuple[str, dict]]:
    """The main job (baseline model) on the sample data, once on a DuckDB file and once on a lake."""
    from pipelines.flows import cx_loop_flow

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CXLOOP_LAKE_DATA_PATH", raising=False)
        for kind in ("file", "lake"):
            home = tmp_path_factory.mktemp(kind)
            db = str(home / "cx.duckdb") if kind == "file" else _lake(home)
            out[kind] = (db, cx_loop_flow(db=db, home=str(home), model="baseline"))
    return out


def _table(wh: Warehouse, table: str) -> list[tuple]:
    """A table's rows without the columns a run stamps, floats rounded, sorted: comparable across runs
    and backends (columns by name: a column a migration retyped comes last in a lake, ``lake_sql``)."""
    with wh.connect(read_only=True) as con:
        cols = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                          "AND table_catalog = current_database() ORDER BY column_name",
                                          [table]).fetchall() if c not in VOLATILE]
        names = ", ".join(f'"{c}"' for c in cols)
        rows = con.execute(f"SELECT {names} FROM {table}").fetchall()
    rounded = [tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows]
    return sorted(rounded, key=repr)


def test_the_main_job_on_a_lake_gives_the_file_warehouse_results(jobs: dict[str, tuple[str, dict]]) -> None:
    (file_db, file_run), (lake_db, lake_run) = jobs["file"], jobs["lake"]
    assert lake_run["ingest"]["counts"] == file_run["ingest"]["counts"]
    assert lake_run["enrich"]["scored"] == file_run["enrich"]["scored"] > 800
    assert lake_run["pain_points"]["backlog_items"] == file_run["pain_points"]["backlog_items"] == 10
    assert {k: lake_run["verify"][k] for k in ("verified", "reopened")} == \
        {k: file_run["verify"][k] for k in ("verified", "reopened")}
    file_wh, lake_wh = Warehouse(file_db), Warehouse(lake_db)
    for table in COMPARED:
        assert _table(lake_wh, table) == _table(file_wh, table), table
    ranking = ("SELECT topic, channel, neg_count, round(priority, 9) FROM v_pain_points "
               "WHERE period_start = DATE '2026-10-26' ORDER BY priority DESC, topic, channel LIMIT 10")
    assert lake_wh.query(ranking).equals(file_wh.query(ranking))
    backlog = "SELECT item_id, status, last_check FROM v_backlog ORDER BY item_id"
    assert lake_wh.query(backlog).equals(file_wh.query(backlog))
    # ingest, enrich, pain_points, verify, suggest_topics
    assert lake_wh.scalar("SELECT count(*) FROM runs WHERE status = 'completed'") == 5


def test_a_second_run_on_the_lake_adds_nothing(jobs: dict[str, tuple[str, dict]]) -> None:
    from pipelines.flows import cx_loop_flow

    db, _ = jobs["lake"]
    wh = Warehouse(db)
    kept = [t for t in COMPARED if t != "verifications"]  # each run adds its checks of verified items
    before = {t: _table(wh, t) for t in kept}
    again = cx_loop_flow(db=db, home=str(wh.path.parent), model="baseline")
    assert again["ingest"]["counts"]["stored"] == 0 and again["enrich"]["scored"] == 0
    after = {t: _table(wh, t) for t in kept}
    assert {t for t in kept if after[t] != before[t]} == set()
    for table, key in primary_keys().items():  # no key twice anywhere, though the lake enforces none
        cols = ", ".join(key)
        assert wh.scalar(f"SELECT count(*) - count(DISTINCT ({cols})) FROM {table}") == 0, table


def test_lake_data_is_parquet_under_the_data_path(jobs: dict[str, tuple[str, dict]]) -> None:
    db, _ = jobs["lake"]
    wh = Warehouse(db)
    data = Path(f"{wh.path}.files")
    files = [p for p in data.rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".parquet" for p in files)
    per_table = {p.parent.name for p in files}
    assert {"feedback", "feedback_nlp", "pain_points"} <= per_table
    stored = sum(pq.read_metadata(p).num_rows for p in (data / "main" / "feedback").glob("*.parquet"))
    assert stored == wh.scalar("SELECT count(*) FROM feedback")  # appended in batches too big to inline
    assert sorted(p.name for p in wh.path.parent.iterdir() if p.name.startswith("cx.")) == [
        "cx.ducklake", "cx.ducklake.files"]


def test_cli_reads_the_lake_from_cxloop_db(jobs: dict[str, tuple[str, dict]], tmp_path: Path) -> None:
    db, _ = jobs["lake"]
    env = {**os.environ, "CXLOOP_HOME": str(tmp_path), "CXLOOP_DB": db, "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", "SELECT count(*) AS n FROM v_feedback"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert str(Warehouse(db).scalar("SELECT count(*) FROM feedback")) in r.stdout
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", "DELETE FROM feedback"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "read-only" in r.stderr  # the lake is attached read-only for queries


# -- the warehouse alone ---------------------------------------------------------------------------
@pytest.fixture(params=["file", "lake"])
def wh(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    monkeypatch.delenv("CXLOOP_LAKE_DATA_PATH", raising=False)
    return Warehouse(tmp_path / "cx.duckdb" if request.param == "file" else _lake(tmp_path))


def test_insert_or_ignore_and_upsert_mean_the_same_on_both_backends(wh: Warehouse) -> None:
    rows = pa.table({"topic": ["a", "b", "a"], "name": ["甲", "乙", "丙"], "stage": ["usage"] * 3,
                     "team": ["t"] * 3, "keywords": [["x"], ["y"], ["z"]]})
    with wh.transaction() as con:  # a key twice in the batch: the first row wins, as with INSERT OR IGNORE
        assert Warehouse.insert_arrow(con, "topics", rows, on_conflict="ignore") == 2
        assert Warehouse.insert_arrow(con, "topics", rows, on_conflict="ignore") == 0
    assert wh.query("SELECT topic, name FROM topics ORDER BY topic").to_pylist() == [
        {"topic": "a", "name": "甲"}, {"topic": "b", "name": "乙"}]
    run = {"run_id": "r1", "flow": "ingest", "started_at": pa.scalar(0, pa.timestamp("us")).as_py(),
           "status": "running", "params": "{}"}
    with wh.transaction() as con:
        Warehouse.upsert_row(con, "runs", run)
        con.execute("UPDATE runs SET error = 'kept' WHERE run_id = 'r1'")
        Warehouse.upsert_row(con, "runs", {**run, "status": "completed"})  # other columns keep their values
    assert wh.query("SELECT status, error FROM runs").to_pylist() == [{"status": "completed", "error": "kept"}]


def test_migrations_translated_for_the_lake_keep_every_column(tmp_path: Path) -> None:
    """Untranslated, DuckLake refuses the first migration; translated, every migration gives the
    tables, columns, types, NOT NULLs and views of the original, minus the keys."""
    def build(translate: bool) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        for _, _, sql in migrations():
            con.execute(lake_sql(sql) if translate else sql)
        return con

    shape = ("SELECT table_name, column_name, data_type, is_nullable, column_default FROM duckdb_columns() "
             "WHERE NOT internal ORDER BY ALL")
    views = "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY ALL"
    original, translated = build(False), build(True)
    assert translated.execute(shape).fetchall() == original.execute(shape).fetchall()
    assert translated.execute(views).fetchall() == original.execute(views).fetchall()
    assert translated.execute("SELECT count(*) FROM duckdb_constraints() WHERE constraint_type IN "
                              "('PRIMARY KEY', 'UNIQUE')").fetchone() == (0,)
    lake = duckdb.connect()
    lake.execute(f"LOAD '{ducklake_extension()}'")
    lake.execute(f"ATTACH 'ducklake:{tmp_path / 'm.ducklake'}' AS lake; USE lake")
    with pytest.raises(duckdb.NotImplementedException, match="PRIMARY KEY/UNIQUE"):
        lake.execute(migrations()[0][2])


def test_lake_sql_strips_keys_and_indexes_only_outside_comments_and_strings() -> None:
    sql = """-- keys: a PRIMARY KEY, 'quoted' UNIQUE words in comments stay out of it
    CREATE TABLE t (a INTEGER PRIMARY KEY, b VARCHAR UNIQUE, c VARCHAR NOT NULL DEFAULT 'PRIMARY KEY -- x',
                    d INTEGER NOT NULL, PRIMARY KEY (a, d), UNIQUE (b, c));
    CREATE UNIQUE INDEX t_b ON t (b);
    CREATE INDEX t_c ON t (c);
    CREATE VIEW v AS SELECT * FROM t;"""
    out = lake_sql(sql)
    assert "a INTEGER NOT NULL," in out and "b VARCHAR," in out and "INDEX" not in out
    assert "DEFAULT 'PRIMARY KEY -- x'" in out and "(a, d)" not in out and "(b, c)" not in out
    assert "CREATE VIEW v" in out and "comments" not in out
    with pytest.raises(WarehouseError, match="no sequences"):
        lake_sql("CREATE SEQUENCE s; CREATE TABLE t (id INTEGER DEFAULT nextval('s'))")


def test_a_column_retyped_with_an_expression_keeps_its_values_in_the_lake(tmp_path: Path) -> None:
    # DuckLake refuses ALTER … TYPE … USING (migration 006): translated, the column takes the new values
    retype = "ALTER TABLE t ALTER tokens TYPE VARCHAR USING array_to_string(tokens, ' ');"
    lake = duckdb.connect()
    lake.execute(f"LOAD '{ducklake_extension()}'")
    lake.execute(f"ATTACH 'ducklake:{tmp_path / 'r.ducklake'}' AS lake; USE lake")
    lake.execute("CREATE TABLE t (id VARCHAR NOT NULL, tokens VARCHAR[], n INTEGER)")
    lake.execute("INSERT INTO t VALUES ('a', ['快递', '很快'], 1), ('b', [], 2), ('c', NULL, 3)")
    with pytest.raises(duckdb.NotImplementedException):
        lake.execute(retype)
    lake.execute("BEGIN TRANSACTION")
    lake.execute(lake_sql(retype))
    lake.execute("COMMIT")
    assert lake.execute("SELECT id, tokens, n FROM t ORDER BY id").fetchall() == [
        ("a", "快递 很快", 1), ("b", "", 2), ("c", None, 3)]
    assert lake.execute("SELECT data_type FROM duckdb_columns() WHERE table_name = 't' AND column_name = 'tokens'"
                        ).fetchone() == ("VARCHAR",)


def test_lake_data_path_from_the_environment_and_a_mismatch_fails(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXLOOP_LAKE_DATA_PATH", str(tmp_path / "bucket"))
    wh = Warehouse(_lake(tmp_path / "catalog"))
    with wh.transaction() as con:
        Warehouse.insert_arrow(con, "topics", pa.table({"topic": [f"k{i}" for i in range(50)], "name": ["n"] * 50,
                                                        "stage": ["usage"] * 50, "team": ["t"] * 50,
                                                        "keywords": [["w"]] * 50}))
    assert list((tmp_path / "bucket" / "main" / "topics").glob("*.parquet"))
    assert not (tmp_path / "catalog" / "cx.ducklake.files").exists()
    monkeypatch.setenv("CXLOOP_LAKE_DATA_PATH", str(tmp_path / "elsewhere"))
    with pytest.raises(WarehouseError, match="does not match existing data path"):
        Warehouse(_lake(tmp_path / "catalog")).scalar("SELECT count(*) FROM topics")
    monkeypatch.delenv("CXLOOP_LAKE_DATA_PATH")  # unset: the path the catalog holds
    assert Warehouse(_lake(tmp_path / "catalog")).scalar("SELECT count(*) FROM topics") == 50


def test_settings_take_a_lake_location_from_db_and_the_environment(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.resolve(tmp_path, "ducklake:lake/cx.ducklake").db_path == f"ducklake:{tmp_path}/lake/cx.ducklake"
    monkeypatch.setenv("CXLOOP_DB", "ducklake:~/x.ducklake")
    s = Settings.resolve(tmp_path)
    assert s.is_lake and s.db_path == f"ducklake:{Path.home()}/x.ducklake"
    assert Settings.resolve(tmp_path, "ducklake:postgres:dbname=cx host=db").db_path == \
        "ducklake:postgres:dbname=cx host=db"  # another catalog database: kept as given (untested here)
    assert Warehouse("ducklake:postgres:dbname=cx host=db").path is None
    monkeypatch.delenv("CXLOOP_DB")
    assert Settings.resolve(tmp_path).db_path == tmp_path / "cx.duckdb"


def test_a_lake_without_the_extension_package_names_the_extra(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warehouse, "LAKE_PACKAGE", "duckdb_extension_not_installed")
    with pytest.raises(WarehouseError, match=r"pip install 'cxloop\[lake\]'"), \
            Warehouse(_lake(tmp_path)).connect():
        pass
    assert not (tmp_path / "cx.ducklake").exists()


def test_a_lake_writer_waits_for_a_held_catalog_then_gives_up(tmp_path: Path) -> None:
    db = _lake(tmp_path)
    with Warehouse(db).connect():
        pass
    holder = subprocess.Popen([sys.executable, "-c", (
        f"import duckdb, time; c = duckdb.connect(); c.execute(\"LOAD '{ducklake_extension()}'\"); "
        f"c.execute(\"ATTACH '{db}' AS lake (READ_ONLY)\"); print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(WarehouseLockedError, match="locked by another process"), \
                Warehouse(db, lock_timeout=1.5).connect():
            pass
        assert time.monotonic() - t0 >= 1.4
        assert Warehouse(db).scalar("SELECT count(*) FROM topics") == 0  # readers share it
    finally:
        holder.kill()
        holder.wait()
    with Warehouse(db, lock_timeout=5).transaction() as con:  # released: writes again
        assert con.execute("SELECT count(*) FROM topics").fetchone() == (0,)
