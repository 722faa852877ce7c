"""The ``pain_points`` flow: aggregate → rank → detect spikes → alerts → upsert the backlog.

Pain points form a cube: period (day, week, month) × topic × channel × product, with ``'*'``
roll-ups over channels and products; ``v_pain_points`` is its weekly topic × channel slice,
``v_topic_trend`` the whole cube, ``v_journey_stages`` the roll-up per journey stage × touchpoint.

Priority (each factor is a column, so a lead sees why an item ranks where it does)::

    reach             = neg_count                          negative mentions
    neg_rate_smoothed = (neg_count + m·p0) / (volume + m)  negativity, shrunk towards p0
    trend             = clip((neg_count − trailing_neg_avg) / (trailing_neg_avg + 3), −1, 2)
    growth_factor     = 1 + max(trend, 0) / 2              up to ×2 when getting worse
    urgency_factor    = 1 + urgent_count / max(neg_count, 1)  up to ×2 when all of it is urgent
    priority          = reach × neg_rate_smoothed × growth_factor × urgency_factor

Smoothing: a raw rate treats 3 negative out of 3 mentions as certain (100 %) and a raw growth
treats 0 → 3 as a tripling, so tiny cells used to outrank big steady ones. The rate is therefore
the posterior mean of a Beta prior worth ``m = PRIOR_MENTIONS`` mentions centred on ``p0``, the
overall share of negative topic mentions (Bayesian shrinkage: 3/3 becomes ≈ 0.6 with p0 ≈ 0.5,
while 40/50 barely moves), and the trend against the trailing average (7 days, 4 weeks or
3 months) adds 3 pseudo-mentions to its denominator, so 0 → 3 counts as +1, not +3.

Each mention counts with its topic's own polarity (``feedback_nlp.topic_sentiments``): a review that
praises delivery and condemns quality is negative for product_quality only. Rows whose time is
their ingest time (flag ``created_at_missing``/``created_at_invalid``) belong to no period and are
left out of the cube (they are still in ``v_feedback`` and in emerging-topic discovery).

Pain points are derived data: each run recomputes them in one transaction. The backlog is not:
a re-run updates an item's evidence and priority but never its status, owner or title.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from prefect import flow, task

from models.predict import current_analysis_version
from pipelines import alerts as alerts_mod
from pipelines import backlog
from pipelines.backlog import CHANNEL_NAMES, backlog_item_id  # noqa: F401 - re-exported (report, notebooks)
from pipelines.config import LoopConfig, Settings
from pipelines.records import dated_sql
from pipelines.runs import input_state, logger, recorded_run, unchanged_result
from pipelines.warehouse import Warehouse, sql_str

PRIOR_MENTIONS = 10  # m: weight of the prior in the smoothed negative rate, in mentions
TREND_PSEUDO = 3     # pseudo-mentions added to the trailing average in the trend

PERIODS = ("day", "week", "month")
TRAILING = {"day": 7, "week": 4, "month": 3}  # k: periods in the trailing average of the trend
# mentions one statement of the cube aggregates at most (memory grows with them; see chunk_plan)
CHUNK_MENTIONS = 100_000
# one row per (feedback, topic) with the topic's own polarity, written once per run to a Parquet file in
# topic and time order, which every chunk's statement reads (view ``pp_base``): a chunk reads the row
# groups of its topics and periods only, and none of it stays in DuckDB's memory between statements
# (as a temporary table, 1M rows' mentions filled half of a 512 MB cap and the largest cell's statement
# ran out of memory)
MENTIONS_SQL = """
COPY (
WITH mentions AS (
    SELECT f.feedback_id, f.created_at, f.channel, coalesce(nullif(trim(f.product), ''), 'unknown') AS product,
           -- no text here: a quote's text is joined for the three chosen per cell only (memory: the
           -- cube holds every mention up to 12 times, once per period and grouping)
           f.customer_key, length(f.text) BETWEEN 12 AND 160 AS quotable, hash(f.text_key) AS text_hash,
           f.pii_found IS NOT NULL AS has_pii,
           n.sentiment_score, n.keywords, coalesce(n.urgent, false) AS text_urgent,
           -- rows scored before schema 004 have no per-topic polarity: their topics take the text's
           unnest(coalesce(n.topic_sentiments, list_transform(n.topics, t -> {'topic': t, 'sentiment': n.sentiment,
                                                                             'score': n.sentiment_score}))) AS ts
    FROM feedback f JOIN feedback_nlp n USING (feedback_id)
    WHERE n.model_version = $model_version
      -- a row stamped with its ingest time (no usable customer time) belongs to no period
      AND {dated}
)
-- a review that praises delivery and condemns quality counts as negative for product_quality only;
-- what picks quotes and keywords is kept for negative mentions only (the others never need it, and
-- it is most of the table's memory: 1M rows used to leave too little for the largest cell's statement)
SELECT created_at, channel, product, customer_key, ts.topic AS topic, ts.sentiment AS sentiment,
       text_urgent AND ts.sentiment = 'neg' AS urgent,
       CASE WHEN ts.sentiment = 'neg' THEN feedback_id END AS feedback_id,
       CASE WHEN ts.sentiment = 'neg' THEN quotable END AS quotable,
       CASE WHEN ts.sentiment = 'neg' THEN text_hash END AS text_hash,
       CASE WHEN ts.sentiment = 'neg' THEN has_pii END AS has_pii,
       CASE WHEN ts.sentiment = 'neg' THEN sentiment_score END AS sentiment_score,
       CASE WHEN ts.sentiment = 'neg' THEN keywords END AS keywords
