"""Throughput benchmark for cxloop's ingest + enrich path on real Chinese reviews.

What is measured (wall-clock seconds and documents per second, all stages on the same N texts):

1. ``normalise``   ``nlp.normalize_text`` on each raw review text.
2. ``redact``      ``nlp.redact`` on each normalised text.
3. ``segment``     ``nlp.default_segmenter().cut_many(texts)`` on the redacted texts.
4. ``classify``    the shipped sentiment model: ``Analyzer.load().model.predict_proba(texts, tokens)``
                   with the tokens from stage 3, and separately the whole ``Analyzer.analyze(texts)``
                   (segment + classify + keywords + topics).
5. ``ingest``      end to end: the texts written to a CSV (id, created_at, channel, text) and run through
                   ``pipelines.ingest.ingest_file`` into a fresh DuckDB warehouse (read, validate,
                   normalise, redact, dedupe, Arrow insert, one transaction).
6. ``enrich``      end to end: ``pipelines.enrich.enrich_pending.fn`` (the Prefect task's plain function,
                   no Prefect run) on every ingested row, after ``sync_topics``.
7. ``write``       DuckDB Arrow batch insert (``INSERT INTO t SELECT * FROM <registered arrow table>``) of
                   all N rows against row-by-row ``INSERT INTO t VALUES (?, ?, ?)`` on a subset, extrapolated
                   per row: once in autocommit mode (one transaction per row) and once inside a single
                   transaction.

The texts are the ``text`` column of ``<data>/sentiment/reviews_sentiment.csv`` in a fixed shuffled
order (seed 0), cycled when N exceeds the file's rows. One-off costs (model load, jieba dictionary
load, OpenCC start-up) are paid in a warm-up and reported separately, not inside the stage timings.
After each stage the process's peak RSS (``ru_maxrss``) is recorded. The figures are printed as a
table and written as JSON to ``benchmarks/results/ingest_enrich.json``. Nothing is asserted: this
only measures. ``CXLOOP_HOME`` (and Prefect's home) point at a temporary folder for the run, so the
repository's ``data/`` folder is never touched.

    .venv/bin/python benchmarks/ingest_enrich.py [--rows 50000] [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "ingest_enrich.json"
DATA_FILE = Path("sentiment") / "reviews_sentiment.csv"
DEFAULT_ROWS = 50_000
ROW_BY_ROW_ROWS = 2_000
SEED = 0


@dataclass
class Stage:
    """One measured stage."""

    name: str
    what: str
    n: int
    seconds: float
    unit: str = "docs"
    peak_rss_mib: float = 0.0
    rss_mib: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")


# -- helpers ------------------------------------------------------------------------------------
def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float | None:
    """Current resident set size from /proc (None where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, wall seconds) of calling ``fn``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def default_data_dir() -> Path:
    env = os.environ.get("CXLOOP_SHARED_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


def load_texts(csv_path: Path, n: int) -> tuple[list[str], int]:
    """``n`` review texts in a fixed shuffled order (cycled if the file has fewer), and the file's row count."""
    with csv_path.open(encoding="utf-8", newline="") as f:
        texts = [row["text"] or "" for row in csv.DictReader(f)]
    if not texts:
        raise SystemExit(f"error: {csv_path} has no rows")
    order = list(range(len(texts)))
    random.Random(SEED).shuffle(order)
    return [texts[order[i % len(order)]] for i in range(n)], len(texts)


def machine_info() -> dict[str, Any]:
    import duckdb
    import pyarrow

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(), "cpu_usable": usable, "cpu_model": _cpu_model(),
        "platform": platform.platform(), "python": platform.python_version(),
        "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        info["git"] = commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# -- the stages ---------------------------------------------------------------------------------
class Bench:
    """Runs the stages in order, collecting :class:`Stage` records."""

    def __init__(self, raw: list[str], tmp: Path, log: Callable[[str], None]) -> None:
        self.raw = raw
        self.n = len(raw)
        self.tmp = tmp
        self.log = log
        self.stages: list[Stage] = []
        self.setup: dict[str, float] = {}
        self.setup_rss_mib: dict[str, float | None] = {}

    def record(self, stage: Stage) -> None:
        stage.peak_rss_mib = round(peak_rss_mib(), 1)
        rss = current_rss_mib()
        stage.rss_mib = round(rss, 1) if rss is not None else None
        self.stages.append(stage)
        self.log(f"  {stage.name:<18} {stage.seconds:8.2f} s  {stage.per_second:>10,.0f} {stage.unit}/s  "
                 f"peak RSS {stage.peak_rss_mib:,.0f} MiB")

    def warm_up(self) -> None:
        """Pay one-off costs (imports, OpenCC, jieba dictionaries, model load) outside the timings."""
        import nlp
        from models.predict import Analyzer

        sample = self.raw[:50]
        _, self.setup["opencc_first_call_s"] = timed(lambda: [nlp.normalize_text(t) for t in sample])
        seg = nlp.default_segmenter()
        _, self.setup["jieba_initialize_s"] = timed(seg.initialize)
        self.analyzer, self.setup["analyzer_load_s"] = timed(Analyzer.load)
        self.analyzer.analyze([nlp.normalize_text(t) for t in sample])
        rss = current_rss_mib()
        self.setup_rss_mib = {"peak_rss_after_warmup_mib": round(peak_rss_mib(), 1),
                              "rss_after_warmup_mib": round(rss, 1) if rss is not None else None}

    def nlp_stages(self) -> None:
        import nlp

        self.log("[1/7] normalise")
        self.normalised, s = timed(lambda: [nlp.normalize_text(t) for t in self.raw])
        self.record(Stage("normalise", "nlp.normalize_text", self.n, s))

        self.log("[2/7] redact")
        redactions, s = timed(lambda: [nlp.redact(t) for t in self.normalised])
        self.redacted = [r.text for r in redactions]
        pii = sum(r.has_pii for r in redactions)
        self.record(Stage("redact", "nlp.redact", self.n, s, note=f"{pii} texts with PII",
                          extra={"texts_with_pii": pii}))

        self.log("[3/7] segment")
        seg = nlp.default_segmenter()
        self.tokens, s = timed(lambda: seg.cut_many(self.redacted))
        n_tokens = sum(map(len, self.tokens))
        self.record(Stage("segment", "default_segmenter().cut_many", self.n, s,
                          note=f"{n_tokens / s:,.0f} tokens/s", extra={"tokens": n_tokens}))

    def classify_stages(self) -> None:
        self.log("[4/7] classify")
        a = self.analyzer
        proba, s = timed(lambda: a.model.predict_proba(self.redacted, self.tokens))
        self.scores = (proba[:, a.model.labels.index("pos")] - proba[:, a.model.labels.index("neg")]).tolist()
        self.record(Stage("classify", "model.predict_proba(texts, tokens)", self.n, s,
                          note=f"model {a.model_version}", extra={"model_version": a.model_version}))
        _, s = timed(lambda: a.analyze(self.redacted))
        self.record(Stage("analyze", "Analyzer.analyze (seg+clf+kw+topics)", self.n, s,
                          note="one call on all N texts"))

    def pipeline_stages(self) -> None:
        from pipelines.config import Settings
        from pipelines.enrich import enrich_pending, sync_topics
        from pipelines.ingest import ingest_file
        from pipelines.records import ColumnMap
        from pipelines.warehouse import Warehouse

        self.log("[5/7] ingest (end to end)")
        csv_path = self.tmp / "bench_reviews.csv"
        start = datetime(2024, 1, 1)
        with csv_path.open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "created_at", "channel", "text"])
            for i, text in enumerate(self.raw):
                w.writerow([f"r{i:07d}", (start + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S"),
                            "app_review", text])
        db_path = self.tmp / "bench.duckdb"
        wh = Warehouse(db_path)

        def migrate() -> None:
            with wh.connect():
                pass

        _, self.setup["warehouse_migrate_s"] = timed(migrate)
        res, s = timed(lambda: ingest_file(wh, csv_path, source="bench", columns=ColumnMap(), channel="app_review",
                                           run_id="bench", salt=b"x"))
        self.record(Stage("ingest", "ingest_file (CSV → feedback)", res.read, s, unit="rows",
                          note=f"{res.stored} stored, {res.duplicates} dup, {res.quarantined} quarantined",
                          extra={"read": res.read, "stored": res.stored, "duplicates": res.duplicates,
                                 "quarantined": res.quarantined, "reasons": res.reasons,
                                 "csv_bytes": csv_path.stat().st_size}))

        self.log("[6/7] enrich (end to end)")
        settings = Settings.resolve(self.tmp, db_path)
        _, s_topics = timed(lambda: sync_topics(wh, settings))
        out, s = timed(lambda: enrich_pending.fn(db=str(db_path), home=str(self.tmp), model=None, run_id="bench"))
        self.record(Stage("enrich", "enrich_pending.fn (feedback → feedback_nlp)", out["scored"], s, unit="rows",
                          note=f"incl. model load; sync_topics {s_topics:.2f} s not incl.",
                          extra={**out, "sync_topics_s": round(s_topics, 3),
                                 "db_bytes": db_path.stat().st_size}))

    def write_stage(self) -> dict[str, Any]:
        import duckdb
        import pyarrow as pa

        self.log("[7/7] write: Arrow batch vs row-by-row")
        ids = [f"r{i:07d}" for i in range(self.n)]
        table = pa.table({"id": pa.array(ids, pa.string()), "text": pa.array(self.redacted, pa.string()),
                          "score": pa.array(self.scores, pa.float32())})
        ddl = "CREATE TABLE t (id VARCHAR, text VARCHAR, score FLOAT)"
        con = duckdb.connect(str(self.tmp / "write.duckdb"))
        try:
            con.execute(ddl)

            def arrow_insert() -> None:
                con.register("arrow_batch", table)
                con.execute("INSERT INTO t SELECT * FROM arrow_batch")
                con.unregister("arrow_batch")

            _, s_arrow = timed(arrow_insert)
            assert con.execute("SELECT count(*) FROM t").fetchone()[0] == self.n
            self.record(Stage("write: arrow", "INSERT INTO t SELECT * FROM arrow (all N)", self.n, s_arrow,
                              unit="rows"))

            m = min(ROW_BY_ROW_ROWS, self.n)
            rows = list(zip(ids[:m], self.redacted[:m], self.scores[:m], strict=True))
            con.execute("DROP TABLE t")
            con.execute(ddl)

            def row_by_row() -> None:
                for row in rows:
                    con.execute("INSERT INTO t VALUES (?, ?, ?)", row)

            _, s_auto = timed(row_by_row)
            self.record(Stage("write: rows autocommit", f"execute(INSERT … VALUES) × {m}, autocommit", m, s_auto,
                              unit="rows", note=f"{m:,} rows; extrapolated to N: {s_auto / m * self.n:,.1f} s"))
            con.execute("DROP TABLE t")
            con.execute(ddl)

            def row_by_row_tx() -> None:
                con.execute("BEGIN TRANSACTION")
                row_by_row()
                con.execute("COMMIT")

            _, s_tx = timed(row_by_row_tx)
            self.record(Stage("write: rows 1 txn", f"execute(INSERT … VALUES) × {m}, one transaction", m, s_tx,
                              unit="rows", note=f"{m:,} rows; extrapolated to N: {s_tx / m * self.n:,.1f} s"))
        finally:
            con.close()
        per_row_arrow = s_arrow / self.n
        return {
            "rows_arrow": self.n, "rows_row_by_row": m,
            "arrow_s_per_row": per_row_arrow,
            "autocommit_s_per_row": s_auto / m, "one_txn_s_per_row": s_tx / m,
            "extrapolated_autocommit_s_for_n": s_auto / m * self.n, "extrapolated_one_txn_s_for_n": s_tx / m * self.n,
            "speedup_vs_autocommit": (s_auto / m) / per_row_arrow,
            "speedup_vs_one_txn": (s_tx / m) / per_row_arrow,
            "note": f"row-by-row timed on the first {m} rows and extrapolated per row to N={self.n}",
        }


# -- output -------------------------------------------------------------------------------------
def print_report(info: dict[str, Any], bench: Bench, write: dict[str, Any], source: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # piped output (make bench | tee) gets a fixed width instead of rich's 80-column fallback
    console = Console(width=None if sys.stdout.isatty() else 132)
    title = (f"cxloop ingest + enrich — N={bench.n:,} reviews · {info['date']} · "
             f"{info['cpu_usable']}/{info['cpu_count']} CPUs · Python {info['python']} · DuckDB {info['duckdb']}")
    table = Table(title=title, title_justify="left")
    table.add_column("stage", no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column("wall s", justify="right")
    table.add_column("throughput", justify="right", no_wrap=True)
    table.add_column("peak RSS", justify="right", no_wrap=True)
    table.add_column("note")
    for st in bench.stages:
        table.add_row(st.name, f"{st.n:,}", f"{st.seconds:.3f}", f"{st.per_second:,.0f} {st.unit}/s",
                      f"{st.peak_rss_mib:,.0f} MiB", st.note)
    console.print(table)
    for st in bench.stages:
        console.print(f"  {st.name:<24} {st.what}", highlight=False)
    console.print(f"data: {source['path']} ({source['file_rows']:,} rows; shuffled with seed {SEED}"
                  f"{', cycled' if bench.n > source['file_rows'] else ''})")
    console.print(f"machine: {info['cpu_model']} · {info['platform']} · git {info['git']}")
    console.print("one-off setup (not in the stage timings): "
                  + ", ".join(f"{k} {v:.2f} s" for k, v in bench.setup.items())
                  + f"; peak RSS after warm-up {bench.setup_rss_mib['peak_rss_after_warmup_mib']:,.0f} MiB")
    console.print(f"write speed-up, Arrow batch vs row-by-row (row-by-row timed on {write['rows_row_by_row']:,} "
                  f"rows, extrapolated per row to N={bench.n:,}): "
                  f"[bold]{write['speedup_vs_autocommit']:,.0f}×[/bold] vs autocommit, "
                  f"[bold]{write['speedup_vs_one_txn']:,.0f}×[/bold] vs one transaction")
    console.print(f"results: {RESULTS_PATH}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"texts per stage (default {DEFAULT_ROWS})")
    parser.add_argument("--data", type=Path, default=None,
                        help="shared data folder (default: $CXLOOP_SHARED_DATA or ../shared/data from the repo)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    data_dir: Path = args.data or default_data_dir()
    csv_path = data_dir / DATA_FILE
    if not csv_path.is_file():
        print(f"error: benchmark data not found: expected {csv_path} "
              "(point at the folder holding sentiment/reviews_sentiment.csv with --data DIR or CXLOOP_SHARED_DATA)",
              file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="cxloop-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # before any cxloop / Prefect import: run-time state goes to the temporary folder only
        os.environ["CXLOOP_HOME"] = str(tmp)
        os.environ.pop("CXLOOP_DB", None)
        os.environ["PREFECT_HOME"] = str(tmp / ".prefect")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        sys.path.insert(0, str(REPO_ROOT))  # run from a checkout even without the editable install

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

        raw, file_rows = load_texts(csv_path, args.rows)
        source = {"path": str(csv_path), "file_rows": file_rows, "seed": SEED}
        log(f"cxloop bench: {len(raw):,} texts from {csv_path} (temp home {tmp})")
        info = machine_info()
        bench = Bench(raw, tmp, log)
        log("warm-up (OpenCC, jieba dictionaries, model load)")
        bench.warm_up()
        bench.nlp_stages()
        bench.classify_stages()
        bench.pipeline_stages()
        write = bench.write_stage()

    doc = {
        "benchmark": "ingest_enrich", "rows": bench.n, "data": source, "machine": info,
        "setup_s": {k: round(v, 4) for k, v in bench.setup.items()}, "after_warmup": bench.setup_rss_mib,
        "stages": [{**asdict(st), "per_second": round(st.per_second, 1), "seconds": round(st.seconds, 4)}
                   for st in bench.stages],
        "write": write, "final_peak_rss_mib": round(peak_rss_mib(), 1),
    }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_report(info, bench, write, source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
