"""Prefect's temporary API for a ``cxloop`` command, started while the command still imports and checks.

With no Prefect server configured (no ``PREFECT_API_URL``), Prefect 3 starts a temporary API the
first time a flow asks for one: a ``uvicorn`` subprocess serving ``prefect.server`` on a free local
port, stopped when the process exits. To launch it, the calling process first imports Prefect's
whole server package (about 2 s on two cores, used for nothing else), then waits for the
subprocess to answer (3.5 s more), and nothing else happens meanwhile: about half of a 10 s
``cxloop run`` with nothing new to do.

:meth:`TemporaryAPI.launch` runs the same server command as soon as a command knows it will run
flows, before this process imports Prefect and without importing the server package here; the
command imports its flows and checks its inputs and model while the server starts on the other
core. :meth:`TemporaryAPI.serving` waits until it answers and runs the flows against it as their
``PREFECT_API_URL`` (a temporary setting, with no heartbeats: they let a server mark a run whose
process died as crashed, and this server dies with the process; each flow's heartbeat thread cost
up to a second when its flow ended). It stops at exit, after Prefect has sent its last logs, as
Prefect's own temporary server does. A configured server (``PREFECT_API_URL``, in the environment
or in Prefect's settings files) or settings that forbid the temporary one are left to Prefect:
:meth:`launch` returns ``None``, or :meth:`confirm` stops the server it launched before a flow runs.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

POLL_SECONDS = 0.05
DEFAULT_STARTUP_TIMEOUT = 20.0   # Prefect's PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS default (see confirm)
PORT_IN_USE = 3   # uvicorn's exit status when its port was taken in between (Prefect picks another)


class TemporaryAPIError(RuntimeError):
    """The temporary API did not start (the message says what to do)."""


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the server process before it starts (Linux): a parent killed with SIGKILL, which runs no
    exit handler, still stops its server."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def _prefect_site() -> str:
    """The folder that holds the ``prefect`` package (uvicorn's ``--app-dir``, as Prefect passes it)."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.submodule_search_locations, "prefect is not installed"
    return str(Path(next(iter(spec.submodule_search_locations))).parent)


def _default_database() -> Path | None:
    """The temporary server's database file when the environment leaves it at Prefect's default
    (``PREFECT_HOME/prefect.db``); None when it names another database."""
    if any(k.startswith(("PREFECT_API_DATABASE_", "PREFECT_SERVER_DATABASE_")) for k in os.environ):
        return None
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / "prefect.db"


def _template_path(folder: Path) -> Path:
    """Where a migrated, empty database of this Prefect version is kept (:meth:`TemporaryAPI.launch`)."""
    from importlib.metadata import version

    return folder / f"prefect-{version('prefect')}-temporary-api.db"


def _copy_database(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (SQLite's online backup: safe while a server uses it),
    written beside ``target`` and renamed over it, so a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")   # one file, no -wal beside it (Prefect sets WAL again)
        finally:
            dst.close()
        os.replace(tmp, target)
    finally:
        src.close()
        tmp.unlink(missing_ok=True)


class TemporaryAPI:
    """One temporary Prefect API server (a subprocess) for this command."""

    def __init__(self, env: dict[str, str], startup_timeout: float) -> None:
        self.env = env
        self.startup_timeout = startup_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0
        self.ready = False
        self.database: Path | None = None   # a new database this server creates, to keep as the template …
        self.template: Path | None = None   # … here, once it is migrated and before any flow ran

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.address}/api"

    @classmethod
    def launch(cls, templates: Path | None = None) -> TemporaryAPI | None:
        """Start the server Prefect would start for this process's flows, or ``None`` when
        ``PREFECT_API_URL`` is in the environment. Prefect's settings are not read yet (importing
        Prefect takes most of a second): :meth:`confirm` reads them before any flow runs and stops
        this server where they name a server (a Prefect profile, a ``.env`` or ``prefect.toml``) or
        forbid a temporary one. The server reads the same environment and profile, and the settings
        Prefect gives its temporary server (no UI; "ephemeral" mode).

        ``templates``: a folder for a migrated, empty database. A server that starts on a new
        ``PREFECT_HOME`` spends about 6 s migrating its database from nothing; the first one to do it
        leaves a copy there (taken when it answers, before any flow ran: the schema and Prefect's
        built-in block types, no run of anybody's), and a later one on a new home starts from that
        copy. Prefect still migrates it on start if it is behind."""
        if os.environ.get("PREFECT_API_URL", "").strip():
            return None
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1"}
        api = cls(env, DEFAULT_STARTUP_TIMEOUT)
        database = _default_database()
        if templates is not None and database is not None and not database.exists():
            template = _template_path(templates)
            try:
                if template.is_file():
                    _copy_database(template, database)
                else:
                    api.database, api.template = database, template
            except (OSError, sqlite3.Error):   # no template, or none kept: only slower
                pass
        api._spawn()
        atexit.register(api.stop)
        return api

    def confirm(self) -> bool:
        """Whether Prefect's settings let this server run the flows (no server configured, temporary
        servers allowed); if not, it is stopped now and Prefect does as it would have."""
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        if settings.api.url or not settings.server.ephemeral.enabled:
            self.stop()
            return False
        self.startup_timeout = float(settings.server.ephemeral.startup_timeout_seconds)
        url = settings.server.database.connection_url
        if url is None or url.get_secret_value() != f"sqlite+aiosqlite:///{self.database}":
            self.template = None   # a profile moved the database: not the file to keep
        return True

    def _spawn(self) -> None:
        self.port = _free_port()
        self.launched_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", _prefect_site(), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"], env=self.env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)

    def wait_ready(self) -> None:
        """Block until the server answers its health check (at most the startup timeout)."""
        if self.ready:
            return
        assert self.process is not None, "wait_ready before launch, or after stop"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code == PORT_IN_USE:   # another process took the port between our check and its bind
                self._spawn()
                continue
            if code is not None:
                raise TemporaryAPIError(
                    f"Prefect's temporary API server exited with status {code} before it answered (its "
                    "output is above); set PREFECT_API_URL to a running Prefect server to use that instead")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1) as response:
                    if response.status == 200:
                        self.ready = True
                        self._keep_template()
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_SECONDS)
        raise TemporaryAPIError(
            f"Prefect's temporary API server did not answer on {self.address} within "
            f"{self.startup_timeout:g} s: raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a slow "
            "machine, or set PREFECT_API_URL to a running Prefect server")

    def _keep_template(self) -> None:
        """Copy the database this server just created (migrated, no flow run yet) as the template."""
        template, self.template = self.template, None
        if template is None or self.database is None or template.exists():
            return
        with contextlib.suppress(OSError, sqlite3.Error):   # the next new home migrates from nothing
            _copy_database(self.database, template)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Flows started inside run against this server (it is waited for first)."""
        from prefect.logging import get_logger
        from prefect.logging.configuration import ensure_logging_setup
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            PREFECT_UI_URL,
            temporary_settings,
        )

        self.wait_ready()
        ensure_logging_setup()
        get_logger().info("Temporary server on %s, started %.1f s ago", self.address,
                          time.monotonic() - self.launched_at)
        # no UI is served: an empty UI address keeps Prefect from logging "View at" links to it
        with temporary_settings(updates={PREFECT_API_URL: self.api_url, PREFECT_UI_URL: "",
                                         PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield

    def stop(self) -> None:
        """Stop the server (at exit; again is harmless)."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.ready:   # a command that failed before its flows stops it silently
            from prefect.logging import get_logger

            get_logger().info("Stopping temporary server on %s", self.address)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
