"""The ``report`` flow: one self-contained HTML file for CX leads (体验闭环周报).

It reads the warehouse read-only, through the stable views (``v_feedback``, ``v_pain_points``,
``v_backlog``, plus ``v_alerts`` when a later migration adds it) and writes one file with inline CSS,
inline SVG charts and a few lines of inline script: no external scripts, styles or fonts, so it
opens on a machine with no internet. Sections, in order:

headline numbers with their change against the previous week · sentiment and volume trends ·
the ranked pain points with quotes · alerts · urgent feedback and customers' emotions · the
improvement backlog with verification results · NPS drivers · the customer-journey stages ·
emerging-topic candidates · how the numbers are computed.

A section is a :class:`Section` in :data:`SECTIONS`: a title, the relations it needs and a render
function. A section whose relations are missing is left out, so a new view gets a new section
by appending one entry. The report is read-only: it is not recorded in ``runs``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from html import escape, unescape
from pathlib import Path

import duckdb
from prefect import flow

from pipelines import charts
from pipelines.config import Settings
from pipelines.painpoints import CHANNEL_NAMES
from pipelines.records import dated_sql
from pipelines.runs import INPUTS_SQL, logger
from pipelines.warehouse import Warehouse

STAGES = {"awareness": "认知", "consideration": "考虑", "purchase": "购买", "usage": "使用",
          "after_sales": "售后"}
STATUS_NAMES = {"new": "新建", "triaged": "已分派", "in_progress": "处理中", "resolved": "已解决",
                "verified": "已验证", "reopened": "已重开"}
# rows whose time is the ingest time, not the customer's: left out of weekly trends
DATED = dated_sql()


class ReportError(RuntimeError):
    """A report that cannot be written (bad week, output path); the message names the culprit."""


@dataclass
class ReportContext:
    """What every section gets: an open read-only connection and the week being reported."""

    con: duckdb.DuckDBPyConnection
    week: date | None
    relations: set[str]
    notes: list[str] = field(default_factory=list)

    @property
    def prev_week(self) -> date | None:
        return self.week - timedelta(days=7) if self.week else None

    def rows(self, sql: str, params: list | dict | None = None) -> list[dict]:
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def columns(self, relation: str) -> list[str]:
        return [r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_catalog = current_database() ORDER BY ordinal_position",
            [relation]).fetchall()]


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    needs: tuple[str, ...]
    render: Callable[[ReportContext], str]


# -- formatting -----------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.0%}"


def _channel(c: str | None) -> str:
    return CHANNEL_NAMES.get(c or "unknown", c or "未知渠道")


def _week_label(d: date) -> str:
    return f"{d:%m-%d}"


def _change(now: float | None, prev: float | None, *, kind: str, worse_when_up: bool | None) -> str:
    """'▲ 12%' / '▼ 3.1 个百分点' coloured by whether the move is good or bad for customers."""
    if now is None or prev is None:
        return '<span class="delta flat">无上周数据</span>'
    if kind == "pct_points":
        diff = (now - prev) * 100
        text = f"{abs(diff):.1f} 个百分点"
    elif kind == "points":
        diff = now - prev
        text = f"{abs(diff):.2f}" if abs(diff) < 10 else f"{abs(diff):.0f}"
    else:  # relative change of a count
        diff = (now - prev) / prev * 100 if prev else (100.0 if now else 0.0)
        text = f"{abs(diff):.0f}%"
    if abs(diff) < 1e-9:
        return '<span class="delta flat">与上周持平</span>'
    tone = "flat" if worse_when_up is None else "bad" if (diff > 0) == worse_when_up else "good"
    return f'<span class="delta {tone}">{"▲" if diff > 0 else "▼"} {text} <small>较上周</small></span>'


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _quotes(quotes: list[str] | None, n: int = 2, limit: int = 120) -> str:
    """Up to ``n`` customer quotes (already redacted), each cut at ``limit`` characters."""
    return "".join(f"<q>{escape(q if len(q) <= limit else q[:limit] + '…')}</q>" for q in (quotes or [])[:n])


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


# -- sections -------------------------------------------------------------------------------------
def _week_stats(ctx: ReportContext, week: date | None) -> dict:
    if week is None:
        return {}
    return ctx.rows(f"""
        SELECT count(*) AS n, count(*) FILTER (WHERE sentiment = 'neg') AS neg,
               avg(sentiment_score) AS score,
               count(nps) AS nps_n,
               (count(*) FILTER (WHERE nps >= 9) - count(*) FILTER (WHERE nps <= 6)) * 100.0
                   / nullif(count(nps), 0) AS nps
        FROM v_feedback WHERE {DATED} AND CAST(date_trunc('week', created_at) AS DATE) = ?""", [week])[0]


def headline(ctx: ReportContext) -> str:
    now, prev = _week_stats(ctx, ctx.week), _week_stats(ctx, ctx.prev_week)
    if not now or not now["n"]:
        return _empty("本周没有反馈。")
    rate = now["neg"] / now["n"]
    prev_rate = prev["neg"] / prev["n"] if prev.get("n") else None
    cards = [
        ("本周反馈", f"{now['n']:,}", _change(now["n"], prev.get("n") or None, kind="count", worse_when_up=None),
         "条，全部渠道"),
        ("负面占比", _pct(rate), _change(rate, prev_rate, kind="pct_points", worse_when_up=True),
         f"{now['neg']} 条负面"),
        ("平均情感分", f"{now['score']:+.2f}", _change(now["score"], prev.get("score"), kind="points",
                                                   worse_when_up=False), "−1 最负面 … +1 最正面"),
    ]
    if now["nps_n"]:
        cards.append(("NPS", f"{now['nps']:+.0f}", _change(now["nps"], prev.get("nps"), kind="points",
                                                          worse_when_up=False), f"问卷 {now['nps_n']} 份"))
    if "v_pain_points" in ctx.relations:
        top = ctx.rows("""SELECT topic_name, channel, priority, neg_count FROM v_pain_points
                          WHERE period_start = ? AND neg_count > 0 ORDER BY priority DESC LIMIT 1""", [ctx.week])
        if top:
            t = top[0]
            cards.append(("头号痛点", f'<span class="text">{escape(t["topic_name"] or "")}</span>',
                          f'<span class="delta bad">优先级 {t["priority"]:.1f}</span>',
                          f"{_channel(t['channel'])} · {t['neg_count']} 条负面"))
    if "v_backlog" in ctx.relations:
        b = ctx.rows("""SELECT count(*) AS n, count(*) FILTER (WHERE status IN ('new', 'reopened')) AS todo,
                               count(*) FILTER (WHERE status = 'verified') AS verified FROM v_backlog""")[0]
        cards.append(("改进待办", f"{b['n']}", f'<span class="delta flat">待处理 {b["todo"]} · 已验证 '
                      f'{b["verified"]}</span>', "项（主题 × 渠道）"))
    html = "".join(f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{v}</div>{d}'
                   f'<div class="s">{escape(s)}</div></div>' for k, v, d, s in cards)
    return f'<div class="cards">{html}</div>'


def trends(ctx: ReportContext) -> str:
    weeks = ctx.rows(f"""
        SELECT CAST(date_trunc('week', created_at) AS DATE) AS w,
               count(*) FILTER (WHERE sentiment = 'neg') AS neg, count(*) FILTER (WHERE sentiment = 'neu') AS neu,
               count(*) FILTER (WHERE sentiment = 'pos') AS pos, count(*) AS n
        FROM v_feedback WHERE {DATED} AND sentiment IS NOT NULL GROUP BY ALL ORDER BY w""")
    if not weeks:
        return _empty("还没有打过分的反馈。")
    cats = [_week_label(r["w"]) for r in weeks]
    volume = charts.columns(
        "volume", "每周反馈量与负面占比", cats,
        [("负面", [r["neg"] for r in weeks], charts.NEG), ("中性", [r["neu"] for r in weeks], charts.NEU),
         ("正面", [r["pos"] for r in weeks], charts.POS)],
        line=("负面占比", [r["neg"] / r["n"] for r in weeks], "#7a1f1f"), note="横轴为每周一")
    by_channel = ctx.rows(f"""
        SELECT channel, CAST(date_trunc('week', created_at) AS DATE) AS w,
               count(*) FILTER (WHERE sentiment = 'neg') / count(*) AS rate
        FROM v_feedback WHERE {DATED} AND sentiment IS NOT NULL GROUP BY ALL""")
    channels = sorted({r["channel"] for r in by_channel})
    rate = {(r["channel"], r["w"]): r["rate"] for r in by_channel}
    per_channel = charts.lines(
        "channel-negative-rate", "各渠道负面占比", cats,
        [(_channel(c), [rate.get((c, r["w"])) for r in weeks]) for c in channels],
        fmt=lambda v: f"{v:.0%}", y_min=0, y_max=1)
    return volume + per_channel


def pain_points(ctx: ReportContext) -> str:
    rows = ctx.rows("""SELECT topic_name, stage, owner_team, channel, volume, neg_count, neg_rate, prev_neg_count,
                              growth, priority, keywords, quotes
                       FROM v_pain_points WHERE period_start = ? AND neg_count > 0
                       ORDER BY priority DESC, topic, channel LIMIT 10""", [ctx.week])
    if not rows:
        return _empty("本周没有痛点数据：先运行 cxloop run。")
    labels = [f"{r['topic_name']} · {_channel(r['channel'])}" for r in rows]
    chart = charts.hbars("priority", "优先级（前 10）", labels, [r["priority"] for r in rows],
                         colours=charts.NEG, annotations=[f"负面 {r['neg_count']}/{r['volume']}" for r in rows])
    top = rows[0]["priority"]
    table = _table(
        ["#", "痛点", "渠道", "负面 / 提及", "上周 → 本周负面", "优先级", "关键词与客户原话"],
        [[str(i), f"<b>{escape(r['topic_name'] or '')}</b><br><small>{STAGES.get(r['stage'], r['stage'] or '')}"
          f"阶段 · {escape(r['owner_team'] or '')}</small>", escape(_channel(r["channel"])),
          f"{r['neg_count']}/{r['volume']}<br><small>{_pct(r['neg_rate'])}</small>",
          f"{r['prev_neg_count']} → {r['neg_count']}<br><small>增长 {r['growth']:+.1f}</small>",
          f"{r['priority']:.1f}<br>{charts.spark_bar(r['priority'], top, charts.NEG, width=70)}",
          f"<small class='kw'>{escape('、'.join((r['keywords'] or [])[:6]))}</small>{_quotes(r['quotes'])}"]
         for i, r in enumerate(rows, 1)], cls="pain")
    return chart + table


def alerts(ctx: ReportContext) -> str:
    if "v_alerts" in ctx.relations:  # the alerts the pain-points flow raised, when the warehouse has them
        cols = ctx.columns("v_alerts")
        if {"kind", "period_start", "message"} <= set(cols):
            return _alert_list(ctx, cols)
        rows = ctx.rows("SELECT * FROM v_alerts LIMIT 20")  # an alerts view of another shape: shown as it is
        shown = [c for c in cols if not c.endswith("_id")][:8]
        return _table(shown, [[escape(_cell(r[c])) for c in shown] for r in rows]) if rows else _empty("没有预警。")
    rows = ctx.rows("""SELECT topic_name, channel, neg_count, prev_neg_count, growth, quotes FROM v_pain_points
                       WHERE period_start = ? AND neg_count >= 5 AND growth >= 1
                       ORDER BY growth DESC, neg_count DESC LIMIT 10""", [ctx.week])
    note = '<p class="note">按痛点增长计算：本周负面 ≥ 5 条且较上周至少翻倍。</p>'
    if not rows:
        return note + _empty("本周没有突增的痛点。")
    items = "".join(
        f'<li><b>{escape(r["topic_name"] or "")} · {escape(_channel(r["channel"]))}</b>：负面 {r["prev_neg_count"]} → '
        f'{r["neg_count"]} 条（{"+" if r["growth"] >= 2 else ""}{r["growth"]:.0%}{"以上" if r["growth"] >= 2 else ""}）'
        f'{_quotes(r["quotes"], 1)}</li>' for r in rows)
    return note + f'<ul class="alerts">{items}</ul>'


ALERT_KINDS = {"volume_spike": "负面量突增", "rate_spike": "负面率突增", "urgent": "紧急"}


def _alert_list(ctx: ReportContext, cols: list[str]) -> str:
    """The report week's alerts (and the previous week's), newest first."""
    rows = ctx.rows("SELECT * FROM v_alerts WHERE period_start >= ? ORDER BY period_start DESC, kind, message LIMIT 20",
                    [ctx.prev_week])
    if not rows:
        return _empty("本周和上周没有预警。")
    body = []
    for r in rows:
        where = f"{r.get('topic_name') or r.get('topic') or ''} · " \
                f"{'全部渠道' if r.get('channel') == '*' else _channel(r.get('channel'))}"
        delivered = ""
        if "delivered_at" in cols:
            delivered = "已推送" if r["delivered_at"] else "未推送"
        kind = escape(ALERT_KINDS.get(r["kind"], r["kind"]))
        body.append([str(r["period_start"]), f'<span class="status s-new">{kind}</span>', escape(where),
                     escape(r["message"]), escape(delivered)])
    return _table(["周", "类型", "主题 · 渠道", "说明", "推送"], body)


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, list):
        return "、".join(str(x) for x in v[:5])
    return "" if v is None else str(v)


def backlog(ctx: ReportContext) -> str:
    names = ctx.columns("v_backlog")  # verification columns, when the verify flow's migration added them
    verify_cols = [c for c in ("last_check", "last_check_reason") if c in names] or [c for c in names if "verif" in c]
    extra = "".join(f', "{c}"' for c in verify_cols)
    rows = ctx.rows(f"""SELECT item_id, title, owner_team, status, priority, neg_count, neg_rate, first_seen_period,
                               last_seen_period{extra} FROM v_backlog ORDER BY priority DESC LIMIT 15""")
    if not rows:
        return _empty("待办为空。")
    counts = ctx.rows("SELECT status, count(*) AS n FROM v_backlog GROUP BY ALL")
    chips = "".join(f'<span class="status s-{escape(r["status"])}">{escape(STATUS_NAMES.get(r["status"], r["status"]))}'
                    f" {r['n']}</span>" for r in sorted(counts, key=lambda r: list(STATUS_NAMES).index(r["status"])
                                                         if r["status"] in STATUS_NAMES else 99))

    def verification(r: dict) -> str:
        if verify_cols:
            shown = [STATUS_NAMES.get(v, v) for v in (_cell(r[c]) for c in verify_cols if r[c] is not None)]
            if shown:
                return escape(" · ".join(shown))
        return {"verified": "✔ 复测负面下降", "reopened": "✘ 复测问题复现", "resolved": "待复测"}.get(r["status"], "—")

    def badge(status: str) -> str:
        return f'<span class="status s-{escape(status)}">{escape(STATUS_NAMES.get(status, status))}</span>'

    table = _table(["编号", "改进项", "负责团队", "状态", "优先级", "负面", "首次出现", "最近出现", "验证结果"],
                   [[f"<code>{escape(r['item_id'])}</code>", escape(r["title"]), escape(r["owner_team"] or ""),
                     badge(r["status"]), f"{r['priority']:.1f}", f"{r['neg_count']}（{_pct(r['neg_rate'])}）",
                     str(r["first_seen_period"]), str(r["last_seen_period"]), verification(r)] for r in rows],
                   cls="backlog")
    return f'<p class="chips">{chips}</p>' + table


def nps_drivers(ctx: ReportContext) -> str:
    overall = ctx.rows("""SELECT count(nps) AS n, (count(*) FILTER (WHERE nps >= 9) - count(*) FILTER (WHERE nps <= 6))
                                 * 100.0 / nullif(count(nps), 0) AS nps FROM v_feedback WHERE nps IS NOT NULL""")[0]
    if not overall["n"]:
        return _empty("还没有带 NPS 的问卷反馈。")
    rows = ctx.rows("""
        SELECT t.name AS topic_name, count(*) AS n,
               (count(*) FILTER (WHERE f.nps >= 9) - count(*) FILTER (WHERE f.nps <= 6)) * 100.0 / count(*) AS nps,
               count(*) FILTER (WHERE f.nps <= 6) AS detractors
        FROM (SELECT nps, unnest(topics) AS topic FROM v_feedback WHERE nps IS NOT NULL) f
        JOIN topics t USING (topic) GROUP BY ALL HAVING count(*) >= 5 ORDER BY nps""")
    head = (f'<p class="note">全部问卷 {overall["n"]} 份，NPS <b>{overall["nps"]:+.0f}</b>'
            "（推荐者 9–10 分占比 − 贬损者 0–6 分占比）。"
            "下图：提到该主题的受访者的 NPS 与整体之差，负值即拉低 NPS 的驱动因素（至少 5 份）。</p>")
    if not rows:
        return head + _empty("每个主题的问卷都不足 5 份。")
    diffs = [r["nps"] - overall["nps"] for r in rows]
    chart = charts.hbars("nps-drivers", "NPS 驱动因素（与整体之差）", [r["topic_name"] for r in rows], diffs,
                         fmt=lambda v: f"{v:+.0f}", colours=[charts.NEG if d < 0 else charts.POS for d in diffs],
                         annotations=[f"NPS {r['nps']:+.0f} · {r['n']} 份" for r in rows])
    return head + chart


def journey(ctx: ReportContext) -> str:
    rows = ctx.rows(f"""
        WITH m AS (SELECT f.feedback_id, f.sentiment, CAST(date_trunc('week', f.created_at) AS DATE) AS w, t.stage,
                          t.name AS topic_name
                   FROM (SELECT *, unnest(topics) AS topic FROM v_feedback WHERE {DATED}) f JOIN topics t USING (topic))
        SELECT stage, count(DISTINCT feedback_id) AS n,
               count(DISTINCT feedback_id) FILTER (WHERE sentiment = 'neg') AS neg,
               count(DISTINCT feedback_id) FILTER (WHERE w = $week) AS n_week,
               count(DISTINCT feedback_id) FILTER (WHERE w = $week AND sentiment = 'neg') AS neg_week,
               mode(topic_name) FILTER (WHERE sentiment = 'neg') AS top_topic
        FROM m GROUP BY ALL""", {"week": ctx.week})
    if not rows:
        return _empty("还没有按主题归类的反馈。")
    order = list(STAGES)
    rows.sort(key=lambda r: order.index(r["stage"]) if r["stage"] in order else 99)
    labels = [STAGES.get(r["stage"], r["stage"]) for r in rows]
    rates = [r["neg"] / r["n"] for r in rows]
    chart = charts.hbars("journey", "客户旅程各阶段的负面占比（全部周）", labels, rates, fmt=lambda v: f"{v:.0%}",
                         colours=[charts.NEG if v >= 0.5 else "#e39b2d" if v >= 0.3 else charts.POS for v in rates],
                         annotations=[f"{r['neg']}/{r['n']} 条" for r in rows], label_width=90)
    table = _table(["阶段", "提及反馈", "负面占比", "本周提及", "本周负面占比", "负面最多的主题"],
                   [[escape(lab), str(r["n"]), _pct(r["neg"] / r["n"]), str(r["n_week"]),
                     _pct(r["neg_week"] / r["n_week"] if r["n_week"] else None), escape(r["top_topic"] or "—")]
                    for lab, r in zip(labels, rows, strict=True)])
    return chart + table


def method(ctx: ReportContext) -> str:
    model = ctx.rows("SELECT max(model_version) AS m FROM v_pain_points") if "v_pain_points" in ctx.relations else []
    return ("<ul class='method'>"
            "<li>周 = 自然周（周一起），时间为北京时间；缺少或无法解析时间的反馈不计入每周趋势。</li>"
            "<li>优先级 = 负面数 × 负面占比 × (1 + 增长/2)，"
            "增长 = clip((本周负面 − 上周负面) / max(上周负面, 1), 0, 2)。</li>"
            "<li>情感由模型判断（负面 / 中性 / 正面），情感分 = P(正面) − P(负面)，范围 −1…+1"
            + (f"；模型版本 <code>{escape(model[0]['m'] or '')}</code>" if model else "") + "。</li>"
            "<li>客户原话已去除手机号、身份证、银行卡与邮箱（显示为 &lt;PHONE&gt; 等）。</li>"
            "<li>数据来自 DuckDB 视图 v_feedback、v_pain_points、v_backlog，"
            "可用 <code>cxloop sql</code> 复核每个数字。</li>"
            "</ul>")


EMOTIONS = {"anger": "愤怒", "disappointment": "失望", "anxiety": "焦虑", "joy": "满意", "none": "无明显情绪"}
URGENCY_CATEGORIES = {"escalation": "升级投诉", "churn": "流失", "safety": "安全", "fraud": "欺诈"}


def urgent_and_emotion(ctx: ReportContext) -> str:
    """The week's urgent feedback (escalation, churn, safety, fraud) first, then how customers felt."""
    if not {"urgent", "emotion", "urgency_reasons"} <= set(ctx.columns("v_feedback")):
        return _empty("仓库尚未升级到含情绪与紧急度的版本：运行 cxloop enrich。")
    urgent = ctx.rows(f"""SELECT text, channel, urgency_reasons, emotion FROM v_feedback
                         WHERE urgent AND CAST(date_trunc('week', created_at) AS DATE) = ? AND {DATED}
                         ORDER BY created_at DESC, feedback_id LIMIT 8""", [ctx.week])
    emotions = ctx.rows(f"""SELECT emotion, count(*) AS n FROM v_feedback
                           WHERE emotion IS NOT NULL AND CAST(date_trunc('week', created_at) AS DATE) = ? AND {DATED}
                           GROUP BY emotion ORDER BY n DESC""", [ctx.week])

    def reasons(rs: list[str] | None) -> str:
        parts = [r.split(":", 1) for r in rs or []]
        return "、".join(f"{URGENCY_CATEGORIES.get(c, c)}（{escape(w)}）" for c, w in parts)

    out = '<p class="note">紧急：提到监管或媒体投诉、销户退订、人身安全或欺诈、且不是正面评价的反馈，按时间倒序。</p>'
    out += _table(["渠道", "原因", "情绪", "客户原话"],
                  [[escape(_channel(r["channel"])), reasons(r["urgency_reasons"]),
                    EMOTIONS.get(r["emotion"] or "", r["emotion"] or ""), _quotes([r["text"]], 1, 160)]
                   for r in urgent]) if urgent else _empty("本周没有紧急反馈。")
    if emotions:
        colours = [charts.POS if r["emotion"] == "joy" else charts.MUTED if r["emotion"] == "none" else charts.NEG
                   for r in emotions]
        out += charts.hbars("emotions", "本周情绪分布", [EMOTIONS.get(r["emotion"], r["emotion"]) for r in emotions],
                            [r["n"] for r in emotions], colours=colours)
    return out


