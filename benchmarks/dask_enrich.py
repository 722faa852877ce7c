"""``enrich`` on this machine's worker pool beside ``enrich`` on a local Dask cluster, in one run.

    .venv/bin/python benchmarks/dask_enrich.py [--rows 20000] [--workers 2] [--partition-rows 5000] [--data DIR]

The same 60-character reviews as ``pipeline_speed.py`` (``make_texts``) are ingested once; two copies
of that warehouse are then enriched with the baseline model through the ``enrich`` flow (Prefect's
temporary local API, started before either is timed, as ``cxloop enrich`` runs it): once with
``CXLOOP_WORKERS`` forked processes, once on a temporary ``distributed.LocalCluster`` of as many worker processes
(``CXLOOP_DASK_WORKERS``, partitions of ``--partition-rows``). It prints docs/s, seconds and peak
RSS (this process and its child processes, PSS) of each, their ratio, and whether both stored the
same ``feedback_nlp`` rows. On one machine the cluster cannot beat the pool (same cores, plus staging
to Parquet, model loads in each worker and the scheduler); the figure is its overhead, the price of
being able to add machines. JSON goes to ``benchmarks/results/dask_enrich.json``; exit status 2 when
the data file is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from ingest_enrich import default_data_dir, machine_info  # noqa: E402
from pipeline_speed import DATA_FILE, PeakRSS, make_texts, write_csv  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "dask_enrich.json"


def _nlp_rows(db: Path) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT * EXCLUDE (enriched_at, run_id) FROM feedback_nlp ORDER BY feedback_id").fetchall()
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partition-rows", type=int, default=5_000)
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args(argv)
    csv_path = (args.data or default_data_dir()) / DATA_FILE
    if not csv_path.is_file():
        print(f"error: {csv_path} is missing: the benchmark needs the shared data (--data DIR)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="cxloop-dask-"))
    home = tmp / "home"
    home.mkdir()
    os.environ.update({"CXLOOP_HOME": str(home), "PREFECT_HOME": str(tmp / "prefect"),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "CXLOOP_JIEBA_CACHE": str(home)})
    from pipelines.enrich import enrich_flow
    from pipelines.ingest import ingest_file
    from pipelines.records import ColumnMap
    from pipelines.warehouse import Warehouse

    texts, distinct = make_texts(csv_path, args.rows)
    write_csv(texts, tmp / "reviews.csv")
    pool_db, dask_db = tmp / "pool.duckdb", tmp / "dask.duckdb"
    ingest_file(Warehouse(pool_db), tmp / "reviews.csv", source=None, columns=ColumnMap(), channel=None,
                run_id="ingest", salt=b"bench")
    shutil.copy(pool_db, dask_db)
    print(f"{args.rows:,} texts ({distinct:,} distinct pieces), {args.workers} workers", flush=True)

    from prefect import flow

    flow(name="warm-up")(lambda: None)()  # Prefect's temporary API starts here, outside both measurements
    peak = PeakRSS()
    runs: list[dict[str, Any]] = []
    for name, db, env in (
            (f"worker pool ({args.workers} forked processes)", pool_db, {"CXLOOP_WORKERS": str(args.workers)}),
            (f"Dask LocalCluster ({args.workers} workers)", dask_db,
             {"CXLOOP_DASK_WORKERS": str(args.workers), "CXLOOP_PARTITION_ROWS": str(args.partition_rows)})):
        saved = {k: os.environ.get(k) for k in ("CXLOOP_WORKERS", "CXLOOP_DASK_WORKERS", "CXLOOP_PARTITION_ROWS")}
        os.environ.update(env)
        try:
            with peak.window() as mem:
                t0 = time.perf_counter()
                counts = enrich_flow(db=str(db), home=str(home), model="baseline")
                seconds = time.perf_counter() - t0
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        runs.append({"run": name, "rows": counts["scored"], "seconds": round(seconds, 2),
                     "per_second": round(counts["scored"] / seconds, 1), **mem, "load1": round(os.getloadavg()[0], 2)})
        print(f"  {name:<36} {counts['scored']:>8,} rows {seconds:7.1f} s {runs[-1]['per_second']:>8,.0f}/s "
              f"peak RSS {mem['peak_rss_mib']:,.0f} MiB", flush=True)
    same = _nlp_rows(pool_db) == _nlp_rows(dask_db)
    ratio = runs[1]["per_second"] / runs[0]["per_second"]
    print(f"Dask ÷ pool: {ratio:.2f}×; identical feedback_nlp rows: {same}")
    doc = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_info(),
           "rows": args.rows, "workers": args.workers, "partition_rows": args.partition_rows, "runs": runs,
           "dask_vs_pool": round(ratio, 3), "identical_rows": same}
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
