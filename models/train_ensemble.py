"""Building the ensemble: two trained sentiment models, their blend weight chosen on ``dev``, one
final ``test`` evaluation of the blend and of each member on the same rows."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from models.card import write_model_card
from models.data import load_ood_probe, load_sentiment_corpus
from models.ensemble import LABELS, EnsembleSentiment, blend, choose_weight
from models.evaluate import dev_score, evaluate_predictions, evaluate_probe
from models.registry import load_sentiment_model, model_version_of
from models.train import Log, TrainResult
from nlp import default_segmenter, normalize_text


def train_sentiment_ensemble(members: list[Path], out_root: Path, cache_root: Path | None = None,
                             log: Log = print, data_dir: str | None = None, compare_with: Path | None = None,
                             train_frame: pd.DataFrame | None = None) -> TrainResult:
    """Blend ``members`` (two model folders, e.g. the transformer and the baseline)."""
    if len(members) != 2:
        raise ValueError("an ensemble blends exactly two models")
    t0 = time.time()
    corpus = train_frame if train_frame is not None else load_sentiment_corpus(data_dir)
    seg = default_segmenter()
    models = [load_sentiment_model(m, cache_root) for m in members]
    versions = [model_version_of(m) for m in members]
    frames, probas = {}, {}
    for split in ("dev", "test"):
        df = corpus[corpus.split == split]
        norm = df["text"].map(normalize_text).tolist()
        tokens = seg.cut_many(norm)
        frames[split] = df
        probas[split] = [m.predict_proba(norm, tokens) for m in models]
        log(f"{split}: scored {len(df)} rows with {', '.join(versions)}")
    dev = frames["dev"]
    weight, score = choose_weight(probas["dev"], lambda p: dev_score(evaluate_predictions(dev, p, LABELS)))
    weights = [weight, round(1 - weight, 2)]
    log(f"blend weights {dict(zip(versions, weights, strict=True))}: dev score {score:.4f}")
    dev_metrics = evaluate_predictions(dev, blend(probas["dev"], weights), LABELS)
    test = frames["test"]
    test_metrics = evaluate_predictions(test, blend(probas["test"], weights), LABELS)
    member_test = {v: evaluate_predictions(test, p, LABELS) for v, p in zip(versions, probas["test"], strict=True)}
    log(f"test: binary accuracy {test_metrics['binary']['accuracy']:.4f}, 3-class "
        f"{test_metrics['three_class']['accuracy']:.4f}; members: "
        + "; ".join(f"{v} {m['binary']['accuracy']:.4f} / {m['three_class']['accuracy']:.4f}"
                    for v, m in member_test.items()))
    ensemble = EnsembleSentiment(models, weights, versions)
    probe = evaluate_probe(ensemble, load_ood_probe())

    trained_at = datetime.now(UTC)
    digest = hashlib.sha1(repr((versions, weights)).encode()).hexdigest()[:8]
    version = f"sentiment-ensemble-{trained_at:%Y%m%d}-{digest}"
    meta = {
        "model_version": version, "task": "sentiment", "kind": "ensemble",
        "trained_at": trained_at.isoformat(timespec="seconds"), "train_rows": 0,
        "members": dict(zip(versions, weights, strict=True)),
        "metrics": {"dev": dev_metrics, "dev_score": dev_score(dev_metrics), "test": test_metrics,
                    "ood_probe": probe, "members_test": {
                        v: {"binary": m["binary"]["accuracy"], "three_class": m["three_class"]["accuracy"]}
                        for v, m in member_test.items()}},
    }
    out = EnsembleSentiment.save(out_root / version, members, weights, meta)
    write_model_card(out, meta, description=(
        "A log-linear blend `softmax(w₁·log p₁ + w₂·log p₂)` of two calibrated models: "
        + ", ".join(f"`{v}` (w = {w})" for v, w in zip(versions, weights, strict=True))
        + ". Only the weight was fitted, on dev. Test accuracy of each member alone on the same rows: "
        + "; ".join(f"`{v}` binary {m['binary']['accuracy']:.4f}, three-class {m['three_class']['accuracy']:.4f}"
                    for v, m in member_test.items()) + "."))
    log(f"saved {version} to {out} in {time.time() - t0:.0f}s")
    compared = None
    if compare_with is not None:
        if compare_with.resolve() in [m.resolve() for m in members]:
            p = probas["dev"][[m.resolve() for m in members].index(compare_with.resolve())]
        else:
            other = load_sentiment_model(compare_with, cache_root)
            norm = dev["text"].map(normalize_text).tolist()
            p = other.predict_proba(norm, seg.cut_many(norm))
        compared = dev_score(evaluate_predictions(dev, p, LABELS))
    return TrainResult(out, version, meta["metrics"], time.time() - t0, compared)
