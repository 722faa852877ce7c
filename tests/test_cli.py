"""The cxloop command line as a user runs it: real processes, exit codes and messages."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "pipelines.cli"]


def cxloop(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CXLOOP_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize(("args", "message"), [
    (["ingest", "/no/such/file.csv"], "no such file or folder"),
    (["ingest", "{empty}"], "no supported files"),
    (["ingest", "{sample}/app_reviews.csv", "--text-col", "body"], "no column 'body'"),
    (["run", "--taxonomy", "{bad_taxonomy}"], "not valid YAML"),
    (["predict", "{sample}/app_reviews.csv", "-o", "{out}/x.csv", "--model", "nope"], "unknown model 'nope'"),
    (["painpoints", "--db", "{out}/none.duckdb"], "does not exist yet"),
    (["train", "sentiment", "--model", "baseline", "--layers", "2"], "apply to --model transformer or student only"),
    (["train", "sentiment", "--model", "transformer", "--layers", "4", "--ship"], "not shipped over the full"),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path: Path, home: Path, sample_copy: Path,
                                                    args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "taxonomy.yaml"
    bad.write_text("topics: [", encoding="utf-8")
    fill = {"empty": tmp_path / "empty", "sample": sample_copy, "bad_taxonomy": bad, "out": tmp_path}
    r = cxloop(*[a.format(**fill) for a in args], home=home)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not (home / "cx.duckdb").exists()


def test_predict_keeps_input_columns_and_adds_predictions(tmp_path: Path, home: Path, sample_copy: Path) -> None:
    out = tmp_path / "scored.csv"
    r = cxloop("predict", str(sample_copy / "hotline_notes_gbk.csv"), "-o", str(out), "--model", "baseline",
               home=home)
    assert r.returncode == 0, r.stderr
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 119
    assert list(rows[0])[:6] == ["工单号", "来电时间", "渠道", "产品", "客户号", "内容"]
    assert {"sentiment", "sentiment_score", "topics", "model_version"} <= set(rows[0])
    assert {r["sentiment"] for r in rows} <= {"neg", "neu", "pos"}
    assert sum(r["sentiment"] == "neg" for r in rows) > 50
    assert not (home / "cx.duckdb").exists()
