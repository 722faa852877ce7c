"""The ``ingest`` flow: pull files → validate → normalise → redact → dedupe → ``feedback``.

Each file is one transaction: its feedback rows, its quarantined rows and its ``source_files``
record land together or not at all. Its records are prepared ``records.CHUNK_ROWS`` at a time (by
``CXLOOP_WORKERS`` processes for a file of more than a few thousand records) and staged as Parquet
in a temporary folder first, so memory does not grow with the file and the
warehouse is only held while the staged chunks load. A file whose bytes were ingested before is skipped (the
watermark is the content hash), and a record seen before is ignored by its ``feedback_id``, so
ingesting the same data twice adds nothing.

A file that still fails after its task's retries (a damaged workbook, bytes no reader accepts, a
bug) does not stop the others: it is named in the run's ``failed_files`` (``runs.counts``, status
``partial``), its bytes are not marked as ingested so the next run tries it again, and the CLI
ends with one ``error:`` line per failed file and exit status 1. A warehouse that cannot be
opened (locked past the timeout, or broken) stops the flow: no other file could be stored either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, task
from prefect.states import State

from pipelines import progress
from pipelines.config import Settings
from pipelines.records import ColumnMap, prepare_chunks
from pipelines.runs import logger, recorded_run
from pipelines.sources import SourceError, file_digest, iter_files, peek_columns, read_file
from pipelines.warehouse import Warehouse, WarehouseError


@dataclass
class FileResult:
    path: str
    source: str
    skipped: bool = False         # the same bytes were ingested before
    read: int = 0
    stored: int = 0
    duplicates: int = 0           # already stored, or repeated inside the file
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    error: str | None = None      # the file failed after its retries: nothing of it was stored


@dataclass
class IngestResult:
    files: list[FileResult] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    @property
    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.files:
            for k, v in f.reasons.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def failed(self) -> list[dict[str, str]]:
        return [{"path": f.path, "error": f.error} for f in self.files if f.error]

    def counts(self) -> dict:
        return {"files": len(self.files), "files_skipped": sum(f.skipped for f in self.files),
                **{k: self.total(k) for k in ("read", "stored", "duplicates", "quarantined")},
                "quarantine_reasons": self.reasons, "files_failed": len(self.failed), "failed_files": self.failed}


def ingest_file(wh: Warehouse, path: Path, *, source: str | None, columns: ColumnMap, channel: str | None,
                run_id: str, salt: bytes, on_prepared: Callable[[], None] | None = None) -> FileResult:
    """Ingest one file in one transaction (see the module docstring). ``on_prepared`` is called once
    every record is prepared and staged, before that transaction: DuckDB's work, which lets go of
    the GIL, so a caller can start something on a thread meanwhile (the main job: loading the model
    ``enrich`` scores with next, ``pipelines.enrich.preload``)."""
    name = source or path.stem
    if path.is_file():  # bytes seen before are recognised by their hash, before any parsing
        with wh.connect() as con:
            done = con.execute("SELECT 1 FROM source_files WHERE sha256 = ?", [file_digest(path)[0]]).fetchone()
        if done:
            return FileResult(str(path), name, skipped=True)
    src = read_file(path)   # its records are read as they are prepared: a long file is never in memory whole
    now = datetime.now()
    result = FileResult(str(path), name)
    with wh.scratch("ingest") as staged:
        # prepared a chunk at a time and staged as Parquet, so memory stays flat however long the file,
        # and the transaction only loads them (the warehouse is not held while records are prepared)
        parts: list[tuple[Path, Path]] = []
        staged_rows = 0
        for i, part in enumerate(prepare_chunks(src, name, columns, run_id=run_id, salt=salt,
                                                default_channel=channel)):
            parts.append((Path(staged) / f"feedback-{i:05d}.parquet", Path(staged) / f"quarantine-{i:05d}.parquet"))
            # uncompressed: scratch files, read once (snappy cost 0.1 s per 100k rows, mostly while
            # the workers waited or after they were done)
            pq.write_table(part.feedback, parts[-1][0], compression="none")
            pq.write_table(part.quarantine, parts[-1][1], compression="none")
            result.read += part.read
            result.duplicates += part.duplicates
            result.quarantined += part.quarantine.num_rows
            staged_rows += part.feedback.num_rows
            for total, counts in ((result.reasons, part.reasons), (result.flagged, part.flagged)):
                for k, v in counts.items():
                    total[k] = total.get(k, 0) + v
        if on_prepared is not None and staged_rows:
            on_prepared()
        with wh.transaction() as con:  # every staged chunk in one statement per table
            result.stored = Warehouse.insert_parquet(con, "feedback", [f for f, _ in parts], on_conflict="ignore")
            result.duplicates += staged_rows - result.stored   # stored before, from another file
            Warehouse.insert_parquet(con, "quarantine", [q for _, q in parts], on_conflict="ignore")
            Warehouse.insert_row(con, "source_files", {
                "sha256": src.sha256, "source": name, "path": str(path), "size_bytes": src.size_bytes,
                "encoding": src.encoding, "rows_read": result.read, "rows_stored": result.stored,
                "rows_duplicate": result.duplicates, "rows_quarantined": result.quarantined, "run_id": run_id,
                "ingested_at": now}, on_conflict="ignore")
    return result


def check_inputs(paths: list[str], columns: ColumnMap) -> list[Path]:
    """Every file under ``paths``, after checking each exists, is supported and has the columns
    asked for: such a user error fails here, before anything is written. A file too damaged to
    peek into is left to :func:`ingest_flow`, which records it as failed and ingests the rest."""
    files = iter_files(paths)
    for f in files:
        try:
            found = peek_columns(f)
        except SourceError:
            continue  # a damaged file: ingest reports it as failed and still reads the others
        columns.resolve_columns(f, found)
    return files


def _transient(task: object, task_run: object, state: State) -> bool:
    """Retry a file unless it is unreadable: the same bytes would fail the same way again."""
    return not isinstance(state.data, SourceError)


def _failure(path: str, state: State) -> str:
    """One line naming the file for a task that failed after its retries."""
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, WarehouseError):
        raise exc  # the warehouse, not the file: no other file can be stored either
    if isinstance(exc, SourceError):
        return str(exc)  # names the file already
    what = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else (state.message or "failed")
    return f"{path}: {' '.join(what.split())}"[:1000]


@task(name="ingest-file", retries=2, retry_delay_seconds=2, retry_condition_fn=_transient)
def ingest_file_task(db: str, path: str, source: str | None, columns: dict, channel: str | None,
                     run_id: str, home: str, preload_model: bool = False, model: str | None = None) -> dict:
    """Ingest one file; returns its counts. ``preload_model``: start loading ``model`` for the
    ``enrich`` that follows once the file's records are prepared (``pipelines.enrich.preload``)."""
    settings = Settings.resolve(home, db)

    def start_preload() -> None:
        from pipelines.enrich import preload  # the model code is imported here, when it is wanted

        preload(model, home, db)

    res = ingest_file(Warehouse(db), Path(path), source=source, columns=ColumnMap(**columns), channel=channel,
                      run_id=run_id, salt=settings.salt(), on_prepared=start_preload if preload_model else None)
    log = logger()
    if res.skipped:
        log.info("%s: already ingested (same content), skipped", Path(path).name)
    else:
        log.info("%s: %d read, %d stored, %d duplicates, %d quarantined %s", Path(path).name, res.read,
                 res.stored, res.duplicates, res.quarantined, res.reasons or "")
    return asdict(res)


