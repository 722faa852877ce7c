"""The HTML report: written by the main job, by the ``report`` flow and by ``cxloop report``; self-contained;
rendered in headless Chromium with no console errors and every chart drawn (screenshot kept for a person).

The browser test needs Debian's ``chromium`` (and ``fonts-noto-cjk`` for readable Chinese): ``.ci/run``
installs both. Elsewhere it is skipped when no browser is found, unless ``CXLOOP_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import charts
from pipelines.report import SECTIONS, ReportError, build_report, write_report

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_DIR = Path(os.environ.get("CXLOOP_TEST_OUTPUT") or ROOT / "build" / "test-output")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> tuple[Path, dict]:
    """A warehouse filled by the main job on the sample data; the job writes the report too."""
    from pipelines.flows import cx_loop_flow

    home = tmp_path_factory.mktemp("report-home")
    result = cx_loop_flow(db=str(home / "cx.duckdb"), home=str(home))
    return home, result


def test_main_job_writes_the_report_with_every_section(loop: tuple[Path, dict]) -> None:
    home, result = loop
    report = result["report"]
    assert Path(report["path"]) == home / "report.html" and (home / "report.html").is_file()
    assert report["week"] == "2026-10-26"
    assert report["sections"] == [s.key for s in SECTIONS]


def test_report_is_self_contained_chinese_and_tells_the_story(loop: tuple[Path, dict]) -> None:
    home, _ = loop
    page = (home / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'lang="zh-CN"' in page
    # nothing fetched from elsewhere: no external scripts, styles, fonts or images
    assert not re.search(r"<(script|img|iframe)[^>]+src=|<link\b|@import|@font-face|url\(", page, re.I)
    assert not re.findall(r"(?:src|href)=\"(?:https?:)?//", page)
    for heading in ("核心指标", "情感与反馈量趋势", "痛点排行", "预警", "改进待办与验证", "NPS 驱动因素",
                    "客户旅程视图"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count('<figure class="chart"') >= 5
    assert "数字渠道体验" in page  # the App 8.2 spike is the story of the last week
    assert "<PHONE>" not in page and "<EMAIL>" not in page  # redaction markers in quotes are escaped


def test_report_escapes_customer_text_and_labels() -> None:
    html = charts.hbars("x", "标题<script>", ["<b>晚到</b>"], [3.0])
    assert "<script>" not in html and "&lt;b&gt;晚到&lt;/b&gt;" in html


def test_report_of_another_week_and_bad_inputs(loop: tuple[Path, dict], tmp_path: Path) -> None:
    home, _ = loop
    page, info = build_report(home / "cx.duckdb", week="2026-10-07")  # a Wednesday: its week's Monday
    assert info["week"] == "2026-10-05" and "2026-10-05 起的一周" in page
    with pytest.raises(ReportError, match="not a date"):
        write_report(home / "cx.duckdb", tmp_path / "r.html", week="next monday")
    with pytest.raises(ReportError, match="is a folder"):
        write_report(home / "cx.duckdb", tmp_path)


def test_a_report_built_from_the_same_inputs_is_kept_and_any_change_rebuilds_it(loop: tuple[Path, dict],
                                                                                tmp_path: Path) -> None:
    """The main job keeps the report when nothing it shows changed (``reuse``); a backlog note, another
    week or a new score rebuild it."""
    import duckdb

    from pipelines.backlog import add_note
    from pipelines.warehouse import Warehouse

    home, _ = loop
    db = tmp_path / "cx.duckdb"
    shutil.copy(home / "cx.duckdb", db)
    out = tmp_path / "report.html"
    first = write_report(db, out, reuse=True)
    assert not first["unchanged"] and first["sections"] == [s.key for s in SECTIONS]
    page, stamp = out.read_bytes(), out.stat().st_mtime_ns
    kept = write_report(db, out, reuse=True)
    assert kept["unchanged"] and out.read_bytes() == page and out.stat().st_mtime_ns == stamp
    assert {k: kept[k] for k in ("path", "bytes", "week", "sections", "inputs")} == \
        {k: first[k] for k in ("path", "bytes", "week", "sections", "inputs")}
    assert not write_report(db, out, reuse=False)["unchanged"]   # `cxloop report` always writes
    assert write_report(db, out, reuse=True)["unchanged"]
    assert not write_report(db, out, week="2026-10-19", reuse=True)["unchanged"]
    assert write_report(db, out, week="2026-10-19", reuse=True)["unchanged"]
    con = duckdb.connect(str(db))   # verify re-checks a verified item at every run: same decision, same report
    assert con.execute("SELECT count(*) FROM verifications").fetchone()[0] > 0
    con.execute("INSERT INTO verifications SELECT * REPLACE (md5(verification_id) AS verification_id, "
                "checked_at + INTERVAL 1 DAY AS checked_at) FROM verifications")
    con.close()
    assert write_report(db, out, week="2026-10-19", reuse=True)["unchanged"]
    wh = Warehouse(db)
    item = wh.query("SELECT item_id FROM backlog ORDER BY item_id LIMIT 1").to_pylist()[0]["item_id"]
    add_note(wh, item, "已联系物流商", actor="test")
    assert not write_report(db, out, week="2026-10-19", reuse=True)["unchanged"]
    con = duckdb.connect(str(db))
    con.execute("UPDATE feedback_nlp SET sentiment = 'pos', enriched_at = now() "
                "WHERE feedback_id = (SELECT min(feedback_id) FROM feedback_nlp)")
    con.close()
    assert not write_report(db, out, week="2026-10-19", reuse=True)["unchanged"]


def test_cli_report_writes_a_file_and_fails_in_one_line(loop: tuple[Path, dict], tmp_path: Path) -> None:
    home, _ = loop
    env = {**os.environ, "CXLOOP_HOME": str(home), "COLUMNS": "200"}
    out = tmp_path / "sub" / "report.html"
    ok = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", "-o", str(out)], capture_output=True,
                        text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert out.is_file() and "10 sections" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "pipelines.cli", "report", "--db", str(tmp_path / "none.duckdb")],
                         capture_output=True, text=True, env=env, timeout=120)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:") and "does not exist" in lines[0]


def _chromium() -> str | None:
    return os.environ.get("CXLOOP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(loop: tuple[Path, dict], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CXLOOP_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium not found but CXLOOP_REQUIRE_BROWSER=1 (apt-get install chromium fonts-noto-cjk)")
        pytest.skip("chromium not installed (apt-get install chromium fonts-noto-cjk); CI installs it")
    home, _ = loop
    url = (home / "report.html").as_uri()
    base = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console  # no script errors, and the page's own check found no empty chart
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stdout[:500]
    drawn = re.search(r'data-charts="(\d+)" data-charts-drawn="(\d+)"', body.group(0))
    assert drawn and int(drawn.group(1)) >= 5 and drawn.group(1) == drawn.group(2), body.group(0)

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "report.png"
    shot.unlink(missing_ok=True)
    snap = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,5600", url], capture_output=True,
                          text=True, timeout=120)
    assert snap.returncode == 0 and shot.is_file(), snap.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000  # not a blank page
    print(f"report screenshot: {shot}")
