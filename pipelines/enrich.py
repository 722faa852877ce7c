"""The ``enrich`` flow: rows without NLP for the current model version → segment + classify in
Arrow batches → ``feedback_nlp``.

Rows scored by an older model version are re-scored (back-filled) batch by batch; each batch is
one transaction that replaces the old rows, so a run killed half-way leaves whole batches only and
the next run picks up the rest.

With the baseline model the texts are scored by ``CXLOOP_WORKERS`` processes (default: the cores
this process may use; ``models.parallel``), forked once per run, in chunks of 1,000–5,000 rows
(fewer than two chunks pending: in-process); the writes stay in this process, in Arrow batches of
``BATCH_ROWS`` rows, in the rows' order, through one connection held for up to
``warehouse.HOLD_SECONDS`` at a time (``warehouse.HeldWriter``: a checkpoint per hold, not per
batch). A run with workers stores exactly the rows a serial run stores (``tests/test_speed.py``).

With ``CXLOOP_DASK_ADDRESS`` or ``CXLOOP_DASK_WORKERS`` set, the scoring fans out over a Dask
cluster instead, partition by partition, through Prefect's ``DaskTaskRunner``; this process stays
the one writer (``pipelines.distributed``; a local run and a cluster run store the same rows,
``tests/test_dask_enrich.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, task

from models.parallel import AnalyzerPool, parallel_safe, warm_up
from models.predict import Analyzer, current_analysis_version, gc_paused
from nlp import Taxonomy
from pipelines import progress
from pipelines.config import Settings, worker_count
from pipelines.distributed import ClusterConfigError, ClusterSettings, cluster_settings, staging_root, task_runner
from pipelines.runs import input_state, logger, recorded_run, unchanged_result
from pipelines.warehouse import HeldWriter, Warehouse

BATCH_ROWS = 20_000      # rows per write transaction
CHUNK_ROWS = 5_000       # at most this many rows per unit of work sent to a worker …
MIN_CHUNK_ROWS = 1_000   # … at least this many (fewer pending rows: scored in-process, no fork)


def chunk_bounds(rows: int, workers: int, chunk_rows: int | None = None) -> list[tuple[int, int]]:
    """(offset, length) of the chunks that ``rows`` pending rows go to the workers in: ``chunk_rows``
    each when given; else each a quarter of what remains per worker, within ``MIN_CHUNK_ROWS`` –
    ``CHUNK_ROWS`` (guided: large while much remains, small at the end, so no worker idles long on
    the last one). Large chunks score faster: the vocabularies' hash tables stay in cache across more
    texts (the compiled look-ups took 0.3 s more per 20,000 texts in chunks of 500 than of 5,000)."""
    out: list[tuple[int, int]] = []
    start = 0
    while start < rows:
        size = chunk_rows or min(CHUNK_ROWS, max(MIN_CHUNK_ROWS, math.ceil((rows - start) / (4 * workers))))
        size = min(size, rows - start)
        out.append((start, size))
        start += size
    return out


NLP_SCHEMA = pa.schema([
    ("feedback_id", pa.string()), ("tokens", pa.string()), ("keywords", pa.list_(pa.string())),
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


# rows without NLP of ``version`` there must be (a lower bound: NLP rows of feedback since deleted count)
SURELY_PENDING_SQL = """
SELECT (SELECT count(*) FROM feedback) - (SELECT count(*) FROM feedback_nlp WHERE model_version = ?)
"""


def _pending(wh: Warehouse, version: str) -> pa.Table:
    """``feedback_id`` and ``text`` of the rows to score with ``version``, in the order they are scored."""
    with wh.connect() as con:
        return con.execute(PENDING_SQL, [version]).to_arrow_table()


class _Preload:
    """The analyzer ``enrich_pending`` will need, loaded and warmed up on a thread (see :func:`preload`)."""

    def __init__(self, model: str | None, settings: Settings) -> None:
        self.key = _preload_key(model, settings)
        self.analyzer: Analyzer | None = None   # None after a failure: enrich loads it again, and fails there
        self.thread = threading.Thread(target=self._load, args=(model, settings), name="enrich-preload", daemon=True)

    def _load(self, model: str | None, settings: Settings) -> None:
        with contextlib.suppress(Exception):
            self.analyzer = _ready(model, settings, settings.load_taxonomy())


_PRELOAD: _Preload | None = None   # at most one, consumed (joined) by the next enrich of this process


def _preload_key(model: str | None, settings: Settings) -> tuple[str | None, str, str]:
    return model, str(settings.home), str(settings.db_path)


def preload(model: str | None, home: str, db: str) -> None:
    """Start loading the analyzer that the next ``enrich`` of this warehouse, in this process, will
    score with, on a thread. For a caller about to wait on DuckDB, which lets go of the GIL: the main
    job calls it when ingest has prepared its last file's records and only that file's transaction
    is left (``ingest_file(on_prepared=…)``), so the model loads on the other core in the meantime
    instead of after it (at 100,000 rows about 0.6 s of the 1.0 s the load and warm-up take). The
    next ``enrich`` waits for it and uses it if it is of the model version it scores with; either
    way no thread is left behind it (``enrich_flow`` drops one it did not use). A second call for
    the same model and warehouse while one is loading does nothing, and so does a call while a Dask
    cluster is configured (the cluster's workers load their own)."""
    global _PRELOAD
    try:
        if cluster_settings() is not None:
            return
    except ClusterConfigError:   # enrich_flow reports it
        return
    settings = Settings.resolve(home, db)
    if _PRELOAD is not None:
        if _PRELOAD.key == _preload_key(model, settings):
            return
        drop_preload()
    _PRELOAD = _Preload(model, settings)
    _PRELOAD.thread.start()


def _take_preload() -> _Preload | None:
    """The preload of this process, if any, waited for and no longer held."""
    global _PRELOAD
    pre, _PRELOAD = _PRELOAD, None
    if pre is not None:
        pre.thread.join()
    return pre


def _preloaded(model: str | None, settings: Settings, version: str) -> Analyzer | None:
    """The preloaded analyzer for ``model`` on this warehouse if it scores ``version``; None if there
    is none, it failed, or it is another one. Any preload is consumed here."""
    pre = _take_preload()
    if pre is None or pre.key != _preload_key(model, settings) or pre.analyzer is None \
            or pre.analyzer.model_version != version:
        return None
    return pre.analyzer


def drop_preload() -> None:
    """Wait for a preload nobody will use and drop it (before this process forks, or ends a flow)."""
    _take_preload()


def _ready(model: str | None, settings: Settings, taxonomy: Taxonomy) -> Analyzer:
    """The analyzer of ``model``, loaded and warmed up (what the workers inherit; see
    :func:`models.parallel.warm_up`). On a million pending rows reading them takes 0.8–1.2 s and this
    about 0.9 s, so :func:`enrich_pending` does the two at once."""
    analyzer = Analyzer.load(model, settings.models_dir, taxonomy, settings.cache_dir)
    if parallel_safe(analyzer):
        warm_up(analyzer)
    return analyzer


def sync_topics(wh: Warehouse, settings: Settings) -> None:
    """Mirror the taxonomy in use into the ``topics`` table (for the views and CX leads' SQL)."""
    tax = settings.load_taxonomy()
    rows = pa.table({"topic": [t.key for t in tax], "name": [t.name for t in tax], "stage": [t.stage for t in tax],
                     "team": [t.team for t in tax], "keywords": [list(t.keywords) for t in tax]})
    with wh.transaction() as con:
        con.execute("DELETE FROM topics")
        Warehouse.insert_arrow(con, "topics", rows)


def enrich_batch(analyzer: Analyzer, ids: list[str], texts: list[str], run_id: str) -> pa.Table:
    """NLP columns for one batch, as an Arrow table in the ``feedback_nlp`` layout: the words
    space-separated in one string per text (``nlp.segment.join_words``; migration 006 says why),
    encoded for the whole batch at once (``nlp.word_column.join_words_utf8``)."""
    from nlp.word_column import join_words_utf8  # compiled: numba is imported with it, here (as in nlp.segment)

    with gc_paused():   # until the analysis's lists are Arrow columns and gone (see models.predict.gc_paused)
        cols: dict[str, object] = dict(analyzer.analyze(texts))
        n = len(ids)
        at, data = join_words_utf8(cols["tokens"])   # type: ignore[arg-type]
        cols["tokens"] = pa.LargeStringArray.from_buffers(n, pa.py_buffer(at), pa.py_buffer(data)).cast(pa.string())
        table = pa.table({"feedback_id": ids, **cols, "enriched_at": _same(datetime.now(), n),
                          "run_id": [run_id] * n}, schema=NLP_SCHEMA)
        del cols
    return table


def _same(now: datetime, n: int) -> pa.Array:
    """``n`` times ``now`` as Arrow timestamps (µs, no time zone), from one value instead of ``n``
    Python datetimes (0.6 µs a row)."""
    return pa.array(np.full(n, np.datetime64(now, "us")), pa.timestamp("us"))


def _score_chunk(analyzer: Analyzer, chunk: tuple[list[str], list[str], str]) -> pa.Table:
    """One chunk of (ids, texts, run_id) → its ``feedback_nlp`` rows (runs in a worker)."""
    ids, texts, run_id = chunk
    return enrich_batch(analyzer, ids, texts, run_id)


def write_nlp(wh: Warehouse | HeldWriter, batch: pa.Table) -> int:
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
    ``chunk_rows``: rows per chunk (default: see :func:`chunk_bounds`)."""
    settings = Settings.resolve(home, db)
    wh = Warehouse(settings.db_path)
    taxonomy = settings.load_taxonomy()
    version = current_analysis_version(settings.models_dir, model, taxonomy)
    with wh.connect() as con:
        surely = con.execute(SURELY_PENDING_SQL, [version]).fetchone()[0] > 0   # type: ignore[index]
    if surely:   # read the rows while the model loads and warms up (DuckDB lets go of the GIL)
        with ThreadPoolExecutor(1, thread_name_prefix="enrich-pending") as ex:
            rows = ex.submit(_pending, wh, version)
            analyzer = _preloaded(model, settings, version) or _ready(model, settings, taxonomy)
            pending = rows.result()
    else:
        pending = _pending(wh, version)
        if pending.num_rows == 0:  # nothing new: no model to load
            drop_preload()
            logger().info("enrich: nothing to score with %s", version)
            return {"scored": 0, "model_version": version}
        analyzer = _preloaded(model, settings, version) or _ready(model, settings, taxonomy)
    if analyzer.model_version != version:  # the current model changed in between
        pending = _pending(wh, analyzer.model_version)
    workers = worker_count() if workers is None else workers
    chunks = [pending.slice(start, size) for start, size in chunk_bounds(pending.num_rows, workers, chunk_rows)]
    n_workers = min(workers, len(chunks))
    log = logger()
    log.info("enrich: %d rows to score with %s", pending.num_rows, analyzer.model_version)
    rep = progress.reporter()
    rep.start("enrich", pending.num_rows)
    done = 0
    work = ((c.column("feedback_id").to_pylist(), c.column("text").to_pylist(), run_id) for c in chunks)
    tables: list[pa.Table] = []

    with AnalyzerPool(analyzer, n_workers) as pool, HeldWriter(wh) as writer:

        def flush() -> int:
            n = write_nlp(writer, pa.concat_tables(tables)) if tables else 0
            tables.clear()
            return n

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


# -- on a Dask cluster (pipelines.distributed) ---------------------------------------------------
_PARTITION_ANALYZERS: dict[tuple[str, str | None, str | None], Analyzer] = {}  # per worker process


def _partition_analyzer(home: str, taxonomy: str | None, model: str | None) -> Analyzer:
    """The analyzer of this worker process, loaded on its first partition and kept for the next."""
    key = (home, taxonomy, model)
    if key not in _PARTITION_ANALYZERS:
        settings = Settings.resolve(home, taxonomy=taxonomy)
        _PARTITION_ANALYZERS[key] = Analyzer.load(model, settings.models_dir, settings.load_taxonomy(),
                                                  settings.cache_dir)
    return _PARTITION_ANALYZERS[key]


@task(name="score-partition", retries=2, retry_delay_seconds=5)
def score_partition(in_path: str, out_path: str, home: str, taxonomy: str | None, model: str | None,
                    version: str, run_id: str) -> int:
    """Score one staged partition (on a cluster worker) into ``out_path`` (Parquet, ``feedback_nlp``
    layout), chunk by chunk; the file appears whole or not at all. Returns its row count."""
    analyzer = _partition_analyzer(home, taxonomy, model)
    if analyzer.model_version != version:
        raise RuntimeError(f"this worker's model is {analyzer.model_version}, the run scores with {version}: "
                           "the worker does not see the same CXLOOP_HOME models (or the model changed mid-run)")
    part = pq.read_table(in_path)
    tmp = out_path + ".tmp"
    with pq.ParquetWriter(tmp, NLP_SCHEMA) as out:
        for chunk in part.to_batches(max_chunksize=CHUNK_ROWS):
            out.write_table(enrich_batch(analyzer, chunk.column("feedback_id").to_pylist(),
                                         chunk.column("text").to_pylist(), run_id))
    os.replace(tmp, out_path)
    return part.num_rows


@flow(name="enrich-on-cluster")
def enrich_on_cluster(db: str, home: str, model: str | None, run_id: str, partition_rows: int) -> dict:
    """Stage the pending rows as Parquet partitions, score them as ``score-partition`` task runs on
    the flow's task runner (a ``DaskTaskRunner``), load each finished partition in one transaction."""
    settings = Settings.resolve(home, db)
    wh = Warehouse(settings.db_path)
    version = current_analysis_version(settings.models_dir, model, settings.load_taxonomy())
    with wh.connect() as con:
        pending = con.execute(PENDING_SQL, [version]).to_arrow_table()
    log = logger()
    if pending.num_rows == 0:
        log.info("enrich: nothing to score with %s", version)
        return {"scored": 0, "model_version": version}
    stage = staging_root(settings.home) / run_id
    stage.mkdir(parents=True, exist_ok=True)
    taxonomy = settings.taxonomy_file()
    futures = []
    for i, part in enumerate(pending.to_batches(max_chunksize=partition_rows)):
        in_path, out_path = stage / f"in-{i:05d}.parquet", stage / f"out-{i:05d}.parquet"
        pq.write_table(pa.Table.from_batches([part]), in_path)
        futures.append(score_partition.submit(str(in_path), str(out_path), str(settings.home),
                                              str(taxonomy) if taxonomy else None, model, version, run_id))
    log.info("enrich: %d rows to score with %s in %d partitions", pending.num_rows, version, len(futures))
    rep = progress.reporter()
    rep.start("enrich", pending.num_rows)
    done, failed = 0, []
    try:
        for i, future in enumerate(futures):  # in partition order: the rows land as a local run stores them
            try:
                future.result()
            except Exception as e:  # noqa: BLE001 - the other partitions still land; the next run retries this one
                failed.append(f"partition {i}: {e}")
                continue
            scored = pq.read_table(stage / f"out-{i:05d}.parquet")
            done += write_nlp(wh, scored)
            rep.advance("enrich", scored.num_rows)
    finally:
        rep.finish("enrich")
        shutil.rmtree(stage, ignore_errors=True)
    if failed:
        raise RuntimeError(f"enrich: {len(failed)} of {len(futures)} partitions failed ({done} rows stored; "
                           f"the next run scores the rest): " + "; ".join(failed))
    return {"scored": done, "model_version": version}


def _enrich(settings: Settings, model: str | None, run_id: str, cluster: ClusterSettings | None) -> dict:
    if cluster is None:
        return enrich_pending(str(settings.db_path), str(settings.home), model, run_id)
    logger().info("enrich: scoring on a %s", cluster.description)
    on_cluster = enrich_on_cluster.with_options(task_runner=task_runner(cluster))
    return on_cluster(str(settings.db_path), str(settings.home), model, run_id, cluster.partition_rows)


@flow(name="enrich")
def enrich_flow(db: str | None = None, home: str | None = None, model: str | None = None) -> dict:
    """Segment and classify every stored row that lacks NLP for the current model version (on a Dask
    cluster when ``CXLOOP_DASK_ADDRESS`` or ``CXLOOP_DASK_WORKERS`` is set)."""
    try:
        return _enrich_flow(Settings.resolve(home, db), model)
    finally:
        drop_preload()   # one this run did not use (nothing to score, or scored on a cluster)


def _enrich_flow(settings: Settings, model: str | None) -> dict:
    cluster = cluster_settings()  # a bad setting fails here, before anything is recorded
    wh = Warehouse(settings.db_path)
    sync_topics(wh, settings)
    with recorded_run(wh, "enrich", {"model": model}) as run:
        version = current_analysis_version(settings.models_dir, model, settings.load_taxonomy())
        before = input_state(wh, model_version=version)
        if unchanged_result(wh, "enrich", before) is not None:
            # nothing stored or scored since the last run, which left nothing pending: no join over the table
            run.counts = {"scored": 0, "model_version": version, "inputs": before, "unchanged": True}
            logger().info("enrich: no feedback stored or scored since the last run; nothing to score")
            return {k: v for k, v in run.counts.items() if k != "inputs"}
        counts = _enrich(settings, model, run.run_id, cluster)
        after = input_state(wh, model_version=counts["model_version"])
        # the state after this run means "nothing pending" only if no feedback arrived while it scored
        same_feedback = (after["feedback"], after["ingested"]) == (before["feedback"], before["ingested"])
        run.counts = {**counts, "inputs": after if same_feedback else None, "unchanged": False}
    logger().info("enrich: %(scored)d rows scored with %(model_version)s", run.counts)
    return {k: v for k, v in run.counts.items() if k != "inputs"}   # the state is for the next run, in `runs`