FROM mentions
ORDER BY topic, created_at
) TO {path} (FORMAT parquet)
""".replace("{dated}", dated_sql("f"))

PAIN_POINTS_SQL = """
WITH base AS (SELECT * FROM pp_base),
p AS MATERIALIZED (  -- one chunk of one period kind per statement (see chunk_plan): memory bounded by the chunk
    SELECT * FROM (SELECT $period AS period, CAST(date_trunc($period, created_at) AS DATE) AS period_start, *
                   FROM base WHERE $topics IS NULL OR list_contains($topics, topic))
    -- from the chunk's first period back to its trend context (the k periods before it)
    WHERE ($context IS NULL OR period_start >= $context) AND ($hi IS NULL OR period_start <= $hi)
),
agg AS MATERIALIZED (
    SELECT period, period_start, topic,
           CASE WHEN grouping(channel) = 1 THEN '*' ELSE channel END AS channel,
           CASE WHEN grouping(product) = 1 THEN '*' ELSE product END AS product,
           count(*) AS volume, count(*) FILTER (WHERE sentiment = 'neg') AS neg_count,
           count(*) FILTER (WHERE sentiment = 'pos') AS pos_count, count(*) FILTER (WHERE urgent) AS urgent_count,
           count(DISTINCT customer_key) AS customers
    FROM p
    GROUP BY GROUPING SETS ((period, period_start, topic, channel, product), (period, period_start, topic, channel),
                            (period, period_start, topic, product), (period, period_start, topic))
),
prior AS (SELECT $p0 AS p0),                          -- of all mentions, not the chunk's
firsts AS (SELECT $period AS period, $first_start AS first_start),  -- likewise
steps AS (
    SELECT a.*,
           CASE a.period WHEN 'day' THEN INTERVAL 1 DAY WHEN 'week' THEN INTERVAL 7 DAY ELSE INTERVAL 1 MONTH END
               AS step,
           $k AS k,
           CASE a.period WHEN 'day' THEN date_diff('day', f.first_start, a.period_start)
                         WHEN 'week' THEN date_diff('week', f.first_start, a.period_start)
                         ELSE date_diff('month', f.first_start, a.period_start) END AS periods_before
    FROM agg a JOIN firsts f USING (period)
),
trail AS (
    SELECT s.period, s.period_start, s.topic, s.channel, s.product, coalesce(sum(h.neg_count), 0) AS trail_sum
    FROM steps s LEFT JOIN agg h
      ON h.period = s.period AND h.topic = s.topic AND h.channel = s.channel AND h.product = s.product
     AND h.period_start < s.period_start AND h.period_start >= s.period_start - s.k * s.step
    GROUP BY ALL
),
ranked AS (
    SELECT s.*, s.neg_count / s.volume AS neg_rate, (s.pos_count - s.neg_count) / s.volume AS net_sentiment,
           coalesce(pv.neg_count, 0) AS prev_neg_count, pv.neg_count / pv.volume AS prev_neg_rate,
           least(greatest((s.neg_count - coalesce(pv.neg_count, 0)) / greatest(coalesce(pv.neg_count, 0), 1), 0), 2)
               AS growth,
           CASE WHEN least(s.k, s.periods_before) > 0 THEN t.trail_sum / least(s.k, s.periods_before) ELSE 0 END
               AS trailing_neg_avg,
           (s.neg_count + $m * prior.p0) / (s.volume + $m) AS neg_rate_smoothed
    FROM steps s
    JOIN trail t USING (period, period_start, topic, channel, product)
    CROSS JOIN prior
    LEFT JOIN agg pv ON pv.period = s.period AND pv.topic = s.topic AND pv.channel = s.channel
                    AND pv.product = s.product AND pv.period_start = CAST(s.period_start - s.step AS DATE)
),
factored AS (
    SELECT *,
           CASE WHEN periods_before > 0
                THEN least(greatest((neg_count - trailing_neg_avg) / (trailing_neg_avg + $pseudo), -1), 2)
                ELSE 0 END AS trend,
           1 + least(urgent_count, neg_count) / greatest(neg_count, 1) AS urgency_factor
    FROM ranked
),
kwc AS (
    SELECT period, period_start, topic,
           CASE WHEN grouping(channel) = 1 THEN '*' ELSE channel END AS channel,
           CASE WHEN grouping(product) = 1 THEN '*' ELSE product END AS product, k, count(*) AS c
    FROM (SELECT period, period_start, topic, channel, product, unnest(keywords) AS k FROM p
          WHERE sentiment = 'neg' AND ($lo IS NULL OR period_start >= $lo))
    GROUP BY GROUPING SETS ((period, period_start, topic, channel, product, k),
                            (period, period_start, topic, channel, k),
                            (period, period_start, topic, product, k), (period, period_start, topic, k))
),
kw AS (
    -- the 8 most said (a top-N aggregate: an ordered list of every keyword of a large cell did not fit)
    SELECT period, period_start, topic, channel, product, min_by(k, (-c, k), 8) AS keywords
    FROM kwc GROUP BY ALL
),
cand AS (
    SELECT a.period, a.period_start, a.topic, a.channel, a.product, r.quotable, r.text_hash, r.feedback_id,
           r.sentiment_score, r.has_pii, r.urgent,
           len(list_intersect(r.keywords, coalesce(kw.keywords, []))) AS typical,
           coalesce(list_filter(coalesce(kw.keywords, []), x -> list_contains(r.keywords, x))[1], '') AS lead
    FROM agg a
    LEFT JOIN kw USING (period, period_start, topic, channel, product)
    JOIN p r ON r.sentiment = 'neg' AND r.period = a.period AND r.period_start = a.period_start AND r.topic = a.topic
            AND (a.channel = '*' OR a.channel = r.channel) AND (a.product = '*' OR a.product = r.product)
    WHERE a.neg_count > 0 AND ($lo IS NULL OR a.period_start >= $lo)
),
distinct_texts AS (   -- a window, not DISTINCT ON: that kept the whole of a large cell in memory
    SELECT * FROM cand
    QUALIFY row_number() OVER (PARTITION BY period, period_start, topic, channel, product, text_hash
                               ORDER BY urgent DESC, has_pii, typical DESC, feedback_id) = 1
),
quotes AS (
    -- urgent first; diverse: the best quote of each leading keyword comes before any second one;
    -- typical: more of the cell's top keywords first; PII-free: redacted texts last
    SELECT period, period_start, topic, channel, product,
           min_by(feedback_id, (NOT urgent, nth, has_pii, -typical, NOT quotable, sentiment_score, feedback_id), 3)
               AS quote_ids
    FROM (SELECT *, row_number() OVER (PARTITION BY period, period_start, topic, channel, product, lead
                                       ORDER BY urgent DESC, has_pii, typical DESC, quotable DESC,
                                                sentiment_score, feedback_id) AS nth
          FROM distinct_texts)
    GROUP BY ALL
),
quote_texts AS (
    SELECT q.period, q.period_start, q.topic, q.channel, q.product, list(f.text ORDER BY q.i) AS quotes
    FROM (SELECT period, period_start, topic, channel, product, unnest(quote_ids) AS feedback_id,
                 generate_subscripts(quote_ids, 1) AS i
          FROM quotes) q
    JOIN feedback f USING (feedback_id)
    GROUP BY q.period, q.period_start, q.topic, q.channel, q.product
)
SELECT f.period, f.period_start, f.topic, f.channel, f.product, f.volume, f.neg_count, f.pos_count, f.neg_rate,
       f.net_sentiment, f.prev_neg_count, f.prev_neg_rate, f.growth, f.trailing_neg_avg, f.trend, f.urgent_count,
       f.customers, f.neg_rate_smoothed, 1 + greatest(f.trend, 0) / 2 AS growth_factor, f.urgency_factor,
       round(f.neg_count * f.neg_rate_smoothed * (1 + greatest(f.trend, 0) / 2) * f.urgency_factor, 2) AS priority,
       coalesce(kw.keywords, []) AS keywords, coalesce(quotes.quotes, []) AS quotes
