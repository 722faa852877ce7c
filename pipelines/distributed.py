"""Where ``enrich`` scores: this machine's processes (the default) or a Dask cluster.

Set one of these and ``enrich`` fans its pending rows out over a cluster through Prefect's
``DaskTaskRunner`` (the ``prefect-dask`` collection, ``pip install 'cxloop[dask]'``):

- ``CXLOOP_DASK_ADDRESS=tcp://scheduler:8786``: an existing Dask cluster, started by the team's own
  tooling (``dask scheduler`` / ``dask worker``, dask-kubernetes, dask-jobqueue …);
- ``CXLOOP_DASK_WORKERS=N``: a temporary local cluster of N worker processes, one thread each, for
  the length of the run (one machine, a process per core; mostly for trying it out and for tests).

The pending rows are cut into partitions of ``CXLOOP_PARTITION_ROWS`` rows (default 20,000) and
written as Parquet under ``CXLOOP_STAGING`` (default ``CXLOOP_HOME/staging``), a folder every
worker must be able to read and write (a shared file system on a real cluster). Each partition is
one Prefect task run on a worker: it loads the model once per worker process, scores the partition
and writes the ``feedback_nlp`` rows as Parquet beside it. The flow's own process is the one
writer: it loads each finished partition into DuckDB in one transaction, in partition order, so
the warehouse file is never opened by a worker and the stored rows are the ones a local run stores.
The workers report their task runs to the Prefect API the flow uses: on a real cluster that is a
Prefect server the workers can reach (``PREFECT_API_URL``), not the temporary local one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PARTITION_ROWS = 20_000


class ClusterConfigError(ValueError):
    """A Dask setting that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class ClusterSettings:
    """The Dask cluster ``enrich`` runs on: an existing one (``address``) or a local one (``workers``)."""

    address: str | None = None
    workers: int | None = None
    partition_rows: int = DEFAULT_PARTITION_ROWS

    @property
    def description(self) -> str:
        return f"Dask cluster at {self.address}" if self.address else f"local Dask cluster of {self.workers} workers"


def _positive_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ClusterConfigError(f"{name}={raw!r} is not a whole number (1 or more)")
    return int(raw)


def cluster_settings() -> ClusterSettings | None:
    """The cluster configured by ``CXLOOP_DASK_ADDRESS`` / ``CXLOOP_DASK_WORKERS``, or None (score
    in this machine's processes)."""
    address = os.environ.get("CXLOOP_DASK_ADDRESS", "").strip() or None
    workers = _positive_int("CXLOOP_DASK_WORKERS", None)
    if address and workers:
        raise ClusterConfigError("set CXLOOP_DASK_ADDRESS (an existing cluster) or CXLOOP_DASK_WORKERS "
                                 "(a local one), not both")
    if not address and not workers:
        return None
    rows = _positive_int("CXLOOP_PARTITION_ROWS", DEFAULT_PARTITION_ROWS)
    assert rows is not None
    return ClusterSettings(address=address, workers=workers, partition_rows=rows)


def task_runner(cluster: ClusterSettings) -> Any:
    """Prefect's ``DaskTaskRunner`` for ``cluster``."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ClusterConfigError("CXLOOP_DASK_ADDRESS / CXLOOP_DASK_WORKERS need prefect-dask: "
                                 "pip install 'cxloop[dask]'") from None
    if cluster.address:
        return DaskTaskRunner(address=cluster.address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": cluster.workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def staging_root(home: Path) -> Path:
    """Where partitions are staged: ``CXLOOP_STAGING``, else ``<home>/staging``."""
    env = os.environ.get("CXLOOP_STAGING", "").strip()
    return Path(env).expanduser().resolve() if env else home / "staging"
