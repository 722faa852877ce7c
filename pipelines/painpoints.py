"""The ``pain_points`` flow: aggregate feedback per week × topic × channel, rank, and upsert the
top pain points of the latest week into the improvement ``backlog``.

Priority (shown with its factors in ``v_pain_points``)::

    growth   = clip((neg_count − prev_neg_count) / max(prev_neg_count, 1), 0, 2)
    priority = neg_count × neg_rate × (1 + growth / 2)

so a pain point ranks high when many customers are unhappy about it (reach: the negative
mentions), when most who mention the topic are unhappy (negativity), and when it is getting
worse (growth: up to ×2 for a tripling).
Pain points are derived data: each run recomputes them in one transaction. The backlog is not:
a re-run updates an item's evidence and priority but never its status, owner or title.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import pyarrow as pa
from prefect import flow, task

from models.registry import current_version
from pipelines.config import Settings
from pipelines.runs import logger, recorded_run
from pipelines.warehouse import Warehouse

CHANNEL_NAMES = {"app_review": "应用商店评论", "hotline": "客服热线", "online_chat": "在线客服", "survey": "问卷调研",
                 "social": "社交媒体", "email": "邮件投诉", "store": "门店", "unknown": "未知渠道"}

PAIN_POINTS_SQL = """
WITH base AS MATERIALIZED (
    SELECT f.feedback_id, CAST(date_trunc('week', f.created_at) AS DATE) AS period_start, f.channel, f.text,
           f.text_key, n.sentiment, n.sentiment_score, n.keywords, unnest(n.topics) AS topic
    FROM feedback f JOIN feedback_nlp n USING (feedback_id)
    WHERE n.model_version = $model_version
),
agg AS (
    SELECT period_start, topic, channel, count(*) AS volume,
           count(*) FILTER (WHERE sentiment = 'neg') AS neg_count
    FROM base GROUP BY ALL
),
ranked AS (
    SELECT a.*, a.neg_count / a.volume AS neg_rate,
           coalesce(p.neg_count, 0) AS prev_neg_count,
           p.neg_count / p.volume AS prev_neg_rate,
           least(greatest((a.neg_count - coalesce(p.neg_count, 0)) / greatest(coalesce(p.neg_count, 0), 1), 0), 2)
               AS growth
    FROM agg a LEFT JOIN agg p
      ON p.topic = a.topic AND p.channel = a.channel AND p.period_start = a.period_start - INTERVAL 7 DAY
),
kw AS (
    SELECT period_start, topic, channel, list(k ORDER BY c DESC, k)[1:8] AS keywords
    FROM (SELECT period_start, topic, channel, k, count(*) AS c
          FROM (SELECT period_start, topic, channel, unnest(keywords) AS k FROM base WHERE sentiment = 'neg')
          GROUP BY ALL)
    GROUP BY ALL
),
quotes AS (
    SELECT period_start, topic, channel,
           list(text ORDER BY (length(text) BETWEEN 12 AND 160) DESC, sentiment_score, feedback_id)[1:3] AS quotes
    FROM (SELECT DISTINCT ON (period_start, topic, channel, text_key) *
          FROM base WHERE sentiment = 'neg' ORDER BY period_start, topic, channel, text_key, feedback_id)
    GROUP BY ALL
)
SELECT 'week' AS period, r.period_start, r.topic, r.channel, r.volume, r.neg_count, r.neg_rate,
       r.prev_neg_count, r.prev_neg_rate, r.growth,
       round(r.neg_count * r.neg_rate * (1 + r.growth / 2), 2) AS priority,
       coalesce(kw.keywords, []) AS keywords, coalesce(quotes.quotes, []) AS quotes
FROM ranked r
LEFT JOIN kw USING (period_start, topic, channel)
LEFT JOIN quotes USING (period_start, topic, channel)
"""

BACKLOG_UPSERT_SQL = """
INSERT INTO backlog (item_id, topic, channel, title, owner_team, status, priority, neg_count, neg_rate,
                     first_seen_period, last_seen_period, keywords, quotes, created_at, updated_at, run_id)
SELECT item_id, topic, channel, title, owner_team, 'new', priority, neg_count, neg_rate,
       period_start, period_start, keywords, quotes, $now, $now, $run_id
