"""The flows as operators run them: the entry points of the deployments in ``prefect.yaml``.

They are the CLI's flows plus what unattended, scheduled runs need:

- **retries**: a failed run is retried after a pause (a file still being written, a warehouse held
  by a notebook); inside a run each ingested file is its own task with its own retries;
- **one DuckDB writer at a time**: runs that write hold a slot of the global concurrency limit
  :data:`WRITER_LIMIT` (limit 1, created by ``make server``), so two runs started together queue
  instead of failing on DuckDB's file lock. The slot is *strict*: when the limit does not exist the
  run fails with that message rather than running unguarded (Prefect would only warn).

The report only reads, so it takes no slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import flow

from pipelines.flows import cx_loop_flow, train_flow
from pipelines.report import report_flow
from pipelines.runs import logger

WRITER_LIMIT = "duckdb-writer"
WRITER_WAIT_SECONDS = 3 * 3600  # a weekly training run can hold the slot for a while


@contextmanager
def writer_slot(timeout_seconds: float = WRITER_WAIT_SECONDS) -> Iterator[None]:
    """Hold the one DuckDB-writer slot shared by every flow run on the server."""
    from prefect.concurrency.sync import concurrency

    logger().info("waiting for the %r slot (one DuckDB writer at a time)", WRITER_LIMIT)
    with concurrency(WRITER_LIMIT, occupy=1, timeout_seconds=timeout_seconds, strict=True):
        logger().info("holding the %r slot", WRITER_LIMIT)
        yield


@flow(name="cx_loop_scheduled", retries=2, retry_delay_seconds=300)
def scheduled_cx_loop(paths: list[str] | None = None, top_n: int = 10, model: str | None = None,
                      db: str | None = None, home: str | None = None) -> dict:
    """The main job (ingest → enrich → pain points → backlog → report) as a deployment: one writer at
    a time, retried. ``db``/``home`` default to the worker's ``CXLOOP_DB``/``CXLOOP_HOME``."""
    with writer_slot():
        return cx_loop_flow(paths=paths, db=db, home=home, model=model, top_n=top_n)


@flow(name="train_scheduled", retries=1, retry_delay_seconds=600)
def scheduled_train(kind: str = "baseline", max_rows: int | None = None, data_dir: str | None = None,
                    promote_if_better: bool = True, db: str | None = None, home: str | None = None) -> dict:
    """Train a sentiment model of ``kind``, evaluate, register and promote it if better on dev, as a
    deployment (holds the writer slot)."""
    with writer_slot():
        return train_flow(kind=kind, data_dir=data_dir, max_rows=max_rows, db=db, home=home,
                          promote_if_better=promote_if_better)


@flow(name="report_scheduled", retries=2, retry_delay_seconds=120)
def scheduled_report(output: str | None = None, week: str | None = None, db: str | None = None,
                     home: str | None = None) -> dict:
    """Write the HTML report (default ``$CXLOOP_HOME/report.html``) as a deployment; read-only."""
    return report_flow(output=output, db=db, home=home, week=week)