def emerging_topics(ctx: ReportContext) -> str:
    """Candidate topics from negative feedback that no topic covers, for a CX lead to accept."""
    rows = ctx.rows("""SELECT candidate_id, size, keywords, quotes, last_seen FROM v_topic_candidates
                       WHERE status = 'new' ORDER BY size DESC, candidate_id LIMIT 8""")
    if not rows:
        return _empty("没有待确认的新兴话题。")
    note = ('<p class="note">未被任何话题覆盖的负面反馈聚类而成；接受：'
            '<code>cxloop taxonomy accept ID --key KEY</code>，忽略：<code>cxloop taxonomy dismiss ID</code>。</p>')
    return note + _table(["候选", "条数", "关键词", "客户原话"],
                         [[f"<code>{escape(r['candidate_id'])}</code>", str(r["size"]),
                           escape("、".join((r["keywords"] or [])[:6])), _quotes(r["quotes"], 2)] for r in rows])


SECTIONS: list[Section] = [
    Section("headline", "核心指标", ("v_feedback",), headline),
    Section("trends", "情感与反馈量趋势", ("v_feedback",), trends),
    Section("pain-points", "痛点排行", ("v_pain_points",), pain_points),
    Section("alerts", "预警", ("v_pain_points",), alerts),
    Section("urgent", "紧急反馈与客户情绪", ("v_feedback",), urgent_and_emotion),
    Section("backlog", "改进待办与验证", ("v_backlog",), backlog),
    Section("nps", "NPS 驱动因素", ("v_feedback", "topics"), nps_drivers),
    Section("journey", "客户旅程视图", ("v_feedback", "topics"), journey),
    Section("emerging", "新兴话题候选", ("v_topic_candidates",), emerging_topics),
    Section("method", "口径说明", (), method),
]

