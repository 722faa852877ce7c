"""A real Prefect server on loopback, started the way ``make server`` starts it (scripts/prefect_server.sh):
deploy prefect.yaml, trigger the main loop twice at once, let the worker run both to completion, check the
warehouse; then ``make server-stop`` stops everything it started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipelines.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "prefect_server.sh"
DONE = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Server:
    api: httpx.Client
    home: Path
    env: dict[str, str]
    started: str


class _RetryingClient(httpx.Client):
    """Retries what Prefect's own client retries: a busy server answers 503 (its SQLite database is
    locked by the scheduler or the worker for a moment) or 429; anything else is returned at once."""

    def request(self, *args, **kwargs) -> httpx.Response:  # type: ignore[override]
        for attempt in range(6):
            response = super().request(*args, **kwargs)
            if response.status_code not in (429, 502, 503) or attempt == 5:
                return response
            time.sleep(1 + 2 * attempt)
        return response


def _ok(response: httpx.Response) -> dict | list:
    assert response.is_success, f"{response.request.method} {response.request.url}: {response.status_code} " \
                                f"{response.text[:2000]}"
    return response.json()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _script(cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), cmd], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("server-home")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "CXLOOP_DB"}
    env.update(CXLOOP_HOME=str(home), CXLOOP_SERVER_PORT=str(port), CXLOOP_BIN=str(Path(sys.executable).parent),
               PREFECT_WORKER_QUERY_SECONDS="1")
    started = _script("start", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        # generous: on 2 cores the worker's flow runs compete with the server for CPU
        with _RetryingClient(base_url=f"http://127.0.0.1:{port}/api", timeout=120) as api:
            yield Server(api, home, env, started.stdout)
    finally:
        _script("stop", env)


def test_server_is_set_up_for_the_team(server: Server) -> None:
    assert "Prefect UI:   http://127.0.0.1:" in server.started
    assert (server.home / ".prefect" / "server.db").is_file()  # SQLite under CXLOOP_HOME
    deployments = _ok(server.api.post("/deployments/filter", json={}))
    assert sorted(d["name"] for d in deployments) == ["daily", "hourly", "weekly"]
    for d in deployments:
        assert d["work_pool_name"] == "cxloop" and "cxloop" in d["tags"]
        assert [s["schedule"]["timezone"] for s in d["schedules"]] == ["Asia/Shanghai"]
    limit = _ok(server.api.get("/v2/concurrency_limits/duckdb-writer"))
    assert limit["limit"] == 1 and limit["active"]
    assert _ok(server.api.get("/work_pools/cxloop"))["type"] == "process"


def test_two_main_loop_runs_at_once_both_complete_one_writer_at_a_time(server: Server) -> None:
    assert not (server.home / "cx.duckdb").exists()
    hourly = _ok(server.api.get("/deployments/name/cx_loop_scheduled/hourly"))
    # the baseline keeps the two runs short: this test is about the server and the writer slot, not the model
    ids = [_ok(server.api.post(f"/deployments/{hourly['id']}/create_flow_run",
                               json={"parameters": {"model": "baseline"}}))["id"] for _ in range(2)]
    deadline = time.monotonic() + 420
    while True:
        states = [_ok(server.api.get(f"/flow_runs/{i}"))["state"]["type"] for i in ids]
        if all(s in DONE for s in states) or time.monotonic() > deadline:
            break
        time.sleep(2)
    log = (server.home / ".prefect" / "run" / "worker.log").read_text(encoding="utf-8", errors="replace")
    assert states == ["COMPLETED", "COMPLETED"], log[-4000:]

    wh = Warehouse(server.home / "cx.duckdb")
    stored = wh.scalar("SELECT count(*) FROM feedback")
    assert stored > 800 and stored == wh.scalar("SELECT count(DISTINCT feedback_id) FROM feedback")
    assert wh.scalar("SELECT count(*) FROM feedback_nlp") == stored
    runs = wh.query("SELECT flow, started_at, finished_at, status, counts FROM runs ORDER BY started_at").to_pylist()
    assert {r["status"] for r in runs} == {"completed"}
    ingests = [r for r in runs if r["flow"] == "ingest"]
    assert [json.loads(r["counts"])["stored"] for r in ingests] == [stored, 0]  # the second found it all there
    second = ingests[1]["started_at"]
    assert all(r["finished_at"] <= second for r in runs if r["started_at"] < second)  # never two writers at once
    assert (server.home / "report.html").is_file()
    assert log.count("holding the 'duckdb-writer' slot") == 2


def test_stop_stops_what_start_started(server: Server) -> None:
    run_dir = server.home / ".prefect" / "run"
    pids = [int((run_dir / f"{n}.pid").read_text()) for n in ("server", "worker")]
    stopped = _script("stop", server.env)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped worker" in stopped.stdout and "stopped server" in stopped.stdout
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(httpx.TransportError):
        server.api.get("/health")
