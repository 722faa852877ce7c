"""Spike and urgency alerts: detect, store once, deliver.

Every run tests the latest ``CXLOOP_ALERT_LOOKBACK`` weeks of each topic × channel (and topic ×
all channels) against the same cell's own history: the ``BASELINE_WEEKS`` weeks that end one week
before the tested one (the guard week keeps a spike that began last week out of its own
baseline; weeks without mentions count as 0). A cell needs ``MIN_HISTORY`` baseline weeks.

* **volume spike** — negative mentions x against the n baseline weeks' total S with the exact
  conditional test for two Poisson rates: p = P(Binomial(x + S, 1/(n+1)) ≥ x), both counts
  divided by φ = max(1, variance/mean of the baseline) so that naturally noisy topics need a
  bigger jump (quasi-Poisson). Raised when p < α, x ≥ ``alert_min_count`` and x ≥ 2λ (λ = S/n).
* **rate spike** — the negative share against the baseline's with a one-sided Fisher exact test,
  when the week has ≥ 10 mentions, the baseline ≥ 20, the rate is up ≥ 20 points and p < α.
* **urgent** — any negative mention with urgent wording (``nlp.urgency``) in the week.

On steady Poisson or binomial noise the default α = 0.001 raises alerts on well under 0.1 % of
the cells tested (measured in tests/test_loop_alerts.py). An alert's id is a hash of (kind, week,
topic, channel), so a spike is stored and delivered once however often the job runs; an alert the
webhook did not accept stays pending (``delivered_at`` NULL) and is sent again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta

from pipelines.backlog import CHANNEL_NAMES
from pipelines.config import LoopConfig
from pipelines.stats import binom_sf, fisher_less
from pipelines.warehouse import Warehouse
from pipelines.webhook import WebhookError, post_json

BASELINE_WEEKS = 8
GUARD_WEEKS = 1
MIN_HISTORY = 4
RATE_MIN_VOLUME = 10
RATE_MIN_BASELINE = 20
RATE_MIN_INCREASE = 0.2

ALERT_COLUMNS = ("alert_id", "kind", "period", "period_start", "topic", "channel", "observed", "expected",
                 "p_value", "message", "evidence", "created_at", "run_id")


def alert_id(kind: str, period_start: date, topic: str, channel: str) -> str:
    return "AL-" + hashlib.sha1(f"{kind}\x1fweek\x1f{period_start}\x1f{topic}\x1f{channel}".encode()).hexdigest()[:10]


def volume_test(x: int, history: list[int]) -> tuple[float, float, float]:
    """(p_value, baseline mean λ, dispersion φ) of the spike test on counts. Under "no change" the
    week's count x and the baseline total S are Poisson with rates 1 : n, so x | x + S is
    Binomial(x + S, 1 / (n + 1)) — an exact test that also accounts for λ being estimated from
    n weeks. Both counts are divided by φ (quasi-Poisson) for overdispersed topics."""
    n = len(history)
    lam = statistics.fmean(history)
    var = statistics.variance(history) if n > 1 else lam
    phi = max(1.0, var / lam) if lam > 0 else 1.0
    k, total = round(x / phi), round((x + sum(history)) / phi)
    return binom_sf(k, max(total, k), 1 / (n + 1)), lam, phi


def rate_test(neg: int, volume: int, base_neg: int, base_volume: int) -> tuple[float, float]:
    """(p_value, baseline rate) of the rate-spike test: one-sided Fisher exact test that the week's
    negative share is above the baseline's."""
    p0 = base_neg / base_volume if base_volume else 0.0
    return fisher_less(neg, volume, base_neg, base_volume), p0


def spike_decision(x: int, volume: int, hist_neg: list[int], hist_vol: list[int], config: LoopConfig) -> dict | None:
    """The spike tests for one cell-week; a dict of evidence when it is a spike, else None."""
    if len(hist_neg) < MIN_HISTORY or x < config.alert_min_count:
        return None
    p_vol, lam, phi = volume_test(x, hist_neg)
    base_neg, base_vol = sum(hist_neg), sum(hist_vol)
    p_rate, p0 = rate_test(x, volume, base_neg, base_vol)
    vol_spike = p_vol < config.alert_alpha and x >= 2 * lam
    rate_spike = (volume >= RATE_MIN_VOLUME and base_vol >= RATE_MIN_BASELINE
                  and x / volume >= p0 + RATE_MIN_INCREASE and p_rate < config.alert_alpha)
    if not (vol_spike or rate_spike):
        return None
    kind = "volume_spike" if vol_spike else "rate_spike"
    return {"kind": kind, "observed": float(x) if vol_spike else x / volume,
            "expected": lam if vol_spike else p0, "p_value": p_vol if vol_spike else p_rate,
            "volume_test": {"neg_count": x, "baseline_mean": round(lam, 3), "dispersion": round(phi, 3),
                            "p_value": _significant(p_vol)},
            "rate_test": {"neg_rate": round(x / volume, 4), "volume": volume, "baseline_rate": round(p0, 4),
                          "baseline_volume": base_vol, "p_value": _significant(p_rate)}}