CSS = """
:root{--neg:#d64545;--pos:#2f9e6f;--muted:#6b7785;--line:#e6e9ee;--bg:#f6f7f9;--accent:#2f6fde}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:#1f2933;font:15px/1.6 "Noto Sans CJK SC","Noto Sans SC","PingFang SC",
"Hiragino Sans GB","Microsoft YaHei","Source Han Sans SC","WenQuanYi Micro Hei",system-ui,sans-serif}
header{background:#1f3b64;color:#fff;padding:28px 40px 22px}
header h1{margin:0 0 4px;font-size:26px;font-weight:600}
header p{margin:0;opacity:.85}
nav{display:flex;flex-wrap:wrap;gap:6px 18px;padding:10px 40px;background:#fff;border-bottom:1px solid var(--line)}
nav a{color:var(--accent);text-decoration:none;font-size:14px}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;margin:18px 0;padding:18px 24px}
section h2{margin:0 0 12px;font-size:19px;border-left:4px solid var(--accent);padding-left:10px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.card .k{color:var(--muted);font-size:13px}.card .v{font-size:28px;font-weight:600;line-height:1.3}
.card .v .text{font-size:19px;line-height:1.4;display:block}
.card .s{color:var(--muted);font-size:12px}
.delta{font-size:13px;font-weight:600}.delta small{font-weight:400;color:var(--muted)}
.delta.bad{color:var(--neg)}.delta.good{color:var(--pos)}.delta.flat{color:var(--muted)}
figure.chart{margin:8px 0 18px}figure.chart figcaption{font-size:14px;margin-bottom:4px}
figure.chart figcaption b{margin-right:14px}
.key{margin-right:12px;color:var(--muted);font-size:13px}.key i{display:inline-block;width:10px;height:10px;
border-radius:2px;margin-right:4px;vertical-align:middle}
figcaption small{color:var(--muted);margin-left:6px}
svg text{font-family:inherit}svg .tick{font-size:11px;fill:var(--muted)}svg .label{font-size:13px;fill:#1f2933}
table{width:100%;border-collapse:collapse;font-size:13.5px;margin-top:6px}
th{text-align:left;color:var(--muted);font-weight:500;border-bottom:2px solid var(--line);padding:6px 8px;
white-space:nowrap}
td{border-bottom:1px solid var(--line);padding:7px 8px;vertical-align:top}
table.pain td:last-child{width:48%}table.pain td{white-space:nowrap}table.pain td:last-child{white-space:normal}
.kw{display:block;color:var(--accent);margin-bottom:2px}
table.backlog td{white-space:nowrap}table.backlog td:nth-child(2),table.backlog td:last-child{white-space:normal}
q{display:block;color:#3d4852;font-size:13px;margin:0 0 4px;quotes:"“" "”"}
.status{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;background:#eef1f5;white-space:nowrap}
.s-new,.s-reopened{background:#fde8e8;color:#a12b2b}.s-in_progress,.s-triaged{background:#fff3dc;color:#8a5a00}
.s-resolved{background:#e6effd;color:#1f4fa8}.s-verified{background:#e3f5ec;color:#1d7350}
.chips .status{margin-right:6px;font-size:13px;padding:2px 10px}
.note{color:var(--muted);font-size:13px;margin:0 0 8px}.empty{color:var(--muted)}
ul.alerts li{margin-bottom:8px}ul.method{color:#3d4852;font-size:13.5px}
code{background:#f0f2f5;border-radius:4px;padding:0 4px;font-size:12.5px}
footer{color:var(--muted);font-size:12px;text-align:center;padding:0 0 30px}
@media print{nav{display:none}section{break-inside:avoid}}
"""

