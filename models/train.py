"""Training the baseline sentiment model on the shared data, with model selection on ``dev``
and a final, untouched ``test`` evaluation."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from models.baseline import BaselineConfig, BaselineSentiment
from models.card import write_model_card
from models.data import load_ood_probe, load_sentiment_corpus
from models.evaluate import dev_score, evaluate_predictions, evaluate_probe
from models.registry import load_sentiment_model
from nlp import default_segmenter, normalize_text


@dataclass(frozen=True)
class TrainOptions:
    """Options of ``cxloop train sentiment`` (one dataclass, stored in the model card)."""

    data_dir: str | None = None            # the shared data folder (default ../shared/data)
    max_rows: int | None = None            # sub-sample the training split (stratified by data set)
    c_grid: tuple[float, ...] = (0.15, 0.3, 0.6)
    aspect_weight: float = 1.0             # weight of aspect-set rows next to the review set's (0.3 and 0.6
                                           # scored lower on dev: binary +0.3 pt, three-class −1.9 pt)
    config: BaselineConfig = field(default_factory=BaselineConfig)
    seed: int = 13


@dataclass
class TrainResult:
    model_dir: Path
    model_version: str
    metrics: dict
    seconds: float
    compared_dev_score: float | None = None   # the dev score of ``compare_with``, on the same dev rows


Log = Callable[[str], None]


def sample_rows(df: pd.DataFrame, n: int | None, by: str, seed: int, balanced: bool = False) -> pd.DataFrame:
    """At most ``n`` rows of ``df``: proportional to the groups of column ``by``, or, with ``balanced``,
    an equal share per group (a small group is kept whole and its unused share goes to the others)."""
    if not n or len(df) <= n:
        return df
    if not balanced:
        return df.groupby(by, group_keys=False).sample(frac=n / len(df), random_state=seed)
    sizes = df[by].value_counts().sort_values()
    quota, left, take = {}, n, len(sizes)
    for key, size in sizes.items():
        quota[key] = min(int(size), left // take)
        left -= quota[key]
        take -= 1
    return pd.concat([g.sample(n=quota[k], random_state=seed) for k, g in df.groupby(by)])


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["norm"] = df["text"].map(normalize_text)
    df["tokens"] = default_segmenter().cut_many(df["norm"].tolist())
    return df


def train_sentiment_baseline(options: TrainOptions, out_root: Path, log: Log = print,
                             compare_with: Path | None = None, cache_root: Path | None = None) -> TrainResult:
    """Train, select C on dev, calibrate on dev, evaluate on test, save under ``out_root``.
    ``compare_with`` (a model folder, e.g. the current default) is scored on the same dev rows."""
    t0 = time.time()
    corpus = load_sentiment_corpus(options.data_dir)
    train = corpus[corpus.split == "train"]
    train = sample_rows(train, options.max_rows, "dataset", options.seed)
    log(f"data: {len(train)} train, {int((corpus.split == 'dev').sum())} dev, "
        f"{int((corpus.split == 'test').sum())} test rows")
    train, dev = _prepare(train), _prepare(corpus[corpus.split == "dev"])
    log(f"normalised and segmented in {time.time() - t0:.0f}s")

    best: tuple[float, BaselineSentiment, dict] | None = None
    base = BaselineSentiment(options.config)
    x_train = base.text_features.fit_transform(train["norm"].tolist(), train["tokens"].tolist())
    x_dev = base.features(dev["norm"].tolist(), dev["tokens"].tolist())
    for c in options.c_grid:
        model = BaselineSentiment(replace(options.config, C=c))
        model.text_features = base.text_features
        weights = np.where(train["dataset"].to_numpy() == "aspects", options.aspect_weight, 1.0)
        model.fit_features(x_train, train["label"].tolist(), sample_weight=weights)
        model.calibrate(x_dev, dev["label"].tolist())
        metrics = evaluate_predictions(dev, model.predict_proba_features(x_dev), model.labels)
        score = dev_score(metrics)
        log(f"C={c}: dev score {score:.4f} (binary {metrics['binary']['accuracy']:.4f}, "
            f"3-class {metrics['three_class']['accuracy']:.4f})")
        if best is None or score > best[0]:
            best = (score, model, metrics)
    assert best is not None
    _, model, dev_metrics = best

    test = _prepare(corpus[corpus.split == "test"])
    test_metrics = evaluate_predictions(test, model.predict_proba(test["norm"].tolist(), test["tokens"].tolist()),
                                        model.labels)
    log(f"test: binary accuracy {test_metrics['binary']['accuracy']:.4f}, "
        f"3-class accuracy {test_metrics['three_class']['accuracy']:.4f}")

    probe = evaluate_probe(model, load_ood_probe())
    trained_at = datetime.now(UTC)
    digest = hashlib.sha1(json.dumps(asdict(model.config), sort_keys=True).encode()
                          + model.coef.tobytes()).hexdigest()[:8]
    version = f"sentiment-baseline-{trained_at:%Y%m%d}-{digest}"
    meta = {
        "model_version": version, "task": "sentiment", "kind": "baseline",
        "trained_at": trained_at.isoformat(timespec="seconds"),
        "train_rows": int(len(train)), "options": {**asdict(options), "config": asdict(model.config)},
        "metrics": {"dev": dev_metrics, "dev_score": dev_score(dev_metrics), "test": test_metrics,
                    "ood_probe": probe},
        "features": {"word": len(model.text_features.word_vec.idf_), "char": len(model.text_features.char_vec.idf_)},
    }
    out = model.save(out_root / version, meta=meta)
    write_model_card(out, meta, top_features={lab: model.top_features(lab, 15) for lab in model.labels},
                     description=(
                         "TF-IDF on jieba words (cxloop CX dictionary) and character 1–3-grams, one-vs-rest linear "
                         "SVM (NB-SVM for neg and pos: their features scaled by the naive-Bayes log-count ratio, "
                         "Wang & Manning 2012), softmax over the margins with a temperature fitted on dev. Features: "
                         f"{meta['features']['word']} words, {meta['features']['char']} character n-grams. "
                         f"Options: `{meta['options']['config']}`."))
    log(f"saved {version} to {out} in {time.time() - t0:.0f}s")
    compared = None
    if compare_with is not None:
        other = load_sentiment_model(compare_with, cache_root)
        compared = dev_score(evaluate_predictions(
            dev, other.predict_proba(dev["norm"].tolist(), dev["tokens"].tolist()), other.labels))
    return TrainResult(out, version, meta["metrics"], time.time() - t0, compared)
