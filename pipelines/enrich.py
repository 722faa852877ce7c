"""The ``enrich`` flow: rows without NLP for the current model version → segment + classify in
Arrow batches → ``feedback_nlp``.

Rows scored by an older model version are re-scored (back-filled) batch by batch; each batch is
one transaction that replaces the old rows, so a run killed half-way leaves whole batches only and
the next run picks up the rest.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from prefect import flow, task

from models.predict import Analyzer
from pipelines import progress
from pipelines.config import Settings
from pipelines.runs import logger, recorded_run
from pipelines.warehouse import Warehouse

BATCH_ROWS = 5_000

NLP_SCHEMA = pa.schema([
    ("feedback_id", pa.string()), ("tokens", pa.list_(pa.string())), ("keywords", pa.list_(pa.string())),
    ("sentiment", pa.string()), ("sentiment_score", pa.float32()), ("p_neg", pa.float32()),
    ("p_neu", pa.float32()), ("p_pos", pa.float32()), ("topics", pa.list_(pa.string())),
    ("model_version", pa.string()), ("enriched_at", pa.timestamp("us")), ("run_id", pa.string()),
])

PENDING_SQL = """
SELECT f.feedback_id, f.text FROM feedback f LEFT JOIN feedback_nlp n USING (feedback_id)
WHERE n.feedback_id IS NULL OR n.model_version <> ?
ORDER BY f.created_at, f.feedback_id
"""


def sync_topics(wh: Warehouse, settings: Settings) -> None:
    """Mirror the taxonomy in use into the ``topics`` table (for the views and CX leads' SQL)."""
    tax = settings.load_taxonomy()
    rows = pa.table({"topic": [t.key for t in tax], "name": [t.name for t in tax], "stage": [t.stage for t in tax],
                     "team": [t.team for t in tax], "keywords": [list(t.keywords) for t in tax]})
    with wh.transaction() as con:
        con.execute("DELETE FROM topics")
        Warehouse.insert_arrow(con, "topics", rows)


def enrich_batch(analyzer: Analyzer, ids: list[str], texts: list[str], run_id: str) -> pa.Table:
    """NLP columns for one batch, as an Arrow table in the ``feedback_nlp`` layout."""
    cols = analyzer.analyze(texts)
    now = datetime.now()
    return pa.table({"feedback_id": ids, **cols, "enriched_at": [now] * len(ids), "run_id": [run_id] * len(ids)},
                    schema=NLP_SCHEMA)


def write_nlp(wh: Warehouse, batch: pa.Table) -> int:
    """Replace the NLP rows of a batch in one transaction."""
    with wh.transaction() as con:
        con.register("_ids", batch.select(["feedback_id"]))
        con.execute("DELETE FROM feedback_nlp WHERE feedback_id IN (SELECT feedback_id FROM _ids)")
        con.unregister("_ids")
        return Warehouse.insert_arrow(con, "feedback_nlp", batch)


@task(name="enrich-pending")
def enrich_pending(db: str, home: str, model: str | None, run_id: str, batch_rows: int = BATCH_ROWS) -> dict:
    """Score every row that lacks NLP for the current model version."""
    settings = Settings.resolve(home, db)
    wh = Warehouse(settings.db_path)
    analyzer = Analyzer.load(model, settings.models_dir, settings.load_taxonomy(), settings.cache_dir)
    with wh.connect() as con:
        pending = con.execute(PENDING_SQL, [analyzer.model_version]).to_arrow_table()
    log = logger()
    log.info("enrich: %d rows to score with %s", pending.num_rows, analyzer.model_version)
    rep = progress.reporter()
    rep.start("enrich", pending.num_rows)
    done = 0
    for batch in pending.to_batches(max_chunksize=batch_rows):
        ids = batch.column("feedback_id").to_pylist()
        table = enrich_batch(analyzer, ids, batch.column("text").to_pylist(), run_id)
        done += write_nlp(wh, table)
        rep.advance("enrich", len(ids))
    rep.finish("enrich")
    return {"scored": done, "model_version": analyzer.model_version}


@flow(name="enrich")
def enrich_flow(db: str | None = None, home: str | None = None, model: str | None = None) -> dict:
    """Segment and classify every stored row that lacks NLP for the current model version."""
    settings = Settings.resolve(home, db)
    wh = Warehouse(settings.db_path)
    sync_topics(wh, settings)
    with recorded_run(wh, "enrich", {"model": model}) as run:
        run.counts = enrich_pending(str(settings.db_path), str(settings.home), model, run.run_id)
    logger().info("enrich: %(scored)d rows scored with %(model_version)s", run.counts)
    return run.counts
