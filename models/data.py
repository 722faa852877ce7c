"""Labelled training data from the shared data folder (``../shared/data`` by default).

The binary review set carries its own ``train``/``dev``/``test`` split. Three-class sentiment needs
neutral examples, which come from the aspect sets: car forum posts whose every aspect is neutral,
cosmetics reviews rated 中性, restaurant sentences rated NEU (each set's positives and negatives come
along, so "neutral" is not learned as "talks about cars"). Sets without a split get one from a
hash of the normalised text, so a text lands in the same split on every machine.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from nlp import normalize_text

LABELS = ("neg", "neu", "pos")
SPLITS = ("train", "dev", "test")


class DataMissingError(FileNotFoundError):
    """The shared data folder (or one of its files) is not on this machine."""


def shared_data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the shared data sets are: ``path``, ``$CXLOOP_SHARED_DATA``, or ``../shared/data``
    relative to the project root."""
    if path is None:
        path = os.environ.get("CXLOOP_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    p = Path(path)
    if not (p / "sentiment" / "reviews_sentiment.csv").is_file():
        raise DataMissingError(
            f"shared training data not found under {p} (expected sentiment/reviews_sentiment.csv); "
            "pass --data DIR or set CXLOOP_SHARED_DATA")
    return p


def hash_split(text: str, test_pct: int = 10, dev_pct: int = 10) -> str:
    """A stable split from the normalised text (``test``, ``dev`` or ``train``)."""
    bucket = int(hashlib.sha1(" ".join(normalize_text(text).split()).encode()).hexdigest()[:8], 16) % 100
    if bucket < test_pct:
        return "test"
    return "dev" if bucket < test_pct + dev_pct else "train"


def _polarity_set(values: pd.Series) -> pd.Series:
    """Map aspect polarity lists (``a:1|b:0`` or ``a:正面|b:中性``) to one review label."""
    def one(s: str) -> str | None:
        pols = {p.rsplit(":", 1)[-1] for p in str(s).split("|")}
        pols = {{"1": "pos", "正面": "pos", "-1": "neg", "负面": "neg", "0": "neu", "中性": "neu"}.get(p, "?")
                for p in pols}
        if pols == {"neu"}:
            return "neu"
        pols.discard("neu")
        return pols.pop() if len(pols) == 1 and "?" not in pols else None
    return values.map(one)


def load_sentiment_reviews(data_dir: Path) -> pd.DataFrame:
    """The binary review set: ``text``, ``label``, ``domain``, ``split``."""
    df = pd.read_csv(data_dir / "sentiment" / "reviews_sentiment.csv", dtype=str, keep_default_na=False)
    return df[["text", "label", "domain", "split"]]


def load_aspect_sentiment(data_dir: Path) -> pd.DataFrame:
    """Three-class review-level sentiment from the aspect sets: ``text``, ``label``, ``domain``, ``split``."""
    aspects = data_dir / "aspects"
    frames = []
    car = pd.read_csv(aspects / "car_forum_reviews.csv", dtype=str, keep_default_na=False)
    frames.append(pd.DataFrame({"text": car.text, "label": _polarity_set(car.aspect_sentiments),
                                "domain": "car_forum"}))
    makeup = pd.read_csv(aspects / "ecommerce_makeup_reviews.csv", dtype=str, keep_default_na=False)
    frames.append(pd.DataFrame({"text": makeup.text, "domain": "cosmetics",
                                "label": makeup.review_polarity.map({"正面": "pos", "负面": "neg", "中性": "neu"})}))
    for f in frames:
        f["split"] = f.text.map(hash_split)
    rest = pd.read_csv(aspects / "restaurant_triplets.csv", dtype=str, keep_default_na=False)
    frames.append(pd.DataFrame({"text": rest.text, "domain": "restaurant", "split": rest.split,
                                "label": rest.review_polarity.map({"POS": "pos", "NEG": "neg", "NEU": "neu"})}))
    out = pd.concat(frames, ignore_index=True).dropna(subset=["label"])
    return out[out.text.str.strip() != ""].reset_index(drop=True)


def load_sentiment_corpus(data_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """All labelled sentiment data with ``text``, ``label``, ``domain``, ``split``, ``dataset``.

    The binary review set is kept whole (its test split is the published benchmark); an aspect-set
    text that also occurs there, or earlier in the aspect sets, is dropped."""
    d = shared_data_dir(data_dir)
    reviews = load_sentiment_reviews(d).assign(dataset="reviews_sentiment")
    aspect = load_aspect_sentiment(d).assign(dataset="aspects")
    seen = set(reviews.text.map(_key))
    keys = aspect.text.map(_key)
    aspect = aspect[~keys.isin(seen) & ~keys.duplicated()]
    return pd.concat([reviews, aspect], ignore_index=True)


def _key(text: str) -> str:
    return " ".join(normalize_text(text).split())


PROBE_PATH = Path(__file__).resolve().parents[1] / "data" / "eval" / "ood_probe.csv"


def load_ood_probe(path: Path = PROBE_PATH) -> pd.DataFrame:
    """cxloop's own out-of-domain probe: formal complaints, long letters and short chat lines written
    for evaluation only (never trained or tuned on), labelled neg / neu / pos."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)
