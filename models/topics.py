"""The topic model: multi-label classification of a feedback text into taxonomy keys.

One binary logistic regression per key on two views of the text, blended in logit space:

* **lexical** — TF-IDF on jieba words and character n-grams (:mod:`models.features`); fast, and the
  view used to find *which clause* of a text carries a topic (:meth:`TopicModel.lexical_proba`);
* **semantic** (optional) — the mean-pooled sentence embedding of the fine-tuned sentiment
  transformer. It is what lets the model find a topic in wording with none of its keywords
  ("快件在中转站躺了五天" → logistics). When the sentiment model in use is that same transformer,
  the embedding is computed once and serves both (see ``models.predict``).

Per-key decision thresholds are tuned on dev for F1. Artifacts are ``model.json`` (keys, thresholds,
the encoder's identity) + ``weights.npz`` (vocabularies, IDF, coefficients; ``allow_pickle=False``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from models.baseline import ModelLoadError, read_artifact
from models.features import FeatureConfig, TextFeatures

FORMAT = "cxloop-topics/1"


def unit_rows(e: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (sentence embeddings, as the semantic view reads them)."""
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-6)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


class TopicModel:
    """Taxonomy keys for texts; ``proba`` gives P(key | text) per key (columns in ``keys`` order)."""

    def __init__(self, keys: Sequence[str], features: TextFeatures, coef: np.ndarray, intercept: np.ndarray,
                 thresholds: np.ndarray | None = None, encoder: dict | None = None,
                 enc_coef: np.ndarray | None = None, enc_intercept: np.ndarray | None = None,
                 blend: float = 1.0, meta: dict | None = None, clause_weight: float = 1.0) -> None:
        self.keys = list(keys)
        self.features = features
        self.coef = coef.astype(np.float32)              # (K, F)
        self.intercept = intercept.astype(np.float32)    # (K,)
        self.thresholds = (np.full(len(self.keys), 0.5, np.float32) if thresholds is None
                           else thresholds.astype(np.float32))
        self.encoder = encoder                           # {"model_version", "name"} of the sentiment transformer
        self.enc_coef = None if enc_coef is None else enc_coef.astype(np.float32)          # (K, H)
        self.enc_intercept = None if enc_intercept is None else enc_intercept.astype(np.float32)
        self.blend = float(blend)                        # weight of the lexical logit (1.0: lexical only)
        self.clause_weight = float(clause_weight)        # per-topic polarity: clauses vs whole text
        self.meta = meta or {}

    @property
    def semantic(self) -> bool:
        return self.enc_coef is not None and self.blend < 1.0

    @property
    def model_version(self) -> str:
        return self.meta.get("model_version", "topics-untrained")

    # -- scoring ------------------------------------------------------------------------------------
    def lexical_logits(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        return self.features.linear(texts, tokens, self.coef) + self.intercept

    def semantic_logits(self, embeddings: np.ndarray) -> np.ndarray:
        assert self.enc_coef is not None and self.enc_intercept is not None
        return unit_rows(embeddings) @ self.enc_coef.T + self.enc_intercept

    def proba(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None,
              embeddings: np.ndarray | None = None) -> np.ndarray:
        """P(key | text), shape (n, K). A semantic model needs ``embeddings`` (the encoder's pooled
        output for the same texts)."""
        if len(texts) == 0:
            return np.zeros((0, len(self.keys)), np.float32)
        z = self.lexical_logits(texts, tokens)
        if self.semantic:
            if embeddings is None:
                raise ValueError(f"{self.model_version} needs sentence embeddings from "
                                 f"{self.encoder and self.encoder.get('model_version')}")
            z = self.blend * z + (1.0 - self.blend) * self.semantic_logits(embeddings)
        return sigmoid(z).astype(np.float32)

    def lexical_proba(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        """P(key | text) from the lexical view alone (used per clause)."""
        if len(texts) == 0:
            return np.zeros((0, len(self.keys)), np.float32)
        return sigmoid(self.lexical_logits(texts, tokens)).astype(np.float32)

    def decide(self, proba: np.ndarray) -> list[list[str]]:
        """Keys above their threshold, per row (in ``keys`` order)."""
        out: list[list[str]] = [[] for _ in range(len(proba))]
        keys = self.keys
        rows, cols = np.nonzero(proba >= self.thresholds)   # row by row, each row's keys in order
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            out[i].append(keys[j])
        return out

    def top_features(self, key: str, k: int = 12) -> list[str]:
        names = self.features.names()
        row = self.coef[self.keys.index(key)]
        return [names[i] for i in np.argsort(-row)[:k]]

    # -- persistence --------------------------------------------------------------------------------
    def save(self, folder: str | Path, meta: dict | None = None) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.meta = {**self.meta, **(meta or {})}
        doc = {"format": FORMAT, "keys": self.keys, "thresholds": [round(float(t), 4) for t in self.thresholds],
               "blend": self.blend, "clause_weight": self.clause_weight, "encoder": self.encoder,
               "features": asdict(self.features.config),
               "meta": self.meta}
        (out / "model.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        arrays = {**self.features.arrays(), "coef": self.coef.astype(np.float16), "intercept": self.intercept}
        if self.enc_coef is not None and self.enc_intercept is not None:
            arrays.update(enc_coef=self.enc_coef, enc_intercept=self.enc_intercept)
        np.savez_compressed(out / "weights.npz", **arrays)
        return out

    @classmethod
    def load(cls, folder: str | Path) -> TopicModel:
        """Load an artifact written by :meth:`save`; problems raise ``ModelLoadError`` naming the path."""
        path = Path(folder)
        doc, arrays = read_artifact(path, what="topic model")
        if doc.get("format") != FORMAT:
            raise ModelLoadError(f"{path / 'model.json'} has format {doc.get('format')!r}, expected {FORMAT!r}")
        try:
            fc = doc["features"]
            features = TextFeatures(FeatureConfig(**{**fc, "word_ngrams": tuple(fc["word_ngrams"]),
                                                     "char_ngrams": tuple(fc["char_ngrams"])}))
            features.restore(doc, arrays)
            keys = doc["keys"]
            coef = arrays["coef"]
            if coef.shape != (len(keys), features.size) or arrays["intercept"].shape != (len(keys),):
                raise ValueError(f"coefficient shape {coef.shape} does not fit {len(keys)} keys × "
                                 f"{features.size} features")
            enc = arrays.get("enc_coef")
            if enc is not None and enc.shape[0] != len(keys):
                raise ValueError(f"encoder coefficient shape {enc.shape}")
            return cls(keys, features, coef, arrays["intercept"], np.asarray(doc["thresholds"], np.float32),
                       doc.get("encoder"), enc, arrays.get("enc_intercept"), doc.get("blend", 1.0),
                       doc.get("meta", {}), doc.get("clause_weight", 1.0))
        except (KeyError, ValueError, TypeError) as e:
            raise ModelLoadError(f"topic model in {path} is corrupt: {e}") from None


def fit_linear(x: sp.csr_matrix | np.ndarray, y: np.ndarray, c: float,
               sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """One key's logistic regression (training only): coefficients and intercept."""
    from sklearn.linear_model import LogisticRegression

    if len(y) == 0 or y.min() == y.max():  # no labels, or one class only: a constant
        return np.zeros(x.shape[1], np.float32), (8.0 if len(y) and y[0] == 1 else -8.0)
    clf = LogisticRegression(C=c, max_iter=3000)
    clf.fit(x, y, sample_weight=sample_weight)
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])
