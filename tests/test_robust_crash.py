"""Killed, run twice at once, held open by a reader: the warehouse still ends with exactly the rows
a clean run gives. Real ``cxloop`` processes, real SIGKILLs (tests/fixtures/crash.py), compared
table by table with a clean run (tests/fixtures/warehouse_checks.py). A seeded, smaller version of
benchmarks/crash_kill.py: ``CXLOOP_CRASH_SEED`` replays another seed."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
from fixtures.crash import CLI, STAGES, plan, run_job, stage_points
from fixtures.warehouse_checks import diff, rows_compared, scan_pii, snapshot

from pipelines.warehouse import Warehouse

SEED = int(os.environ.get("CXLOOP_CRASH_SEED", "20261122"))
JOB = [["run", "--model", "baseline"]]  # the main job on data/sample (the demo's story, with verification)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, object]:
    """One clean run of the main job: its warehouse, its snapshot, its fault points per stage."""
    home = tmp_path_factory.mktemp("clean") / "home"
    out, points = stage_points(home, JOB)
    assert out.returncode == 0, out.log[-3000:]
    return home / "cx.duckdb", snapshot(home / "cx.duckdb"), points


def test_no_pii_anywhere_after_the_demo(clean: tuple[Path, dict, object]) -> None:
    db, _, _ = clean
    cells, found = scan_pii(db)
    assert cells > 5000 and found == [], found[:5]


def test_killed_at_random_moments_then_rerun_equals_a_clean_run(clean: tuple[Path, dict, object],
                                                                 tmp_path: Path) -> None:
    """Six SIGKILLs across ingest, enrich, pain points and verify, each followed by the next run of
    the same job; the last run completes and the warehouse equals the clean run's: no lost rows, no
    duplicates, no half-written batch, no backlog item or status change counted twice."""
    _, expected, points = clean
    kills = plan(random.Random(SEED), points)
    home = tmp_path / "crashed"
    outcomes = [run_job(home, JOB, k) for k in kills]
    final = run_job(home, JOB)
    assert final.returncode == 0, final.log[-3000:]
    report = [(str(o.kill), o.returncode, o.last_point) for o in outcomes]
    killed = [o for o in outcomes if o.killed]
    assert len(killed) >= 5, report
    assert {o.last_point.split("\t")[0] for o in killed if o.last_point} >= set(STAGES), report
    got = snapshot(home / "cx.duckdb")
    assert diff(expected, got) == {}, (diff(expected, got), f"seed {SEED}", report)
    assert rows_compared(got) > 5000
    con = duckdb.connect(str(home / "cx.duckdb"), read_only=True)
    try:  # the killed runs are closed in the lineage, not left "running" forever
        status = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY 1").fetchall())
        abandoned = con.execute("SELECT count(*) FROM runs WHERE error LIKE 'abandoned%'").fetchone()[0]
    finally:
        con.close()
    assert "running" not in status and abandoned >= 1, status


LOGS: dict[int, Path] = {}


def _popen(home: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    path = home.parent / f"{home.name}-{time.monotonic_ns()}.log"
    with path.open("w") as log:
        p = subprocess.Popen([*CLI, *args], env={**os.environ, "CXLOOP_HOME": str(home), "COLUMNS": "200",
                                                 **(env or {})},
                             stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    LOGS[p.pid] = path
    return p


def _log(p: subprocess.Popen) -> str:
    return LOGS[p.pid].read_text(encoding="utf-8")


def test_two_runs_at_once_equal_one_clean_run(clean: tuple[Path, dict, object], tmp_path: Path) -> None:
    """Two ``cxloop run`` on the same warehouse started together: both finish (the one that finds the
    file in use waits and says so), and the warehouse is the clean run's. The test holds the file until
    a run has found it in use, so the two always meet there, however the scheduler orders them."""
    _, expected, _ = clean
    home = tmp_path / "home"
    home.mkdir()
    with Warehouse(home / "cx.duckdb").connect():
        runs = [_popen(home, *JOB[0]) for _ in range(2)]
        deadline = time.monotonic() + 300
        while not any("is in use by another process" in _log(p) for p in runs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in runs), [_log(p)[-2000:] for p in runs]
            time.sleep(0.2)
    codes = [p.wait(timeout=600) for p in runs]
    logs = [_log(p) for p in runs]
    assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert any("is in use by another process; waiting up to" in log for log in logs)
    got = snapshot(home / "cx.duckdb")
    assert diff(expected, got) == {}, diff(expected, got)


def test_a_reader_holding_the_file_makes_a_writer_wait_then_fail_clearly(tmp_path: Path, sample_copy: Path) -> None:
    """A CX lead's open read-only connection: the writer waits (log line) and goes on once it is
    closed; held past ``CXLOOP_LOCK_TIMEOUT`` the writer stops with one ``error:`` line, nothing half-written."""
    home = tmp_path / "home"
    home.mkdir()
    db = home / "cx.duckdb"
    with Warehouse(db).connect():  # the warehouse exists (migrated) before the lead opens it
        pass
    reader = duckdb.connect(str(db), read_only=True)
    try:
        writer = _popen(home, "ingest", str(sample_copy / "app_reviews.csv"))
        deadline = time.monotonic() + 120
        while "is in use by another process" not in _log(writer) and writer.poll() is None:
            assert time.monotonic() < deadline, _log(writer)
            time.sleep(0.2)
        assert writer.poll() is None, _log(writer)  # waiting, not crashed
    finally:
        reader.close()
    assert writer.wait(timeout=300) == 0, _log(writer)

    reader = duckdb.connect(str(db), read_only=True)
    try:
        before = reader.execute("SELECT count(*) FROM feedback").fetchone()[0]
        # any writer: a person's backlog note (no Prefect start-up, so the test stays quick)
        blocked = _popen(home, "backlog", "note", "BL-00000000", "a note", env={"CXLOOP_LOCK_TIMEOUT": "2"})
        assert blocked.wait(timeout=300) == 1
        errors = [ln for ln in _log(blocked).splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "is locked by another process for more than 2s" in errors[0], _log(blocked)
        assert str(db) in errors[0]
    finally:
        reader.close()
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM feedback").fetchone()[0] == before
    finally:
        con.close()