FROM _cx_candidates
ON CONFLICT (item_id) DO UPDATE SET
    priority = excluded.priority, neg_count = excluded.neg_count, neg_rate = excluded.neg_rate,
    last_seen_period = greatest(backlog.last_seen_period, excluded.last_seen_period),
    keywords = excluded.keywords, quotes = excluded.quotes, updated_at = excluded.updated_at,
    run_id = excluded.run_id
"""


def backlog_item_id(topic: str, channel: str) -> str:
    """One backlog item per topic × channel; the id is stable across runs."""
    return "BL-" + hashlib.sha1(f"{topic}\x1f{channel}".encode()).hexdigest()[:8]


def compute_pain_points(wh: Warehouse, model_version: str, run_id: str, top_n: int = 10,
                        min_negative: int = 3) -> dict:
    """Recompute ``pain_points`` and upsert the latest week's top ones into ``backlog``."""
    now = datetime.now()
    topics: dict[str, tuple[str, str]] = {}
    with wh.transaction() as con:
        for key, name, team in con.execute("SELECT topic, name, team FROM topics").fetchall():
            topics[key] = (name, team)
        con.execute("DELETE FROM pain_points WHERE period = 'week'")
        con.execute(f"""INSERT INTO pain_points
                        SELECT *, $model_version AS model_version, $run_id AS run_id, $now AS computed_at
                        FROM ({PAIN_POINTS_SQL})""",
                    {"model_version": model_version, "run_id": run_id, "now": now})
        n_points = con.execute("SELECT count(*) FROM pain_points WHERE period = 'week'").fetchone()[0]
        latest = con.execute("SELECT max(period_start) FROM pain_points WHERE period = 'week'").fetchone()[0]
        top = con.execute("""SELECT topic, channel, priority, neg_count, neg_rate, period_start, keywords, quotes
                             FROM pain_points WHERE period = 'week' AND period_start = ? AND neg_count >= ?
                             ORDER BY priority DESC, topic, channel LIMIT ?""",
                          [latest, min_negative, top_n]).to_arrow_table()
        if top.num_rows:
            t_keys = top.column("topic").to_pylist()
            c_keys = top.column("channel").to_pylist()
            candidates = top.append_column("item_id", pa.array(
                [backlog_item_id(t, c) for t, c in zip(t_keys, c_keys, strict=True)]))
            candidates = candidates.append_column("title", pa.array(
                [f"{topics.get(t, (t, ''))[0]} · {CHANNEL_NAMES.get(c, c)}" for t, c in zip(t_keys, c_keys,
                                                                                          strict=True)]))
            candidates = candidates.append_column("owner_team", pa.array(
                [topics.get(t, ("", None))[1] for t in t_keys], pa.string()))
            con.register("_cx_candidates", candidates)
            con.execute(BACKLOG_UPSERT_SQL, {"now": now, "run_id": run_id})
            con.unregister("_cx_candidates")
        n_backlog = con.execute("SELECT count(*) FROM backlog").fetchone()[0]
    return {"pain_points": n_points, "latest_period": str(latest) if latest else None,
            "backlog_upserted": top.num_rows, "backlog_items": n_backlog}


@task(name="rank-pain-points")
def rank_pain_points(db: str, model_version: str, run_id: str, top_n: int) -> dict:
    return compute_pain_points(Warehouse(db), model_version, run_id, top_n=top_n)


@flow(name="pain_points")
def pain_points_flow(db: str | None = None, home: str | None = None, model: str | None = None,
                     top_n: int = 10) -> dict:
    """Aggregate pain points per week × topic × channel and feed the backlog."""
    settings = Settings.resolve(home, db)
    wh = Warehouse(settings.db_path)
    version = current_version(settings.models_dir, model)
    with recorded_run(wh, "pain_points", {"model_version": version, "top_n": top_n}) as run:
        run.counts = rank_pain_points(str(settings.db_path), version, run.run_id, top_n)
    logger().info("pain points: %(pain_points)d rows; latest week %(latest_period)s; %(backlog_upserted)d "
                  "backlog items updated (%(backlog_items)d in all)", run.counts)
    return run.counts
