"""Spike alerts: the test stays quiet on noise, a spike is raised once, the webhook (a real HTTP
server on loopback) receives it, and a failing webhook neither loses the alert nor fails the run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_loop_support import MODEL, rows_for, url, webhook_server, write

from pipelines import alerts
from pipelines.config import LoopConfig
from pipelines.painpoints import compute_pain_points
from pipelines.stats import binom_sf, fisher_less, two_proportion_less

CONFIG = LoopConfig()


def _poisson(rng: random.Random, lam: float) -> int:
    k, p, limit = 0, 1.0, pow(2.718281828459045, -lam)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def test_tail_probabilities_match_known_values() -> None:
    assert binom_sf(0, 10, 0.3) == 1.0 and binom_sf(11, 10, 0.3) == 0.0
    assert binom_sf(8, 10, 0.5) == pytest.approx(56 / 1024)
    # the lady tasting tea: 3 of 4 right in both halves of 8 cups, one-sided p = 17/70
    assert fisher_less(1, 4, 3, 4) == pytest.approx(69 / 70)
    assert fisher_less(3, 4, 1, 4) == pytest.approx(17 / 70)
    z, p = two_proportion_less(50, 100, 30, 100)
    assert z == pytest.approx(-2.8868, abs=1e-3) and p == pytest.approx(0.001946, abs=1e-5)


def test_steady_noise_raises_almost_nothing_and_a_real_spike_is_caught() -> None:
    """The false-alarm rate quoted in README and pipelines/alerts.py: steady Poisson counts with
    binomial negativity, 8 baseline weeks then the tested week, over many cells and levels."""
    rng = random.Random(0)
    tested = alarms = 0
    for _ in range(4000):
        lam = rng.choice([1, 2, 4, 8, 15, 30])
        share = rng.choice([0.3, 0.5, 0.7])
        vols = [_poisson(rng, lam / share) for _ in range(9)]
        negs = [sum(rng.random() < share for _ in range(v)) for v in vols]
        tested += 1
        alarms += alerts.spike_decision(negs[-1], max(vols[-1], 1), negs[:-1], vols[:-1], CONFIG) is not None
    assert alarms / tested < 0.001, (alarms, tested)

    steady = [6, 7, 5, 6, 8, 6, 5, 7]
    assert alerts.spike_decision(7, 12, steady, [12] * 8, CONFIG) is None
    spike = alerts.spike_decision(22, 30, steady, [12] * 8, CONFIG)
    assert spike and spike["kind"] == "volume_spike" and spike["p_value"] < 1e-4


def _history(spike: bool) -> list[dict]:
    rows = []
    rng = random.Random(1)
    for week in range(10):
        rows += rows_for("wait_time", week, neg=5 + rng.randint(-1, 1), other=3)  # steady noise
        rows += rows_for("digital_experience", week, neg=(18 if spike and week == 9 else 3), other=4)
    return rows


def test_a_spike_is_alerted_once_and_steady_noise_is_not(tmp_path: Path) -> None:
    wh = write(tmp_path / "cx.duckdb", _history(spike=True))
    compute_pain_points(wh, MODEL, "run-1")
    first = alerts.raise_alerts(wh, "run-1", CONFIG)
    spikes = [a for a in first if a["kind"] != "urgent"]
    assert {(a["topic"], a["channel"]) for a in spikes} == {("digital_experience", "app_review"),
                                                              ("digital_experience", "*")}
    evidence = json.loads(spikes[0]["evidence"])
    assert evidence["baseline_neg_counts"] == [3] * 8 and evidence["volume_test"]["neg_count"] == 18
    compute_pain_points(wh, MODEL, "run-2")
    assert alerts.raise_alerts(wh, "run-2", CONFIG) == []  # the next run raises nothing again
    assert wh.scalar("SELECT count(*) FROM v_alerts WHERE topic = 'wait_time'") == 0


def test_urgent_feedback_raises_an_urgent_alert(tmp_path: Path) -> None:
    rows = _history(spike=False) + rows_for("price_fees", 9, neg=1, text="信用卡被盗刷了五千元，要报警")
    wh = write(tmp_path / "cx.duckdb", rows)
    compute_pain_points(wh, MODEL, "run-1")
    new = alerts.raise_alerts(wh, "run-1", CONFIG)
    assert [(a["kind"], a["topic"]) for a in new] == [("urgent", "price_fees")]
    assert "盗刷" in json.loads(new[0]["evidence"])["quotes"][0]


def test_webhook_receives_the_alert_and_a_failing_one_keeps_it_pending(tmp_path: Path) -> None:
    wh = write(tmp_path / "cx.duckdb", _history(spike=True))
    compute_pain_points(wh, MODEL, "run-1")
    assert len(alerts.raise_alerts(wh, "run-1", CONFIG)) == 2
    with webhook_server(status=503) as down:
        cfg = LoopConfig(webhook_url=url(down), webhook_retries=2, webhook_timeout=2)
        r = alerts.deliver_pending(wh, cfg)
        assert r == {"alerts_delivered": 0, "alerts_pending": 2}
        assert len(down.received) == 2  # two attempts at the first alert, then it stops: the hook is down
    row = wh.query("SELECT delivered_at, delivery_attempts, delivery_error FROM alerts ORDER BY alert_id").to_pylist()
    assert row[0]["delivered_at"] is None and "HTTP 503" in (row[0]["delivery_error"] or row[1]["delivery_error"])
    with webhook_server() as up:
        r = alerts.deliver_pending(wh, LoopConfig(webhook_url=url(up)))
        assert r == {"alerts_delivered": 2, "alerts_pending": 0}
        payloads = [p["alert"] for p in up.received]
    assert {p["topic"] for p in payloads} == {"digital_experience"}
    assert all(p["kind"] == "volume_spike" and p["evidence"]["baseline_neg_counts"] for p in payloads)
    with webhook_server() as up:  # nothing is sent twice
        assert alerts.deliver_pending(wh, LoopConfig(webhook_url=url(up)))["alerts_delivered"] == 0
        assert up.received == []


@pytest.mark.usefixtures("prefect_server")
def test_the_flow_survives_a_dead_webhook_and_delivers_next_run(tmp_path: Path, home: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from models.predict import current_analysis_version
    from pipelines.config import Settings
    from pipelines.painpoints import pain_points_flow

    settings = Settings.resolve(home)
    version = current_analysis_version(settings.models_dir, None, settings.load_taxonomy())
    write(settings.db_path, _history(spike=True), model_version=version)
    monkeypatch.setenv("CXLOOP_WEBHOOK_RETRIES", "1")
    monkeypatch.setenv("CXLOOP_WEBHOOK_URL", "http://127.0.0.1:9/nothing-listens-here")
    r = pain_points_flow(home=str(home))
    assert r["alerts_new"] == 2 and r["alerts_delivered"] == 0 and r["alerts_pending"] == 2
    with webhook_server() as up:
        monkeypatch.setenv("CXLOOP_WEBHOOK_URL", url(up))
        r = pain_points_flow(home=str(home))
        assert r["alerts_new"] == 0 and r["alerts_delivered"] == 2 and len(up.received) == 2
