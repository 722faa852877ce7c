"""The DuckDB warehouse: one file, schema by numbered migrations, Arrow batch writes.

Every write in cxloop goes through :class:`Warehouse`. DuckDB allows one writing process per file
(a second process fails at once with "Could not set lock"), so connections are opened per unit of
work, held briefly, and opening retries with back-off up to ``lock_timeout`` seconds
(``CXLOOP_LOCK_TIMEOUT``, default 120), logging why it waits. Each write method is one
transaction: it either lands whole or not at all. :func:`fault_point` marks the places where the
crash tests kill the process (tests/test_robust_crash.py, benchmarks/crash_kill.py).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa

log = logging.getLogger("cxloop.warehouse")

MIGRATIONS = resources.files("pipelines") / "migrations"
_MIGRATION_RE = re.compile(r"^(\d{3})_(\w+)\.sql$")


class WarehouseError(RuntimeError):
    """A warehouse that cannot be opened or migrated; the message names the file."""


class WarehouseLockedError(WarehouseError):
    """Another process held the DuckDB file for longer than the lock timeout."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every shipped migration, in order."""
    out = []
    for f in MIGRATIONS.iterdir():
        m = _MIGRATION_RE.match(f.name)
        if m:
            out.append((int(m.group(1)), m.group(2), f.read_text(encoding="utf-8")))
    return sorted(out)


def _is_lock_error(e: Exception) -> bool:
    return isinstance(e, duckdb.IOException) and ("lock" in str(e).lower())


# -- fault injection (tests and benchmarks/crash_kill.py only; off unless the variables are set) ---
_fault_counts: dict[str, int] = {}


def _stage() -> str:
    try:
        from prefect.runtime import flow_run

        return flow_run.flow_name or "cli"
    except Exception:  # noqa: BLE001 - no run context
        return "cli"


def fault_point(label: str) -> None:
    """A place where a crash test may kill this process. ``CXLOOP_FAULT_TRACE=FILE`` appends
    ``stage<TAB>n<TAB>label`` for every point reached; ``CXLOOP_FAULT_KILL_AT=stage:n`` sends
    SIGKILL to this process at the n-th point of that flow (``cx_loop``'s subflows: ingest, enrich,
    pain_points, verify, report). SIGKILL leaves no chance to clean up: what survives is what
    DuckDB made durable, exactly as after a power cut of the process."""
    kill_at, trace = os.environ.get("CXLOOP_FAULT_KILL_AT"), os.environ.get("CXLOOP_FAULT_TRACE")
    if not kill_at and not trace:
        return
    stage = _stage()
    n = _fault_counts[stage] = _fault_counts.get(stage, 0) + 1
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{stage}\t{n}\t{label}\n")
    if kill_at == f"{stage}:{n}":
        # the whole process group when this process leads one (the crash tests start it so): the
        # temporary Prefect server is a child process and dies with it, as when a scheduler kills a job
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def default_lock_timeout() -> float:
    """Seconds a writer waits for a warehouse another process holds: ``CXLOOP_LOCK_TIMEOUT``, else 120."""
    raw = os.environ.get("CXLOOP_LOCK_TIMEOUT", "").strip()
    try:
        return float(raw) if raw else 120.0
    except ValueError:
        raise WarehouseError(f"CXLOOP_LOCK_TIMEOUT={raw!r} is not a number of seconds") from None


class Warehouse:
    """Handle on one DuckDB file. Cheap to create; connections are opened per operation."""

    def __init__(self, path: str | Path, lock_timeout: float | None = None) -> None:
        self.path = Path(path)
        self.lock_timeout = default_lock_timeout() if lock_timeout is None else lock_timeout
        self._migrated = False

    # -- connections ----------------------------------------------------------------------------
    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only and not self.path.exists():
            raise WarehouseError(f"warehouse {self.path} does not exist yet: run `cxloop run` or `cxloop ingest`")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        warned = False
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                fault_point("open read-only" if read_only else "open")
                return con
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    raise WarehouseError(f"cannot open warehouse {self.path}: {e}") from None
                if time.monotonic() >= deadline:
                    raise WarehouseLockedError(
                        f"warehouse {self.path} is locked by another process for more than "
                        f"{self.lock_timeout:.0f}s (close notebooks or other cxloop runs holding it)") from None
                if not warned:
                    log.warning("warehouse %s is in use by another process; waiting up to %.0fs",
                                self.path, self.lock_timeout)
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection held for one unit of work (migrated first when writable)."""
        con = self._open(read_only)
        try:
            if not read_only and not self._migrated:
                self._migrate(con)
            yield con
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A writable connection inside one transaction: committed on success, rolled back on error."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            fault_point("begin")
            try:
                yield con
                fault_point("before commit")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
            fault_point("committed")

    # -- schema ---------------------------------------------------------------------------------
    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
        done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, name, sql in migrations():
            if version in done:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(sql)
                con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, datetime.now()])
                fault_point(f"migration {version:03d} before commit")
            except duckdb.Error as e:
                con.execute("ROLLBACK")
                raise WarehouseError(f"migration {version:03d}_{name} failed on {self.path}: {e}") from None
            con.execute("COMMIT")
            log.info("warehouse %s migrated to %03d_%s", self.path, version, name)
        self._migrated = True

    def schema_version(self) -> int:
        with self.connect(read_only=True) as con:
            return con.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]

    # -- reads ----------------------------------------------------------------------------------
    def query(self, sql: str, params: list | None = None) -> pa.Table:
        """Run a read-only query and return an Arrow table."""
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).to_arrow_table()

    def scalar(self, sql: str, params: list | None = None):
        with self.connect(read_only=True) as con:
            row = con.execute(sql, params or []).fetchone()
            return row[0] if row else None

    # -- writes ---------------------------------------------------------------------------------
    @staticmethod
    def insert_arrow(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table,
                     on_conflict: str = "error") -> int:
        """Insert an Arrow table by column name in one statement. ``on_conflict='ignore'`` skips
        rows whose primary key exists. Returns the number of rows inserted."""
        if data.num_rows == 0:
            return 0
        if not re.fullmatch(r"[a-z_]+", table):
            raise ValueError(f"bad table name {table!r}")
        cols = ", ".join(f'"{c}"' for c in data.column_names)
        verb = "INSERT OR IGNORE" if on_conflict == "ignore" else "INSERT"
        con.register("_cx_batch", data)
        try:  # DuckDB answers an INSERT with the number of rows it inserted
            n = con.execute(f"{verb} INTO {table} ({cols}) SELECT {cols} FROM _cx_batch").fetchone()[0]
        finally:
            con.unregister("_cx_batch")
        fault_point(f"inserted {table}")
        return n
