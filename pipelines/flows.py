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

from models.registry import KIND_SHIPPED, KINDS, SHIPPED, SHIPPED_DIR, model_version_of, promote, resolve_model
from pipelines.config import Settings
from pipelines.emerging import suggest_topics_flow
from pipelines.enrich import enrich_flow
from pipelines.ingest import ingest_flow
from pipelines.painpoints import pain_points_flow
from pipelines.report import report_flow
from pipelines.runs import logger, recorded_run
from pipelines.verify import verify_flow
from pipelines.warehouse import Warehouse


@flow(name="cx_loop")
def cx_loop_flow(paths: list[str] | None = None, db: str | None = None, home: str | None = None,
                 model: str | None = None, top_n: int = 10, columns: dict | None = None,
                 source: str | None = None, channel: str | None = None) -> dict:
    """The main job: ingest → enrich → pain points → alerts → backlog → verify → report → topic suggestions
    (complaints no taxonomy topic covers, clustered into ``topic_candidates``). ``paths`` default to
    the sample data, whose story's fixes are then recorded in the backlog before verification."""
    settings = Settings.resolve(home, db)
    paths = paths or [str(settings.sample_dir)]
    sample_story = all(Path(p).resolve() == settings.sample_dir.resolve() for p in paths)
    common = {"db": str(settings.db_path), "home": str(settings.home)}
    ingested = ingest_flow(paths=paths, source=source, channel=channel, columns=columns, preload_model=True,
                           model=model, **common)
    enriched = enrich_flow(model=model, **common)
    ranked = pain_points_flow(model=model, top_n=top_n, **common)
    verified = verify_flow(sample_story=sample_story, **common)
    reported = report_flow(**common)  # read-only: $CXLOOP_HOME/report.html for CX leads
    suggested = suggest_topics_flow(**common)  # candidate topics for `cxloop taxonomy suggest|accept`
    logger().info("cx_loop finished: %s stored, %s scored, %s new alerts, %s backlog items, %s verified, %s reopened, "
                  "%s new topic candidates", ingested["counts"]["stored"], enriched["scored"], ranked["alerts_new"],
                  ranked["backlog_items"], verified["verified"], verified["reopened"], suggested["new"])
    return {"ingest": ingested, "enrich": enriched, "pain_points": ranked, "verify": verified, "report": reported,
            "suggest": suggested}


