"""Training the topic model (``cxloop train topics``): per-key logistic regressions on the lexical
and, when a fine-tuned sentiment transformer is available, the semantic view; blend weight and
per-key thresholds chosen on ``dev``; topic F1 and per-topic sentiment accuracy measured once on
``test`` and on cxloop's own cross-industry probe (``data/eval/topic_probe.csv``)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.metrics import f1_score

from models.card import LICENCE_NOTE
from models.ensemble import predict_in_context
from models.features import FeatureConfig, TextFeatures
from models.registry import load_sentiment_model
from models.topic_data import MAPPING_PATH, SEEDS_PATH, TopicData, build_topic_data
from models.topic_sentiment import topic_sentiments
from models.topics import TopicModel, fit_linear, sigmoid, unit_rows
from models.train import TrainResult
from nlp import Taxonomy, default_segmenter, normalize_text

PROBE_PATH = Path(__file__).resolve().parents[1] / "data" / "eval" / "topic_probe.csv"
Log = Callable[[str], None]


@dataclass(frozen=True)
class TopicOptions:
    data_dir: str | None = None
    max_reviews: int | None = 12000        # weak-label rows drawn from the unlabelled review corpus
    weak_weight: float = 0.1               # a weak row's weight next to a labelled one: the labelled sets decide
                                           # in their domains; the weak rows (every key negative unless its
                                           # keywords occur) teach that a hotel or delivery review is not about
                                           # product quality. At 1.0 cosmetics micro-F1 fell to 0.81; with no weak
                                           # negatives 49 % of the (banking, delivery) sample texts got
                                           # product_quality.
    c_lexical: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0, 64.0)   # chosen on dev
    c_semantic: float = 4.0
    blend_grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 1.0)
    semantic: bool = True                   # use the transformer's embeddings when one is available
    min_dev_positives: int = 20             # fewer: keep the default threshold 0.5
    clause_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)   # per-topic polarity, chosen on dev
    seed: int = 13


def load_topic_probe(path: Path = PROBE_PATH) -> pd.DataFrame:
    """Cross-industry sentences (banking, telecom, airlines, government, utilities …) written for
    evaluation only, with gold ``topics`` as ``key:polarity;…``; many use none of the keywords."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["text"] = df.text.map(normalize_text)
    df["gold"] = [dict(p.split(":", 1) for p in t.split(";") if p) for t in df.topics]
    return df


def _labels(frame: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    return np.stack([frame[f"y:{k}"].to_numpy() for k in keys], 1) if len(frame) else np.zeros((0, len(keys)))


THRESHOLDS = np.round(np.arange(0.15, 0.86, 0.05), 2)


def _best_threshold(p: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> float:
    scores = [f1_score(y, p >= t, sample_weight=weight, zero_division=0) for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(scores))])


def _best_f1(p: np.ndarray, y: np.ndarray) -> float:
    return max(f1_score(y, p >= t, zero_division=0) for t in THRESHOLDS)


def topic_f1(frame: pd.DataFrame, pred: np.ndarray, keys: Sequence[str], data: TopicData) -> dict:
    """Micro/macro F1 per labelled data set, on the keys that set labels (rows of that set only)."""
    out = {}
    for ds, ds_keys in data.labelled_keys.items():
        rows = (frame.dataset == ds).to_numpy()
        if not rows.any():
            continue
        cols = [keys.index(k) for k in ds_keys]
        y = _labels(frame[rows], ds_keys)
        p = pred[rows][:, cols]
        per_key = f1_score(y, p, average=None, zero_division=0)
        out[ds] = {"n": int(rows.sum()),
                   "micro_f1": round(float(f1_score(y, p, average="micro", zero_division=0)), 4),
                   "macro_f1": round(float(f1_score(y, p, average="macro", zero_division=0)), 4),
                   "per_key_f1": {k: round(float(v), 4) for k, v in zip(ds_keys, per_key, strict=True)}}
    return out


