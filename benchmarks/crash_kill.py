"""Crash safety under SIGKILL, at scale: kill real ``cxloop`` jobs at seeded random moments of ingest,
enrich, pain points and verify, re-run them, and compare the warehouse table by table with a clean
run's. The bigger sibling of tests/test_robust_crash.py (which runs one round on the sample data in
``make test``).

    .venv/bin/python benchmarks/crash_kill.py                      # 4 rounds × 6 kills, ~3,900 rows
    .venv/bin/python benchmarks/crash_kill.py --rounds 8 --rows 10000 --seed 7

The job is what a scheduler would run: ``cxloop ingest EXTRA/`` (``--rows`` generated feedback rows,
in CSV and JSONL files) then ``cxloop run --model baseline`` (the sample data, its story and the
verification of the fixes). Each round starts from an empty warehouse and kills the job six times
(tests/fixtures/crash.py, ``plan``): at a fault point of ingest, at a random moment of the rest of
ingest, at fault points of enrich, pain points and verify, and at a random moment of pain points;
after each kill the job starts again from its first command, and a last run completes it. Prints
every kill (where it landed), the rows compared and any difference; writes
``benchmarks/results/crash_kill.json``; exits 1 if any round differs from the clean run or leaks PII.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.bad_input import TEXTS, pii  # noqa: E402
from fixtures.crash import STAGES, plan, run_job, stage_points  # noqa: E402
from fixtures.warehouse_checks import diff, rows_compared, scan_pii, snapshot  # noqa: E402

CHANNELS = ("app_review", "hotline", "online_chat", "email", "survey", "social")
PRODUCTS = ("外卖", "信用卡", "手机银行", "数码", "理财")
EXTRA = ("但是", "而且", "真的", "还是", "每次都", "这次", "希望改进", "已经第三次了", "非常失望", "总体满意")


def make_extra(folder: Path, rows: int, seed: int) -> None:
    """``rows`` feedback rows over the sample's nine weeks, two thirds CSV, one third JSONL, with
    some PII, some duplicates and some bad rows."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 8, 31)
    records = []
    for i in range(rows):
        text = f"{rng.choice(TEXTS)}，{rng.choice(EXTRA)}，{rng.choice(TEXTS)}"
        if i % 25 == 0:
            text += f" 电话 {pii(rng)}"
        if i % 97 == 0:
            text = ""  # quarantined: empty text
        records.append({"id": f"X-{i % (rows - rows // 50)}",  # the last 2 % repeat earlier ids
                        "created_at": (start + timedelta(minutes=rng.randrange(63 * 24 * 60))).isoformat(" "),
                        "channel": rng.choice(CHANNELS), "product": rng.choice(PRODUCTS),
                        "customer_id": f"C{rng.randrange(rows // 3):06d}", "rating": str(rng.randint(1, 5)),
                        "text": text})
    split = rows * 2 // 3
    with (folder / "extra.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records[:split])
    with (folder / "extra.jsonl").open("w", encoding="utf-8") as f:
        for r in records[split:]:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4, help="rounds of six kills, each from an empty warehouse")
    ap.add_argument("--rows", type=int, default=3000, help="generated rows ingested before the sample (0: none)")
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--timer-seconds", type=float, default=1.5, help="range of the random delays of timed kills")
    ap.add_argument("--work", type=Path, default=None, help="folder for the warehouses (default: a temporary one)")
    args = ap.parse_args()

    # one salt for every warehouse, or their customer keys could not be compared
    os.environ.setdefault("CXLOOP_SALT", f"crash-kill-{args.seed}")
    work = args.work or Path(tempfile.mkdtemp(prefix="cxloop-crash-"))
    extra = work / "extra"
    job = [["run", "--model", "baseline"]]
    if args.rows:
        make_extra(extra, args.rows, args.seed)
        job = [["ingest", str(extra)], *job]
    print(f"crash_kill: {args.rounds} rounds, {args.rows} generated rows + data/sample, seed {args.seed}, "
          f"work folder {work}")
    t0 = time.monotonic()
    clean, points = stage_points(work / "clean" / "home", job)
    if clean.returncode != 0:
        print(clean.log[-3000:])
        print("error: the clean run failed")
        return 1
    expected = snapshot(work / "clean" / "home" / "cx.duckdb")
    print(f"clean run: {clean.seconds:.1f}s, fault points per stage: "
          + ", ".join(f"{s} {points[s]}" for s in STAGES) + f"; {rows_compared(expected)} rows to compare")

    rng = random.Random(args.seed)
    rounds, failures = [], 0
    for r in range(args.rounds):
        home = work / f"round{r}" / "home"
        kills = plan(rng, points, args.timer_seconds)
        outcomes = [run_job(home, job, k) for k in kills]
        final = run_job(home, job)
        got = snapshot(home / "cx.duckdb") if final.returncode == 0 else {}
        differences = diff(expected, got) if got else {"final run": (final.returncode, 0)}
        cells, leaks = scan_pii(home / "cx.duckdb") if got else (0, [])
        failures += bool(differences) + bool(leaks)
        for o in outcomes:
            where = o.last_point.replace("\t", " #", 1).replace("\t", ": ") if o.last_point else "-"
            print(f"  round {r} kill {o.kill!s:<18} {'killed' if o.killed else 'not reached':<11} "
                  f"rc {o.returncode:>3}  last point {where:<34} {o.seconds:5.1f}s")
        print(f"round {r}: {sum(o.killed for o in outcomes)} kills, final run rc {final.returncode}, "
              f"{rows_compared(got)} rows compared, differences {differences or 'none'}, "
              f"PII cells {len(leaks)} of {cells}")
        rounds.append({"round": r, "kills": [{"kill": str(o.kill), "killed": o.killed, "returncode": o.returncode,
                                             "last_point": o.last_point, "seconds": round(o.seconds, 2)}
                                            for o in outcomes],
                       "rows_compared": rows_compared(got), "differences": differences, "pii_cells": len(leaks),
                       "text_cells_scanned": cells})
    kills = sum(k["killed"] for r in rounds for k in r["kills"])
    by_stage = {s: sum(k["killed"] and (k["last_point"] or "").startswith(s + "\t") for r in rounds
                       for k in r["kills"]) for s in STAGES}
    summary = {"date": datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
               "python": platform.python_version(), "seed": args.seed, "rows_generated": args.rows,
               "rounds": rounds, "kills": kills, "kills_by_stage": by_stage,
               "rows_compared": sum(r["rows_compared"] for r in rounds), "failures": failures,
               "seconds": round(time.monotonic() - t0, 1)}
    out = ROOT / "benchmarks" / "results" / "crash_kill.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    print(f"\n{kills} kills survived ({', '.join(f'{s} {n}' for s, n in by_stage.items())}), "
          f"{summary['rows_compared']} rows compared, {failures} failing rounds, {summary['seconds']}s → {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
