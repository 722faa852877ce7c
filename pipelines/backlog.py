"""The improvement backlog: one item per pain point key (topic × channel, ``'*'`` = all channels),
its lifecycle and the history of every change.

    new → triaged → in_progress → resolved → verified
                                           ↘ reopened → triaged | in_progress | resolved

People move items with :func:`set_status`, :func:`assign` and :func:`add_note` (the CLI's
``cxloop backlog set-status|assign|note``); ``verified`` and the automatic ``reopened`` come from
the verification step (``pipelines.verify``). Each run of ``pain_points`` refreshes an item's
evidence and priority (:func:`upsert_candidates`) but never its status, owner, due date or title.
Every change is a row in ``backlog_history``: who, when, what, from which value to which.
"""

from __future__ import annotations

import getpass
import hashlib
import os
from datetime import date, datetime

import duckdb
import pyarrow as pa

from pipelines.warehouse import Warehouse

STATUSES = ("new", "triaged", "in_progress", "resolved", "verified", "reopened")

# what a person may do from each status; ``verified`` is the verification step's word only
PERSON_TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"triaged", "in_progress", "resolved"}),
    "triaged": frozenset({"new", "in_progress", "resolved"}),
    "in_progress": frozenset({"triaged", "resolved"}),
    "resolved": frozenset({"in_progress", "reopened"}),
    "verified": frozenset({"reopened"}),
    "reopened": frozenset({"triaged", "in_progress", "resolved"}),
}
VERIFY_TRANSITIONS: dict[str, frozenset[str]] = {
    "resolved": frozenset({"verified", "reopened"}),
    "verified": frozenset({"reopened"}),
}

CHANNEL_NAMES = {"app_review": "应用商店评论", "hotline": "客服热线", "online_chat": "在线客服", "survey": "问卷调研",
                 "social": "社交媒体", "email": "邮件投诉", "store": "门店", "unknown": "未知渠道", "*": "全部渠道"}

# MERGE rather than ON CONFLICT: the same statement works where tables have no keys (DuckLake)
UPSERT_SQL = """
MERGE INTO backlog USING _cx_candidates AS c ON backlog.item_id = c.item_id
WHEN MATCHED THEN UPDATE SET
    priority = c.priority, neg_count = c.neg_count, neg_rate = c.neg_rate,
    last_seen_period = greatest(backlog.last_seen_period, c.period_start),
    keywords = c.keywords, quotes = c.quotes, updated_at = $now, run_id = $run_id
WHEN NOT MATCHED THEN INSERT (item_id, topic, channel, title, owner_team, owner_source, status, priority, neg_count,
                              neg_rate, first_seen_period, last_seen_period, keywords, quotes, created_at,
                              updated_at, run_id)
    VALUES (c.item_id, c.topic, c.channel, c.title, c.owner_team, 'taxonomy', 'new', c.priority, c.neg_count,
            c.neg_rate, c.period_start, c.period_start, c.keywords, c.quotes, $now, $now, $run_id)
"""


class BacklogError(ValueError):
    """A backlog command a user can correct (unknown item, a move the lifecycle does not allow)."""


def backlog_item_id(topic: str, channel: str) -> str:
    """One backlog item per topic × channel; the id is stable across runs."""
    return "BL-" + hashlib.sha1(f"{topic}\x1f{channel}".encode()).hexdigest()[:8]


def item_title(topic_name: str, channel: str) -> str:
    return f"{topic_name} · {CHANNEL_NAMES.get(channel, channel)}"


def actor_name(given: str | None = None) -> str:
    """Who is acting: ``--by``, else ``$CXLOOP_USER``, else the login name."""
    if given:
        return given
    if os.environ.get("CXLOOP_USER"):
        return os.environ["CXLOOP_USER"]
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def record(con: duckdb.DuckDBPyConnection, item_id: str, actor: str, action: str, old: object = None,
           new: object = None, note: str | None = None, run_id: str | None = None,
           at: datetime | None = None) -> None:
    """Append one change to ``backlog_history``."""
    con.execute("INSERT INTO backlog_history VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [item_id, at or datetime.now(), actor, action, None if old is None else str(old),
                 None if new is None else str(new), note, run_id])


def upsert_candidates(con: duckdb.DuckDBPyConnection, candidates: pa.Table, now: datetime, run_id: str) -> int:
    """Insert new items and refresh the evidence of known ones from ranked pain points
    (columns topic, channel, priority, neg_count, neg_rate, period_start, keywords, quotes,
    topic_name, owner_team). Returns the number of new items."""
    if candidates.num_rows == 0:
        return 0
    topics = candidates.column("topic").to_pylist()
    channels = candidates.column("channel").to_pylist()
    names = candidates.column("topic_name").to_pylist()
    ids = [backlog_item_id(t, c) for t, c in zip(topics, channels, strict=True)]
    table = candidates.append_column("item_id", pa.array(ids)).append_column(
        "title", pa.array([item_title(n or t, c) for n, t, c in zip(names, topics, channels, strict=True)]))
    known = {r[0] for r in con.execute("SELECT item_id FROM backlog WHERE item_id IN (SELECT unnest(?))",
                                       [ids]).fetchall()}
    con.register("_cx_candidates", table)
    try:
        con.execute(UPSERT_SQL, {"now": now, "run_id": run_id})
    finally:
        con.unregister("_cx_candidates")
    new_ids = [i for i in ids if i not in known]
    for item_id in new_ids:
        record(con, item_id, "cxloop", "created", None, "new", "raised from the week's top pain points", run_id, now)
    return len(new_ids)