@flow(name="ingest", log_prints=True)
def ingest_flow(paths: list[str], db: str | None = None, home: str | None = None, source: str | None = None,
                channel: str | None = None, columns: dict | None = None, preload_model: bool = False,
                model: str | None = None) -> dict:
    """Ingest feedback files (a file or folder each) into the warehouse; returns the counts.
    ``preload_model`` (the main job, where ``enrich`` with ``model`` comes next): the model loads
    on a thread while the last file's transaction runs (``pipelines.enrich.preload``)."""
    settings = Settings.resolve(home, db)
    files = check_inputs(paths, ColumnMap(**(columns or {})))
    wh = Warehouse(settings.db_path)
    result = IngestResult()
    with recorded_run(wh, "ingest", {"paths": paths, "source": source, "channel": channel}) as run:
        progress.reporter().start("ingest", len(files))
        for n, f in enumerate(files, 1):
            state = ingest_file_task(str(settings.db_path), str(f), source, columns or {}, channel, run.run_id,
                                     str(settings.home), preload_model and n == len(files), model,
                                     return_state=True)
            if state.is_completed():
                result.files.append(FileResult(**state.result()))
            else:
                error = _failure(str(f), state)
                logger().error("%s: not ingested after retries (the next run tries it again): %s", f.name, error)
                result.files.append(FileResult(str(f), source or f.stem, error=error))
            progress.reporter().advance("ingest")
        progress.reporter().finish("ingest")
        run.counts = result.counts()
        run.errors = [f["error"] for f in result.failed]
    logger().info("ingest: %(files)d files (%(files_skipped)d unchanged, %(files_failed)d failed), %(read)d rows "
                  "read, %(stored)d stored, %(duplicates)d duplicates, %(quarantined)d quarantined", run.counts)
    return {"counts": run.counts, "files": [asdict(f) for f in result.files]}