def polarity_accuracy(frame: pd.DataFrame, keys: Sequence[str], data: TopicData, sentiment, model: TopicModel,
                      taxonomy: Taxonomy) -> dict:
    """Accuracy of per-topic polarity on gold topics (polarity neg/neu/pos given by the data set),
    against the text's own sentiment as the reference method."""
    out = {}
    for ds, ds_keys in data.labelled_keys.items():
        sub = frame[frame.dataset == ds]
        gold = [[(k, r[f"pol:{k}"]) for k in ds_keys if r[f"y:{k}"] == 1 and r[f"pol:{k}"]]
                for _, r in sub.iterrows()]
        keep = [i for i, g in enumerate(gold) if g]
        if not keep:
            continue
        texts = [sub.text.iloc[i] for i in keep]
        gold = [gold[i] for i in keep]
        out[ds] = _polarity_scores(texts, gold, sentiment, model, taxonomy)
    return out


class CachedSentiment:
    """A sentiment model that remembers the probabilities of texts it scored (tuning re-reads them)."""

    def __init__(self, model) -> None:
        self.model, self.labels, self.cache = model, model.labels, {}

    def predict_proba(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for t, p in zip(todo, self.model.predict_proba(todo), strict=True):
                self.cache[t] = p
        return np.stack([self.cache[t] for t in texts]) if len(texts) else np.zeros((0, len(self.labels)))


def _polarity_scores(texts: list[str], gold: list[list[tuple[str, str]]], sentiment, model: TopicModel,
                     taxonomy: Taxonomy) -> dict:
    doc = sentiment.predict_proba(texts)
    res = topic_sentiments(texts, [[k for k, _ in g] for g in gold], doc,
                           lambda xs, ws, ctx: predict_in_context(sentiment, xs, ws, ctx), model, taxonomy,
                           sentiment.labels)
    truth = [p for g in gold for _, p in g]
    pred = [t.sentiment for r in res for t in r]
    doc_pred = [sentiment.labels[int(doc[i].argmax())] for i, g in enumerate(gold) for _ in g]
    mixed = [len({p for _, p in g} - {"neu"}) > 1 for g in gold for _ in g]
    t, p, d, m = (np.asarray(a) for a in (truth, pred, doc_pred, mixed))
    return {"n": len(truth), "accuracy": round(float((t == p).mean()), 4),
            "text_sentiment_accuracy": round(float((t == d).mean()), 4),
            "mixed_n": int(m.sum()),
            "mixed_accuracy": round(float((t[m] == p[m]).mean()), 4) if m.any() else None,
            "mixed_text_sentiment_accuracy": round(float((t[m] == d[m]).mean()), 4) if m.any() else None}


def probe_metrics(probe: pd.DataFrame, model: TopicModel, proba: np.ndarray, taxonomy: Taxonomy, sentiment) -> dict:
    keys = model.keys
    y = np.array([[1 if k in g else 0 for k in keys] for g in probe.gold])
    pred = proba >= model.thresholds
    rules = np.array([[1 if k in m else 0 for k in keys] for m in taxonomy.match_many(list(probe.text))])
    unseen = (y == 1) & (rules == 0)
    found = [[k for k in g if k in keys] for g in probe.gold]
    pol = _polarity_scores(list(probe.text), [[(k, probe.gold.iloc[i][k]) for k in f] for i, f in enumerate(found)],
                           sentiment, model, taxonomy)
    return {"n": int(len(probe)), "micro_f1": round(float(f1_score(y, pred, average="micro", zero_division=0)), 4),
            "macro_f1": round(float(f1_score(y, pred, average="macro", zero_division=0)), 4),
            "keyword_rules_micro_f1": round(float(f1_score(y, rules, average="micro", zero_division=0)), 4),
            "served_micro_f1": round(float(f1_score(y, pred | (rules == 1), average="micro", zero_division=0)), 4),
            "no_keyword_topics": int(unseen.sum()), "no_keyword_found": int(pred[unseen].sum()),
            "false_positives": int((pred & (y == 0)).sum()), "per_topic_sentiment": pol}


def _embed(encoder, texts: list[str], log: Log, what: str) -> np.ndarray:
    t0 = time.time()
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if done[0] % 5000 < n:
            log(f"embedding {what}: {done[0]}/{len(texts)} ({time.time() - t0:.0f}s)")

    out = encoder.embed(texts, progress=tick)
    log(f"embedded {len(texts)} {what} texts in {time.time() - t0:.0f}s")
    return out


def train_topic_model(taxonomy: Taxonomy, options: TopicOptions, out_root: Path, cache_root: Path | None,
                      encoder_dir: Path | None, sentiment_dir: Path, log: Log = print,
                      compare_with: Path | None = None, models_home: Path | None = None,
                      data: TopicData | None = None) -> TrainResult:
    """Train, tune on dev, evaluate on test and the probe, save with a model card. ``compare_with``
    (the current topic model) is scored on the same dev rows, for promotion."""
    t0 = time.time()
    data = data or build_topic_data(taxonomy, options.data_dir, options.max_reviews, weak_negatives=True)
    keys = data.keys
    tr, dv, te = data.subset("train"), data.subset("dev"), data.subset("test")
    probe = load_topic_probe()
    log(f"topic data: {len(tr)} train, {len(dv)} dev, {len(te)} test rows; probe {len(probe)}")
    seg = default_segmenter()
    toks = {name: seg.cut_many(list(f.text)) for name, f in (("train", tr), ("dev", dv), ("test", te),
                                                              ("probe", probe))}
    features = TextFeatures(FeatureConfig())
    x_tr = features.fit_transform(list(tr.text), toks["train"])
    xs = {name: features.transform(list(f.text), toks[name]) for name, f in (("dev", dv), ("test", te),
                                                                              ("probe", probe))}
    y_tr = _labels(tr, keys)

    weights = np.where(tr.dataset.str.startswith("weak:").to_numpy(), options.weak_weight, 1.0)

    def fit_all(x: sp.csr_matrix | np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
        coef = np.zeros((len(keys), x.shape[1]), np.float32)
        intercept = np.zeros(len(keys), np.float32)
        for j in range(len(keys)):
            m = y_tr[:, j] >= 0
            coef[j], intercept[j] = fit_linear(x[m], y_tr[m, j], c, weights[m])
        return coef, intercept

    def dev_quality(z: np.ndarray) -> float:
        return _mean_micro(topic_f1(dv, sigmoid(z) >= 0.5, keys, data))

    fits = {c: fit_all(x_tr, c) for c in options.c_lexical}
    quality = {c: dev_quality(np.asarray(xs["dev"] @ w.T) + b) for c, (w, b) in fits.items()}
    c_best = max(quality, key=lambda c: (quality[c], -c))
    # then per key, where a labelled set gives it enough dev positives: the C with the best dev F1
    chosen = {}
    y_dv_all = _labels(dv, keys)
    for j, k in enumerate(keys):
        rows = dv.dataset.isin([d for d, ks in data.labelled_keys.items() if k in ks]).to_numpy()
        y = y_dv_all[rows, j]
        chosen[k] = c_best
        if (y == 1).sum() >= options.min_dev_positives:
            f1 = {c: _best_f1(sigmoid(np.asarray(xs["dev"][rows] @ w[j]) + b[j]), y) for c, (w, b) in fits.items()}
            chosen[k] = max(f1, key=lambda c: (f1[c], c == c_best, -c))
    coef = np.stack([fits[chosen[k]][0][j] for j, k in enumerate(keys)])
    intercept = np.array([fits[chosen[k]][1][j] for j, k in enumerate(keys)], np.float32)
    log(f"lexical view: {features.size} features, {len(keys)} keys; C on dev "
        + ", ".join(f"{c}: {q:.4f}" for c, q in quality.items()) + f" → {c_best}; per key "
        + ", ".join(f"{k} {c:g}" for k, c in chosen.items() if c != c_best) + f" ({time.time() - t0:.0f}s)")
    lex = {name: np.asarray(x @ coef.T) + intercept for name, x in xs.items()}

    encoder_info, enc_coef, enc_intercept, sem = None, None, None, {}
    encoder = None
    if options.semantic and encoder_dir is not None:
        encoder = load_sentiment_model(encoder_dir, cache_root)
        from models.registry import model_version_of
        encoder_info = {"model_version": model_version_of(encoder_dir), "name": encoder_dir.name}
        enc_coef, enc_intercept = fit_all(unit_rows(_embed(encoder, list(tr.text), log, "train")), options.c_semantic)
        for name, f in (("dev", dv), ("test", te), ("probe", probe)):
            sem[name] = unit_rows(_embed(encoder, list(f.text), log, name)) @ enc_coef.T + enc_intercept

    # blend weight on dev: mean micro-F1 over the labelled sets
    y_dv = _labels(dv, keys)
    blend = 1.0
    if sem:
        scores = {w: dev_quality(w * lex["dev"] + (1 - w) * sem["dev"]) for w in options.blend_grid}
        blend = max(scores, key=lambda w: (scores[w], -abs(w - 0.5)))
        log("blend on dev: " + ", ".join(f"{w}: {s:.4f}" for w, s in scores.items()) + f" → {blend}")

    def combined(name: str) -> np.ndarray:
        return sigmoid(blend * lex[name] + (1 - blend) * sem[name]) if sem else sigmoid(lex[name])

    p_dv = combined("dev")
    # a weak dev row counts as much as a weak train row: its keyword labels are noisy, the labelled sets decide
    w_dv = np.where(dv.dataset.str.startswith("weak:").to_numpy(), options.weak_weight, 1.0)
    thresholds = np.full(len(keys), 0.5, np.float32)
    for j in range(len(keys)):
        m = y_dv[:, j] >= 0
        if (y_dv[m, j] == 1).sum() >= options.min_dev_positives:
            thresholds[j] = _best_threshold(p_dv[m, j], y_dv[m, j], w_dv[m])
    model = TopicModel(keys, features, coef, intercept, thresholds, encoder_info, enc_coef, enc_intercept, blend)
    dev_f1 = topic_f1(dv, p_dv >= thresholds, keys, data)
    test_f1 = topic_f1(te, combined("test") >= thresholds, keys, data)
    log("test: " + "; ".join(f"{d} micro-F1 {v['micro_f1']:.4f} macro-F1 {v['macro_f1']:.4f}"
                             for d, v in test_f1.items()))
    sentiment = CachedSentiment(encoder if encoder is not None and sentiment_dir == encoder_dir else
                                load_sentiment_model(sentiment_dir, cache_root))
    weights = {}
    for w in options.clause_weights:
        model.clause_weight = w
        weights[w] = float(np.mean([v["accuracy"] for v in polarity_accuracy(dv, keys, data, sentiment, model,
                                                                             taxonomy).values()]))
    model.clause_weight = max(weights, key=lambda w: (weights[w], w))
    log("per-topic polarity on dev by clause weight: " + ", ".join(f"{w}: {a:.4f}" for w, a in weights.items())
        + f" → {model.clause_weight}")
    polarity = polarity_accuracy(te, keys, data, sentiment, model, taxonomy)
    log("per-topic sentiment on test: " + "; ".join(
        f"{d} {v['accuracy']:.4f} (text sentiment {v['text_sentiment_accuracy']:.4f})" for d, v in polarity.items()))
    probe_m = probe_metrics(probe, model, combined("probe"), taxonomy, sentiment)
    log(f"probe: micro-F1 {probe_m['micro_f1']:.4f} (keyword rules {probe_m['keyword_rules_micro_f1']:.4f}), "
        f"no-keyword topics found {probe_m['no_keyword_found']}/{probe_m['no_keyword_topics']}")

    trained_at = datetime.now(UTC)
    digest = hashlib.sha1(coef.tobytes() + thresholds.tobytes() + (b"" if enc_coef is None else enc_coef.tobytes())
                          ).hexdigest()[:8]
    version = f"topics-{'semantic' if sem else 'lexical'}-{trained_at:%Y%m%d}-{digest}"
    meta = {"model_version": version, "task": "topics", "kind": "semantic" if sem else "lexical",
            "trained_at": trained_at.isoformat(timespec="seconds"), "train_rows": int(len(tr)),
            "options": asdict(options), "c_per_key": chosen, "taxonomy": taxonomy.source,
            "sentiment_model": sentiment_dir.name,
            "metrics": {"dev": dev_f1, "dev_score": _mean_micro(dev_f1), "test": test_f1,
                        "test_per_topic_sentiment": polarity, "probe": probe_m,
                        "train_counts": {k: int((y_tr[:, j] == 1).sum()) for j, k in enumerate(keys)}}}
    out = model.save(out_root / version, meta=meta)
    write_topic_card(out, model, meta)
    log(f"saved {version} to {out} in {time.time() - t0:.0f}s")
    compared = None
    if compare_with is not None:
        compared = _dev_score_of(TopicModel.load(compare_with), compare_with, dv, toks["dev"], data, encoder,
                                 cache_root, models_home, log)
    return TrainResult(out, version, meta["metrics"], time.time() - t0, compared)


def _dev_score_of(other: TopicModel, path: Path, dv: pd.DataFrame, tokens: list, data: TopicData, encoder,
                  cache_root: Path | None, models_home: Path | None, log: Log) -> float:
    """The dev score (mean micro-F1 over the labelled sets) of another topic model on these dev rows;
    keys it does not know count as never predicted."""
    emb = None
    if other.semantic and other.encoder:
        same = encoder is not None and encoder.meta.get("model_version") == other.encoder["model_version"]
        if not same:
            from models.registry import encoder_dir_for
            encoder = load_sentiment_model(encoder_dir_for(path, other.encoder, models_home), cache_root)
        emb = _embed(encoder, list(dv.text), log, "dev (current model)")
    proba = other.proba(list(dv.text), tokens, emb)
    pred = np.zeros((len(dv), len(data.keys)), bool)
    for j, k in enumerate(data.keys):
        if k in other.keys:
            i = other.keys.index(k)
            pred[:, j] = proba[:, i] >= other.thresholds[i]
    return _mean_micro(topic_f1(dv, pred, data.keys, data))


def _mean_micro(f1: dict) -> float:
    return round(float(np.mean([v["micro_f1"] for v in f1.values()])), 4) if f1 else 0.0


def write_topic_card(folder: Path, model: TopicModel, meta: dict) -> Path:
    m = meta["metrics"]
    lines = [f"# {meta['model_version']}", "",
             f"Task: topics (multi-label, taxonomy keys {', '.join(model.keys)}), each with its own polarity. "
             f"Kind: {meta['kind']}. Trained {meta['trained_at']} on {meta['train_rows']} rows.", "",
             "## Model",
             "One logistic regression per key on TF-IDF of jieba words and character 1–3-grams (regularisation "
             "chosen per key on dev: " + ", ".join(f"{k} C={c:g}" for k, c in meta["c_per_key"].items()) + ")"
             + (f", blended in logit space (lexical weight {model.blend}) with one on the mean-pooled embedding "
                f"of the sentiment transformer `{model.encoder['model_version']}`" if model.semantic and model.encoder
                else "") + ". Per-key thresholds tuned on dev (a weak-label row weighs there what it weighs in "
             f"training, {meta['options']['weak_weight']:g}): "
             + ", ".join(f"{k} {t:.2f}" for k, t in zip(model.keys, model.thresholds, strict=True)) + ".",
             "Serving joins the model's keys with the taxonomy's keyword rules (`models/predict.py`): a text "
             "that names a topic's keyword keeps that topic; the model adds topics worded without one.",
             f"Per-topic polarity: the sentiment model (`{meta['sentiment_model']}` when trained) scores the clauses "
             f"that carry the topic, blended with the whole text's (clause weight {model.clause_weight}, chosen on "
             "dev; `models/topic_sentiment.py`).", "",
             "## Data",
             "- labelled aspect sets mapped onto the taxonomy by "
             f"`{MAPPING_PATH.relative_to(MAPPING_PATH.parents[2])}` "
             "(cosmetics reviews, car forum posts, Dianping restaurant reviews);",
             "- weak labels: taxonomy keywords on the review corpus (hotel, food delivery, ten shopping categories) "
             f"and cxloop's own seed sentences `{SEEDS_PATH.relative_to(SEEDS_PATH.parents[2])}` (banking, "
             "telecom, airlines, insurance, utilities and government services; questions and small talk among them, "
             "with no topic at all).",
             "- positives per key in train: " + ", ".join(f"{k} {n}" for k, n in m["train_counts"].items()) + ".",
             "", "Thresholds and the blend weight were chosen on `dev`; `test` and the probe were scored once.", "",
             "## Topic F1 on test (held out)", "| data set | n | micro-F1 | macro-F1 | per key |",
             "|---|---:|---:|---:|---|"]
    lines += [f"| {d} | {v['n']} | **{v['micro_f1']:.4f}** | {v['macro_f1']:.4f} | "
              + ", ".join(f"{k} {f:.2f}" for k, f in v["per_key_f1"].items()) + " |" for d, v in m["test"].items()]
    lines += ["", "## Per-topic sentiment accuracy on test (gold topics, 3-class)",
              "| data set | pairs | per-topic polarity | the text's own sentiment | mixed-review pairs | "
              "per-topic on mixed | text on mixed |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {d} | {v['n']} | **{v['accuracy']:.4f}** | {v['text_sentiment_accuracy']:.4f} | {v['mixed_n']} | "
              f"{_fmt(v['mixed_accuracy'])} | {_fmt(v['mixed_text_sentiment_accuracy'])} |"
              for d, v in m["test_per_topic_sentiment"].items()]
    p = m["probe"]
    lines += ["", "## Cross-industry probe (`data/eval/topic_probe.csv`, never trained on)",
              f"{p['n']} sentences from banking, telecom, airlines, government services, utilities, e-commerce and "
              f"restaurants: micro-F1 {p['micro_f1']:.4f} for the model alone, {p['keyword_rules_micro_f1']:.4f} for "
              f"the keyword rules alone, **{p['served_micro_f1']:.4f}** for both joined (what cxloop serves), "
              f"macro-F1 {p['macro_f1']:.4f}; of {p['no_keyword_topics']} gold topics whose keywords do not occur, "
              f"{p['no_keyword_found']} found; {p['false_positives']} false positives; per-topic polarity accuracy "
              f"{p['per_topic_sentiment']['accuracy']:.4f}.", "",
              "## Top lexical features per key",
              *[f"- {k}: {' '.join(model.top_features(k, 10))}" for k in model.keys], "",
              "## Limits",
              "- The labelled sets are cosmetics, cars and restaurants; other industries rest on weak labels and "
              "seed sentences, so topics there are found mostly by wording close to the taxonomy's keywords.",
              "- Per-topic polarity follows clause boundaries: an opinion stated far from its topic takes the "
              "text's own sentiment.",
              "- A key added to the taxonomy after training is matched by its keywords until the model is retrained.",
              "", "## Licence", LICENCE_NOTE, ""]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"
