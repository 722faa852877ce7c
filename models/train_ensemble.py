"""Building the ensemble: two trained sentiment models, their blend weight and the cascade's
confidence chosen on ``dev``, one final ``test`` evaluation of the ensemble and of each member on
the same rows."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from models.card import write_model_card
from models.data import load_ood_probe, load_sentiment_corpus
from models.ensemble import (
    FAST_TOLERANCE,
    LABELS,
    EnsembleSentiment,
    blend,
    blended_share,
    cascaded,
    choose_cascade,
    choose_fast_cascade,
    choose_weight,
    screen_member,
)
from models.evaluate import dev_score, evaluate_predictions, evaluate_probe
from models.registry import load_sentiment_model, model_version_of
from models.train import Log, TrainResult
from nlp import default_segmenter, normalize_text

CASCADE_TOLERANCE = 0.001   # a cascade may cost at most 0.1 points of dev score against the full blend


def train_sentiment_ensemble(members: list[Path], out_root: Path, cache_root: Path | None = None,
                             log: Log = print, data_dir: str | None = None, compare_with: Path | None = None,
                             train_frame: pd.DataFrame | None = None,
                             cascade_tolerance: float | None = CASCADE_TOLERANCE) -> TrainResult:
    """Blend ``members`` (two model folders, e.g. the transformer and the baseline). With a baseline
    member and ``cascade_tolerance`` set, the ensemble cascades (``models.ensemble``): the lowest
    confidence at which it scores within that tolerance of the full blend on dev."""
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
    cascade, cascade_meta = None, None
    screen = screen_member(models)
    if cascade_tolerance is not None and screen is not None:
        cascade, c_score, share = choose_cascade(probas["dev"], weights, screen,
                                                 lambda p: dev_score(evaluate_predictions(dev, p, LABELS)),
                                                 cascade_tolerance)
        if cascade is not None:
            test_share = blended_share(probas["test"][screen], cascade)
            cascade_meta = {"confidence": cascade, "tolerance": cascade_tolerance, "screen": versions[screen],
                            "dev_score_full_blend": round(score, 4), "dev_share_blended": round(share, 4),
                            "test_share_blended": round(test_share, 4)}
            log(f"cascade: below {versions[screen]}'s confidence {cascade} the blend runs ({share:.1%} of dev "
                f"texts): dev score {c_score:.4f} vs full blend {score:.4f}")
    fast, fast_meta = None, None
    if cascade_tolerance is not None and screen is not None:
        def accuracies(p: np.ndarray) -> tuple[float, ...]:
            m = evaluate_predictions(dev, p, LABELS)
            return tuple(m[k]["accuracy"] for k in ("binary", "three_class") if k in m)
        fast, fast_share = choose_fast_cascade(probas["dev"], weights, screen, accuracies)
        if fast is not None:
            slow = versions[1 - screen]
            fast_probas = {split: cascaded(probas[split], weights, screen, fast) for split in ("dev", "test")}
            fast_meta = {"confidence": fast, "tolerance": FAST_TOLERANCE, "of": slow,
                         "dev_share_blended": round(fast_share, 4),
                         "test_share_blended": round(blended_share(probas["test"][screen], fast), 4),
                         "dev": dict(zip(("binary", "three_class"), accuracies(fast_probas["dev"]), strict=False)),
                         "dev_of": dict(zip(("binary", "three_class"), accuracies(probas["dev"][1 - screen]),
                                            strict=False)),
                         "test": {k: m["accuracy"] for k, m in evaluate_predictions(
                             frames["test"], fast_probas["test"], LABELS).items() if k in ("binary", "three_class")}}
            log(f"fast cascade (CXLOOP_CASCADE=fast): confidence {fast}, {fast_share:.1%} of dev texts blended, "
                f"within {FAST_TOLERANCE} of {slow} alone on dev")

    def ensemble_proba(split: str) -> np.ndarray:
        if cascade is None or screen is None:
            return blend(probas[split], weights)
        return cascaded(probas[split], weights, screen, cascade)

    dev_metrics = evaluate_predictions(dev, ensemble_proba("dev"), LABELS)
    test = frames["test"]
    test_metrics = evaluate_predictions(test, ensemble_proba("test"), LABELS)
    member_test = {v: evaluate_predictions(test, p, LABELS) for v, p in zip(versions, probas["test"], strict=True)}
    log(f"test: binary accuracy {test_metrics['binary']['accuracy']:.4f}, 3-class "
        f"{test_metrics['three_class']['accuracy']:.4f}; members: "
        + "; ".join(f"{v} {m['binary']['accuracy']:.4f} / {m['three_class']['accuracy']:.4f}"
                    for v, m in member_test.items()))
    ensemble = EnsembleSentiment(models, weights, versions, cascade=cascade)
    probe_frame = load_ood_probe()
    probe = evaluate_probe(ensemble, probe_frame)
    if fast_meta is not None:
        ensemble.set_cascade(fast)
        fast_meta["ood_probe"] = evaluate_probe(ensemble, probe_frame)

    trained_at = datetime.now(UTC)
    fitted = (versions, weights) + ((cascade,) if cascade is not None else ()) + ((fast,) if fast is not None else ())
    digest = hashlib.sha1(repr(fitted).encode()).hexdigest()[:8]
    version = f"sentiment-ensemble-{trained_at:%Y%m%d}-{digest}"
    meta = {
        "model_version": version, "task": "sentiment", "kind": "ensemble",
        "trained_at": trained_at.isoformat(timespec="seconds"), "train_rows": 0,
        "members": dict(zip(versions, weights, strict=True)),
        **({"cascade": cascade_meta} if cascade_meta else {}),
        **({"fast_cascade": fast_meta} if fast_meta else {}),
        "metrics": {"dev": dev_metrics, "dev_score": dev_score(dev_metrics), "test": test_metrics,
                    "ood_probe": probe, "members_test": {
                        v: {"binary": m["binary"]["accuracy"], "three_class": m["three_class"]["accuracy"]}
                        for v, m in member_test.items()}},
    }
    out = EnsembleSentiment.save(out_root / version, members, weights, meta, cascade, fast)
    write_model_card(out, meta, description=(
        "A log-linear blend `softmax(w₁·log p₁ + w₂·log p₂)` of two calibrated models: "
        + ", ".join(f"`{v}` (w = {w})" for v, w in zip(versions, weights, strict=True))
        + ". Only the weight was fitted, on dev. "
        + (f"It cascades: texts on which `{cascade_meta['screen']}` has a top probability of at least "
           f"{cascade} keep its probabilities, only the others are blended ({cascade_meta['dev_share_blended']:.1%} "
           f"of dev texts, {cascade_meta['test_share_blended']:.1%} of test texts); {cascade} is the lowest "
           f"confidence at which the cascade scores within {cascade_meta['tolerance']} of the full blend on dev "
           f"({cascade_meta['dev_score_full_blend']:.4f}). " if cascade_meta else "")
        + (f"`CXLOOP_CASCADE=fast` serves its fast point, confidence {fast}: the lowest at which the cascade "
           f"stays within {FAST_TOLERANCE} of `{fast_meta['of']}` alone on dev in each task "
           f"({fast_meta['dev_share_blended']:.1%} of dev texts, {fast_meta['test_share_blended']:.1%} of test texts "
           f"blended; test binary {fast_meta['test'].get('binary')}, three-class {fast_meta['test'].get('three_class')}"
           f"). " if fast_meta else "")
        + "Test accuracy of each member alone on the same rows: "
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
