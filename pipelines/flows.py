"""The main job and the training flow.

``cx_loop`` reads top to bottom as the story of the data: pull files in (``ingest``), understand
them (``enrich``), rank what hurts and act on it (``pain_points`` → backlog). ``train`` trains a
model, evaluates it on held-out data, registers it and promotes it only if it beats the current
one on ``dev``.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

from prefect import flow

from models.registry import SHIPPED, SHIPPED_DIR, promote, resolve_model
from models.train import TrainOptions, train_sentiment_baseline
from pipelines.config import Settings
from pipelines.enrich import enrich_flow
from pipelines.ingest import ingest_flow
from pipelines.painpoints import pain_points_flow
from pipelines.runs import logger, recorded_run
from pipelines.warehouse import Warehouse


@flow(name="cx_loop")
def cx_loop_flow(paths: list[str] | None = None, db: str | None = None, home: str | None = None,
                 model: str | None = None, top_n: int = 10, columns: dict | None = None,
                 source: str | None = None, channel: str | None = None) -> dict:
    """The main job: ingest → enrich → pain points → backlog. ``paths`` default to the sample data."""
    settings = Settings.resolve(home, db)
    paths = paths or [str(settings.sample_dir)]
    common = {"db": str(settings.db_path), "home": str(settings.home)}
    ingested = ingest_flow(paths=paths, source=source, channel=channel, columns=columns, **common)
    enriched = enrich_flow(model=model, **common)
    ranked = pain_points_flow(model=model, top_n=top_n, **common)
    logger().info("cx_loop finished: %s stored, %s scored, %s backlog items",
                  ingested["counts"]["stored"], enriched["scored"], ranked["backlog_items"])
    return {"ingest": ingested, "enrich": enriched, "pain_points": ranked}


@flow(name="train")
def train_flow(task_name: str = "sentiment", kind: str = "baseline", data_dir: str | None = None,
               max_rows: int | None = None, db: str | None = None, home: str | None = None,
               promote_if_better: bool = True, ship: bool = False) -> dict:
    """Train a model, evaluate it on held-out data, register it, and promote it if it beats the
    current model on ``dev``. ``ship`` also copies it over the shipped default (for maintainers)."""
    if task_name != "sentiment" or kind != "baseline":
        raise ValueError(f"cannot train {task_name!r} with model {kind!r}: only 'sentiment' with 'baseline' exists")
    settings = Settings.resolve(home, db)
    wh = Warehouse(settings.db_path)
    log = logger()
    with recorded_run(wh, "train", {"task": task_name, "kind": kind, "max_rows": max_rows}) as run:
        current_dir = resolve_model(None, settings.models_dir)
        result = train_sentiment_baseline(TrainOptions(data_dir=data_dir, max_rows=max_rows),
                                          settings.models_dir, log=log.info, compare_with=current_dir)
        current_score = result.compared_dev_score
        new_score = result.metrics["dev_score"]
        better = new_score > current_score
        log.info("dev score: new %.4f vs current %.4f (%s) → %s", new_score, current_score, current_dir.name,
                 "promote" if better and promote_if_better else "keep current")
        if better and promote_if_better:
            promote(settings.models_dir, result.model_dir)
        with wh.transaction() as con:
            if better and promote_if_better:
                con.execute("UPDATE model_versions SET promoted = false WHERE task = ?", [task_name])
            con.execute("INSERT OR REPLACE INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [result.model_version, task_name, kind, str(result.model_dir),
                         json.dumps(result.metrics), bool(better and promote_if_better), datetime.now()])
        if ship:
            target = SHIPPED_DIR / SHIPPED[task_name]
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(result.model_dir, target)
            log.info("copied %s over the shipped default %s", result.model_version, target)
        run.counts = {"model_version": result.model_version, "dev_score": new_score,
                      "current_dev_score": current_score, "promoted": bool(better and promote_if_better),
                      "test": result.metrics["test"], "path": str(Path(result.model_dir))}
    return run.counts
