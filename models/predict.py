"""Batch prediction: one call turns normalised texts into every NLP column cxloop stores.

``Analyzer`` bundles the sentiment model, the topic model, the taxonomy, the segmenter, the emotion
lexicon and the urgency rules. ``analyze(texts)`` returns a column dict ready to become an Arrow
table; the warehouse and ``cxloop predict`` both use it.

* **topics** — the topic model's keys joined with the keyword rules' (see :meth:`Analyzer.topics_of`);
  a key the model does not know (added to ``taxonomy.yaml`` later, e.g. an accepted emerging topic)
  is matched by its keywords.
* **topic_sentiments** — each topic's own polarity (``models.topic_sentiment``).
* **emotion**, **urgent** / **urgency_reasons** — ``nlp.emotion`` and ``nlp.urgency``; a positive
  text is never urgent ("感谢帮我拦住了诈骗").
* **sentiment** of a plain inquiry ("请问信用卡账单分期怎么操作?", ``nlp.inquiry``) the model is unsure
  about is neutral (see :func:`neutral_inquiries`); so is each such clause in per-topic polarity.
* **model_version** — the *analysis* version: sentiment model + topic model + taxonomy fingerprint +
  rule word lists' fingerprint (+ the segmentation engine when it is not jieba), so changing any of
  them re-scores stored rows on the next ``enrich``.

When the sentiment model contains the transformer whose embeddings a semantic topic model reads,
the encoder runs once per batch for both.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.ensemble import predict_in_context
from models.features import SharedLookups
from models.registry import (
    SentimentModel,
    encoder_dir_for,
    load_sentiment_model,
    load_topic_model,
    model_version_of,
    resolve_model,
    serving_version_of,
)
from models.topic_sentiment import topic_sentiments
from models.topics import TopicModel
from nlp import (
    EmotionLexicon,
    Segmenter,
    Taxonomy,
    default_emotion_lexicon,
    default_segmenter,
    default_taxonomy,
    detect_urgency,
    is_plain_inquiry,
    keywords_many,
    rules_fingerprint,
    segmenter_engine,
)
from nlp.codepoints import PackedWords

INQUIRY_CONFIDENCE = 0.9   # a model this sure of a label keeps it, inquiry or not (sarcasm: "请问筷子怎么用啊")
INQUIRY_WEIGHT = 0.75      # how far a plain inquiry's probabilities move towards neutral


_GC_LOCK = threading.Lock()
_gc_pauses = 0               # analyze calls under way (threads) that paused the cyclic collector
_gc_was_enabled = False      # whether it ran before the first of them paused it


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a batch, as it was before afterwards.

    ``analyze`` allocates millions of short-lived lists and tuples (words, clauses, rows), so the
    collector runs hundreds of times per batch and each full pass walks the long-lived model
    objects as well: about a tenth of the analysis time, for nothing, since a batch leaves no
    reference cycles behind (its objects go by reference counting). Nested and concurrent calls
    are counted so that the first to enter pauses it and the last to leave restarts it. A caller
    that turns the batch's lists into something else (``pipelines.enrich.enrich_batch``: Arrow
    columns) holds it around both, so that they are freed before the collector restarts: else its
    first pass walks every list the batch left alive (2.9 µs per 60-character review)."""
    global _gc_pauses, _gc_was_enabled
    with _GC_LOCK:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def neutral_inquiries(texts: Sequence[str], proba: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """``proba`` with each plain inquiry (asks, complains nowhere: ``nlp.inquiry``) whose top label is
    below ``INQUIRY_CONFIDENCE`` moved three quarters of the way to ``neu``: it becomes neutral, and its
    score keeps the model's sign at a quarter of its size. Review-trained models call many customer
    questions negative ("想问一下信用卡怎么调整账单日?" → neg 0.58); counted as complaints they would
    inflate negative rates and show up as emerging topics."""
    rows = [i for i in np.flatnonzero(proba.max(axis=1) < INQUIRY_CONFIDENCE) if is_plain_inquiry(texts[i])]
    if not rows:
        return proba
    out = proba.copy()
    neutral = np.zeros(out.shape[1], out.dtype)
    neutral[list(labels).index("neu")] = 1
    out[rows] = (1 - INQUIRY_WEIGHT) * out[rows] + INQUIRY_WEIGHT * neutral
    return out


def analysis_version(sentiment_version: str, topic_version: str, taxonomy: Taxonomy) -> str:
    """What a stored row was scored with: the models, the taxonomy, the emotion, urgency and inquiry
    word lists (``nlp.rules``), and a segmentation engine other than jieba (its words, keywords and
    word features differ on some texts)."""
    engine = segmenter_engine()
    return f"{sentiment_version}+{topic_version}+tax-{taxonomy.fingerprint}+rules-{rules_fingerprint()}" + (
        "" if engine == "jieba" else f"+seg-{engine}")


def current_analysis_version(models_home: Path | None, model: str | None, taxonomy: Taxonomy) -> str:
    """The ``model_version`` that rows scored now carry (without loading any model)."""
    return analysis_version(serving_version_of(resolve_model(model, models_home)),
                            model_version_of(resolve_model(None, models_home, task="topics")), taxonomy)


def _find_encoder(model: object, version: str):
    """The transformer inside a sentiment model (itself or an ensemble member) with ``version``."""
    for m in [model, *getattr(model, "members", [])]:
        if hasattr(m, "embed") and getattr(m, "meta", {}).get("model_version") == version:
            return m
    return None


@dataclass
class Analyzer:
    """Sentiment, topics with their own polarity, emotion, urgency and keywords for batches of text."""

    model: SentimentModel
    model_version: str
    taxonomy: Taxonomy
    segmenter: Segmenter
    topic_model: TopicModel | None = None   # None: keyword rules only
    encoder: object | None = None          # the transformer a semantic topic model reads
    emotions: EmotionLexicon = field(default_factory=default_emotion_lexicon)
    # the baseline sentiment model and the lexical topic model look each text up once for both
    shared: SharedLookups | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        mine, theirs = getattr(self.model, "text_features", None), getattr(self.topic_model, "features", None)
        if mine is not None and theirs is not None:
            self.shared = SharedLookups.of(mine, theirs)

    @classmethod
    def load(cls, model: str | None = None, models_home: Path | None = None,
             taxonomy: Taxonomy | None = None, cache_root: Path | None = None, quantize: bool = False,
             backend: str | None = None) -> Analyzer:
        """Load the sentiment model named ``model`` (see :func:`models.registry.resolve_model`) and the
        current topic model; ``cache_root`` holds converted base encoders, ``quantize`` serves
        transformers in dynamic int8, ``backend`` picks torch or ONNX Runtime for them (default:
        ``CXLOOP_SERVING``, see :func:`models.registry.serving_backend`)."""
        tax = taxonomy or default_taxonomy()
        path = resolve_model(model, models_home)
        sentiment = load_sentiment_model(path, cache_root, quantize=quantize, backend=backend)
        topic_dir = resolve_model(None, models_home, task="topics")
        topic_model = load_topic_model(topic_dir)
        encoder = None
        if topic_model.semantic and topic_model.encoder:
            encoder = _find_encoder(sentiment, topic_model.encoder["model_version"])
            if encoder is None:
                encoder = load_sentiment_model(encoder_dir_for(topic_dir, topic_model.encoder, models_home),
                                               cache_root, quantize=quantize, backend=backend)
        version = analysis_version(serving_version_of(path), topic_model.model_version, tax)
        return cls(sentiment, version, tax, default_segmenter(), topic_model, encoder, default_emotion_lexicon())

    def topics_of(self, texts: Sequence[str], tokens: Sequence[Sequence[str]],
                  embeddings: np.ndarray | None) -> list[list[str]]:
        """Taxonomy keys per text, in taxonomy order: the topic model's keys and the keyword rules'
        (a text that says 快递 is about logistics whatever the model thinks; the model adds the
        topics worded without keywords). Keys the model does not know come from the rules alone."""
        rules = self.taxonomy.match_many(texts)
        if self.topic_model is None:
            return rules
        learned = self.topic_model.decide(self.topic_model.proba(texts, tokens, embeddings))
        order = self.taxonomy.keys
        return [[k for k in order if k in m or k in r] for m, r in zip(learned, rules, strict=True)]

    def analyze(self, texts: Sequence[str]) -> dict[str, list]:
        """NLP columns for already-normalised ``texts`` (same order)."""
        with gc_paused():   # no cycles to collect in a batch: see gc_paused
            return self._analyze(texts)

    def _analyze(self, texts: Sequence[str]) -> dict[str, list]:
        tokens = self.segmenter.cut_many(texts)
        words = PackedWords(tokens)   # packed once for the kernels of both models and the keywords
        embeddings = self.encoder.embed(texts, remember=True) if self.encoder is not None and len(texts) else None
        names = self.model.labels
        # a shared encoder reuses ``embeddings``
        with self.shared.primed(texts, words) if self.shared is not None and len(texts) else nullcontext():
            raw = self.model.predict_proba(texts, words)
            topics = self.topics_of(texts, words, embeddings)
        proba = neutral_inquiries(texts, raw, names)
        labels = np.asarray(names)
        idx = {lab: i for i, lab in enumerate(names)}
        p_neg, p_neu, p_pos = (proba[:, idx[k]] for k in ("neg", "neu", "pos"))
        sentiment = labels[proba.argmax(axis=1)].tolist() if len(texts) else []
        per_topic = topic_sentiments(texts, topics, proba,
                                     lambda xs, ws, ctx: neutral_inquiries(
                                         xs, predict_in_context(self.model, xs, ws, ctx), names),
                                     self.topic_model, self.taxonomy, names,
                                     # the clauses' words from the texts' only if the clauses' cutter cut these
                                     words=words if self.segmenter is default_segmenter() else None)
        emotions = self.emotions.classify_many(texts, sentiment)
        reasons = [detect_urgency(t) if s != "pos" else [] for t, s in zip(texts, sentiment, strict=True)]
        return {
            "tokens": words,   # the token lists, packed (nlp.codepoints.PackedWords: enrich stores them from it)
            "keywords": keywords_many(words),
            "sentiment": sentiment,
            "sentiment_score": np.round(p_pos - p_neg, 4).tolist(),
            "p_neg": np.round(p_neg, 4).tolist(),
            "p_neu": np.round(p_neu, 4).tolist(),
            "p_pos": np.round(p_pos, 4).tolist(),
            "topics": topics,
            "topic_sentiments": [[{"topic": t.topic, "sentiment": t.sentiment, "score": t.score} for t in row]
                                 for row in per_topic],
            "emotion": [e for e, _ in emotions],
            "emotion_evidence": [ev for _, ev in emotions],
            "urgent": [bool(r) for r in reasons],
            "urgency_reasons": reasons,
            "model_version": [self.model_version] * len(texts),
        }
