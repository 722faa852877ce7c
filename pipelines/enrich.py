"""The ``enrich`` flow: rows without NLP for the current model version → segment + classify in
Arrow batches → ``feedback_nlp``.

Rows scored by an older model version are re-scored (back-filled) batch by batch; each batch is
one transaction that replaces the old rows, so a run killed half-way leaves whole batches only and
the next run picks up the rest.

With the baseline model the texts are scored by ``CXLOOP_WORKERS`` processes (default: the cores
this process may use; ``models.parallel``), forked once per run, in chunks of 1,000–2,000 rows
(fewer than two chunks pending: in-process); the writes stay in this process, in Arrow batches of
``BATCH_ROWS`` rows, in the rows' order. A run with workers stores exactly the rows a serial run
stores (``tests/test_speed.py``).
"""

from __future__ import annotations

import math
from datetime import datetime

import pyarrow as pa
from prefect import flow, task

from models.parallel import AnalyzerPool
from models.predict import Analyzer, current_analysis_version
from pipelines import progress
from pipelines.config import Settings, worker_count
from pipelines.runs import logger, recorded_run
from pipelines.warehouse import Warehouse

BATCH_ROWS = 20_000      # rows per write transaction
CHUNK_ROWS = 2_000       # at most this many rows per unit of work sent to a worker …
MIN_CHUNK_ROWS = 1_000   # … at least this many (fewer pending rows: scored in-process, no fork)

NLP_SCHEMA = pa.schema([
    ("feedback_id", pa.string()), ("tokens", pa.list_(pa.string())), ("keywords", pa.list_(pa.string())),
    ("sentiment", pa.string()), ("sentiment_score", pa.float32()), ("p_neg", pa.float32()),
    ("p_neu", pa.float32()), ("p_pos", pa.float32()), ("topics", pa.list_(pa.string())),
    ("model_version", pa.string()), ("enriched_at", pa.timestamp("us")), ("run_id", pa.string()),
    ("topic_sentiments", pa.list_(pa.struct([("topic", pa.string()), ("sentiment", pa.string()),
                                             ("score", pa.float32())]))),
    ("emotion", pa.string()), ("emotion_evidence", pa.list_(pa.string())), ("urgent", pa.bool_()),
    ("urgency_reasons", pa.list_(pa.string())),
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


def _score_chunk(analyzer: Analyzer, chunk: tuple[list[str], list[str], str]) -> pa.Table:
    """One chunk of (ids, texts, run_id) → its ``feedback_nlp`` rows (runs in a worker)."""
    ids, texts, run_id = chunk
    return enrich_batch(analyzer, ids, texts, run_id)


def write_nlp(wh: Warehouse, batch: pa.Table) -> int:
    """Replace the NLP rows of a batch in one transaction (idempotent: a row another run stored in
    the meantime is replaced, not duplicated)."""
    with wh.transaction() as con:
        con.register("_ids", batch.select(["feedback_id"]))
        con.execute("DELETE FROM feedback_nlp WHERE feedback_id IN (SELECT feedback_id FROM _ids)")
        con.unregister("_ids")
        return Warehouse.insert_arrow(con, "feedback_nlp", batch)


@task(name="enrich-pending")
def enrich_pending(db: str, home: str, model: str | None, run_id: str, batch_rows: int = BATCH_ROWS,
                   workers: int | None = None, chunk_rows: int | None = None) -> dict:
    """Score every row that lacks NLP for the current model version. ``workers``: processes
    (default ``CXLOOP_WORKERS``, else the usable cores), never more than there are chunks;
    ``chunk_rows``: rows per chunk (default: about four chunks per worker, within
    ``MIN_CHUNK_ROWS``–``CHUNK_ROWS``)."""
    settings = Settings.resolve(home, db)
    wh = Warehouse(settings.db_path)
    taxonomy = settings.load_taxonomy()
    version = current_analysis_version(settings.models_dir, model, taxonomy)
    with wh.connect() as con:
        pending = con.execute(PENDING_SQL, [version]).to_arrow_table()
    if pending.num_rows == 0:  # nothing new: no model to load
        logger().info("enrich: nothing to score with %s", version)
        return {"scored": 0, "model_version": version}
    analyzer = Analyzer.load(model, settings.models_dir, taxonomy, settings.cache_dir)
    if analyzer.model_version != version:  # the current model changed in between
        with wh.connect() as con:
            pending = con.execute(PENDING_SQL, [analyzer.model_version]).to_arrow_table()
    workers = worker_count() if workers is None else workers
    if chunk_rows is None:
        chunk_rows = min(CHUNK_ROWS, max(MIN_CHUNK_ROWS, math.ceil(pending.num_rows / (4 * workers))))
    chunks = pending.to_batches(max_chunksize=chunk_rows)
    n_workers = min(workers, len(chunks))
    log = logger()
    log.info("enrich: %d rows to score with %s", pending.num_rows, analyzer.model_version)
    rep = progress.reporter()
    rep.start("enrich", pending.num_rows)
    done = 0
    work = ((c.column("feedback_id").to_pylist(), c.column("text").to_pylist(), run_id) for c in chunks)
    tables: list[pa.Table] = []

    def flush() -> int:
        n = write_nlp(wh, pa.concat_tables(tables)) if tables else 0
        tables.clear()
        return n

    with AnalyzerPool(analyzer, n_workers) as pool:
        if pool.workers > 1:
            log.info("enrich: %d worker processes", pool.workers)
        for table in pool.imap(_score_chunk, work):
            tables.append(table)
            if sum(t.num_rows for t in tables) >= batch_rows:
                done += flush()
            rep.advance("enrich", table.num_rows)
        done += flush()
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
