"""The CX team's decisions in the demo data's story (data/sample/README.md), so that ``cxloop run``
on the sample shows the whole loop: two fixes shipped on 2026-10-05, one that worked and one that
did not.

* 外卖 lateness: more riders from 2026-10-05 — verification finds the negative rate of
  ``logistics`` fell after the fix → **verified**;
* hotline waiting: the bank says it added agents on 2026-10-05, but the complaints stay flat all
  nine weeks → **reopened**.

Applied only when the main job runs on the sample data, and only to items still ``new``: a
decision a person recorded is never replaced.
"""

from __future__ import annotations

from datetime import datetime

from pipelines import backlog
from pipelines.warehouse import Warehouse

ACTOR = "sample story"

DECISIONS: tuple[tuple[str, str, datetime, str], ...] = (
    ("logistics", "*", datetime(2026, 10, 5), "外卖晚高峰加派骑手，10月5日起运力增加（样例数据的故事）"),
    ("wait_time", "*", datetime(2026, 10, 5), "客服热线10月5日起增加坐席（样例数据的故事：排队投诉并未减少）"),
)


def apply_sample_story(wh: Warehouse, run_id: str) -> list[str]:
    """Open the story's items if needed and mark them resolved at their fix date. Returns what was done."""
    done: list[str] = []
    now = datetime.now()
    with wh.transaction() as con:
        for topic, channel, shipped, note in DECISIONS:
            item_id = backlog.ensure_item(con, topic, channel, run_id, now)
            status = con.execute("SELECT status FROM backlog WHERE item_id = ?", [item_id]).fetchone()[0]
            if status != "new":
                continue
            backlog.change_status(con, item_id, "resolved", ACTOR, note=note, at=shipped, run_id=run_id)
            done.append(f"{item_id} ({topic}, {channel}) marked resolved as of {shipped:%Y-%m-%d}: {note}")
    return done
