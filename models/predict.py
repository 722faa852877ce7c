"""Batch prediction: one call turns normalised texts into every NLP column cxloop stores.

``Analyzer`` bundles a sentiment model, the taxonomy and the segmenter. ``analyze(texts)`` returns
a column dict (tokens, keywords, sentiment, score, class probabilities, topics, model_version),
ready to become an Arrow table; the warehouse and ``cxloop predict`` both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.registry import SentimentModel, load_sentiment_model, model_version_of, resolve_model
from nlp import Segmenter, Taxonomy, default_segmenter, default_taxonomy, keywords


@dataclass
class Analyzer:
    """Sentiment + topics + keywords for batches of normalised text."""

    model: SentimentModel
    model_version: str
    taxonomy: Taxonomy
    segmenter: Segmenter

    @classmethod
    def load(cls, model: str | None = None, models_home: Path | None = None,
             taxonomy: Taxonomy | None = None, cache_root: Path | None = None, quantize: bool = False) -> Analyzer:
        """Load the model named ``model`` (see :func:`models.registry.resolve_model`); ``cache_root``
        holds converted base encoders, ``quantize`` serves a transformer in dynamic int8."""
        path = resolve_model(model, models_home)
        return cls(load_sentiment_model(path, cache_root, quantize=quantize), model_version_of(path),
                   taxonomy or default_taxonomy(), default_segmenter())

    def analyze(self, texts: Sequence[str]) -> dict[str, list]:
        """NLP columns for already-normalised ``texts`` (same order)."""
        tokens = self.segmenter.cut_many(texts)
        proba = self.model.predict_proba(texts, tokens)
        labels = np.asarray(self.model.labels)
        idx = {lab: i for i, lab in enumerate(self.model.labels)}
        p_neg, p_neu, p_pos = (proba[:, idx[k]] for k in ("neg", "neu", "pos"))
        return {
            "tokens": tokens,
            "keywords": [keywords(t) for t in tokens],
            "sentiment": labels[proba.argmax(axis=1)].tolist() if len(texts) else [],
            "sentiment_score": np.round(p_pos - p_neg, 4).tolist(),
            "p_neg": np.round(p_neg, 4).tolist(),
            "p_neu": np.round(p_neu, 4).tolist(),
            "p_pos": np.round(p_pos, 4).tolist(),
            "topics": [self.taxonomy.match(t) for t in texts],
            "model_version": [self.model_version] * len(texts),
        }