# Marks the page when every chart has something drawn; an empty chart is a console error.
SCRIPT = """
(function () {
  var figs = document.querySelectorAll("figure.chart"), drawn = 0;
  figs.forEach(function (f) {
    var ok = Array.prototype.some.call(f.querySelectorAll(".mark"), function (m) {
      var b = m.getBBox(); return b.width > 0 || b.height > 0;
    });
    if (ok) { drawn += 1; } else { console.error("cxloop report: chart " + f.dataset.chart + " has nothing drawn"); }
  });
  document.body.dataset.charts = String(figs.length);
  document.body.dataset.chartsDrawn = String(drawn);
})();
"""


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                      "WHERE table_catalog = current_database()").fetchall()}


def _latest_week(con: duckdb.DuckDBPyConnection, relations: set[str]) -> date | None:
    if "v_pain_points" in relations:
        week = con.execute("SELECT max(period_start) FROM v_pain_points").fetchone()[0]
        if week:
            return week
    return con.execute(f"SELECT CAST(max(date_trunc('week', created_at)) AS DATE) FROM v_feedback "
                       f"WHERE {DATED}").fetchone()[0]


def _parse_week(week: str | date | None) -> date | None:
    if week is None or isinstance(week, date):
        return week - timedelta(days=week.weekday()) if week else None
    try:
        d = date.fromisoformat(week)
    except ValueError:
        raise ReportError(f"--week {week!r} is not a date (YYYY-MM-DD)") from None
    return d - timedelta(days=d.weekday())


