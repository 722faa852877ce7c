"""Speed of the baseline path (ingest → enrich → write) beside its anchors, at 10k and 100k rows.

    .venv/bin/python benchmarks/pipeline_speed.py [--sizes 10000 100000] [--million] [--workers N] [--data DIR]

The texts are 60-character reviews: the ``text`` column of ``<data>/sentiment/reviews_sentiment.csv``
in a fixed shuffled order, joined and cut every 60 characters (68,702 distinct pieces). Past the
end of the file the pieces come round again *with variation*: in every run of two or more 汉字
one character is replaced by another drawn from the corpus, so that repeated rows are new text for
jieba and for the segmenter's cache (``--million`` adds a 1,000,000-row run built that way).

For each size, in fresh processes (one for the components, one for the pipeline, so that each
peak memory is its own):

anchors      plain jieba (default dictionary, HMM) on one core; scikit-learn's TF-IDF transform +
             linear predict (the shipped baseline's vectorisers) on one core; a DuckDB insert from
             Arrow of (id, text, score) rows. Measured on at most ``--anchor-rows`` rows.
components   cxloop's segmenter (CX dictionary, its block cache cold at the start) on one core; the
             baseline sentiment model and the topic model given the tokens, one core; both models
             on the same batches with their look-ups shared (``models.features.SharedLookups``,
             as ``Analyzer`` runs them) beside each looking its texts up itself;
             ``Analyzer.analyze`` with the baseline in one process and over the worker pool;
             ``write_nlp`` of the resulting ``feedback_nlp`` rows. Capped at 100,000 rows.
pipeline     ``ingest_file`` of a CSV (id, created_at, channel, text) into a fresh warehouse, as the
             main job runs it (the model starts loading on a thread once the records are prepared,
             ``pipelines.enrich.preload``); ``sync_topics`` + ``enrich_pending.fn`` (``CXLOOP_WORKERS``
             processes: model load and fork included); end to end = the two together; then the re-run
             with no new data (the file is recognised by its hash, nothing is pending). Plain
             functions, no Prefect run. Before the clock starts, the process loads the compiled
             kernels' machine code as ``cxloop run`` does while Prefect's temporary API starts
             (``pipelines.cli.warm_up_flows``, 0.5–1 s, printed): like the imports, it is part of
             starting the process, not of the rows.

Peak RSS is the peak during each stage of this process plus its workers, each process's PSS (its RSS
with every page it shares, e.g. copy-on-write with its parent, divided among the processes sharing
it), summed; :class:`PeakRSS` says how it is sampled without slowing the run. The table puts the
anchors beside cxloop's figures with their ratios, and the time per row at the largest size divided
by that at the smallest (1.00: the time grows linearly). JSON goes to
``benchmarks/results/pipeline_speed.json``; exit status 2 when the data file is missing.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from ingest_enrich import default_data_dir, machine_info  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "pipeline_speed.json"
DATA_FILE = Path("sentiment") / "reviews_sentiment.csv"
CHARS = 60
SEED = 0
COMPONENT_CAP = 100_000
GOAL_DOCS_PER_S = 10_000
_HAN_RUN = re.compile(r"[\u4e00-\u9fff]{2,}")


# -- the texts ----------------------------------------------------------------------------------
def make_texts(csv_path: Path, n: int) -> tuple[list[str], int]:
    """``n`` texts of 60 characters (see the module doc) and how many of them are distinct pieces."""
    with csv_path.open(encoding="utf-8", newline="") as f:
        reviews = [" ".join((row["text"] or "").split()) for row in csv.DictReader(f)]
    random.Random(SEED).shuffle(reviews)
    stream = "".join(r for r in reviews if r)
    pieces = [stream[i:i + CHARS] for i in range(0, len(stream) - CHARS + 1, CHARS)]
    if not pieces:
        raise SystemExit(f"error: {csv_path} has no text")
    chars = [c for c in stream if "\u4e00" <= c <= "\u9fff"]
    out: list[str] = []
    round_ = 0
    while len(out) < n:
        if round_ == 0:
            out.extend(pieces[:n])
        else:
            rng = random.Random(SEED + round_)

            def vary(m: re.Match[str], rng: random.Random = rng) -> str:
                s = m.group(0)
                i = rng.randrange(len(s))
                return s[:i] + rng.choice(chars) + s[i + 1:]

            out.extend(_HAN_RUN.sub(vary, p) for p in pieces[:n - len(out)])
        round_ += 1
    return out, min(n, len(pieces))


def write_csv(texts: list[str], path: Path) -> None:
    start = datetime(2026, 1, 1)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "created_at", "channel", "text"])
        for i, t in enumerate(texts):
            w.writerow([f"r{i:08d}", (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S"), "app_review", t])


def read_csv_texts(path: Path, limit: int | None = None) -> list[str]:
    with path.open(encoding="utf-8", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    return texts[:limit] if limit else texts


# -- memory -------------------------------------------------------------------------------------
def _kib(pid: int, name: str, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _rss_kib(pid: int) -> int:
    """RSS of a process: a counter the kernel keeps, cheap to read (about 20 µs)."""
    return _kib(pid, "status", "VmRSS:") or 0


def _pss_kib(pid: int) -> int:
    """PSS of a process (its RSS with each shared page divided among the processes sharing it), else RSS."""
    pss = _kib(pid, "smaps_rollup", "Pss:")
    return _rss_kib(pid) if pss is None else pss


def _children(pid: int) -> list[str]:
    out: list[str] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += (task / "children").read_text().split()
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(int(c) for c in _children(p))
    return out


class PeakRSS:
    """Peak memory of a process tree (default: this process and its descendants): each process's
    PSS, summed. PSS is read from ``smaps_rollup``, which walks the process's page tables: about
    9 ms for a worker with the analyzer loaded, while it holds the process's memory map lock.
    Read every 50 ms, as this benchmark did until 2026-11-25, that took half a core from the
    measured run (3.4 s of system time per 100k-row pipeline, on 2 cores the pipeline needs).
    So the tree's RSS (kernel counters, ~20 µs a process) is summed every ``tick`` seconds,
    and PSS is read only where it could be a new peak, that is where the RSS sum is above the peak
    so far (PSS ≤ RSS; ``series=True`` reads it regardless, for a time series), and at most
    once per 10 times the last read took (the reads take at most 1/10 of a core).
    ``samples`` receives (epoch seconds, KiB) of each PSS sum read."""

    def __init__(self, pid: int | None = None, tick: float = 0.05, samples: list[tuple[float, int]] | None = None,
                 series: bool = False) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.peak_kib = 0
        self.samples = samples
        self.series = series
        self._tick = tick
        self._next = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def sample(self, force: bool = False) -> None:
        tree = process_tree(self.pid)
        now = time.perf_counter()
        if not force and (now < self._next or
                          (not self.series and sum(map(_rss_kib, tree)) <= self.peak_kib)):
            return
        total = sum(map(_pss_kib, tree))
        took = time.perf_counter() - now
        self._next = now + 10 * took
        self.peak_kib = max(self.peak_kib, total)
        if self.samples is not None:
            self.samples.append((time.time(), total))

    def _loop(self) -> None:
        while not self._stop.wait(self._tick):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @contextmanager
    def window(self) -> Iterator[dict[str, float]]:
        self.peak_kib = 0
        self.sample(force=True)
        out: dict[str, float] = {}
        yield out
        self.sample(force=True)
        out["peak_rss_mib"] = round(self.peak_kib / 1024, 1)


def measure(peak: PeakRSS, name: str, n: int, fn: Callable[[], Any], unit: str = "docs",
            log: Callable[[str], None] = print, **extra: Any) -> tuple[dict[str, Any], Any]:
    with peak.window() as mem:
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
    rate = round(n / seconds, 1) if seconds else None
    rec = {"stage": name, "n": n, "seconds": round(seconds, 4), "per_second": rate, "unit": unit, **mem,
           "load1": round(os.getloadavg()[0], 2), **extra}   # the machine's 1-minute load after the stage
    log(f"    {name:<34} {n:>9,} {unit:<4} {seconds:8.2f} s {rec['per_second'] or 0:>10,.0f}/s "
        f"peak RSS {mem['peak_rss_mib']:,.0f} MiB")
    return rec, result


# -- the Rust engine (the default; jieba is the reference) -----------------------------------
def rust_segmenter() -> Any:
    """cxloop's segmenter on rjieba (the default engine), or None (with a message) when it is not installed."""
    from nlp.segment import Segmenter, SegmenterError

    try:
        import rjieba  # noqa: F401
    except ImportError:
        print("rjieba is not installed (reinstall cxloop: pip install -e .): its rows are skipped", file=sys.stderr)
        return None
    try:
        return Segmenter(engine="rjieba")
    except SegmenterError as e:
        print(f"rjieba skipped: {e}", file=sys.stderr)
        return None