FROM factored f
LEFT JOIN kw USING (period, period_start, topic, channel, product)
LEFT JOIN quote_texts quotes USING (period, period_start, topic, channel, product)
WHERE $lo IS NULL OR f.period_start >= $lo   -- the context periods are another chunk's rows
"""

TOP_SQL = """
SELECT p.topic, p.channel, p.priority, p.neg_count, p.neg_rate, p.period_start, p.keywords, p.quotes,
       t.name AS topic_name, t.team AS owner_team
FROM pain_points p LEFT JOIN topics t USING (topic)
WHERE p.period = 'week' AND p.product = '*' AND p.channel <> '*' AND p.period_start = ? AND p.neg_count >= ?
ORDER BY p.priority DESC, p.topic, p.channel LIMIT ?
"""


@dataclass(frozen=True)
class Chunk:
    """The cells one statement computes: ``topics`` (None: all) in periods ``lo``..``hi`` (None: all)."""

    topics: tuple[str, ...] | None = None
    lo: date | None = None
    hi: date | None = None


def chunk_plan(counts: Sequence[tuple[str, date, int]], limit: int = CHUNK_MENTIONS) -> list[Chunk]:
    """Split one period kind's cube, given its mentions per (topic, period start), into statements of
    at most ``limit`` mentions each: whole if it fits; else topics packed together in key order; a
    topic larger than ``limit`` in runs of consecutive periods (a single period is never split).

    Every cell depends only on its own topic and on its period with the few before it (prev and
    trailing average), so the pieces give the cube of one statement, row for row, with memory
    bounded by ``limit`` (plus a range's trend context) however many rows the warehouse holds."""
    per_topic: dict[str, list[tuple[date, int]]] = {}
    for topic, start, n in sorted(counts):
        per_topic.setdefault(topic, []).append((start, n))
    totals = {t: sum(n for _, n in runs) for t, runs in per_topic.items()}
    if sum(totals.values()) <= limit:
        return [Chunk()] if totals else []
    chunks: list[Chunk] = []
    group: list[str] = []
    size = 0
    for topic, total in totals.items():
        if total > limit:
            run: list[date] = []
            acc = 0
            for start, n in per_topic[topic]:
                if run and acc + n > limit:
                    chunks.append(Chunk((topic,), run[0], run[-1]))
                    run, acc = [], 0
                run.append(start)
                acc += n
            chunks.append(Chunk((topic,), run[0], run[-1]))
            continue
        if group and size + total > limit:
            chunks.append(Chunk(tuple(group)))
            group, size = [], 0
        group.append(topic)
        size += total
    if group:
        chunks.append(Chunk(tuple(group)))
    return chunks


def context_start(period: str, lo: date | None) -> date | None:
    """The first period a range starting at ``lo`` reads: the ``TRAILING`` periods before it."""
    if lo is None:
        return None
    k = TRAILING[period]
    if period == "day":
        return lo - timedelta(days=k)
    if period == "week":
        return lo - timedelta(weeks=k)
    months = lo.year * 12 + lo.month - 1 - k
    return date(months // 12, months % 12 + 1, 1)


def compute_pain_points(wh: Warehouse, model_version: str, run_id: str, top_n: int = 10,
                        min_negative: int = 3, chunk_mentions: int = CHUNK_MENTIONS) -> dict:
    """Recompute ``pain_points`` and upsert the latest week's top ones into ``backlog``."""
    now = datetime.now()
    with wh.transaction() as con, wh.scratch("mentions") as tmp:
        con.execute("DELETE FROM pain_points")
        mentions = sql_str(str(Path(tmp) / "mentions.parquet"))
        con.execute(MENTIONS_SQL.replace("{path}", mentions), {"model_version": model_version})
        con.execute(f"CREATE OR REPLACE TEMP VIEW pp_base AS SELECT * FROM read_parquet({mentions})")
        p0 = con.execute("SELECT coalesce(avg(CAST(sentiment = 'neg' AS DOUBLE)), 0.5) FROM pp_base").fetchone()[0]
        for period in PERIODS:
            counts = con.execute("SELECT topic, CAST(date_trunc($period, created_at) AS DATE) AS s, count(*) "
                                 "FROM pp_base GROUP BY ALL", {"period": period}).fetchall()
            for chunk in chunk_plan(counts, chunk_mentions):
                con.execute(f"""INSERT INTO pain_points BY NAME
                                SELECT *, $model_version AS model_version, $run_id AS run_id, $now AS computed_at
                                FROM ({PAIN_POINTS_SQL})""",
                            {"model_version": model_version, "run_id": run_id, "now": now, "period": period,
                             "m": PRIOR_MENTIONS, "pseudo": TREND_PSEUDO, "k": TRAILING[period], "p0": p0,
                             "first_start": min(s for _, s, _ in counts),
                             "topics": list(chunk.topics) if chunk.topics else None, "lo": chunk.lo,
                             "hi": chunk.hi, "context": context_start(period, chunk.lo)})
        con.execute("DROP VIEW pp_base")
        n_points = con.execute("SELECT count(*) FROM pain_points").fetchone()[0]
        latest = con.execute("SELECT max(period_start) FROM pain_points WHERE period = 'week'").fetchone()[0]
        top = con.execute(TOP_SQL, [latest, min_negative, top_n]).to_arrow_table()
        n_new = backlog.upsert_candidates(con, top, now, run_id)
        n_backlog = con.execute("SELECT count(*) FROM backlog").fetchone()[0]
    return {"pain_points": n_points, "latest_period": str(latest) if latest else None,
            "backlog_upserted": top.num_rows, "backlog_new": n_new, "backlog_items": n_backlog}


RANK_COUNTS = ("pain_points", "latest_period", "backlog_upserted", "backlog_new", "backlog_items")


@task(name="rank-pain-points")
def rank_pain_points(db: str, model_version: str, run_id: str, top_n: int) -> dict:
    """Aggregate the cube, rank it and refresh the backlog from the latest week's top pain points."""
    return compute_pain_points(Warehouse(db), model_version, run_id, top_n=top_n)


@task(name="detect-spikes")
def detect_spikes(db: str, run_id: str, config: LoopConfig) -> list[dict]:
    """Test the latest weeks against their own history; store new alerts (deduplicated)."""
    return alerts_mod.raise_alerts(Warehouse(db), run_id, config)


@task(name="deliver-alerts")
def deliver_alerts(db: str, config: LoopConfig) -> dict:
    """Log every undelivered alert and POST it to the webhook, if one is configured."""
    return alerts_mod.deliver_pending(Warehouse(db), config, log=logger())


@flow(name="pain_points")
def pain_points_flow(db: str | None = None, home: str | None = None, model: str | None = None,
                     top_n: int = 10) -> dict:
    """Aggregate pain points, rank them, raise alerts on spikes and feed the backlog."""
    settings = Settings.resolve(home, db)
    config = LoopConfig.from_env()
    wh = Warehouse(settings.db_path)
    version = current_analysis_version(settings.models_dir, model, settings.load_taxonomy())
    log = logger()
    with recorded_run(wh, "pain_points", {"model_version": version, "top_n": top_n,
                                          "webhook": bool(config.webhook_url)}) as run:
        state = input_state(wh, model_version=version, top_n=top_n,
                            alerts=[config.alert_alpha, config.alert_min_count, config.alert_lookback])
        prior = unchanged_result(wh, "pain_points", state)
        if prior is None:
            counts = rank_pain_points(str(settings.db_path), version, run.run_id, top_n)
            log.info("pain points: %(pain_points)d rows; latest week %(latest_period)s; %(backlog_upserted)d "
                     "backlog items updated, %(backlog_new)d new (%(backlog_items)d in all)", counts)
            new_alerts = len(detect_spikes(str(settings.db_path), run.run_id, config))
        else:  # the same feedback, scores and topics as the last run: the same cube, backlog rows and alerts
            counts = {k: prior[k] for k in RANK_COUNTS}
            new_alerts = 0
            log.info("pain points: no feedback, scores or topics changed since the last run; its ranking stands")
        delivery = deliver_alerts(str(settings.db_path), config)  # undelivered alerts are retried every run
        run.counts = {**counts, "alerts_new": new_alerts, **delivery, "inputs": state, "unchanged": prior is not None}
    return run.counts
