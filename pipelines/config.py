"""Every path and setting cxloop uses, from one place.

``CXLOOP_HOME`` (default: ``data/`` in the project folder, or the current folder when cxloop is
installed elsewhere) holds the run-time state: the DuckDB file ``cx.duckdb``, trained model
versions under ``models/``, Prefect's home ``.prefect/``, and the pseudonymisation salt. ``--db`` or
``CXLOOP_DB`` point at another DuckDB file.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from nlp import Taxonomy, default_taxonomy, load_taxonomy

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _default_home() -> Path:
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT / "data"
    return Path.cwd() / "cxloop-data"


@dataclass(frozen=True)
class Settings:
    """Resolved run-time settings (environment variables, then defaults)."""

    home: Path = field(default_factory=lambda: Path(os.environ.get("CXLOOP_HOME") or _default_home()))
    db_path: Path | None = None
    taxonomy_path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())
        db = self.db_path or os.environ.get("CXLOOP_DB") or self.home / "cx.duckdb"
        object.__setattr__(self, "db_path", Path(db).expanduser().resolve())
        tax = self.taxonomy_path or os.environ.get("CXLOOP_TAXONOMY")
        object.__setattr__(self, "taxonomy_path", Path(tax).expanduser().resolve() if tax else None)

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None, db: str | os.PathLike[str] | None = None,
                taxonomy: str | os.PathLike[str] | None = None) -> Settings:
        """Settings from optional overrides (the CLI's ``--home``, ``--db``, ``--taxonomy``)."""
        kwargs: dict = {}
        if home:
            kwargs["home"] = Path(home)
        return cls(db_path=Path(db) if db else None, taxonomy_path=Path(taxonomy) if taxonomy else None, **kwargs)

    def load_taxonomy(self) -> Taxonomy:
        """The taxonomy in use: ``--taxonomy``/``CXLOOP_TAXONOMY`` or the shipped default."""
        return load_taxonomy(self.taxonomy_path) if self.taxonomy_path else default_taxonomy()

    @property
    def sample_dir(self) -> Path:
        return PROJECT_ROOT / "data" / "sample"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

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