def agreement(reference: list[list[str]], other: list[list[str]]) -> dict[str, float]:
    """How far ``other`` follows the reference segmentation: the share of texts cut identically, and
    the word-boundary F1 over all texts (a boundary is a character offset where a word ends)."""
    same = sum(a == b for a, b in zip(reference, other, strict=True))
    hit = ref_n = oth_n = 0
    for a, b in zip(reference, other, strict=True):
        ends_a = set(_ends(a))
        ends_b = set(_ends(b))
        hit += len(ends_a & ends_b)
        ref_n += len(ends_a)
        oth_n += len(ends_b)
    f1 = 2 * hit / (ref_n + oth_n) if ref_n + oth_n else 1.0
    return {"identical_texts": round(same / max(1, len(reference)), 4), "boundary_f1": round(f1, 4)}


def _ends(words: list[str]) -> Iterator[int]:
    pos = 0
    for w in words:
        pos += len(w)
        yield pos


# -- child: anchors and components --------------------------------------------------------------
def child_components(csv_path: Path, anchor_rows: int, log: Callable[[str], None]) -> dict[str, Any]:
    import duckdb
    import jieba
    import numpy as np
    import pyarrow as pa

    from models.parallel import AnalyzerPool
    from models.predict import Analyzer
    from nlp.codepoints import PackedWords
    from nlp.segment import _BLOCK_RE, default_segmenter
    from pipelines.config import worker_count
    from pipelines.enrich import _score_chunk, chunk_bounds, write_nlp
    from pipelines.warehouse import Warehouse

    texts = read_csv_texts(csv_path, COMPONENT_CAP)
    n = len(texts)
    head = texts[:min(n, anchor_rows)]
    peak = PeakRSS()
    stages: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="cxloop-speed-"))

    # anchors
    plain = jieba.Tokenizer()
    plain.initialize()
    rec, head_tokens = measure(peak, "anchor: jieba (plain, HMM), 1 core", len(head),
                               lambda: [plain.lcut(t, HMM=True) for t in head], log=log)
    stages.append(rec)
    analyzer = Analyzer.load("baseline")
    analyzer.analyze(["预热"])
    model = analyzer.model
    seg = analyzer.segmenter
    seg_head = seg.cut_many(head)

    def sklearn_predict() -> np.ndarray:
        x = model.text_features.transform_slow(head, seg_head)
        return np.asarray(x @ model.coef.T) + model.intercept

    rec, _ = measure(peak, "anchor: TF-IDF + linear (sklearn), 1 core", len(head), sklearn_predict, log=log)
    stages.append(rec)
    arrow = pa.table({"id": [f"r{i}" for i in range(len(head))], "text": head,
                      "score": pa.array(np.zeros(len(head)), pa.float32())})
    con = duckdb.connect(str(tmp / "anchor.duckdb"))
    con.execute("CREATE TABLE t (id VARCHAR, text VARCHAR, score FLOAT)")

    def arrow_insert() -> None:
        con.register("batch", arrow)
        con.execute("BEGIN; INSERT INTO t SELECT * FROM batch; COMMIT")
        con.unregister("batch")

    rec, _ = measure(peak, "anchor: DuckDB insert from Arrow", len(head), arrow_insert, unit="rows", log=log)
    con.close()
    stages.append(rec)

    # cxloop's components, one core
    seg._cache.clear()
    blocks = [b for t in texts for b in _BLOCK_RE.split(t) if b]
    rec, tokens = measure(peak, "segmentation (cxloop), 1 core", n, lambda: seg.cut_many(texts), log=log,
                          cache_hit_rate=round(1 - len(set(blocks)) / max(1, len(blocks)), 3))
    stages.append(rec)
    fast = rust_segmenter()
    if fast is not None:  # the optional engine, against cxloop's jieba output as the reference
        fast.initialize()
        rec, fast_tokens = measure(peak, "segmentation (rjieba), 1 core", n, lambda: fast.cut_many(texts), log=log)
        rec.update(agreement(tokens, fast_tokens))
        log(f"    rjieba against jieba: {rec['identical_texts']:.2%} of texts cut identically, "
            f"word-boundary F1 {rec['boundary_f1']:.4f}")
        stages.append(rec)
        del fast_tokens
    rec, _ = measure(peak, "baseline sentiment, 1 core", n, lambda: model.predict_proba(texts, tokens), log=log)
    stages.append(rec)
    topics = analyzer.topic_model
    assert topics is not None
    rec, _ = measure(peak, "topic model, 1 core", n, lambda: topics.decide(topics.proba(texts, tokens)), log=log)
    stages.append(rec)

    batches = [(texts[s:s + 5_000], PackedWords(tokens[s:s + 5_000])) for s in range(0, n, 5_000)]

    def both_models() -> None:   # as Analyzer reads every text: the two models, batch by batch, words packed
        for batch, words in batches:
            model.predict_proba(batch, words)
            topics.proba(batch, words)

    def both_models_shared() -> None:   # ... their look-ups shared (models.features.SharedLookups)
        for batch, words in batches:
            with analyzer.shared.primed(batch, words):
                model.predict_proba(batch, words)
                topics.proba(batch, words)

    if analyzer.shared is not None:
        for name, fn in (("both models, own look-ups, 1 core", both_models),
                         ("both models, shared look-ups, 1 core", both_models_shared)):
            rec, _ = measure(peak, name, n, fn, log=log)
            stages.append(rec)

    workers = worker_count()
    work = [([f"r{i:08d}" for i in range(s, s + k)], texts[s:s + k], "bench")
            for s, k in chunk_bounds(n, workers)]   # as enrich_pending cuts them
    seg._cache.clear()

    def analyze_with(workers: int) -> list[pa.Table]:
        with AnalyzerPool(analyzer, workers) as pool:
            return list(pool.imap(_score_chunk, work))

    rec, _ = measure(peak, "Analyzer (baseline), 1 process", n, lambda: analyze_with(1), log=log)
    stages.append(rec)
    seg._cache.clear()
    rec, tables = measure(peak, f"Analyzer (baseline), {workers} workers", n, lambda: analyze_with(workers), log=log,
                          workers=workers)
    stages.append(rec)
    if fast is not None:  # every segmentation in the analysis (its clauses too) on rjieba, as the setting does
        os.environ["CXLOOP_SEGMENTER"] = "rjieba"
        analyzer = dataclasses.replace(analyzer, segmenter=default_segmenter())
        rec, _ = measure(peak, f"Analyzer (baseline, rjieba), {workers} workers", n, lambda: analyze_with(workers),
                         log=log, workers=workers)
        stages.append(rec)
    wh = Warehouse(tmp / "write.duckdb")
    with wh.connect():
        pass
    table = pa.concat_tables(tables)
    rec, _ = measure(peak, "write feedback_nlp (17 columns)", n, lambda: write_nlp(wh, table), unit="rows", log=log)
    stages.append(rec)
    return {"stages": stages, "workers": workers}


