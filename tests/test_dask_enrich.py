"""``enrich`` on a Dask cluster (prefect-dask's DaskTaskRunner, a real local 2-worker cluster) stores
exactly the rows a local run stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from stored_rows import ingest_sample, nlp_rows

from pipelines import enrich
from pipelines.config import Settings
from pipelines.distributed import ClusterConfigError, ClusterSettings, cluster_settings
from pipelines.enrich import enrich_flow, enrich_pending, sync_topics


def test_cluster_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CXLOOP_DASK_ADDRESS", "CXLOOP_DASK_WORKERS", "CXLOOP_PARTITION_ROWS"):
        monkeypatch.delenv(name, raising=False)
    assert cluster_settings() is None
    monkeypatch.setenv("CXLOOP_DASK_WORKERS", "3")
    assert cluster_settings() == ClusterSettings(workers=3)
    monkeypatch.setenv("CXLOOP_PARTITION_ROWS", "many")
    with pytest.raises(ClusterConfigError, match="CXLOOP_PARTITION_ROWS='many'"):
        cluster_settings()
    monkeypatch.delenv("CXLOOP_PARTITION_ROWS")
    monkeypatch.setenv("CXLOOP_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    with pytest.raises(ClusterConfigError, match="not both"):
        cluster_settings()
    monkeypatch.delenv("CXLOOP_DASK_WORKERS")
    assert cluster_settings() == ClusterSettings(address="tcp://10.0.0.5:8786")


@pytest.mark.usefixtures("prefect_server")
def test_a_two_worker_cluster_stores_the_local_runs_rows(tmp_path: Path, home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    local, cluster = tmp_path / "local.duckdb", tmp_path / "cluster.duckdb"
    wh = ingest_sample(local)
    shutil.copy(local, cluster)
    sync_topics(wh, Settings.resolve(home, local))
    one = enrich_pending.fn(str(local), str(home), "baseline", "local", workers=1)

    staging = tmp_path / "staging"
    monkeypatch.setenv("CXLOOP_DASK_WORKERS", "2")
    monkeypatch.setenv("CXLOOP_PARTITION_ROWS", "300")  # several partitions, both workers busy
    monkeypatch.setenv("CXLOOP_STAGING", str(staging))
    two = enrich_flow(db=str(cluster), home=str(home), model="baseline")
    assert two == {**one, "unchanged": False} and one["scored"] > 800
    rows = nlp_rows(local)
    assert len(rows) == one["scored"] and rows == nlp_rows(cluster)
    assert not enrich._PARTITION_ANALYZERS  # scored in the cluster's worker processes, not in this one
    assert not any(staging.iterdir())  # the run's partitions are cleaned up
    con = duckdb.connect(str(cluster), read_only=True)
    try:
        runs = con.execute("SELECT count(DISTINCT run_id) FROM feedback_nlp").fetchone()[0]
        status = con.execute("SELECT status FROM runs WHERE flow = 'enrich'").fetchall()
    finally:
        con.close()
    assert runs == 1 and status == [("completed",)]

    again = enrich_flow(db=str(cluster), home=str(home), model="baseline")  # nothing new: no cluster work
    assert again == {"scored": 0, "model_version": one["model_version"], "unchanged": True}
