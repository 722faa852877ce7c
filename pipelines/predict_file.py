"""``cxloop predict``: score a feedback file without touching the warehouse.

The output keeps every input column and adds ``sentiment``, ``sentiment_score``, ``topics``
(taxonomy keys joined by ``;``), ``topic_sentiments`` (each topic's own polarity,
``logistics:pos;product_quality:neg``), ``emotion``, ``urgent`` (0/1), ``urgency_reasons``
(``escalation:12315;churn:销户``) and ``model_version``. Records that cannot be read (a malformed
line) are counted and skipped; the text is normalised for the model but written back unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from models.predict import Analyzer
from nlp import normalize_text
from pipelines import progress
from pipelines.config import Settings
from pipelines.records import ColumnMap
from pipelines.sources import SourceError, read_file

OUTPUT_SUFFIXES = (".csv", ".jsonl", ".parquet", ".xlsx")


def predict_file(input_path: Path, output_path: Path, settings: Settings, model: str | None = None,
                 text_col: str | None = None, batch: int = 2000) -> tuple[int, int]:
    """Score ``input_path`` into ``output_path``; returns (rows scored, rows skipped)."""
    if output_path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise SourceError(f"{output_path}: output must end in one of {', '.join(OUTPUT_SUFFIXES)}")
    src = read_file(input_path)
    text_field = ColumnMap(text=text_col).resolve(src)["text"]
    analyzer = Analyzer.load(model, settings.models_dir, settings.load_taxonomy(), settings.cache_dir)
    records = list(src.rows)
    rows = [r.fields for r in records if r.fields is not None]
    skipped = len(records) - len(rows)
    del records
    rep = progress.reporter()
    rep.start("predict", len(rows))
    out_cols: dict[str, list] = {"sentiment": [], "sentiment_score": [], "topics": [], "topic_sentiments": [],
                                 "emotion": [], "urgent": [], "urgency_reasons": [], "model_version": []}
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        texts = [normalize_text("" if r.get(text_field) is None else str(r.get(text_field))) for r in chunk]
        cols = analyzer.analyze(texts)
        for i, t in enumerate(texts):
            empty = not t
            out_cols["sentiment"].append(None if empty else cols["sentiment"][i])
            out_cols["sentiment_score"].append(None if empty else cols["sentiment_score"][i])
            out_cols["topics"].append(";".join(cols["topics"][i]))
            out_cols["topic_sentiments"].append(";".join(f"{t['topic']}:{t['sentiment']}"
                                                         for t in cols["topic_sentiments"][i]))
            out_cols["emotion"].append(None if empty else cols["emotion"][i])
            out_cols["urgent"].append(int(cols["urgent"][i]))
            out_cols["urgency_reasons"].append(";".join(cols["urgency_reasons"][i]))
            out_cols["model_version"].append(analyzer.model_version)
        rep.advance("predict", len(chunk))
    rep.finish("predict")
    columns = src.columns or list(dict.fromkeys(k for r in rows for k in r))
    data = {c: [_cell(r.get(c)) for r in rows] for c in columns if c not in out_cols}
    table = pa.table({**data, **out_cols})
    _write(table, output_path)
    return len(rows), skipped


def _cell(value: object) -> object:
    """Keep numbers and booleans, JSON-encode nested values, stringify the rest (dates, ids)."""
    if value is None or isinstance(value, int | float | bool):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = pa.table({n: pa.array([None if v is None else str(v) for v in table.column(n).to_pylist()],
                                      pa.string()) for n in table.column_names})
        pacsv.write_csv(table, path)
    elif suffix == ".parquet":
        pq.write_table(table, path)
    elif suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for rec in table.to_pylist():
                f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
    else:
        table.to_pandas().to_excel(path, index=False)
