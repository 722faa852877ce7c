"""The whole main job (``cxloop run``) at growing sizes: time, peak memory, and the re-run.

    .venv/bin/python benchmarks/main_job_scale.py [--sizes 10000 100000 1000000] [--workers N] [--data DIR]

For each size, the 60-character reviews of ``pipeline_speed.py`` (``make_texts``: the shared reviews
cut into pieces, replicated with one 汉字 changed per run of characters past the first 68,702) are
written as one CSV with a timestamp a second apart, then ``cxloop run FILE --model baseline`` runs on
a fresh ``CXLOOP_HOME`` as an operator would start it: a new process, Prefect's temporary local API,
ingest → enrich → pain points → alerts → backlog → verify → report → topic suggestions. Then the
same command again with nothing new. Measured from outside: wall time, and peak memory of the whole
process tree (the CLI, its enrich workers, the temporary Prefect server), the sum of each process's
PSS, sampled every 50 ms or as the readings' cost allows (``pipeline_speed.PeakRSS``); from the
warehouse's ``runs`` table, the seconds of each flow; from Prefect's log lines, where the wall time
went (start-up until the temporary API is launched, the API starting alongside cxloop's imports and
checks, the flow runs, stopping: :func:`phases`). Growth is
the time per row at the largest size ÷ at the smallest (1.00 = linear). JSON goes to
``benchmarks/results/main_job_scale.json``; exit status 2 when the data file is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from ingest_enrich import default_data_dir, machine_info  # noqa: E402
from pipeline_speed import DATA_FILE, PeakRSS, make_texts, write_csv  # noqa: E402

RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "main_job_scale.json"
CXLOOP = Path(sys.executable).parent / "cxloop"


def run_measured(cmd: list[str], env: dict[str, str],
                 samples: list[tuple[float, int]] | None = None) -> tuple[float, float, int, dict[str, float] | None]:
    """(seconds, peak MiB of the process tree, exit status, :func:`phases`) of ``cmd``; ``samples``
    receives (epoch seconds, KiB) of each reading (:class:`pipeline_speed.PeakRSS`, here read
    whatever the peak so far, every 50 ms or as the readings' cost allows)."""
    started = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = PeakRSS(proc.pid, samples=samples, series=True)
    _, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    peak.stop()
    if proc.returncode:
        print(stderr[-3000:], file=sys.stderr)
    return seconds, peak.peak_kib / 1024, proc.returncode, phases(stderr, started, started + seconds)


_LOG_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+\s*\| (.*)$", re.MULTILINE)


_API_READY = re.compile(r"Temporary server on \S+, started (\d+(?:\.\d+)?) s ago")


def phases(log: str, started: float, ended: float) -> dict[str, float] | None:
    """Where a ``cxloop run``'s wall time went, from the log lines' times (local times of day):
    starting Python, importing and reading Prefect's settings until the command launches Prefect's
    temporary API (``pipelines.temporary_api``); from the launch until the first flow run begins (the
    API starting while cxloop imports its flows and checks the inputs and the model); the flow runs
    (their work and Prefect's bookkeeping) until the API is stopped; stopping it and exiting. None
    without a temporary API (``PREFECT_API_URL`` set)."""
    day = time.mktime(time.localtime(started)[:3] + (0, 0, 0, 0, 0, -1))
    marks: dict[str, float] = {}
    for m in _LOG_TIME.finditer(log):
        at = day + int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + int(m[4]) / 1000
        if at < started - 43_200:   # after midnight
            at += 86_400
        ready = _API_READY.search(m[5])
        if ready and "api" not in marks:
            marks["api"] = at - float(ready[1])
        for key, text in (("flows", "Beginning flow run"), ("stop", "Stopping temporary server")):
            if text in m[5] and key not in marks:
                marks[key] = at
    if marks.keys() != {"api", "flows", "stop"}:
        return None
    return {"start_to_api_launch_s": round(marks["api"] - started, 2),
            "api_launch_to_flows_s": round(marks["flows"] - marks["api"], 2),
            "flow_runs_s": round(marks["stop"] - marks["flows"], 2), "stop_s": round(ended - marks["stop"], 2)}


def finished_runs(db: Path) -> list[tuple[str, float, float]]:
    """(flow, start, finish) of every finished run in the warehouse's ``runs`` table, as epoch seconds."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT flow, epoch(started_at), epoch(finished_at) FROM runs "
                           "WHERE finished_at IS NOT NULL").fetchall()
    finally:
        con.close()
    offset = time.timezone if time.localtime().tm_isdst == 0 else time.altzone  # runs stores local time
    return [(flow, start + offset, end + offset) for flow, start, end in rows]


def flow_peaks(db: Path, samples: list[tuple[float, int]]) -> dict[str, int]:
    """Peak MiB of the process tree while each flow ran (its ``runs`` row's start to finish)."""
    peaks: dict[str, int] = {}
    for flow, start, end in finished_runs(db):
        inside = [kib for t, kib in samples if start <= t <= end]
        if inside:
            peaks[flow] = max(peaks.get(flow, 0), round(max(inside) / 1024))
    return peaks


def flow_seconds(db: Path) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for flow, start, end in finished_runs(db):
        seconds[flow] = seconds.get(flow, 0.0) + end - start
    return {f: round(s, 2) for f, s in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--workers", type=int, default=None, help="CXLOOP_WORKERS (default: its own default)")
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args(argv)
    csv_path = (args.data or default_data_dir()) / DATA_FILE
    if not csv_path.is_file():
        print(f"error: {csv_path} is missing: the benchmark needs the shared data (--data DIR)", file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    for n in sorted(args.sizes):
        tmp = Path(tempfile.mkdtemp(prefix="cxloop-scale-"))
        home = tmp / "home"
        texts, _ = make_texts(csv_path, n)
        write_csv(texts, tmp / "reviews.csv")
        del texts
        env = {**os.environ, "CXLOOP_HOME": str(home), "PREFECT_HOME": str(home / ".prefect"),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("CXLOOP_DB", None)
        if args.workers:
            env["CXLOOP_WORKERS"] = str(args.workers)
        cmd = [str(CXLOOP), "run", str(tmp / "reviews.csv"), "--model", "baseline"]
        samples: list[tuple[float, int]] = []
        first = run_measured(cmd, env, samples)
        flows = flow_seconds(home / "cx.duckdb")
        peaks = flow_peaks(home / "cx.duckdb", samples)
        again = run_measured(cmd, env)
        flows_all = flow_seconds(home / "cx.duckdb")
        rerun_flows = {f: round(s - flows.get(f, 0.0), 2) for f, s in flows_all.items()}
        rerun_work = round(sum(rerun_flows.values()), 2)
        rec = {"rows": n, "seconds": round(first[0], 1), "per_second": round(n / first[0], 1),
               "peak_rss_mib": round(first[1]), "flows_s": flows, "flows_peak_mib": peaks,
               "rerun_seconds": round(again[0], 1),
               "rerun_peak_rss_mib": round(again[1]), "rerun_flow_work_s": rerun_work,
               "rerun_flows_s": rerun_flows, "phases": first[3], "rerun_phases": again[3],
               "exit": [first[2], again[2]], "load1": round(os.getloadavg()[0], 2)}
        runs.append(rec)
        print(f"{n:>9,} rows: {first[0]:7.1f} s ({n / first[0]:,.0f} rows/s), peak {first[1]:,.0f} MiB; "
              f"flows {flows}, peak MiB {peaks}; "
              f"re-run {again[0]:.1f} s wall, {rerun_work:.2f} s in flows {rerun_flows}, "
              f"peak {again[1]:,.0f} MiB; load {rec['load1']}\n"
              f"           wall time, first run: {first[3]}; re-run: {again[3]}", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if first[2] or again[2]:
            return 1
    growth = (runs[-1]["seconds"] / runs[-1]["rows"]) / (runs[0]["seconds"] / runs[0]["rows"]) if len(runs) > 1 else 1
    print(f"time per row, {runs[-1]['rows']:,} ÷ {runs[0]['rows']:,} rows: {growth:.2f}")
    doc = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_info(),
           "workers": args.workers, "runs": runs, "growth": round(growth, 3)}
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