# -- child: the pipeline ------------------------------------------------------------------------
def child_pipeline(csv_path: Path, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    from pipelines.cli import warm_up_flows
    from pipelines.config import Settings, worker_count
    from pipelines.enrich import enrich_pending, preload, sync_topics
    from pipelines.ingest import ingest_file
    from pipelines.records import ColumnMap
    from pipelines.warehouse import Warehouse

    home = Path(os.environ["CXLOOP_HOME"])
    engine = os.environ.get("CXLOOP_SEGMENTER", "jieba")
    tag = "" if engine == "jieba" else f" · {engine}"   # the pipeline run with another segmentation engine
    db = home / "cx.duckdb"
    wh = Warehouse(db)
    t0 = time.perf_counter()
    with wh.connect():
        pass
    migrate_s = time.perf_counter() - t0
    settings = Settings.resolve(home, db)
    t0 = time.perf_counter()
    warm_up_flows()   # as `cxloop run` does while Prefect's temporary API starts, before the flows run
    warm_up_s = time.perf_counter() - t0
    log(f"    kernels' machine code loaded before the clock (as cxloop run does): {warm_up_s:.2f} s")
    peak = PeakRSS()
    stages: list[dict[str, Any]] = []

    def ingest() -> Any:   # as the main job runs it: the model loads while the file's transaction runs
        return ingest_file(wh, csv_path, source="bench", columns=ColumnMap(), channel="app_review",
                           run_id="bench", salt=b"bench",
                           on_prepared=lambda: preload("baseline", str(home), str(db)))

    def enrich() -> dict:
        sync_topics(wh, settings)
        return enrich_pending.fn(db=str(db), home=str(home), model="baseline", run_id="bench")

    t0 = time.perf_counter()
    rec, res = measure(peak, f"ingest (CSV → feedback){tag}", n, ingest, unit="rows", log=log)
    stored = res.stored
    peak_ingest = rec["peak_rss_mib"]
    stages.append(rec)
    rec, out = measure(peak, f"enrich (→ feedback_nlp){tag}", stored, enrich, unit="rows", log=log,
                       workers=worker_count())
    stages.append(rec)
    total = time.perf_counter() - t0
    peak_all = max(peak_ingest, rec["peak_rss_mib"])
    stages.append({"stage": f"end to end (ingest + enrich){tag}", "n": stored, "seconds": round(total, 4),
                   "per_second": round(stored / total, 1), "unit": "docs", "peak_rss_mib": peak_all})
    log(f"    {'end to end (ingest + enrich)' + tag:<34} {stored:>9,} docs {total:8.2f} s {stored / total:>10,.0f}/s")

    def rerun() -> tuple[Any, dict]:
        return ingest(), enrich()

    rec, (again, scored) = measure(peak, f"re-run, no new data{tag}", n, rerun, unit="rows", log=log)
    rec["per_second"] = None
    rec["detail"] = {"ingest_skipped": again.skipped, "scored": scored["scored"]}
    stages.append(rec)
    return {"stages": stages, "migrate_s": round(migrate_s, 3), "warm_up_s": round(warm_up_s, 3), "stored": stored,
            "scored": out["scored"]}


# -- the parent ---------------------------------------------------------------------------------
def run_child(kind: str, csv_path: Path, n: int, args: argparse.Namespace, home: Path,
              engine: str = "jieba") -> dict[str, Any]:
    home.mkdir(parents=True, exist_ok=True)
    out = home / f"{kind}-{n}.json"
    env = {**os.environ, "CXLOOP_HOME": str(home), "PREFECT_HOME": str(home / ".prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "CXLOOP_SEGMENTER": engine}
    env.pop("CXLOOP_DB", None)
    if args.workers:
        env["CXLOOP_WORKERS"] = str(args.workers)
    cmd = [sys.executable, __file__, "--child", kind, str(csv_path), str(n), str(out),
           "--anchor-rows", str(args.anchor_rows)]
    subprocess.run(cmd, env=env, check=True)
    return json.loads(out.read_text(encoding="utf-8"))


ANCHOR_OF = {
    "segmentation (cxloop), 1 core": "anchor: jieba (plain, HMM), 1 core",
    "baseline sentiment, 1 core": "anchor: TF-IDF + linear (sklearn), 1 core",
    "topic model, 1 core": "anchor: TF-IDF + linear (sklearn), 1 core",
    "segmentation (rjieba), 1 core": "anchor: jieba (plain, HMM), 1 core",
    "Analyzer (baseline), 1 process": "anchor: jieba (plain, HMM), 1 core",
    "write feedback_nlp (17 columns)": "anchor: DuckDB insert from Arrow",
    "both models, shared look-ups, 1 core": "both models, own look-ups, 1 core",
}


SHORT = {"anchor: jieba (plain, HMM), 1 core": "jieba", "anchor: TF-IDF + linear (sklearn), 1 core": "sklearn",
         "anchor: DuckDB insert from Arrow": "Arrow insert", "both models, own look-ups, 1 core": "own look-ups"}


def print_table(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    sizes = [r["rows"] for r in doc["runs"]]
    by_size = {r["rows"]: {s["stage"]: s for s in r["stages"]} for r in doc["runs"]}
    names = list(dict.fromkeys(s["stage"] for r in doc["runs"] for s in r["stages"]))
    info = doc["machine"]
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"cxloop baseline path — {info['date']} · {info['cpu_usable']}/{info['cpu_count']} CPUs "
                        f"({info['cpu_model']}) · load {info['loadavg_start']} · workers {doc['workers']}",
                  title_justify="left")
    table.add_column("stage", no_wrap=True)
    for n in sizes:
        table.add_column(f"{n:,}: per s", justify="right")
        table.add_column("s", justify="right")
        table.add_column("peak RSS", justify="right")
    big = sizes[-1]
    table.add_column(f"vs anchor ({big:,})", justify="right")
    if len(sizes) > 1:
        table.add_column(f"s/row {big // 1000:,}k ÷ {sizes[0] // 1000:,}k", justify="right")
    for name in names:
        row = [name]
        for n in sizes:
            s = by_size[n].get(name)
            if s is None:
                row += ["", "", ""]
                continue
            rate = f"{s['per_second']:,.0f}" if s.get("per_second") else "—"
            row += [rate, f"{s['seconds']:.2f}", f"{s['peak_rss_mib']:,.0f} MiB"]
        s = by_size[big].get(name)
        ratio = ""
        if s and s.get("per_second"):
            ref = by_size[big].get(ANCHOR_OF.get(name, ""))
            if ref and ref.get("per_second"):
                ratio = f"{s['per_second'] / ref['per_second']:.2f}× {SHORT[ref['stage']]}"
            elif name.startswith("end to end") or (name.startswith("Analyzer") and "workers" in name):
                ratio = f"{s['per_second'] / GOAL_DOCS_PER_S:.2f}× goal"
        row.append(ratio)
        if len(sizes) > 1:
            a, b = by_size[sizes[0]].get(name), by_size[big].get(name)   # 1.00: time grows linearly
            row.append(f"{(b['seconds'] / b['n']) / (a['seconds'] / a['n']):.2f}" if a and b and a["seconds"] else "")
        table.add_row(*row)
    console.print(table)
    for r in doc["runs"]:
        seg = next((s for s in r["stages"] if s["stage"].startswith("segmentation")), None)
        console.print(f"{r['rows']:,} rows: {r['distinct']:,} distinct 60-character pieces"
                      f"{', the rest varied copies' if r['distinct'] < r['rows'] else ''}; segmenter cache hits "
                      f"{seg['cache_hit_rate']:.0%} of blocks" if seg else "", highlight=False)
        fast = next((s for s in r["stages"] if s["stage"] == "segmentation (rjieba), 1 core"), None)
        if fast:
            console.print(f"{r['rows']:,} rows: rjieba cuts {fast['identical_texts']:.2%} of the texts exactly as "
                          f"cxloop's jieba does (word-boundary F1 {fast['boundary_f1']:.4f})", highlight=False)
    loads = [s["load1"] for r in doc["runs"] for s in r["stages"] if "load1" in s]
    if loads:
        console.print(f"machine load (1 min) after each stage: {min(loads):.1f}–{max(loads):.1f} "
                      f"(other work on the same cores slows the figures down)", highlight=False)
    console.print(f"goal: ≥ {GOAL_DOCS_PER_S:,} docs/s end to end on 2 cores · anchors on "
                  f"≤ {doc['anchor_rows']:,} rows · components on ≤ {COMPONENT_CAP:,} rows · "
                  f"machine: {info['platform']} · git {info['git']}", highlight=False)
    console.print(f"results: {RESULTS_PATH}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--million", action="store_true", help="add a 1,000,000-row run (several minutes)")
    ap.add_argument("--workers", type=int, default=None, help="CXLOOP_WORKERS for the run (default: its own default)")
    ap.add_argument("--anchor-rows", type=int, default=20_000, help="rows the anchors are measured on (default 20,000)")
    ap.add_argument("--data", type=Path, default=None,
                    help="shared data folder (default: $CXLOOP_SHARED_DATA or ../shared/data from the repo)")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "CSV", "N", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.child:
        kind, csv_path, n, out = args.child
        result = (child_components(Path(csv_path), args.anchor_rows, log) if kind == "components"
                  else child_pipeline(Path(csv_path), int(n), log))
        Path(out).write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
        return 0

    csv_path = (args.data or default_data_dir()) / DATA_FILE
    if not csv_path.is_file():
        print(f"error: benchmark data not found: expected {csv_path} (point at the folder holding "
              "sentiment/reviews_sentiment.csv with --data DIR or CXLOOP_SHARED_DATA)", file=sys.stderr)
        return 2
    sizes = sorted(set(args.sizes + ([1_000_000] if args.million else [])))
    if sizes[0] < 1:
        ap.error("--sizes must be positive")
    info = {**machine_info(), "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg())}
    runs = []
    workers = None
    with tempfile.TemporaryDirectory(prefix="cxloop-speed-") as tmp_name:
        tmp = Path(tmp_name)
        for n in sizes:
            log(f"== {n:,} rows")
            texts, distinct = make_texts(csv_path, n)
            data = tmp / f"reviews-{n}.csv"
            write_csv(texts, data)
            del texts
            comp = run_child("components", data, n, args, tmp / f"c{n}")
            pipe = run_child("pipeline", data, n, args, tmp / f"p{n}")
            stages = comp["stages"] + pipe["stages"]
            if any(st["stage"] == "segmentation (rjieba), 1 core" for st in comp["stages"]):
                stages += run_child("pipeline", data, n, args, tmp / f"r{n}", engine="rjieba")["stages"]
            workers = comp["workers"]
            runs.append({"rows": n, "distinct": distinct, "stages": stages, "migrate_s": pipe["migrate_s"],
                         "warm_up_s": pipe["warm_up_s"]})
    info["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    doc = {"benchmark": "pipeline_speed", "machine": info, "data": str(csv_path), "chars": CHARS, "workers": workers,
           "anchor_rows": args.anchor_rows, "goal_docs_per_s": GOAL_DOCS_PER_S, "runs": runs}
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_table(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
