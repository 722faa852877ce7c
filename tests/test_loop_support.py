"""Builders for the loop's tests: constructed feedback written straight into a real DuckDB file
(feedback + feedback_nlp + topics), so each test states exactly what the data holds. No tests here."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

from nlp.urgency import detect_urgency
from pipelines.records import text_key
from pipelines.warehouse import Warehouse

MODEL = "test-model-v1"
START = date(2026, 1, 5)  # a Monday
TOPICS = {"logistics": ("物流配送", "after_sales", "物流团队"), "wait_time": ("等待时长", "usage", "运营团队"),
          "digital_experience": ("数字渠道体验", "usage", "数字团队"),
          "price_fees": ("价格与收费", "purchase", "定价团队"), "filler": ("其他", "usage", "综合团队")}


def rows_for(topic: str, week: int, neg: int, other: int = 0, channel: str = "app_review", product: str = "外卖",
             sentiment_other: str = "pos", text: str | None = None, **extra: object) -> list[dict]:
    """``neg`` negative and ``other`` non-negative mentions of ``topic`` in week ``week`` (0 = START)."""
    out = []
    for i in range(neg + other):
        is_neg = i < neg
        out.append({"topic": topic, "day": START + timedelta(weeks=week, days=i % 7, hours=9 + i % 8),
                    "sentiment": "neg" if is_neg else sentiment_other, "channel": channel, "product": product,
                    "text": (text or f"{topic} 第{week}周 {'差评' if is_neg else '好评'} {i} 号"), **extra})
    return out


def write(db: Path, rows: list[dict], model_version: str = MODEL) -> Warehouse:
    """Append constructed rows (each a dict made by :func:`rows_for`) and the topics to ``db``."""
    wh = Warehouse(db)
    now = datetime(2026, 6, 1)
    with wh.transaction() as con:
        con.execute("DELETE FROM topics")
        for key, (name, stage, team) in TOPICS.items():
            con.execute("INSERT INTO topics VALUES (?, ?, ?, ?, ?)", [key, name, stage, team, [key]])
        start = con.execute("SELECT count(*) FROM feedback").fetchone()[0]
        for n, r in enumerate(rows, start):
            fid = hashlib.sha1(f"row{n}".encode()).hexdigest()[:16]
            created = r["day"] if isinstance(r["day"], datetime) else datetime.combine(r["day"], datetime.min.time())
            topics = r["topic"] if isinstance(r["topic"], list) else [r["topic"]]
            con.execute("INSERT INTO feedback VALUES (?, 'test', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, 'build')",
                        [fid, str(n), created, r["channel"], r["product"], r.get("customer", f"c{n % 97}"),
                         r.get("rating"), r.get("nps"), r["text"], text_key(f"{r['text']}#{n}"), r.get("pii"),
                         r.get("flags", []), now])
            score = {"neg": -0.8, "neu": 0.0, "pos": 0.8}[r["sentiment"]]
            reasons = detect_urgency(r["text"]) if r["sentiment"] != "pos" else []
            con.execute("INSERT INTO feedback_nlp BY NAME SELECT ? AS feedback_id, '' AS tokens, ? AS keywords, "
                        "? AS sentiment, ? AS sentiment_score, 0.1 AS p_neg, 0.1 AS p_neu, 0.1 AS p_pos, "
                        "? AS topics, ? AS model_version, ? AS enriched_at, 'build' AS run_id, "
                        "CAST(? AS STRUCT(topic VARCHAR, sentiment VARCHAR, score FLOAT)[]) AS topic_sentiments, "
                        "'none' AS emotion, [] AS emotion_evidence, ? AS urgent, ? AS urgency_reasons",
                        [fid, r.get("keywords", [topics[0], "关键词"]), r["sentiment"], score, topics, model_version,
                         now, [{"topic": t, "sentiment": r["sentiment"], "score": score} for t in topics],
                         bool(reasons), reasons])
    return wh


class _Recorder(http.server.BaseHTTPRequestHandler):
    received: list[dict]
    status: int

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def webhook_server(status: int = 200) -> Iterator[http.server.HTTPServer]:
    """A real HTTP server on loopback that records every JSON POST and answers ``status``."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    server.received = []  # type: ignore[attr-defined]
    server.status = status  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url(server: http.server.HTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/hook"