def ship_model(model_dir: Path, kind: str) -> Path:
    """Copy a trained model over the shipped default of its kind (maintainers). An ensemble ships only
    on top of shipped members: each member reference becomes the shipped folder holding that version."""
    target = SHIPPED_DIR / (SHIPPED["topics"] if kind == "topics" else KIND_SHIPPED[kind])
    staged = target.with_name(target.name + ".new")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(model_dir, staged)
    if kind == "topics":
        _point_at_shipped_encoder(staged)
    if kind == "ensemble":
        doc = json.loads((staged / "model.json").read_text(encoding="utf-8"))
        for m in doc["members"]:
            path = Path(m.pop("path", "") or model_dir.parent / m.get("name", ""))
            version = model_version_of(path)
            shipped = [p for p in SHIPPED_DIR.iterdir() if (p / "model.json").exists() and p != target
                       and model_version_of(p) == version]
            if not shipped:
                shutil.rmtree(staged)
                raise ValueError(f"ensemble member {version} is not shipped: ship it first (--ship when training it)")
            m["name"] = shipped[0].name
        (staged / "model.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staged.rename(target)
    return target


TOPIC_KINDS = ("semantic", "lexical")


def _point_at_shipped_encoder(staged: Path) -> None:
    """A shipped semantic topic model names the shipped transformer folder holding its encoder."""
    doc = json.loads((staged / "model.json").read_text(encoding="utf-8"))
    enc = doc.get("encoder")
    if not enc:
        return
    shipped = [p for p in SHIPPED_DIR.iterdir() if (p / "model.json").exists()
               and model_version_of(p) == enc["model_version"]]
    if not shipped:
        shutil.rmtree(staged)
        raise ValueError(f"the topic model's encoder {enc['model_version']} is not shipped: ship it first")
    enc["name"] = shipped[0].name
    (staged / "model.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def transformer_option_problem(kind: str, layers: int | None, teacher: str | None, ship: bool) -> str | None:
    """Why these transformer-only training options cannot be combined, or None."""
    if (layers or teacher) and kind not in ("transformer", "student"):
        return "--layers and --teacher apply to --model transformer or student only"
    if ship and layers and kind == "transformer":
        return ("a compact (--layers) model is not shipped over the full transformer: it is promoted if it "
                "wins on dev, or served by path with --model PATH")
    return None


@flow(name="train")
def train_flow(task_name: str = "sentiment", kind: str = "baseline", data_dir: str | None = None,
               max_rows: int | None = None, db: str | None = None, home: str | None = None,
               promote_if_better: bool = True, ship: bool = False, base: str | None = None,
               epochs: float | None = None, layers: int | None = None, teacher: str | None = None,
               cascade: bool = True, cascade_tolerance: float | None = None) -> dict:
    """Train a model, evaluate it on held-out data, register it, and promote it if it beats the
    current model on ``dev``. ``ship`` also copies it over the shipped default (for maintainers).
    ``base``, ``epochs``, ``layers`` (keep the lowest N encoder layers) and ``teacher`` (distil from
    that sentiment model: a path or a kind) apply to the transformer; ``student`` distils the current
    transformer into a 3-layer model with ``models.train_transformer.STUDENT_OPTIONS`` (the shipped
    student's recipe; ``epochs`` and ``layers`` override it); ``ensemble`` blends the current transformer and
    baseline (only the blend weight is fitted, on dev), cascading unless ``cascade`` is False: the
    baseline screens, the blend reads what it is unsure of (``cascade_tolerance``: the dev score it
    may cost, default ``models.train_ensemble.CASCADE_TOLERANCE``). ``topics`` trains the topic model: ``semantic``
    reads the current transformer's embeddings, ``lexical`` only TF-IDF."""
    if not ((task_name == "sentiment" and kind in KINDS) or (task_name == "topics" and kind in TOPIC_KINDS)):
        raise ValueError(f"cannot train {task_name!r} with model {kind!r}: 'sentiment' can be trained with "
                         f"{', '.join(KINDS)}; 'topics' with {', '.join(TOPIC_KINDS)}")
    problem = transformer_option_problem(kind, layers, teacher, ship)
    if problem:
        raise ValueError(problem)
    settings = Settings.resolve(home, db)
    wh = Warehouse(settings.db_path)
    log = logger()
    with recorded_run(wh, "train", {"task": task_name, "kind": kind, "max_rows": max_rows, "base": base,
                                    "epochs": epochs, "layers": layers, "teacher": teacher}) as run:
        current_dir = resolve_model(None, settings.models_dir, task_name)
        if task_name == "topics":
            from models.train_topics import TopicOptions, train_topic_model
            result = train_topic_model(
                settings.load_taxonomy(), TopicOptions(data_dir=data_dir, semantic=kind == "semantic",
                                                       max_reviews=max_rows or TopicOptions.max_reviews),
                settings.models_dir, settings.cache_dir,
                encoder_dir=resolve_model("transformer", settings.models_dir) if kind == "semantic" else None,
                sentiment_dir=resolve_model(None, settings.models_dir), log=log.info,
                compare_with=current_dir if (current_dir / "model.json").exists() else None,
                models_home=settings.models_dir)
        elif kind in ("transformer", "student"):
            from models.train_transformer import STUDENT_OPTIONS, TransformerOptions, train_sentiment_transformer
            options = dict(STUDENT_OPTIONS) if kind == "student" else {}
            teacher = teacher or ("transformer" if kind == "student" else None)
            options.update({k: v for k, v in {"epochs": epochs, "layers": layers}.items() if v is not None})
            teacher_dir = str(resolve_model(teacher, settings.models_dir)) if teacher else None
            result = train_sentiment_transformer(
                TransformerOptions(data_dir=data_dir, max_rows=max_rows, base=base, teacher=teacher_dir, **options),
                settings.models_dir, settings.cache_dir, log=log.info, compare_with=current_dir)
        elif kind == "ensemble":
            from models.train_ensemble import CASCADE_TOLERANCE, train_sentiment_ensemble
            members = [resolve_model(k, settings.models_dir) for k in ("transformer", "baseline")]
            tolerance = (CASCADE_TOLERANCE if cascade_tolerance is None else cascade_tolerance) if cascade else None
            result = train_sentiment_ensemble(members, settings.models_dir, settings.cache_dir, log=log.info,
                                              data_dir=data_dir, compare_with=current_dir, cascade_tolerance=tolerance)
        else:
            from models.train import TrainOptions, train_sentiment_baseline
            result = train_sentiment_baseline(TrainOptions(data_dir=data_dir, max_rows=max_rows),
                                              settings.models_dir, log=log.info, compare_with=current_dir,
                                              cache_root=settings.cache_dir)
        current_score = result.compared_dev_score
        new_score = result.metrics["dev_score"]
        better = current_score is None or new_score > current_score
        log.info("dev score: new %.4f vs current %s (%s) → %s", new_score,
                 "none" if current_score is None else f"{current_score:.4f}", current_dir.name,
                 "promote" if better and promote_if_better else "keep current")
        if better and promote_if_better:
            promote(settings.models_dir, result.model_dir, task_name)
        with wh.transaction() as con:
            if better and promote_if_better:
                con.execute("UPDATE model_versions SET promoted = false WHERE task = ?", [task_name])
            Warehouse.upsert_row(con, "model_versions", {
                "model_version": result.model_version, "task": task_name, "kind": kind,
                "path": str(result.model_dir), "metrics": json.dumps(result.metrics),
                "promoted": bool(better and promote_if_better), "registered_at": datetime.now()})
        if ship:
            target = ship_model(result.model_dir, kind if task_name == "sentiment" else "topics")
            log.info("copied %s over the shipped default %s", result.model_version, target.name)
        run.counts = {"model_version": result.model_version, "dev_score": new_score,
                      "current_dev_score": current_score, "promoted": bool(better and promote_if_better),
                      "test": result.metrics["test"], "path": str(Path(result.model_dir))}
    return run.counts