def _item(con: duckdb.DuckDBPyConnection, item_id: str) -> dict:
    cur = con.execute("SELECT * FROM backlog WHERE item_id = ?", [item_id.strip()])
    row = cur.fetchone()
    if row is None:
        raise BacklogError(f"no backlog item {item_id!r} (see `cxloop backlog list`)")
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def change_status(con: duckdb.DuckDBPyConnection, item_id: str, status: str, actor: str, *,
                  note: str | None = None, at: datetime | None = None, by_verification: bool = False,
                  run_id: str | None = None) -> dict:
    """Move an item to ``status`` inside an open transaction, checking the lifecycle. ``at`` is
    when it happened (for ``resolved``: when the fix shipped, the T that verification measures from)."""
    if status not in STATUSES:
        raise BacklogError(f"unknown status {status!r} (one of: {', '.join(STATUSES)})")
    item = _item(con, item_id)
    old = item["status"]
    allowed = (VERIFY_TRANSITIONS if by_verification else PERSON_TRANSITIONS).get(old, frozenset())
    if status not in allowed:
        hint = " (`verified` is set by verification after a fix is measured)" if status == "verified" else ""
        raise BacklogError(f"cannot move {item['item_id']} from {old} to {status}{hint}; "
                           f"allowed: {', '.join(sorted(allowed)) or 'nothing'}")
    now = datetime.now()
    when = at or now
    sets = {"status": status, "status_changed_at": when, "updated_at": now}
    if status == "resolved":
        sets |= {"resolved_at": when, "verified_at": None}
    elif status == "verified":
        sets["verified_at"] = when
    assignments = ", ".join(f"{k} = ?" for k in sets)
    con.execute(f"UPDATE backlog SET {assignments} WHERE item_id = ?", [*sets.values(), item["item_id"]])
    record(con, item["item_id"], actor, "status", old, status, note, run_id, now)
    return {**item, **sets}


def set_status(wh: Warehouse, item_id: str, status: str, actor: str | None = None, note: str | None = None,
               at: datetime | None = None) -> dict:
    """A person moves an item (one transaction)."""
    with wh.transaction() as con:
        return change_status(con, item_id, status, actor_name(actor), note=note, at=at)


def assign(wh: Warehouse, item_id: str, team: str | None = None, due: date | None = None,
           actor: str | None = None, note: str | None = None) -> dict:
    """Set the owner team (overriding the taxonomy's) and/or the due date."""
    if not team and not due:
        raise BacklogError("nothing to change: give a team and/or --due YYYY-MM-DD")
    who = actor_name(actor)
    with wh.transaction() as con:
        item = _item(con, item_id)
        now = datetime.now()
        if team:
            con.execute("UPDATE backlog SET owner_team = ?, owner_source = 'person', updated_at = ? WHERE item_id = ?",
                        [team, now, item["item_id"]])
            record(con, item["item_id"], who, "assign", item["owner_team"], team, note, at=now)
        if due:
            con.execute("UPDATE backlog SET due_date = ?, updated_at = ? WHERE item_id = ?",
                        [due, now, item["item_id"]])
            record(con, item["item_id"], who, "due", item["due_date"], due, note, at=now)
        return _item(con, item["item_id"])


def add_note(wh: Warehouse, item_id: str, text: str, actor: str | None = None) -> None:
    if not text.strip():
        raise BacklogError("the note is empty")
    with wh.transaction() as con:
        item = _item(con, item_id)
        record(con, item["item_id"], actor_name(actor), "note", note=text.strip())


def ensure_item(con: duckdb.DuckDBPyConnection, topic: str, channel: str, run_id: str, now: datetime) -> str:
    """The item for a topic × channel, created from its latest weekly pain point if it has none yet
    (for items a person opens, e.g. a topic ranked in an earlier week). Returns its id."""
    item_id = backlog_item_id(topic, channel)
    if con.execute("SELECT 1 FROM backlog WHERE item_id = ?", [item_id]).fetchone():
        return item_id
    latest = con.execute("""
        SELECT p.topic, p.channel, p.priority, p.neg_count, p.neg_rate, p.period_start, p.keywords, p.quotes,
               t.name AS topic_name, t.team AS owner_team
        FROM pain_points p LEFT JOIN topics t USING (topic)
        WHERE p.period = 'week' AND p.product = '*' AND p.topic = ? AND p.channel = ? AND p.neg_count > 0
        ORDER BY p.priority DESC, p.period_start DESC LIMIT 1""", [topic, channel]).to_arrow_table()
    if latest.num_rows == 0:
        raise BacklogError(f"no pain point for topic {topic!r} on channel {channel!r} to open an item from")
    upsert_candidates(con, latest, now, run_id)
    return item_id


def history(wh: Warehouse, item_id: str) -> list[dict]:
    return wh.query("SELECT changed_at, actor, action, old_value, new_value, note FROM backlog_history "
                    "WHERE item_id = ? ORDER BY changed_at, action", [item_id.strip()]).to_pylist()


def show(wh: Warehouse, item_id: str) -> dict:
    """The item as ``v_backlog`` shows it, with its history and verification checks."""
    rows = wh.query("SELECT * FROM v_backlog WHERE item_id = ?", [item_id.strip()]).to_pylist()
    if not rows:
        raise BacklogError(f"no backlog item {item_id!r} (see `cxloop backlog list`)")
    checks = wh.query("SELECT checked_at, decision, reason, baseline_n, baseline_rate, after_n, after_rate, p_value "
                      "FROM verifications WHERE item_id = ? ORDER BY checked_at DESC LIMIT 5",
                      [item_id.strip()]).to_pylist()
    return {**rows[0], "history": history(wh, item_id), "checks": checks}
