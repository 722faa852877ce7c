"""Every path and setting cxloop uses, from one place.

``CXLOOP_HOME`` (default: ``data/`` in the project folder, or the current folder when cxloop is
installed elsewhere) holds the run-time state: the DuckDB file ``cx.duckdb``, trained model
versions under ``models/``, the converted base encoder under ``cache/`` (``CXLOOP_CACHE`` moves it),
Prefect's home ``.prefect/``, and the pseudonymisation salt. ``--db`` or
``CXLOOP_DB`` point at another DuckDB file, or at a DuckLake with ``ducklake:CATALOG`` (the catalog
a DuckDB file, its Parquet data under ``CXLOOP_LAKE_DATA_PATH`` or ``CATALOG.files/``; see
``pipelines.warehouse``).

The taxonomy in use is, in this order: ``--taxonomy`` / ``CXLOOP_TAXONOMY``; else
``CXLOOP_HOME/taxonomy.yaml`` when it exists (``cxloop taxonomy accept`` creates it); else the
shipped ``nlp/resources/taxonomy.yaml``.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from nlp import Taxonomy, default_taxonomy, load_taxonomy

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAKE_PREFIX = "ducklake:"                 # --db ducklake:CATALOG: the warehouse in DuckLake
LAKE_DATA_ENV = "CXLOOP_LAKE_DATA_PATH"   # where a lake's Parquet files go (default CATALOG.files/)
OTHER_CATALOG_RE = re.compile(r"^[a-z]{2,}:")  # ducklake:postgres:…: a catalog that is no local file


def db_location(raw: str | os.PathLike[str]) -> Path | str:
    """A warehouse location as ``--db`` / ``CXLOOP_DB`` give it, made absolute: a DuckDB file is a
    resolved ``Path``; a DuckLake is the string ``ducklake:CATALOG``, with a local catalog file's
    path resolved (``ducklake:postgres:…`` is kept as it is)."""
    text = os.fspath(raw).strip()
    if not text.startswith(LAKE_PREFIX):
        return Path(text).expanduser().resolve()
    catalog = text[len(LAKE_PREFIX):]
    if not catalog or OTHER_CATALOG_RE.match(catalog):
        return text
    return LAKE_PREFIX + str(Path(catalog).expanduser().resolve())


def _default_home() -> Path:
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT / "data"
    return Path.cwd() / "cxloop-data"


@dataclass(frozen=True)
class Settings:
    """Resolved run-time settings (environment variables, then defaults)."""

    home: Path = field(default_factory=lambda: Path(os.environ.get("CXLOOP_HOME") or _default_home()))
    db_path: Path | str | None = None  # a DuckDB file, or "ducklake:CATALOG" (see db_location)
    taxonomy_path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        db = self.db_path or os.environ.get("CXLOOP_DB") or self.home / "cx.duckdb"
        object.__setattr__(self, "db_path", db_location(db))
        tax = self.taxonomy_path or os.environ.get("CXLOOP_TAXONOMY")
        object.__setattr__(self, "taxonomy_path", Path(tax).expanduser().resolve() if tax else None)

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None, db: str | os.PathLike[str] | None = None,
                taxonomy: str | os.PathLike[str] | None = None) -> Settings:
        """Settings from optional overrides (the CLI's ``--home``, ``--db``, ``--taxonomy``)."""
        kwargs: dict = {}
        if home:
            kwargs["home"] = Path(home)
        return cls(db_path=os.fspath(db) if db else None, taxonomy_path=Path(taxonomy) if taxonomy else None,
                   **kwargs)

    @property
    def is_lake(self) -> bool:
        """Whether the warehouse is a DuckLake (``--db ducklake:…``) rather than one DuckDB file."""
        return str(self.db_path).startswith(LAKE_PREFIX)

    @property
    def home_taxonomy_path(self) -> Path:
        """The user's own taxonomy, ``HOME/taxonomy.yaml`` (used when it exists and no path is given)."""
        return self.home / "taxonomy.yaml"

    def taxonomy_file(self) -> Path | None:
        """The taxonomy file in use: ``--taxonomy``/``CXLOOP_TAXONOMY``, else ``HOME/taxonomy.yaml``
        when it exists, else None (the shipped default)."""
        if self.taxonomy_path:
            return self.taxonomy_path
        return self.home_taxonomy_path if self.home_taxonomy_path.is_file() else None

    def load_taxonomy(self) -> Taxonomy:
        """The taxonomy in use (:meth:`taxonomy_file`, else the shipped default)."""
        path = self.taxonomy_file()
        return load_taxonomy(path) if path else default_taxonomy()

    @property
    def sample_dir(self) -> Path:
        return PROJECT_ROOT / "data" / "sample"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def cache_dir(self) -> Path:
        """Converted base encoders and ONNX exports for transformer models, and the migrated empty
        database a new Prefect home starts from (``pipelines.temporary_api``): ``CXLOOP_CACHE`` or
        ``<home>/cache``."""
        env = os.environ.get("CXLOOP_CACHE")
        return Path(env).expanduser().resolve() if env else self.home / "cache"

    @property
    def prefect_home(self) -> Path:
        return self.home / ".prefect"

    def salt(self) -> bytes:
        """The secret salt for pseudonymising customer ids: ``CXLOOP_SALT`` or a random one kept in
        ``CXLOOP_HOME/.salt`` (created on first use, never part of the repository)."""
        env = os.environ.get("CXLOOP_SALT")
        if env:
            return env.encode()
        path = self.home / ".salt"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip().encode()


def prepare_prefect_env(settings: Settings) -> None:
    """Point Prefect at a home inside ``CXLOOP_HOME`` before Prefect is imported, unless the user
    configured Prefect already (a server via ``PREFECT_API_URL`` or their own ``PREFECT_HOME``)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("CXLOOP_JIEBA_CACHE", str(settings.home))


def worker_count() -> int:
    """Processes that score texts in ``enrich`` (baseline model) and prepare records in ``ingest``:
    ``CXLOOP_WORKERS``, else the cores this process may use; ``1`` works in-process."""
    raw = os.environ.get("CXLOOP_WORKERS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"CXLOOP_WORKERS={raw!r} is not a whole number of processes (1 or more)")
        return int(raw)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _env_num(name: str, default: float, cast: type = float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class LoopConfig:
    """Thresholds of the loop's alerts and verification, from ``CXLOOP_*`` variables (README,
    "Alerts and verification"). The defaults keep the false-alarm rate on steady data under 0.1 %
    of tested cells (see tests/test_loop_alerts.py)."""

    webhook_url: str | None = None     # CXLOOP_WEBHOOK_URL: JSON POST of every new alert; unset = logs only
    webhook_timeout: float = 5.0       # CXLOOP_WEBHOOK_TIMEOUT: seconds per attempt
    webhook_retries: int = 3           # CXLOOP_WEBHOOK_RETRIES: attempts per run (back-off 0.5 s, 1 s, 2 s…)
    alert_alpha: float = 0.001         # CXLOOP_ALERT_ALPHA: one-sided p-value below which a cell is a spike
    alert_min_count: int = 5           # CXLOOP_ALERT_MIN_COUNT: fewer negative mentions never alert
    alert_lookback: int = 2            # CXLOOP_ALERT_LOOKBACK: latest weeks tested on each run
    verify_window_days: int = 28       # CXLOOP_VERIFY_WINDOW_DAYS: baseline before T and window after T
    verify_min_sample: int = 50        # CXLOOP_VERIFY_MIN_SAMPLE: feedback in scope needed on each side
    verify_alpha: float = 0.05         # CXLOOP_VERIFY_ALPHA: significance of the two-proportion test
    verify_min_drop: float = 0.2       # CXLOOP_VERIFY_MIN_DROP: relative drop of the negative rate to verify

    @classmethod
    def from_env(cls) -> LoopConfig:
        d = cls()
        return cls(webhook_url=os.environ.get("CXLOOP_WEBHOOK_URL") or None,
                   webhook_timeout=_env_num("CXLOOP_WEBHOOK_TIMEOUT", d.webhook_timeout),
                   webhook_retries=int(_env_num("CXLOOP_WEBHOOK_RETRIES", d.webhook_retries, int)),
                   alert_alpha=_env_num("CXLOOP_ALERT_ALPHA", d.alert_alpha),
                   alert_min_count=int(_env_num("CXLOOP_ALERT_MIN_COUNT", d.alert_min_count, int)),
                   alert_lookback=int(_env_num("CXLOOP_ALERT_LOOKBACK", d.alert_lookback, int)),
                   verify_window_days=int(_env_num("CXLOOP_VERIFY_WINDOW_DAYS", d.verify_window_days, int)),
                   verify_min_sample=int(_env_num("CXLOOP_VERIFY_MIN_SAMPLE", d.verify_min_sample, int)),
                   verify_alpha=_env_num("CXLOOP_VERIFY_ALPHA", d.verify_alpha),
                   verify_min_drop=_env_num("CXLOOP_VERIFY_MIN_DROP", d.verify_min_drop))
