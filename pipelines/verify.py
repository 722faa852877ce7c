"""The ``verify`` flow: did the fix work? For each backlog item marked ``resolved`` at time T
(when the fix shipped), compare the topic's **complaint rate** in the window after T with the
baseline window before T:

    complaint rate = negative mentions of the topic / all feedback in the item's channel
                     (all channels for '*')
    baseline = [T − W, T)        after = [T, T + W)        W = CXLOOP_VERIFY_WINDOW_DAYS (28)

Rows stamped with their ingest time (no usable customer time) are in neither window, and the latest
window of a verified item ends at the newest customer time, not today: a re-run with no new data
reaches the same decisions whatever the date.

The denominator is all feedback, not the topic's mentions, so that a fix which removes complaints
shows even when praise of the fixed thing now mentions the topic too (and even when the sentiment
model reads some of that praise as negative), while a change in feedback traffic does not.

* **waiting** — either window holds fewer than ``CXLOOP_VERIFY_MIN_SAMPLE`` (50) feedback in scope:
  too early (or too rare) to tell; the item stays ``resolved`` and is checked again next run;
* **verified** — the rate fell significantly (one-sided Fisher exact test, p < α = 0.05; the
  two-proportion z is stored too) and by at least ``CXLOOP_VERIFY_MIN_DROP`` (20 %) of the baseline;
* **reopened** — enough feedback but no such drop: the problem persists.

A ``verified`` item keeps being checked on the latest window after T; when the improvement no
longer holds (the problem returned) it is ``reopened``. Every check is a row of ``verifications``
with the counts, rates, z and p behind the decision; status changes go to ``backlog_history``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import duckdb
from prefect import flow, task

from pipelines import backlog
from pipelines.config import LoopConfig, Settings
from pipelines.records import NEWEST_SQL, dated_sql
from pipelines.runs import logger, recorded_run
from pipelines.stats import fisher_less, two_proportion_less
from pipelines.warehouse import Warehouse

ACTOR = "cxloop verify"
VERIFICATION_NUMBERS = ("baseline_n", "baseline_mentions", "baseline_neg", "baseline_rate", "after_n", "after_mentions",
                        "after_neg", "after_rate", "z", "p_value", "decision", "reason")

COUNT_SQL = """
SELECT count(*) AS n, count(*) FILTER (WHERE list_contains(n.topics, $topic)) AS mentions,
       count(*) FILTER (WHERE CASE WHEN n.topic_sentiments IS NULL  -- scored before schema 004
                                   THEN n.sentiment = 'neg' AND list_contains(n.topics, $topic)
                                   ELSE list_contains([x.topic FOR x IN n.topic_sentiments IF x.sentiment = 'neg'],
                                                      $topic) END) AS neg
