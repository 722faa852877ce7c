"""Helpers for tests that compare what two enrich runs stored: the sample ingested into a warehouse,
and its ``feedback_nlp`` rows without the columns that differ between runs (clock, run id)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.ingest import ingest_file
from pipelines.records import ColumnMap
from pipelines.sources import iter_files
from pipelines.warehouse import Warehouse

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


def ingest_sample(db: Path) -> Warehouse:
    """A warehouse at ``db`` holding the sample data, not yet enriched."""
    wh = Warehouse(db)
    for f in iter_files([SAMPLE]):
        ingest_file(wh, f, source=None, columns=ColumnMap(), channel=None, run_id="ingest", salt=b"salt")
    return wh


def nlp_rows(db: Path) -> list[tuple]:
    """Every ``feedback_nlp`` row but ``enriched_at`` and ``run_id``, in ``feedback_id`` order."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT * EXCLUDE (enriched_at, run_id) FROM feedback_nlp ORDER BY feedback_id").fetchall()
    finally:
        con.close()
