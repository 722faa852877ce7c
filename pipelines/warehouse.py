"""The DuckDB warehouse: one file (or a DuckLake), schema by numbered migrations, Arrow batch writes.

Every write in cxloop goes through :class:`Warehouse`. DuckDB allows one writing process per file
(a second process fails at once with "Could not set lock"), so connections are opened per unit of
work, held briefly, and opening retries with back-off up to ``lock_timeout`` seconds
(``CXLOOP_LOCK_TIMEOUT``, default 120), logging why it waits. Each write method is one
transaction: it either lands whole or not at all. :func:`fault_point` marks the places where the
crash tests kill the process (tests/test_robust_crash.py, benchmarks/crash_kill.py).

A location ``ducklake:CATALOG`` stores the same warehouse in DuckLake instead: the catalog in a
database (a DuckDB file here; PostgreSQL with ``ducklake:postgres:…``), the data as Parquet files
under ``CXLOOP_LAKE_DATA_PATH`` (default ``CATALOG.files/`` beside the catalog). A connection is
then an in-memory DuckDB with the ``ducklake`` extension loaded from the ``cxloop[lake]`` extra and
the lake attached as ``lake``. DuckLake has no primary keys, unique constraints or indexes: the
migrations run translated by :func:`lake_sql`, and the writes that relied on key conflicts (insert
or ignore, upserts) are written as anti-joins and ``MERGE INTO``, the same on both backends.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import LAKE_DATA_ENV, LAKE_PREFIX, OTHER_CATALOG_RE

log = logging.getLogger("cxloop.warehouse")

MIGRATIONS = resources.files("pipelines") / "migrations"
_MIGRATION_RE = re.compile(r"^(\d{3})_(\w+)\.sql$")
SCHEMA_MIGRATIONS_SQL = ("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")


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


# -- DuckLake --------------------------------------------------------------------------------------
LAKE_ALIAS = "lake"                         # the name the lake is attached under
LAKE_PACKAGE = "duckdb_extension_ducklake"  # the PyPI package duckdb-extension-ducklake (extra cxloop[lake])
LAKE_EXTRA = "cxloop[lake]"
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")  # s3://, gs://, az://, https://


def sql_str(text: str) -> str:
    """A SQL string literal, for what takes no parameters (ATTACH, LOAD, the file of a COPY)."""
    return "'" + text.replace("'", "''") + "'"


def ducklake_extension() -> Path:
    """The ``ducklake`` extension file of the installed ``duckdb-extension-ducklake`` package (it
    loads offline, into the same DuckDB version only)."""
    hint = f"pip install '{LAKE_EXTRA}' (duckdb-extension-ducklake=={duckdb.__version__})"
    try:
        spec = importlib.util.find_spec(LAKE_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise WarehouseError(f"a DuckLake warehouse needs the DuckLake extension, which is not installed: {hint}")
    path = (Path(next(iter(spec.submodule_search_locations))) / "extensions" / f"v{duckdb.__version__}"
            / "ducklake.duckdb_extension")
    if not path.is_file():
        raise WarehouseError(f"the installed DuckLake extension has no build for duckdb {duckdb.__version__} "
                             f"({path} is missing): {hint}")
    return path


@dataclass(frozen=True)
class Lake:
    """Where a DuckLake warehouse lives: ``catalog`` (what follows ``ducklake:``) and the data path
    given explicitly (``CXLOOP_LAKE_DATA_PATH``), if any."""

    catalog: str
    data_path: str | None = None

    @classmethod
    def parse(cls, location: str, data_path: str | None = None) -> Lake:
        catalog = location[len(LAKE_PREFIX):]
        if not catalog:
            raise WarehouseError(f"{location!r}: name the catalog, e.g. ducklake:data/cx.ducklake")
        explicit = data_path or os.environ.get(LAKE_DATA_ENV) or None
        if explicit and not _URL_RE.match(explicit):  # a local folder: absolute, as the catalog stores it
            explicit = str(Path(explicit).expanduser().resolve())
        return cls(catalog, explicit)

    @property
    def catalog_file(self) -> Path | None:
        """The DuckDB file holding the catalog; None for a catalog in another database (PostgreSQL…)."""
        return None if OTHER_CATALOG_RE.match(self.catalog) else Path(self.catalog)

    @property
    def default_data_path(self) -> str | None:
        return f"{self.catalog_file.resolve()}.files/" if self.catalog_file else None

    def attach_sql(self, read_only: bool, creating: bool) -> str:
        """``ATTACH 'ducklake:…' AS lake (…)``. The data path is stored in the catalog when it is
        created: it is passed then (the default one) or whenever it was given explicitly, so that a
        catalog made with another data path fails loudly instead of writing elsewhere."""
        options = []
        data_path = self.data_path or (self.default_data_path if creating else None)
        if data_path:
            if not _URL_RE.match(data_path) and not data_path.endswith("/"):
                data_path += "/"
            options.append(f"DATA_PATH {sql_str(data_path)}")
        if read_only:
            options.append("READ_ONLY")
        suffix = f" ({', '.join(options)})" if options else ""
        return f"ATTACH {sql_str(LAKE_PREFIX + self.catalog)} AS {LAKE_ALIAS}{suffix}"


_TOKEN_RE = re.compile(r"'(?:[^']|'')*'|--[^\n]*")  # a string literal or a comment, whichever starts first
_SEQUENCE_RE = re.compile(r"\b(?:CREATE\s+SEQUENCE|nextval\s*\()", re.IGNORECASE)
_LAKE_REWRITES = [  # in this order
    (re.compile(r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\b[^;]*;?", re.IGNORECASE), ""),        # indexes
    (re.compile(r",\s*(?:PRIMARY\s+KEY|UNIQUE)\s*\([^)]*\)", re.IGNORECASE), ""),      # table keys
    (re.compile(r"\bPRIMARY\s+KEY\b", re.IGNORECASE), "NOT NULL"),                      # column key
    (re.compile(r"\s+UNIQUE\b(?!\s*\()", re.IGNORECASE), ""),                           # column UNIQUE
    (re.compile(r"\bNOT\s+NULL\s+NOT\s+NULL\b", re.IGNORECASE), "NOT NULL"),          # key that was NOT NULL
    # a column's type changed with an expression, which DuckLake refuses: a new column takes the
    # values, the old one goes, the new one takes its name (and moves to the end of the table)
    (re.compile(r"\bALTER\s+TABLE\s+(\w+)\s+ALTER\s+(?:COLUMN\s+)?(\w+)\s+(?:SET\s+DATA\s+)?TYPE\s+([^;]+?)"
                r"\s+USING\s+([^;]+?)\s*;", re.IGNORECASE),
     r"ALTER TABLE \1 ADD COLUMN \2__retyped \3; UPDATE \1 SET \2__retyped = \4; "
     r"ALTER TABLE \1 DROP COLUMN \2; ALTER TABLE \1 RENAME COLUMN \2__retyped TO \2;"),
]


_LAKE_NOTHING_RE = re.compile(r"--\s*lake:\s*nothing to do\b")


def lake_sql(sql: str) -> str:
    """A migration translated for DuckLake, which rejects PRIMARY KEY, UNIQUE and indexes: table
    keys and indexes are dropped, a column key becomes NOT NULL (a key never held NULLs) and a column
    UNIQUE is dropped; ``ALTER … TYPE … USING`` becomes add, fill, drop and rename (the column then comes
    last, and nullable: DuckLake cannot set NOT NULL on a column it has just filled, so a NOT NULL
    column is changed in place with an ``UPDATE`` instead, as migration 007 does; the shape test in
    ``tests/test_lake.py`` catches one that is not); comments go, string literals stay as they are.
    Uniqueness is then kept by cxloop's writes (:meth:`Warehouse.insert_arrow` with ``on_conflict='ignore'``,
    :meth:`Warehouse.upsert_arrow`, ``MERGE INTO``). Sequences have no DuckLake equivalent: a
    migration using one is refused here rather than half-applied. A migration whose first line is
    ``-- lake: nothing to do`` changes what DuckLake does not have, and is nothing there."""
    if _LAKE_NOTHING_RE.match(sql):   # a migration of what DuckLake does not have (008: keys)
        return ""
    literals: list[str] = []

    def hide(m: re.Match[str]) -> str:  # a literal becomes a placeholder; a comment disappears
        if m.group(0).startswith("--"):
            return ""
        literals.append(m.group(0))
        return f"\x00{len(literals) - 1}\x00"

    code = _TOKEN_RE.sub(hide, sql)
    if _SEQUENCE_RE.search(code):
        raise WarehouseError("DuckLake has no sequences: a migration for the lake cannot use one")
    for pattern, replacement in _LAKE_REWRITES:
        code = pattern.sub(replacement, code)
    return re.sub(r"\x00(\d+)\x00", lambda m: literals[int(m.group(1))], code)


# the keys of the tables that grow with every review, kept unique by cxloop's writes alone, without
# a PRIMARY KEY (migration 008 says why): in a DuckDB file as in DuckLake, which has no keys
KEYS_KEPT_BY_WRITES: dict[str, tuple[str, ...]] = {"feedback": ("feedback_id",), "feedback_nlp": ("feedback_id",)}


@functools.cache
def primary_keys() -> dict[str, tuple[str, ...]]:
    """Each table's key: the primary key the shipped migrations declare, read from DuckDB's own
    catalog of an in-memory build (the lake has no keys to ask; the file and the lake use the
    same), and :data:`KEYS_KEPT_BY_WRITES`."""
    con = duckdb.connect()
    try:
        con.execute(SCHEMA_MIGRATIONS_SQL)
        for _, _, sql in migrations():
            con.execute(sql)
        rows = con.execute("SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                           "WHERE constraint_type = 'PRIMARY KEY'").fetchall()
    finally:
        con.close()
    return {**{table: tuple(cols) for table, cols in rows}, **KEYS_KEPT_BY_WRITES}



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


def duckdb_config() -> dict[str, str]:
    """Settings of every warehouse connection: ``CXLOOP_DB_MEMORY`` (e.g. ``1GB``) caps DuckDB's memory
    (its ``memory_limit``; default: DuckDB's own, 80 % of RAM): what does not fit is spilled to
    ``<warehouse>.tmp/`` instead of growing the process."""
    raw = os.environ.get("CXLOOP_DB_MEMORY", "").strip()
    if not raw:
        return {}
    try:
        duckdb.connect(config={"memory_limit": raw}).close()
    except duckdb.Error as e:
        raise WarehouseError(f"CXLOOP_DB_MEMORY={raw!r} is not a memory size DuckDB accepts (e.g. 1GB, 512MB): "
                             f"{e}") from None
    return {"memory_limit": raw}


def warm_up_arrow() -> None:
    """Do now what DuckDB does the first time a process hands it Arrow data: import pandas and
    ``pyarrow.dataset`` (about 0.25 s), for a caller that is waiting anyway (``pipelines.cli``,
    while Prefect's temporary API starts)."""
    con = duckdb.connect()
    try:
        con.register("_cx_warm_up", pa.table({"x": [1]}))
        con.execute("SELECT count(*) FROM _cx_warm_up").fetchone()
    finally:
        con.close()


def cap_memory(con: duckdb.DuckDBPyConnection, limit: str) -> None:
    """Lower the memory limit of ``con``'s database to ``limit`` for as long as it is open, unless it is
    already lower (``CXLOOP_DB_MEMORY`` is never raised). For a connection that only scans: DuckDB keeps
    every block it reads cached up to its limit, which a read that passes over a table once does not need."""
    current, cap = con.execute("SELECT parse_formatted_bytes(current_setting('memory_limit')), "
                               "parse_formatted_bytes(?)", [limit]).fetchone()
    if cap < current:
        con.execute(f"SET memory_limit = '{cap}B'")


class Warehouse:
    """Handle on one warehouse: a DuckDB file, or a DuckLake when ``location`` is ``ducklake:CATALOG``
    (``data_path``: where its Parquet files go, default ``CXLOOP_LAKE_DATA_PATH``, else
    ``CATALOG.files/``). Cheap to create; connections are opened per operation."""

    def __init__(self, location: str | os.PathLike[str], lock_timeout: float | None = None,
                 data_path: str | None = None) -> None:
        text = os.fspath(location)
        self.lake = Lake.parse(text, data_path) if text.startswith(LAKE_PREFIX) else None
        # the DuckDB file that holds the warehouse, or the lake's catalog (None: a catalog elsewhere)
        self.path: Path | None = self.lake.catalog_file if self.lake else Path(text)
        self.location = text if self.lake else str(self.path)
        self.lock_timeout = default_lock_timeout() if lock_timeout is None else lock_timeout
        self.config = duckdb_config()
        self._migrated = False

    def __str__(self) -> str:
        return self.location

    @property
    def name(self) -> str:
        """A short name for people: the file's name, or ``ducklake:`` and the catalog's."""
        if self.lake is None:
            return self.path.name
        return LAKE_PREFIX + (self.path.name if self.path else self.lake.catalog.split(":", 1)[0])

    def exists(self) -> bool:
        """Whether the warehouse was created (a catalog in another database is taken to exist)."""
        return self.path.exists() if self.path else True

    def scratch(self, what: str) -> tempfile.TemporaryDirectory:
        """A temporary folder for a flow's staged files (``.cx.duckdb.<what>-…/``), next to the warehouse
        file, on the disk sized for the data, rather than in a system temp folder that may be small and
        in memory; removed when the ``with`` block ends. The system temp folder for a catalog elsewhere."""
        if self.path is None:
            return tempfile.TemporaryDirectory(prefix=f"cxloop-{what}-")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=f".{self.path.name}.{what}-", dir=self.path.parent)

    # -- connections ----------------------------------------------------------------------------
    def _connect_once(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if self.lake is None:
            return duckdb.connect(str(self.path), read_only=read_only, config=self.config)
        con = duckdb.connect(config=self.config)  # in memory: the lake is attached to it
        try:
            con.execute(f"LOAD {sql_str(str(ducklake_extension()))}")
            con.execute(self.lake.attach_sql(read_only, creating=not self.exists()))
            con.execute(f"USE {LAKE_ALIAS}")
        except BaseException:
            con.close()
            raise
        return con

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if read_only and not self.exists():
            raise WarehouseError(f"warehouse {self} does not exist yet: run `cxloop run` or `cxloop ingest`")
        if not read_only and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        warned = False
        while True:
            try:
                con = self._connect_once(read_only)
                fault_point("open read-only" if read_only else "open")
                return con
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    raise WarehouseError(f"cannot open warehouse {self}: {e}") from None
                if time.monotonic() >= deadline:
                    raise WarehouseLockedError(
                        f"warehouse {self} is locked by another process for more than "
                        f"{self.lock_timeout:.0f}s (close notebooks or other cxloop runs holding it)") from None
                if not warned:
                    log.warning("warehouse %s is in use by another process; waiting up to %.0fs",
                                self, self.lock_timeout)
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def open_reader(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection that the caller closes (notebooks, other tools); writers wait while
        it is open, so close it as soon as the reading is done."""
        return self._open(read_only=True)

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
        with self.connect() as con, _in_transaction(con):
            yield con

    # -- schema ---------------------------------------------------------------------------------
    def _ddl(self, sql: str) -> str:
        """A migration as this backend runs it: as written for a DuckDB file, translated for a lake."""
        return lake_sql(sql) if self.lake else sql

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(self._ddl(SCHEMA_MIGRATIONS_SQL))
        done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, name, sql in migrations():
            if version in done:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(self._ddl(sql))
                con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, datetime.now()])
                fault_point(f"migration {version:03d} before commit")
            except (duckdb.Error, WarehouseError) as e:
                con.execute("ROLLBACK")
                raise WarehouseError(f"migration {version:03d}_{name} failed on {self}: {e}") from None
            con.execute("COMMIT")
            log.info("warehouse %s migrated to %03d_%s", self, version, name)
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
        rows whose primary key exists, and of rows sharing a key within ``data`` keeps the first (as
        ``INSERT OR IGNORE`` does, written as an anti-join so that it works where there are no keys,
        in DuckLake). Returns the number of rows inserted."""
        if data.num_rows == 0:
            return 0
        names = data.column_names
        if on_conflict == "ignore":
            data = data.append_column("_cx_row", pa.array(range(data.num_rows), pa.int64()))
        con.register("_cx_batch", data)
        try:
            return _insert(con, table, names, "_cx_batch", "_cx_row", on_conflict)
        finally:
            con.unregister("_cx_batch")

    @staticmethod
    def insert_parquet(con: duckdb.DuckDBPyConnection, table: str, files: Sequence[Path],
                       on_conflict: str = "error") -> int:
        """:meth:`insert_arrow` for the rows of Parquet files, in file order, in one statement: DuckDB
        reads them as it inserts (a million staged rows load in one pass, with half the memory of
        one statement per file)."""
        if not files:
            return 0
        names = pq.read_schema(files[0]).names
        listed = ", ".join(sql_str(str(f)) for f in files)
        source = (f"(SELECT *, list_position([{listed}], filename) AS _cx_file, file_row_number AS _cx_row "
                  f"FROM read_parquet([{listed}], filename = true, file_row_number = true))")
        return _insert(con, table, names, source, "_cx_file, _cx_row", on_conflict)

    @staticmethod
    def insert_row(con: duckdb.DuckDBPyConnection, table: str, row: Mapping[str, object],
                   on_conflict: str = "error") -> int:
        """:meth:`insert_arrow` for one row given as a mapping of column → value."""
        return Warehouse.insert_arrow(con, table, pa.Table.from_pylist([dict(row)]), on_conflict)

    @staticmethod
    def upsert_arrow(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> int:
        """Insert rows whose primary key is new and update, on the others, the columns ``data``
        has (as ``INSERT OR REPLACE`` does), with ``MERGE INTO``: the same on a DuckDB file and a
        lake. One row per key in ``data``. Returns the number of rows inserted or updated."""
        if data.num_rows == 0:
            return 0
        key = _key(table)
        names = data.column_names
        updates = ", ".join(f"{_q(c)} = s.{_q(c)}" for c in names if c not in key)
        matched = f"WHEN MATCHED THEN UPDATE SET {updates} " if updates else ""
        sql = (f"MERGE INTO {table} AS t USING _cx_batch AS s ON {_key_match(key, 't', 's')} {matched}"
               f"WHEN NOT MATCHED THEN INSERT ({', '.join(map(_q, names))}) "
               f"VALUES ({', '.join(f's.{_q(c)}' for c in names)})")
        con.register("_cx_batch", data)
        try:
            n = con.execute(sql).fetchone()[0]
        finally:
            con.unregister("_cx_batch")
        fault_point(f"upserted {table}")
        return n

    @staticmethod
    def upsert_row(con: duckdb.DuckDBPyConnection, table: str, row: Mapping[str, object]) -> int:
        """:meth:`upsert_arrow` for one row given as a mapping of column → value."""
        return Warehouse.upsert_arrow(con, table, pa.Table.from_pylist([dict(row)]))


@contextmanager
def _in_transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction on ``con``: committed on success, rolled back on error."""
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


HOLD_SECONDS = 20.0   # how long a HeldWriter keeps the file before letting other processes in


class HeldWriter:
    """Write transaction after write transaction on one connection, for a flow that writes many
    batches (``enrich``). Each batch is still its own short transaction, durable when committed; but
    closing a DuckDB file checkpoints it, and the checkpoint rewrites the table's last, partly
    filled row group and its key index: after every 20,000-row batch that cost 3–6× the insert,
    and grew with the table. Held for up to ``max_seconds``, the file is checkpointed once per hold
    instead (DuckDB's own checkpoint at a WAL size is raised to ``wal_limit`` meanwhile); then the
    connection closes, so another writer or a reader waiting for the file gets its turn well
    within ``CXLOOP_LOCK_TIMEOUT``. ``threads`` caps DuckDB's threads on it: beside busy scoring
    processes one thread spends half the CPU time that two spend on the same checkpoint."""

    def __init__(self, wh: Warehouse, max_seconds: float = HOLD_SECONDS, threads: int | None = 1,
                 wal_limit: str = "256MB") -> None:
        self.wh, self.max_seconds, self.threads, self.wal_limit = wh, max_seconds, threads, wal_limit
        self._hold: contextlib.ExitStack | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._since = 0.0

    def __enter__(self) -> HeldWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction on the held connection (opened first if needed); the connection is
        closed after it once it has been held for ``max_seconds``."""
        if self._con is None:
            hold = contextlib.ExitStack()
            con = hold.enter_context(self.wh.connect())
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")
            if not self.wh.lake:
                con.execute(f"SET checkpoint_threshold = {sql_str(self.wal_limit)}")
            self._hold, self._con, self._since = hold, con, time.monotonic()
        try:
            with _in_transaction(self._con) as con:
                yield con
        except BaseException:
            self.close()
            raise
        if time.monotonic() - self._since >= self.max_seconds:
            self.close()

    def close(self) -> None:
        """Close the held connection (DuckDB checkpoints the file)."""
        hold, self._hold, self._con = self._hold, None, None
        if hold is not None:
            hold.close()


def _insert(con: duckdb.DuckDBPyConnection, table: str, names: Sequence[str], source: str, order: str,
            on_conflict: str) -> int:
    """``INSERT INTO table`` the columns ``names`` of ``source`` (a relation); with
    ``on_conflict='ignore'``, ``order`` (columns of ``source``) says which of the rows that share a
    key comes first."""
    cols = ", ".join(_q(c) for c in names)
    if on_conflict == "ignore":
        key = _key(table)
        sql = (f"SELECT {cols} FROM {source} b WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE "
               f"{_key_match(key, 't', 'b')}) QUALIFY row_number() OVER (PARTITION BY "
               f"{', '.join(f'b.{_q(k)}' for k in key)} ORDER BY {order}) = 1")
    elif on_conflict == "error":
        _check_name(table)
        sql = f"SELECT {cols} FROM {source}"
    else:
        raise ValueError(f"on_conflict must be 'error' or 'ignore', not {on_conflict!r}")
    # DuckDB answers an INSERT with the number of rows it inserted
    n = con.execute(f"INSERT INTO {table} ({cols}) {sql}").fetchone()[0]
    fault_point(f"inserted {table}")
    return n


def _check_name(table: str) -> None:
    if not re.fullmatch(r"[a-z_]+", table):
        raise ValueError(f"bad table name {table!r}")


def _key(table: str) -> tuple[str, ...]:
    _check_name(table)
    key = primary_keys().get(table)
    if not key:
        raise ValueError(f"table {table!r} has no primary key")
    return key


def _q(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _key_match(key: tuple[str, ...], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{_q(k)} = {right}.{_q(k)}" for k in key)