FROM feedback f JOIN feedback_nlp n USING (feedback_id)
WHERE ($channel = '*' OR f.channel = $channel) AND f.created_at >= $start AND f.created_at < $end
  AND """ + dated_sql("f")


def _count(con: duckdb.DuckDBPyConnection, topic: str, channel: str, start: datetime,
           end: datetime) -> tuple[int, int, int]:
    """(feedback in scope, mentions of the topic, negative mentions) in [start, end)."""
    n, mentions, neg = con.execute(COUNT_SQL, {"topic": topic, "channel": channel, "start": start,
                                               "end": end}).fetchone()
    return int(n), int(mentions), int(neg)


def decide(before: tuple[int, int, int], after: tuple[int, int, int], config: LoopConfig) -> dict:
    """The decision for (feedback, mentions, negative mentions) before and after the fix, with the
    numbers behind it."""
    (n_b, m_b, neg_b), (n_a, m_a, neg_a) = before, after
    out: dict = {"baseline_n": n_b, "baseline_mentions": m_b, "baseline_neg": neg_b, "after_n": n_a,
                 "after_mentions": m_a, "after_neg": neg_a,
                 "baseline_rate": neg_b / n_b if n_b else None, "after_rate": neg_a / n_a if n_a else None,
                 "z": None, "p_value": None}
    if n_b < config.verify_min_sample or n_a < config.verify_min_sample:
        out |= {"decision": "waiting",
                "reason": f"sample too small: {n_b} feedback before, {n_a} after "
                          f"(need {config.verify_min_sample} on each side)"}
        return out
    z, _ = two_proportion_less(neg_b, n_b, neg_a, n_a)
    p = fisher_less(neg_b, n_b, neg_a, n_a)
    rb, ra = out["baseline_rate"], out["after_rate"]
    drop = (rb - ra) / rb if rb else 0.0
    out |= {"z": z, "p_value": p}
    rates = (f"complaint rate {rb:.1%} → {ra:.1%} ({-drop:+.0%}; {neg_b}/{n_b} → {neg_a}/{n_a} feedback), "
             f"p={p:.2g}")
    if p < config.verify_alpha and drop >= config.verify_min_drop:
        out |= {"decision": "verified", "reason": f"{rates}: significant improvement"}
    else:
        out |= {"decision": "reopened", "reason": f"{rates}: no significant improvement, the problem persists"}
    return out


def verify_items(wh: Warehouse, config: LoopConfig, run_id: str, now: datetime | None = None) -> dict:
    """Check every ``resolved`` and ``verified`` item once; returns counts per decision."""
    now = now or datetime.now()
    counts = {"checked": 0, "verified": 0, "reopened": 0, "waiting": 0, "still_verified": 0}
    window = timedelta(days=config.verify_window_days)
    with wh.transaction() as con:
        data_end = con.execute(NEWEST_SQL).fetchone()[0]  # not today's date, which undated rows carry
        items = con.execute("""SELECT item_id, topic, channel, status, resolved_at FROM backlog
                               WHERE status IN ('resolved', 'verified') AND resolved_at IS NOT NULL
                               ORDER BY item_id""").fetchall()
        for item_id, topic, channel, status, t in items:
            after_from = t if status == "resolved" or data_end is None else max(t, data_end - window)
            before = _count(con, topic, channel, t - window, t)
            after = _count(con, topic, channel, after_from, after_from + window)
            d = decide(before, after, config)
            if status == "verified" and d["decision"] == "reopened":
                d["reason"] = d["reason"].replace("the problem persists", "the problem returned")
            row = {"verification_id": uuid.uuid4().hex, "item_id": item_id, "checked_at": now, "topic": topic,
                   "channel": channel, "resolved_at": t, "baseline_from": t - window, "baseline_to": t,
                   "after_from": after_from, "after_to": after_from + window, "run_id": run_id,
                   **{k: d[k] for k in VERIFICATION_NUMBERS}}
            con.execute(f"INSERT INTO verifications ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                        list(row.values()))
            counts["checked"] += 1
            if d["decision"] == "waiting":
                counts["waiting"] += 1
            elif d["decision"] == status:
                counts["still_verified"] += 1
            else:
                backlog.change_status(con, item_id, d["decision"], ACTOR, note=d["reason"], at=now,
                                      by_verification=True, run_id=run_id)
                counts[d["decision"]] += 1
    return counts


@task(name="verify-resolved-items")
def verify_resolved(db: str, run_id: str, config: LoopConfig) -> dict:
    """Measure each resolved item's topic after its fix against the baseline before it."""
    return verify_items(Warehouse(db), config, run_id)


@task(name="apply-sample-story")
def apply_story(db: str, run_id: str) -> list[str]:
    """Record the sample data's CX decisions (fixes shipped) in the backlog, once."""
    from pipelines.sample_story import apply_sample_story

    return apply_sample_story(Warehouse(db), run_id)


@flow(name="verify")
def verify_flow(db: str | None = None, home: str | None = None, sample_story: bool = False) -> dict:
    """Verify (or reopen) resolved backlog items by measuring their topic after the fix.
    ``sample_story`` first records the fixes that the demo data's story says shipped."""
    settings = Settings.resolve(home, db)
    config = LoopConfig.from_env()
    wh = Warehouse(settings.db_path)
    log = logger()
    with recorded_run(wh, "verify", {"window_days": config.verify_window_days, "min_sample": config.verify_min_sample,
                                     "alpha": config.verify_alpha, "sample_story": sample_story}) as run:
        story = apply_story(str(settings.db_path), run.run_id) if sample_story else []
        for line in story:
            log.info("sample story: %s", line)
        counts = verify_resolved(str(settings.db_path), run.run_id, config)
        log.info("verify: %(checked)d resolved item(s) checked: %(verified)d verified, %(reopened)d reopened, "
                 "%(waiting)d waiting, %(still_verified)d still verified", counts)
        run.counts = {**counts, "sample_story": len(story)}
    return run.counts
