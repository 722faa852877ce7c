"""Evaluation of a sentiment model on a labelled frame (``text``, ``label``, ``domain``, ``dataset``).

Two numbers matter and are kept apart:
- **binary accuracy** on the review set (labels pos/neg only): the prediction is pos when
  P(pos) > P(neg), so a model with a neutral class is compared fairly with binary baselines;
- **three-class accuracy and macro-F1** on the aspect sets, which carry neutral examples.
Both are also given per domain, with the expected calibration error of P(pos) vs P(neg).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

BINARY_SET = "reviews_sentiment"


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE: mean |accuracy − confidence| over equal-width confidence bins, weighted by size."""
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def evaluate_predictions(df: pd.DataFrame, proba: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Metrics for predicted class probabilities ``proba`` (columns in ``labels`` order)."""
    i = {lab: k for k, lab in enumerate(labels)}
    out: dict = {"n": int(len(df))}
    is_bin = (df["dataset"] == BINARY_SET).to_numpy()
    if is_bin.any():
        b = df[is_bin]
        pb = proba[is_bin]
        pred = np.where(pb[:, i["pos"]] > pb[:, i["neg"]], "pos", "neg")
        correct = pred == b["label"].to_numpy()
        conf = np.maximum(pb[:, i["pos"]], pb[:, i["neg"]]) / (pb[:, i["pos"]] + pb[:, i["neg"]])
        out["binary"] = {
            "n": int(len(b)), "accuracy": round(float(correct.mean()), 4),
            "ece": round(expected_calibration_error(conf, correct), 4),
            "per_domain": {d: {"n": int(m.sum()), "accuracy": round(float(correct[m].mean()), 4)}
                           for d in sorted(b["domain"].unique()) for m in [(b["domain"] == d).to_numpy()]},
        }
    if (~is_bin).any():
        a = df[~is_bin]
        pa_ = proba[~is_bin]
        pred = np.asarray(labels)[pa_.argmax(axis=1)]
        truth = a["label"].to_numpy()
        correct = pred == truth
        out["three_class"] = {
            "n": int(len(a)), "accuracy": round(float(correct.mean()), 4),
            "macro_f1": round(float(f1_score(truth, pred, labels=list(labels), average="macro")), 4),
            "per_label_f1": dict(zip(labels, np.round(f1_score(truth, pred, labels=list(labels), average=None),
                                                       4).tolist(), strict=True)),
            "ece": round(expected_calibration_error(pa_.max(axis=1), correct), 4),
            "per_domain": {d: {"n": int(m.sum()), "accuracy": round(float(correct[m].mean()), 4)}
                           for d in sorted(a["domain"].unique()) for m in [(a["domain"] == d).to_numpy()]},
        }
    return out


def dev_score(metrics: dict) -> float:
    """The single number that model selection and promotion compare: the mean of binary accuracy
    and three-class accuracy (whichever exist)."""
    parts = [metrics[k]["accuracy"] for k in ("binary", "three_class") if k in metrics]
    return float(np.mean(parts)) if parts else float("nan")


def evaluate_probe(model, probe: pd.DataFrame) -> dict:
    """Accuracy on the out-of-domain probe: binary on its pos/neg rows (P(pos) > P(neg)), three-class
    on all rows, and three-class per domain."""
    from nlp import normalize_text
    proba = model.predict_proba([normalize_text(t) for t in probe["text"]])
    idx = {lab: i for i, lab in enumerate(model.labels)}
    truth = probe["label"].to_numpy()
    pred3 = np.asarray(model.labels)[proba.argmax(axis=1)]
    polar = truth != "neu"
    pred2 = np.where(proba[:, idx["pos"]] > proba[:, idx["neg"]], "pos", "neg")
    return {
        "n": int(len(probe)),
        "binary_accuracy": round(float((pred2[polar] == truth[polar]).mean()), 4),
        "three_class_accuracy": round(float((pred3 == truth).mean()), 4),
        "per_domain": {d: {"n": int(m.sum()), "accuracy": round(float((pred3[m] == truth[m]).mean()), 4)}
                       for d in sorted(probe["domain"].unique()) for m in [(probe["domain"] == d).to_numpy()]},
    }
