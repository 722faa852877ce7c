"""Labelled topic data: the shared aspect sets mapped onto taxonomy keys, plus weak labels.

The mapping lives in ``models/resources/aspect_topics.yaml`` (data, not code). Each row of the
result is one text with, per taxonomy key, a label: ``1`` the topic is discussed, ``0`` it is not,
``-1`` unknown (the row says nothing reliable about that key, so that key's classifier skips it),
and, where the source says so, the topic's own polarity (``neg``/``neu``/``pos``).

* **Labelled rows** (cosmetics, car forum, restaurant) know every key their data set maps onto;
  for the other keys they are unknown, except that a key's keywords found in the text make it a
  weak positive (a cosmetics review that says 客服 is about customer service).
* **Weak rows** come from the unlabelled review corpus (hotel, food delivery, ten shopping
  categories): a key whose keywords occur is positive, a key without is a (noisy) negative — for
  every key with ``weak_negatives`` (training then gives these rows a small weight), else only for
  keys no labelled set covers.
* **Seed rows**: cxloop's own sentences (``models/resources/topic_seeds.csv``, written for
  banking, telecom, airlines, insurance, utilities and government services) with their topics and
  polarities; a question or small talk has no topic, so every key learns it is not about that key.

Splits: the aspect sets get the same text-hash split as sentiment training (``models.data``), the
restaurant set its published train/dev files (dev split in half by hash into dev and test).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from models.data import hash_split, load_sentiment_reviews, shared_data_dir
from nlp import Taxonomy, normalize_text

MAPPING_PATH = Path(__file__).resolve().parent / "resources" / "aspect_topics.yaml"
SEEDS_PATH = Path(__file__).resolve().parent / "resources" / "topic_seeds.csv"
POLARITY = {"正面": "pos", "负面": "neg", "中性": "neu", "1": "pos", "-1": "neg", "0": "neu"}


@dataclass
class TopicData:
    """Texts with per-key labels and polarities, as parallel columns of a DataFrame.

    ``frame`` has ``text``, ``dataset``, ``split`` and, per key ``k``, ``y:k`` (1/0/-1) and
    ``pol:k`` (neg/neu/pos or empty)."""

    frame: pd.DataFrame
    keys: list[str]
    labelled_keys: dict[str, list[str]]   # data set → keys its labels cover

    def subset(self, split: str) -> pd.DataFrame:
        return self.frame[self.frame.split == split]


def load_mapping(path: Path = MAPPING_PATH) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc["datasets"]


def _merge_polarity(pols: list[str]) -> str:
    if "neg" in pols:
        return "neg"
    return "pos" if "pos" in pols else "neu"


def _rows_from_pairs(texts: pd.Series, pairs: list[list[tuple[str, str]]], mapping: dict[str, str | None],
                     dataset: str) -> list[dict]:
    """``pairs`` per text: (aspect, polarity label) → one row with mapped keys and merged polarities."""
    out = []
    for text, aspects in zip(texts, pairs, strict=True):
        per_key: dict[str, list[str]] = {}
        for aspect, pol in aspects:
            if aspect not in mapping:
                raise ValueError(f"{MAPPING_PATH}: data set {dataset!r} has aspect {aspect!r} with no mapping")
            key = mapping[aspect]
            if key is not None:
                per_key.setdefault(key, []).append(POLARITY.get(pol, "neu"))
        out.append({"text": text, "dataset": dataset,
                    "topics": {k: _merge_polarity(v) for k, v in per_key.items()}})
    return out


def _split_pairs(values: pd.Series) -> list[list[tuple[str, str]]]:
    return [[tuple(p.rsplit(":", 1)) for p in str(v).split("|") if ":" in p] for v in values]  # type: ignore[misc]


def load_labelled(data_dir: Path, mapping: dict) -> list[dict]:
    aspects = data_dir / "aspects"
    rows: list[dict] = []
    spec = mapping["cosmetics"]
    df = pd.read_csv(aspects / spec["file"], dtype=str, keep_default_na=False)
    rows += [dict(r, split=hash_split(r["text"])) for r in
             _rows_from_pairs(df.text, _split_pairs(df.category_polarities), spec["aspects"], "cosmetics")]
    spec = mapping["car_forum"]
    df = pd.read_csv(aspects / spec["file"], dtype=str, keep_default_na=False)
    rows += [dict(r, split=hash_split(r["text"])) for r in
             _rows_from_pairs(df.text, _split_pairs(df.aspect_sentiments), spec["aspects"], "car_forum")]
    spec = mapping["restaurant"]
    cols = list(spec["aspects"])
    for part in ("train", "dev"):
        df = pd.read_csv(aspects / f"{spec['file']}_{part}.csv", keep_default_na=False)
        pairs = [[(c, str(int(r[c]))) for c in cols if int(r[c]) != -2] for _, r in df.iterrows()]
        for r in _rows_from_pairs(df.text.astype(str), pairs, spec["aspects"], "restaurant"):
            r["split"] = "train" if part == "train" else ("test" if hash_split(r["text"], 50, 0) == "test" else "dev")
            rows.append(r)
    return rows


def load_weak(data_dir: Path, max_reviews: int | None = None, seed: int = 0) -> list[dict]:
    reviews = load_sentiment_reviews(data_dir)
    if max_reviews is not None and len(reviews) > max_reviews:
        reviews = reviews.sample(max_reviews, random_state=seed)
    rows = [{"text": t, "dataset": f"weak:{d}", "split": s, "topics": None}
            for t, d, s in zip(reviews.text, reviews.domain, reviews.split, strict=True)]
    if SEEDS_PATH.exists():
        seeds = pd.read_csv(SEEDS_PATH, dtype=str, keep_default_na=False)
        rows += [{"text": t, "dataset": "seeds", "split": "train", "topics": _parse_topics(v)}
                 for t, v in zip(seeds.text, seeds.topics, strict=True)]
    return rows


def _parse_topics(value: str) -> dict[str, str]:
    """``logistics:neg;product_quality:pos`` → dict (polarity optional, default neg)."""
    out = {}
    for part in str(value).split(";"):
        if part.strip():
            key, _, pol = part.strip().partition(":")
            out[key] = pol or "neg"
    return out


def build_topic_data(taxonomy: Taxonomy, data_dir: str | Path | None = None, max_reviews: int | None = 30000,
                     mapping_path: Path = MAPPING_PATH, weak_negatives: bool = False) -> TopicData:
    """Every labelled and weak row, normalised, with per-key labels (see module docstring)."""
    d = shared_data_dir(data_dir)
    mapping = load_mapping(mapping_path)
    keys = taxonomy.keys
    for name, spec in mapping.items():
        unknown = {k for k in spec["aspects"].values() if k is not None and k not in taxonomy}
        if unknown:
            raise ValueError(f"{mapping_path}: {name} maps onto {sorted(unknown)}, not in the taxonomy "
                             f"{taxonomy.source}")
    labelled_keys = {name: sorted({k for k in spec["aspects"].values() if k}) for name, spec in mapping.items()}
    covered = {k for ks in labelled_keys.values() for k in ks}
    records = []
    rows = [(r, text) for r in load_labelled(d, mapping) + load_weak(d, max_reviews)
            if (text := normalize_text(r["text"])).strip()]
    for (r, text), matched in zip(rows, taxonomy.match_many([t for _, t in rows]), strict=True):
        hits = set(matched)
        rec = {"text": text, "dataset": r["dataset"], "split": r["split"]}
        for k in keys:
            pol = ""
            if (r["dataset"] in labelled_keys and k in labelled_keys[r["dataset"]]) or r["dataset"] == "seeds":
                y = 1 if k in r["topics"] else 0
                pol = r["topics"].get(k, "")
            elif k in hits:
                y = 1
            elif k not in covered or weak_negatives or r["dataset"] in labelled_keys:
                y = 0
            else:
                y = -1
            rec[f"y:{k}"] = y
            rec[f"pol:{k}"] = pol
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    frame = frame.drop_duplicates(subset=["text"]).reset_index(drop=True)
    return TopicData(frame, keys, labelled_keys)
