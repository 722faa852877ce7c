"""prefect.yaml as operators use it: every deployment points at a loadable flow with retries, a valid schedule,
parameters the flow accepts, tags and the work pool that ``make server`` creates."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}


def _flow(entrypoint: str) -> Flow:
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def test_the_three_schedules_the_team_runs() -> None:
    crons = {name: [s["cron"] for s in d["schedules"]] for name, d in DEPLOYMENTS.items()}
    assert crons == {"hourly": ["0 * * * *"], "weekly": ["0 3 * * 1"], "daily": ["0 8 * * *"]}
    assert {_flow(d["entrypoint"]).name for d in DEPLOYMENTS.values()} == {
        "cx_loop_scheduled", "train_scheduled", "report_scheduled"}


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_deployment_is_complete(name: str) -> None:
    d = DEPLOYMENTS[name]
    fl = _flow(d["entrypoint"])
    assert isinstance(fl, Flow) and fl.retries and fl.retries >= 1 and fl.retry_delay_seconds
    assert set(d.get("parameters") or {}) <= set(inspect.signature(fl.fn).parameters)
    assert d["tags"] and "cxloop" in d["tags"] and d["description"]
    assert d["work_pool"]["name"] == "cxloop"
    for s in d["schedules"]:
        CronSchedule(cron=s["cron"], timezone=s["timezone"])  # raises on a bad cron or time zone


def test_writers_hold_the_global_limit_and_make_creates_it() -> None:
    from pipelines import deployments

    src = inspect.getsource(deployments)
    assert src.count("with writer_slot():") == 2  # the main loop and training; the report only reads
    assert deployments.WRITER_LIMIT == "duckdb-writer"
    script = (ROOT / "scripts" / "prefect_server.sh").read_text(encoding="utf-8")
    assert 'gcl create "$LIMIT" --limit 1' in script and "LIMIT=duckdb-writer" in script
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "scripts/prefect_server.sh start" in makefile and "scripts/prefect_server.sh stop" in makefile
