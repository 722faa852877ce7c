"""A day's new feedback on a warehouse that has grown: ingest + enrich of new rows beside a large table.

    .venv/bin/python benchmarks/incremental_run.py [--existing 100000 1000000] [--new 10000] [--repeat 2] [--data DIR]

A team adds feedback every day to a warehouse that keeps growing, so what a run costs should depend on
what it adds, not on what is already stored. For each ``--existing`` size, a fresh warehouse gets that
many rows in ``feedback`` and ``feedback_nlp`` (synthetic, written by SQL, scored with the current
analysis version so that nothing old is pending), then ``ingest_file`` of ``--new`` 60-character
reviews (``pipeline_speed.make_texts``) and ``sync_topics`` + ``enrich_pending.fn`` run as in
``pipeline_speed.py`` (the model preloaded while ingest commits, the kernels loaded before the clock).

Two warehouses side by side, in alternating fresh processes:

as shipped    ``feedback`` and ``feedback_nlp`` without a primary key (migration 008: the writes keep
              their keys unique);
primary keys  the same with ``PRIMARY KEY (feedback_id)`` on both, as before migration 008: DuckDB
              keeps it in an ART index and rewrites the index whole at every checkpoint, which each
              write ends with when it closes the file.

The table gives the median of ``--repeat`` runs of each and the ratio. JSON goes to
``benchmarks/results/incremental_run.json``; exit status 2 when the data file is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from ingest_enrich import default_data_dir, machine_info  # noqa: E402
from pipeline_speed import DATA_FILE, make_texts, write_csv  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "incremental_run.json"
VARIANTS = ("as shipped", "primary keys")


def child(existing: int, new_csv: Path, keys: bool) -> dict[str, float]:
    """One run in this (fresh) process; CXLOOP_HOME is a fresh folder."""
    from pipelines.cli import warm_up_flows
    from pipelines.config import Settings
    from pipelines.enrich import current_analysis_version, enrich_pending, preload, sync_topics
    from pipelines.ingest import ingest_file
    from pipelines.records import ColumnMap
    from pipelines.warehouse import Warehouse

    home = Path(os.environ["CXLOOP_HOME"])
    db = home / "cx.duckdb"
    wh = Warehouse(db)
    settings = Settings.resolve(home, db)
    version = current_analysis_version(settings.models_dir, "baseline", settings.load_taxonomy())
    with wh.connect() as con:
        if keys:
            for table in ("feedback", "feedback_nlp"):
                con.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (feedback_id)")
        con.execute(f"""INSERT INTO feedback SELECT md5(i::VARCHAR), 'earlier', NULL,
            TIMESTAMP '2025-01-01' + INTERVAL (i % 300) DAY, 'app_review', NULL, NULL, NULL, NULL,
            '以前的评论' || i, left(md5('k' || i::VARCHAR), 16), NULL, [], NULL, TIMESTAMP '2025-11-01', 'earlier'
            FROM range({existing}) r(i)""")
        con.execute(f"""INSERT INTO feedback_nlp BY NAME SELECT md5(i::VARCHAR) AS feedback_id,
            '以前 的 评论' AS tokens,
            ['评论'] AS keywords, 'neu' AS sentiment, 0 AS sentiment_score, 0 AS p_neg, 1 AS p_neu, 0 AS p_pos,
            [] AS topics, ? AS model_version, TIMESTAMP '2025-11-01' AS enriched_at, 'earlier' AS run_id,
            [] AS topic_sentiments, 'none' AS emotion, [] AS emotion_evidence, false AS urgent,
            [] AS urgency_reasons FROM range({existing}) r(i)""", [version])
        con.execute("CHECKPOINT")
    warm_up_flows()   # as cxloop run does while Prefect's API starts (see pipeline_speed.py)
    t0 = time.perf_counter()
    res = ingest_file(wh, new_csv, source="bench", columns=ColumnMap(), channel="app_review", run_id="bench",
                      salt=b"bench", on_prepared=lambda: preload("baseline", str(home), str(db)))
    t1 = time.perf_counter()
    sync_topics(wh, settings)
    out = enrich_pending.fn(db=str(db), home=str(home), model="baseline", run_id="bench")
    t2 = time.perf_counter()
    if out["scored"] != res.stored:
        raise SystemExit(f"scored {out['scored']} of {res.stored} new rows")
    return {"ingest_s": t1 - t0, "enrich_s": t2 - t1, "total_s": t2 - t0, "stored": res.stored}


def run(existing: int, new_csv: Path, keys: bool, tmp: Path) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(dir=tmp))
    out = home / "result.json"
    env = {**os.environ, "CXLOOP_HOME": str(home), "PREFECT_HOME": str(home / ".prefect"),
           "CXLOOP_SEGMENTER": os.environ.get("CXLOOP_SEGMENTER", "rjieba")}
    env.pop("CXLOOP_DB", None)
    subprocess.run([sys.executable, __file__, "--child", str(existing), str(new_csv), str(int(keys)), str(out)],
                   env=env, check=True)
    result = json.loads(out.read_text(encoding="utf-8"))
    shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        existing, new_csv, keys, out = int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1", Path(sys.argv[5])
        out.write_text(json.dumps(child(existing, new_csv, keys)), encoding="utf-8")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--existing", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--new", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args()
    csv_path = (args.data or default_data_dir()) / DATA_FILE
    if not csv_path.is_file():
        print(f"error: {csv_path} is missing: the benchmark needs the shared data (--data DIR)", file=sys.stderr)
        return 2
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    info = machine_info()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cxloop-incremental-") as tmp_name:
        tmp = Path(tmp_name)
        new_csv = tmp / "new.csv"
        write_csv(make_texts(csv_path, args.new)[0], new_csv)
        for existing in args.existing:
            runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
            for r in range(args.repeat):
                for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):   # alternating order
                    res = run(existing, new_csv, variant == "primary keys", tmp)
                    runs[variant].append(res)
                    console.print(f"  {existing:>10,} existing · {variant:<12} · ingest {res['ingest_s']:.2f} s, "
                                  f"enrich {res['enrich_s']:.2f} s, total {res['total_s']:.2f} s")
            med = {v: {k: statistics.median(x[k] for x in runs[v]) for k in ("ingest_s", "enrich_s", "total_s")}
                   for v in VARIANTS}
            rows.append({"existing": existing, "new": args.new, "median": med, "runs": runs,
                         "speedup": med["primary keys"]["total_s"] / med["as shipped"]["total_s"]})
    table = Table(title=f"{args.new:,} new reviews on a grown warehouse — {info['date']} · {info['cpu_usable']} "
                        f"CPUs ({info['cpu_model']}) · median of {args.repeat}")
    for col in ("existing rows", "variant", "ingest s", "enrich s", "total s", "new rows/s", "vs primary keys"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    for row in rows:
        for v in VARIANTS:
            m = row["median"][v]
            table.add_row(f"{row['existing']:,}", v, f"{m['ingest_s']:.2f}", f"{m['enrich_s']:.2f}",
                          f"{m['total_s']:.2f}", f"{row['new'] / m['total_s']:,.0f}",
                          f"{row['speedup']:.2f}×" if v == "as shipped" else "")
    console.print(table)
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps({"benchmark": "incremental_run", "machine": info, "rows": rows}, indent=1),
                            encoding="utf-8")
    console.print(f"results: {RESULTS_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
