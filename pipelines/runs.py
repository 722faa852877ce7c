"""Run lineage (the ``runs`` table) and the logger flows and tasks use."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from pipelines.warehouse import Warehouse


def logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run, the ``cxloop`` logger elsewhere."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("cxloop")


def _prefect_run_id() -> str | None:
    try:
        from prefect.runtime import flow_run

        return flow_run.id
    except Exception:  # noqa: BLE001 - no run context
        return None


@dataclass
class Run:
    run_id: str
    flow: str
    counts: dict = field(default_factory=dict)


@contextmanager
def recorded_run(wh: Warehouse, flow: str, params: dict | None = None) -> Iterator[Run]:
    """Record a flow run in ``runs``: ``running`` at start, then ``completed`` with its counts or
    ``failed`` with the error."""
    run = Run(_prefect_run_id() or uuid.uuid4().hex, flow)
    with wh.transaction() as con:
        con.execute("INSERT OR REPLACE INTO runs (run_id, flow, started_at, status, params) VALUES (?, ?, ?, ?, ?)",
                    [run.run_id, flow, datetime.now(), "running", json.dumps(params or {}, default=str)])
    try:
        yield run
    except BaseException as e:
        with wh.transaction() as con:
            con.execute("UPDATE runs SET status='failed', finished_at=?, counts=?, error=? WHERE run_id=?",
                        [datetime.now(), json.dumps(run.counts), f"{type(e).__name__}: {e}"[:2000], run.run_id])
        raise
    with wh.transaction() as con:
        con.execute("UPDATE runs SET status='completed', finished_at=?, counts=? WHERE run_id=?",
                    [datetime.now(), json.dumps(run.counts, default=str), run.run_id])
