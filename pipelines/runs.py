"""Run lineage (the ``runs`` table) and the logger flows and tasks use."""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
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
    errors: list[str] = field(default_factory=list)  # parts that failed while the run went on: status partial


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def close_abandoned(con: duckdb.DuckDBPyConnection) -> int:
    """Mark ``failed`` the runs still ``running`` whose process on this machine is gone (killed,
    crashed, machine restarted): lineage should not show them running forever. Runs of live
    processes, and of other machines, are left alone. Returns how many were closed."""
    host = socket.gethostname()
    rows = con.execute("SELECT run_id, params FROM runs WHERE status = 'running'").fetchall()
    dead = []
    for run_id, params in rows:
        try:
            p = json.loads(params or "{}")
        except ValueError:
            continue
        if isinstance(p, dict) and p.get("host") == host and isinstance(p.get("pid"), int) and not _alive(p["pid"]):
            dead.append(run_id)
    for run_id in dead:
        con.execute("UPDATE runs SET status = 'failed', error = ? WHERE run_id = ? AND status = 'running'",
                    ["abandoned: its process ended without finishing it (killed or crashed); a later run "
                     "redid its work", run_id])
    return len(dead)


@contextmanager
def recorded_run(wh: Warehouse, flow: str, params: dict | None = None) -> Iterator[Run]:
    """Record a flow run in ``runs`` (its parameters, with the process id and host that ran it):
    ``running`` at start, then ``completed`` with its counts,
    ``partial`` when parts of it failed while the rest went on (``run.errors``), or ``failed`` with
    the error."""
    run = Run(_prefect_run_id() or uuid.uuid4().hex, flow)
    recorded = {**(params or {}), "pid": os.getpid(), "host": socket.gethostname()}
    with wh.transaction() as con:
        close_abandoned(con)
        Warehouse.upsert_row(con, "runs", {"run_id": run.run_id, "flow": flow, "started_at": datetime.now(),
                                           "status": "running", "params": json.dumps(recorded, default=str)})
    try:
        yield run
    except BaseException as e:
        with wh.transaction() as con:
            con.execute("UPDATE runs SET status='failed', finished_at=?, counts=?, error=? WHERE run_id=?",
                        [datetime.now(), json.dumps(run.counts), f"{type(e).__name__}: {e}"[:2000], run.run_id])
        raise
    with wh.transaction() as con:
        con.execute("UPDATE runs SET status=?, finished_at=?, counts=?, error=? WHERE run_id=?",
                    ["partial" if run.errors else "completed", datetime.now(), json.dumps(run.counts, default=str),
                     "; ".join(run.errors)[:2000] or None, run.run_id])


# -- derived tables whose inputs did not change ------------------------------------------------------
INPUTS_SQL = """
SELECT (SELECT count(*) FROM feedback), (SELECT max(ingested_at) FROM feedback),
       (SELECT count(*) FROM feedback_nlp), (SELECT max(enriched_at) FROM feedback_nlp),
       (SELECT md5(string_agg(concat_ws('|', topic, name, stage, team), ';' ORDER BY topic)) FROM topics)
"""


def input_state(wh: Warehouse, **params: object) -> dict:
    """What a derived table (pain points, topic candidates) is computed from, in brief: how many
    feedback and NLP rows are stored and when each was last written (``feedback`` is append-only; a
    re-scored row gets a new ``enriched_at``), a digest of the ``topics`` table, and the flow's own
    ``params``. Two equal states mean the same inputs, so the same result."""
    row = wh.query(INPUTS_SQL).to_pylist()[0]
    feedback, ingested, scored, enriched, topics = row.values()
    return {"feedback": feedback, "ingested": str(ingested), "scored": scored, "enriched": str(enriched),
            "topics": topics, **params}


def unchanged_result(wh: Warehouse, flow: str, state: dict) -> dict | None:
    """The counts of the latest completed run of ``flow`` when it was computed from ``state`` (then
    computing again would give the same rows), else None."""
    row = wh.query("SELECT counts FROM runs WHERE flow = ? AND status = 'completed' "
                   "ORDER BY finished_at DESC LIMIT 1", [flow]).to_pylist()
    if not row or not row[0]["counts"]:
        return None
    try:
        counts = json.loads(row[0]["counts"])
    except ValueError:
        return None
    return counts if isinstance(counts, dict) and counts.get("inputs") == state else None