# the small tables a report shows, digested row by row (feedback and its scores: through INPUTS_SQL);
# of the verifications, what v_backlog shows of each item's latest one (``verify`` adds a row for a
# verified item at every run, with the same decision and reason)
DIGESTED = {t: f"SELECT * FROM {t}" for t in ("alerts", "backlog", "backlog_history", "pain_points",
                                                "topic_candidates", "quarantine", "model_versions")}
DIGESTED["verifications"] = ("SELECT item_id, decision, reason FROM verifications QUALIFY row_number() OVER "
                             "(PARTITION BY item_id ORDER BY checked_at DESC, verification_id) = 1")
_KEPT_RE = re.compile(r'<meta name="cxloop-report" content="([^"]*)">')


def _inputs_digest(con: duckdb.DuckDBPyConnection, relations: set[str], week: str | date | None) -> str:
    """A digest of everything a report is built from: the stored feedback and scores in brief
    (``pipelines.runs.INPUTS_SQL``: append-only feedback, re-scored rows get a new time), the rows
    of the small tables it shows (:data:`DIGESTED`), the week asked for, and this module's and the charts' code. The
    report reads nothing else (not even today's date), so an equal digest means the same report."""
    h = hashlib.sha256(repr((con.execute(INPUTS_SQL).fetchone(), str(week))).encode())
    for table, rows in DIGESTED.items():
        if table in relations:
            h.update(str(con.execute(f"SELECT md5(coalesce(string_agg(CAST(t AS VARCHAR), chr(10) ORDER BY "
                                     f"CAST(t AS VARCHAR)), '')) FROM ({rows}) t").fetchone()[0]).encode())
    for module in (__file__, charts.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()


def report_digest(db_path: str | Path, week: str | date | None = None) -> str:
    """:func:`_inputs_digest` of a warehouse (what the report written from it now would show)."""
    with Warehouse(db_path).connect(read_only=True) as con:
        return _inputs_digest(con, _relations(con), week)


def _kept(out: Path) -> dict | None:
    """What a report written earlier says of itself (its inputs' digest, week, sections), or None."""
    try:
        with out.open(encoding="utf-8") as f:
            head = f.read(4096)
    except (OSError, UnicodeDecodeError):
        return None
    m = _KEPT_RE.search(head)
    if not m:
        return None
    try:
        kept = json.loads(unescape(m[1]))
    except ValueError:
        return None
    return kept if isinstance(kept, dict) else None


def build_report(db_path: str | Path, week: str | date | None = None,
                 title: str = "客户体验闭环周报", digest: str | None = None) -> tuple[str, dict]:
    """The report as one HTML string, and what it holds (week, sections, the digest of its inputs;
    ``digest``: already computed by the caller)."""
    wh = Warehouse(db_path)
    with wh.connect(read_only=True) as con:
        relations = _relations(con)
        digest = digest or _inputs_digest(con, relations, week)
        ctx = ReportContext(con, _parse_week(week) or _latest_week(con, relations), relations)
        done: list[tuple[Section, str]] = []
        for s in SECTIONS:
            if all(n in relations for n in s.needs):
                done.append((s, s.render(ctx)))
        totals = con.execute(f"SELECT count(*), count(DISTINCT channel), CAST(min(created_at) AS DATE), "
                             f"CAST(max(created_at) AS DATE) FROM v_feedback WHERE {DATED}").fetchone()
    week_text = f"{ctx.week:%Y-%m-%d} 起的一周" if ctx.week else "暂无数据"
    nav = "".join(f'<a href="#{s.key}">{escape(s.title)}</a>' for s, _ in done)
    body = "".join(f'<section id="{s.key}"><h2>{escape(s.title)}</h2>{html}</section>' for s, html in done)
    generated = datetime.now()
    span = f"，{totals[2]} 至 {totals[3]}" if totals[2] else ""
    info = {"week": str(ctx.week) if ctx.week else None, "sections": [s.key for s, _ in done], "inputs": digest}
    page = f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="cxloop-report" content="{escape(json.dumps(info))}">
<meta name="generator" content="cxloop report"><title>{escape(title)} · {escape(week_text)}</title>
<style>{CSS}</style></head>
<body>
<header><h1>{escape(title)}</h1><p>报告周：{escape(week_text)} · 共 {totals[0]:,} 条反馈，{totals[1]} 个渠道{span}
 · 生成于 {generated:%Y-%m-%d %H:%M}</p></header>
<nav>{nav}</nav>
<main>{body}</main>
<footer>cxloop · 数据文件 {escape(wh.name)} · 本报告为单一 HTML 文件，不依赖网络</footer>
<script>{SCRIPT}</script>
</body></html>
"""
    return page, info


def write_report(db_path: str | Path, output: str | Path, week: str | date | None = None,
                 reuse: bool = False) -> dict:
    """Build the report and write it to ``output`` atomically (a reader never sees half a file).
    ``reuse``: keep a report already at ``output`` that was built from the same inputs
    (:func:`_inputs_digest`), as the main job does when nothing it shows changed (at 1M rows the
    report's scans of the feedback took 1.5 s of a re-run); ``unchanged`` says so."""
    out = Path(output).expanduser()
    if out.is_dir():
        raise ReportError(f"output {out} is a folder: give a file name such as {out / 'report.html'}")
    digest = None
    if reuse and out.is_file():
        kept, digest = _kept(out), report_digest(db_path, week)
        if kept is not None and kept.get("inputs") == digest:
            return {"path": str(out.resolve()), "bytes": out.stat().st_size, "week": kept.get("week"),
                    "sections": kept.get("sections") or [], "inputs": digest, "unchanged": True}
    page, info = build_report(db_path, week, digest=digest)   # digested once (written in between: rebuilt next run)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return {"path": str(out.resolve()), "bytes": len(page.encode()), **info, "unchanged": False}


@flow(name="report")
def report_flow(output: str | None = None, db: str | None = None, home: str | None = None,
                week: str | None = None) -> dict:
    """Write the HTML report for CX leads (default ``$CXLOOP_HOME/report.html``) from the warehouse;
    a report there that was built from the same inputs is kept (``write_report(reuse=True)``)."""
    settings = Settings.resolve(home, db)
    result = write_report(settings.db_path, output or settings.home / "report.html", week, reuse=True)
    if result["unchanged"]:
        logger().info("report: nothing it shows changed since it was written; kept %s", result["path"])
    else:
        logger().info("report: week of %s, %d sections, %d KB → %s", result["week"], len(result["sections"]),
                      result["bytes"] // 1024, result["path"])
    return result