def _significant(p: float) -> float:
    """``p`` to 4 significant digits for the evidence text: a full-precision float's 16+ digit run
    is noise to a reader, and can even pass a bank-card checksum in the warehouse's PII scan."""
    return float(f"{p:.4g}")


def _cells(wh: Warehouse) -> list[dict]:
    return wh.query("""SELECT p.period_start, p.topic, coalesce(t.name, p.topic) AS topic_name, p.channel,
                              p.volume, p.neg_count, p.urgent_count, p.quotes
                       FROM pain_points p LEFT JOIN topics t USING (topic)
                       WHERE p.period = 'week' AND p.product = '*'""").to_pylist()


def find_alerts(wh: Warehouse, config: LoopConfig, run_id: str, now: datetime | None = None) -> list[dict]:
    """Every alert the latest weeks deserve (stored or not), as rows of ``alerts``."""
    now = now or datetime.now()
    cells = _cells(wh)
    if not cells:
        return []
    weeks = sorted({c["period_start"] for c in cells})
    calendar = [weeks[0] + timedelta(weeks=i) for i in range((weeks[-1] - weeks[0]).days // 7 + 1)]
    by_cell: dict[tuple[str, str], dict[date, dict]] = defaultdict(dict)
    for c in cells:
        by_cell[(c["topic"], c["channel"])][c["period_start"]] = c
    tested = calendar[-max(1, config.alert_lookback):]
    out: list[dict] = []
    for (topic, channel), series in by_cell.items():
        for week in tested:
            cell = series.get(week)
            if cell is None:
                continue
            base_from = week - timedelta(weeks=GUARD_WEEKS + BASELINE_WEEKS)
            base_to = week - timedelta(weeks=GUARD_WEEKS)
            base_weeks = [w for w in calendar if base_from <= w < base_to]
            hist = [series.get(w) for w in base_weeks]
            hist_neg = [h["neg_count"] if h else 0 for h in hist]
            hist_vol = [h["volume"] if h else 0 for h in hist]
            where = CHANNEL_NAMES.get(channel, channel)
            spike = spike_decision(cell["neg_count"], cell["volume"], hist_neg, hist_vol, config)
            if spike:
                kind = spike.pop("kind")
                if kind == "volume_spike":
                    msg = (f"{cell['topic_name']} · {where}: 负面提及激增，{week} 当周 {cell['neg_count']} 条，"
                           f"基线 {spike['expected']:.1f} 条/周 (p={spike['p_value']:.1g})")
                else:
                    msg = (f"{cell['topic_name']} · {where}: 负面占比升高，{week} 当周 {spike['observed']:.0%}，"
                           f"基线 {spike['expected']:.0%} (p={spike['p_value']:.1g})")
                evidence = {**{k: spike.pop(k) for k in ("volume_test", "rate_test")},
                            "baseline_weeks": [str(w) for w in base_weeks], "baseline_neg_counts": hist_neg,
                            "quotes": cell["quotes"], "alpha": config.alert_alpha,
                            "min_count": config.alert_min_count}
                out.append(_row("spike", kind, week, topic, channel, spike["observed"], spike["expected"],
                                spike["p_value"], msg, evidence, now, run_id))
            if channel == "*" and cell["urgent_count"] > 0:
                quotes = _urgent_quotes(wh, topic, week)
                msg = f"{cell['topic_name']}: {week} 当周 {cell['urgent_count']} 条紧急反馈（盗刷/监管投诉/安全等）"
                out.append(_row("urgent", "urgent", week, topic, channel, float(cell["urgent_count"]), None, None,
                                msg, {"urgent_count": cell["urgent_count"], "quotes": quotes}, now, run_id))
    return out


def _row(key_kind: str, kind: str, week: date, topic: str, channel: str, observed: float, expected: float | None,
         p_value: float | None, message: str, evidence: dict, now: datetime, run_id: str) -> dict:
    return {"alert_id": alert_id(key_kind, week, topic, channel), "kind": kind, "period": "week",
            "period_start": week, "topic": topic, "channel": channel, "observed": observed, "expected": expected,
            "p_value": p_value, "message": message, "evidence": json.dumps(evidence, ensure_ascii=False, default=str),
            "created_at": now, "run_id": run_id}


def _urgent_quotes(wh: Warehouse, topic: str, week: date) -> list[str]:
    rows = wh.query("""SELECT f.text FROM feedback f JOIN feedback_nlp n USING (feedback_id)
                       WHERE n.urgent AND len(list_filter(n.topic_sentiments,
                                                          x -> x.topic = $1 AND x.sentiment = 'neg')) > 0
                         AND CAST(date_trunc('week', f.created_at) AS DATE) = $2
                       ORDER BY f.pii_found IS NOT NULL, f.created_at, f.feedback_id LIMIT 3""",
                    [topic, week])
    return rows.column("text").to_pylist()


def raise_alerts(wh: Warehouse, run_id: str, config: LoopConfig, now: datetime | None = None) -> list[dict]:
    """Store the alerts not raised before; return the new ones."""
    found = find_alerts(wh, config, run_id, now)
    if not found:
        return []
    with wh.transaction() as con:
        known = {r[0] for r in con.execute("SELECT alert_id FROM alerts WHERE alert_id IN (SELECT unnest(?))",
                                           [[a["alert_id"] for a in found]]).fetchall()}
        new = [a for a in found if a["alert_id"] not in known]
        insert = f"INSERT INTO alerts ({', '.join(ALERT_COLUMNS)}) VALUES ({', '.join('?' * len(ALERT_COLUMNS))})"
        for a in new:
            con.execute(insert, [a[c] for c in ALERT_COLUMNS])
    return new


def deliver_pending(wh: Warehouse, config: LoopConfig,
                    log: logging.Logger | logging.LoggerAdapter | None = None,
                    post: Callable[..., int] = post_json) -> dict:
    """Log every undelivered alert and POST it to ``config.webhook_url``. A failure is recorded on
    the alert (attempts, error) and logged; it never raises, and the alert is retried next run.
    Delivery stops at the first alert the webhook refuses after all retries (it is down)."""
    log = log or logging.getLogger("cxloop")
    pending = wh.query("""SELECT a.*, t.name AS topic_name FROM alerts a LEFT JOIN topics t USING (topic)
                          WHERE a.delivered_at IS NULL ORDER BY a.created_at, a.alert_id""").to_pylist()
    for a in pending:
        if a["delivery_attempts"] == 0:
            log.warning("alert %s [%s] %s", a["alert_id"], a["kind"], a["message"])
    if not config.webhook_url:
        if pending:
            log.info("%d alert(s) pending: set CXLOOP_WEBHOOK_URL to deliver them to a webhook", len(pending))
        return {"alerts_delivered": 0, "alerts_pending": len(pending)}
    delivered = 0
    for i, a in enumerate(pending):
        payload = {"source": "cxloop", "text": a["message"],
                   "alert": {k: a[k] for k in ("alert_id", "kind", "period", "period_start", "topic", "topic_name",
                                               "channel", "observed", "expected", "p_value", "message",
                                               "created_at")} | {"evidence": json.loads(a["evidence"])}}
        try:
            post(config.webhook_url, payload, timeout=config.webhook_timeout, retries=config.webhook_retries)
        except WebhookError as e:
            with wh.transaction() as con:
                con.execute("UPDATE alerts SET delivery_attempts = delivery_attempts + 1, delivery_error = ? "
                            "WHERE alert_id = ?", [str(e)[:500], a["alert_id"]])
            log.warning("alert %s not delivered (%s); %d alert(s) stay pending for the next run",
                        a["alert_id"], e, len(pending) - i)
            break
        with wh.transaction() as con:
            con.execute("UPDATE alerts SET delivered_at = ?, delivery_attempts = delivery_attempts + 1, "
                        "delivery_error = NULL WHERE alert_id = ?", [datetime.now(), a["alert_id"]])
        delivered += 1
    if delivered:
        log.info("%d alert(s) delivered to the webhook", delivered)
    return {"alerts_delivered": delivered, "alerts_pending": len(pending) - delivered}
