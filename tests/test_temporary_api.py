"""Prefect's temporary API, launched by a command before its flows need it (pipelines.temporary_api)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines.temporary_api import TemporaryAPI, TemporaryAPIError

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, os, urllib.request
from pathlib import Path
from prefect import flow
from prefect.settings import get_current_settings
from pipelines.temporary_api import TemporaryAPI

@flow
def probe() -> dict:
    s = get_current_settings()
    return {"api": s.api.url, "heartbeat": s.flows.heartbeat_frequency, "ui": s.ui_url}

templates = os.environ.get("PROBE_TEMPLATES")
api = TemporaryAPI.launch(Path(templates) if templates else None)
seeded = (Path(os.environ["PREFECT_HOME"]) / "prefect.db").exists()   # before the server could have made it
assert api.confirm()
with api.serving():
    seen = probe()
req = urllib.request.Request(api.api_url + "/flow_runs/count", data=b"{}", method="POST",
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as r:
    runs = json.loads(r.read())
url, process = api.api_url, api.process
api.stop()
api.stop()
print(json.dumps({"url": url, "seen": seen, "runs": runs, "exit": process.wait(timeout=1),
                  "stopped": api.process is None, "seeded": seeded}))
"""


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": str(ROOT)}


def _probe(env: dict[str, str], cwd: Path) -> tuple[dict, str]:
    """PROBE in a fresh process: what it printed, and its log (stderr)."""
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def test_flows_run_on_the_launched_server_without_heartbeats_or_ui_links(tmp_path: Path) -> None:
    """The flows of a process with no Prefect server configured run on the server it launched (the
    flow run is recorded there), without heartbeats, without "View at" links to a UI nobody serves;
    Prefect starts no server of its own, and the launched one stops."""
    out, stderr = _probe(_clean_env(tmp_path), tmp_path)
    assert not out["seeded"]
    assert out["seen"] == {"api": out["url"], "heartbeat": None, "ui": ""}
    assert out["runs"] == 1
    assert out["stopped"] and out["exit"] is not None
    assert "Temporary server on " + out["url"].removesuffix("/api") in stderr
    assert "Starting temporary server" not in stderr and "View at" not in stderr
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(out["url"] + "/health", timeout=2)




def test_a_new_prefect_home_starts_from_the_database_the_first_one_left(tmp_path: Path) -> None:
    """The first server on a new Prefect home migrates its database and leaves a copy in the templates
    folder, taken before any flow ran; the next new home starts from that copy, and its flow runs are
    its own."""
    import sqlite3

    templates = tmp_path / "templates"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, _ = _probe({**_clean_env(tmp_path / "a"), "PROBE_TEMPLATES": str(templates)}, tmp_path)
    assert not first["seeded"] and first["runs"] == 1
    [template] = templates.glob("prefect-*-temporary-api.db")
    with sqlite3.connect(template) as con:
        assert con.execute("SELECT count(*) FROM flow_run").fetchone()[0] == 0
        version = con.execute("SELECT version_num FROM alembic_version").fetchone()
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    second, _ = _probe({**_clean_env(tmp_path / "b"), "PROBE_TEMPLATES": str(templates)}, tmp_path)
    assert second["seeded"] and second["runs"] == 1
    with sqlite3.connect(tmp_path / "b" / "prefect" / "prefect.db") as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == version
    assert sorted(p.name for p in templates.iterdir()) == [template.name]


def test_a_configured_server_is_left_to_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """``PREFECT_API_URL`` in the environment: nothing is launched. In Prefect's settings (a profile,
    a ``.env``): the server launched before they were read is stopped before any flow runs."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert TemporaryAPI.launch() is None
    monkeypatch.delenv("PREFECT_API_URL")
    api = TemporaryAPI.launch()
    assert api is not None and api.process is not None
    process = api.process
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert not api.confirm()
    assert api.process is None and process.wait(timeout=10) is not None


def test_a_server_that_dies_before_answering_is_one_actionable_error() -> None:
    api = TemporaryAPI(env=dict(os.environ), startup_timeout=30)
    api.process = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(1)"])
    with pytest.raises(TemporaryAPIError, match="exited with status 1.*PREFECT_API_URL"):
        api.wait_ready()
    api.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    api.startup_timeout = 0.2
    with pytest.raises(TemporaryAPIError, match="did not answer .* within 0.2 s.*STARTUP_TIMEOUT"):
        api.wait_ready()
    api.stop()


def test_a_command_runs_its_flows_on_the_server_it_launched(tmp_path: Path, sample_copy: Path) -> None:
    """`cxloop ingest` launches the server before its checks and runs its flow there: Prefect
    starts no temporary server of its own."""
    env = {**_clean_env(tmp_path), "CXLOOP_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", str(sample_copy / "app_reviews.csv")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Temporary server on http://127.0.0.1:" in r.stderr and "Stopping temporary server" in r.stderr
    assert "Starting temporary server" not in r.stderr and "View at" not in r.stderr
    assert "stored" in r.stdout
