"""Emotion of a piece of Chinese feedback by lexicon rules: anger, disappointment, anxiety, joy
or none.

``default_emotion_lexicon().classify(text, sentiment)`` returns ``(label, evidence)``: the label
and the words that decided it (a negated hit keeps its negator, e.g. ``"不太满意"``). The rules
live in ``nlp/resources/emotion.yaml`` (data, not code; its header explains them): weighted
words per emotion, negation (``不满意`` is not joy, ``不生气`` is not anger), degree words
(``很``, ``有点``), intensifying suffixes (``烦死了``), contrast (``…, 但是 …`` weighs the later
clause more) and exclamation marks (raise anger). The words are found leftmost-longest, as by a
regex alternation of them, by one compiled scan of a whole batch (``nlp.word_scan``), so the cost
barely grows with the lexicon.

``sentiment`` (``"neg"``/``"neu"``/``"pos"``, e.g. from the sentiment model) gates the result:
joy is never returned for negative feedback, and anger, disappointment or anxiety never for
positive feedback. When anger and disappointment score about the same, disappointment (the
milder label) wins unless the customer is shouting (``!``), which already boosts anger.

Texts are expected normalised (``nlp.normalize.normalize_text``): simplified, half-width.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from nlp.taxonomy import _UniqueKeyLoader
from nlp.wordlists import trie_alternation as alternation  # the trie form: same matches, fewer compares

if TYPE_CHECKING:   # imported when first used (see EmotionLexicon.matches_many)
    from nlp.word_scan import WordScanner

EMOTIONS = ("anger", "disappointment", "anxiety", "joy", "none")
NONE = "none"
DEFAULT_EMOTION_PATH = resources.files("nlp") / "resources" / "emotion.yaml"

_SCORED = EMOTIONS[:-1]
_IGNORE = ""  # owner of ``ignore`` entries: matched (to shadow shorter words), never scored
# on a tie between anger and disappointment the milder label wins; otherwise this order
_TIE_ORDER = ("disappointment", "anger", "anxiety", "joy")
_TIE_MARGIN = 0.05
# what a negated hit becomes when the lexicon does not say: "不满意" → disappointment,
# "一点也不失望" → joy, "不生气" / "别担心" → nothing
DEFAULT_NEGATION_FLIP = {"joy": "disappointment", "disappointment": "joy", "anger": NONE, "anxiety": NONE}


class EmotionLexiconError(ValueError):
    """An emotion lexicon that cannot be used; the message names the file and the problem."""


class EmotionLexicon:
    """Weighted emotion words plus negation, degree, suffix, contrast and exclamation rules."""

    def __init__(self, words: Mapping[str, Mapping[str, float]], *, threshold: float = 1.0,
                 negators: Sequence[str] = (), negation_gap: Sequence[str] = (), negation_window: int = 8,
                 negation_flip: Mapping[str, str] | None = None, negation_factor: float = 0.8,
                 degree: Mapping[str, float] | None = None, suffix: Mapping[str, float] | None = None,
                 negation_rhetorical: Sequence[str] = (),
                 contrast: Sequence[str] = (), contrast_factor: float = 1.5,
                 past: Sequence[str] = (), past_factor: float = 0.5,
                 exclamation_per_mark: float = 0.25, exclamation_max_marks: int = 4,
                 ignore: Sequence[str] = (), source: str = "<memory>") -> None:
        self.source = source
        self.threshold = float(threshold)
        self._entry: dict[str, tuple[str, float]] = {}
        for emotion, entries in words.items():
            if emotion not in _SCORED:
                raise EmotionLexiconError(f"emotion lexicon {source}: unknown emotion {emotion!r}, "
                                          f"expected one of {', '.join(_SCORED)}")
            for word, weight in entries.items():
                if word in self._entry and self._entry[word][0] != emotion:
                    raise EmotionLexiconError(f"emotion lexicon {source}: {word!r} is listed under both "
                                              f"{self._entry[word][0]} and {emotion}")
                self._entry[word] = (emotion, float(weight))
        for word in ignore:
            self._entry.setdefault(word, (_IGNORE, 0.0))
        self._scanner: WordScanner | None = None   # the words' scan, built when first used (it loads numba)

        self._flip = dict(DEFAULT_NEGATION_FLIP if negation_flip is None else negation_flip)
        self._neg_factor = float(negation_factor)
        self._window = int(negation_window)
        # prefixes are matched reversed, anchored at the hit: "[gap]{0,2}negator" read backwards
        gap = f"(?:{alternation(negation_gap, reverse=True)}){{0,2}}" if negation_gap else ""
        self._neg_re = re.compile(f"{gap}(?:{alternation(negators, reverse=True)})") if negators else None
        # "这不是骗人是什么": a rhetorical "不是 … 是什么 / 吗" asserts the word instead of negating it
        self._rhetorical_re = re.compile(alternation(negation_rhetorical)) if negation_rhetorical else None
        self._degree = dict(degree or {})
        self._deg_re = re.compile(alternation(self._degree, reverse=True)) if self._degree else None
        self._suffix = dict(suffix or {})
        self._suf_re = re.compile(alternation(self._suffix)) if self._suffix else None
        self._contrast_re = re.compile(alternation(contrast)) if contrast else None
        self._contrast_factor = float(contrast_factor)
        # a past marker discounts hits after it up to the end of its clause ("以前挺喜欢…, 现在…");
        # not after 比/如/跟/和/于 ("比以前方便" compares, it does not look back)
        clause = "[^,.!?;:。、…，！？；：]*"
        self._past_re = re.compile(f"(?<![比如跟和于])(?:{alternation(past)})({clause})") if past else None
        self._past_factor = float(past_factor)
        self._excl_per_mark = float(exclamation_per_mark)
        self._excl_max = int(exclamation_max_marks)

    def __len__(self) -> int:
        return sum(1 for e, _ in self._entry.values() if e != _IGNORE)

    def words(self, emotion: str) -> dict[str, float]:
        """The lexicon entries of one emotion (word → weight)."""
        return {w: wt for w, (e, wt) in self._entry.items() if e == emotion}

    def matches_many(self, texts: Sequence[str]) -> list[list[tuple[int, int, str]]]:
        """Per text, the lexicon words in it as (start, end, word), leftmost-longest, in order."""
        out: list[list[tuple[int, int, str]]] = [[] for _ in texts]
        if not self._entry:
            return out
        if self._scanner is None:
            from nlp.word_scan import WordScanner

            self._scanner = WordScanner(self._entry)
        for d, a, word in self._scanner.found(texts):
            out[d].append((a, a + len(word), word))
        return out

    def scores(self, text: str, matches: Sequence[tuple[int, int, str]] | None = None,
               ) -> tuple[dict[str, float], dict[str, list[str]]]:
        """Emotion → score and emotion → evidence words, before sentiment gating and threshold.
        ``matches``: the text's :meth:`matches_many` when the caller found them for a batch."""
        scores = dict.fromkeys(_SCORED, 0.0)
        evidence: dict[str, list[str]] = {e: [] for e in _SCORED}
        if not text:
            return scores, evidence
        if matches is None:
            matches = self.matches_many([text])[0]
        if not matches:   # no lexicon word (a third of feedback): the contrast and past scans can wait
            return scores, evidence
        contrast_at = -1
        if self._contrast_re is not None:
            c = self._contrast_re.search(text)
            if c is not None:
                contrast_at = c.end()
        past: list[tuple[int, int]] = []
        if self._past_re is not None:
            past = [p.span(1) for p in self._past_re.finditer(text)]
        entry, window = self._entry, self._window
        for start, end, word in matches:
            emotion, weight = entry[word]
            if not emotion:
                continue
            shown = word
            rev = text[max(0, start - window):start][::-1]
            pos = 0
            if self._neg_re is not None and (n := self._neg_re.match(rev)) is not None:
                negator = rev[:n.end()][::-1]
                if not (negator.startswith("不是") and self._rhetorical_re is not None
                        and self._rhetorical_re.match(text, end) is not None):
                    pos = n.end()
                    shown = negator + word
                    emotion = self._flip.get(emotion, emotion)
                    if emotion not in scores:  # cancelled ("不生气", "别担心")
                        continue
                    weight *= self._neg_factor
            if self._deg_re is not None and (d := self._deg_re.match(rev, pos)) is not None:
                weight *= self._degree[d.group(0)[::-1]]
            if self._suf_re is not None and (s := self._suf_re.match(text, end)) is not None:
                weight *= self._suffix[s.group(0)]
            if 0 <= contrast_at <= start:
                weight *= self._contrast_factor
            if past and any(a <= start < b for a, b in past):
                weight *= self._past_factor
            scores[emotion] += weight
            if shown not in evidence[emotion]:
                evidence[emotion].append(shown)
        if scores["anger"] > 0 and self._excl_per_mark:
            marks = min(text.count("!") + text.count("！"), self._excl_max)  # "！" if not normalised
            scores["anger"] *= 1 + self._excl_per_mark * marks
        return scores, evidence

    def classify(self, text: str, sentiment: str | None = None,
                 matches: Sequence[tuple[int, int, str]] | None = None) -> tuple[str, list[str]]:
        """``(label, evidence words)``; label is one of :data:`EMOTIONS`. ``sentiment`` (``neg``,
        ``neu`` or ``pos``) gates it: no joy for ``neg``, no anger/disappointment/anxiety for ``pos``.
        ``matches``: as for :meth:`scores`."""
        scores, evidence = self.scores(text, matches)
        if sentiment == "neg":
            scores["joy"] = 0.0
        elif sentiment == "pos":
            scores["anger"] = scores["disappointment"] = scores["anxiety"] = 0.0
        best = max(_TIE_ORDER, key=scores.__getitem__)
        top = scores[best]
        if top < self.threshold:
            return NONE, []
        # near-tie between anger and disappointment: the milder label
        if best == "anger" and scores["disappointment"] >= top - _TIE_MARGIN:
            best = "disappointment"
        return best, evidence[best]

    def classify_many(self, texts: Iterable[str],
                      sentiments: Iterable[str | None] | None = None) -> list[tuple[str, list[str]]]:
        """:meth:`classify` over a batch (``sentiments`` aligned with ``texts`` when given)."""
        texts = list(texts)
        sents = [None] * len(texts) if sentiments is None else list(sentiments)
        if len(sents) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(sents)} sentiments")
        found = self.matches_many(texts)   # one scan for the batch
        if self.threshold <= 0:   # even a text without a lexicon word has an emotion then
            return [self.classify(t, s, m) for t, s, m in zip(texts, sents, found, strict=True)]
        # a text without one (a third of feedback) scores 0 for every emotion, under the threshold
        return [self.classify(t, s, m) if m else (NONE, []) for t, s, m in zip(texts, sents, found, strict=True)]


def _number(value: object, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise EmotionLexiconError(f"emotion lexicon {source}: {what} must be a positive number, got {value!r}")
    return float(value)


def _str_list(value: object, what: str, source: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise EmotionLexiconError(f"emotion lexicon {source}: {what} must be a list of strings")
    return [str(v) for v in value if str(v).strip()]


def _weights(value: object, what: str, source: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EmotionLexiconError(f"emotion lexicon {source}: {what} must be a mapping of word: weight")
    return {str(k): _number(v, f"{what} {k!r}", source) for k, v in value.items() if str(k).strip()}


def _section(raw: dict, key: str, source: str) -> dict:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EmotionLexiconError(f"emotion lexicon {source}: {key!r} must be a mapping")
    return value


def load_emotion_lexicon(path: str | Path) -> EmotionLexicon:
    """Read and validate an emotion lexicon YAML file; errors name the file and the problem."""
    p = Path(path)
    source = str(p)
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise EmotionLexiconError(f"emotion lexicon not found: {p}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise EmotionLexiconError(f"emotion lexicon {p} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("emotions"), dict) or not raw["emotions"]:
        raise EmotionLexiconError(f"emotion lexicon {source} needs a non-empty 'emotions:' mapping")
    words = {str(e): _weights(ws, f"emotion {e!r}", source) for e, ws in raw["emotions"].items()}
    neg = _section(raw, "negation", source)
    flip = _section(neg, "flip", source)
    for k, v in flip.items():
        if k not in _SCORED or v not in EMOTIONS:
            raise EmotionLexiconError(f"emotion lexicon {source}: negation flip {k!r}: {v!r} must map an "
                                      f"emotion to an emotion or 'none'")
    contrast = _section(raw, "contrast", source)
    past = _section(raw, "past", source)
    excl = _section(raw, "exclamation", source)
    return EmotionLexicon(
        words,
        threshold=_number(raw.get("threshold", 1.0), "threshold", source),
        negators=_str_list(neg.get("negators"), "negation.negators", source),
        negation_gap=_str_list(neg.get("gap"), "negation.gap", source),
        negation_window=int(_number(neg.get("window", 8), "negation.window", source)),
        negation_flip={str(k): str(v) for k, v in flip.items()} if flip else None,
        negation_factor=_number(neg.get("factor", 0.8), "negation.factor", source),
        negation_rhetorical=_str_list(neg.get("rhetorical"), "negation.rhetorical", source),
        degree=_weights(raw.get("degree"), "degree", source),
        suffix=_weights(raw.get("suffix"), "suffix", source),
        contrast=_str_list(contrast.get("words"), "contrast.words", source),
        contrast_factor=_number(contrast.get("factor", 1.5), "contrast.factor", source),
        past=_str_list(past.get("words"), "past.words", source),
        past_factor=_number(past.get("factor", 0.5), "past.factor", source),
        exclamation_per_mark=_number(excl.get("per_mark", 0.25), "exclamation.per_mark", source),
        exclamation_max_marks=int(_number(excl.get("max_marks", 4), "exclamation.max_marks", source)),
        ignore=_str_list(raw.get("ignore"), "ignore", source),
        source=source,
    )


@lru_cache(maxsize=1)
def default_emotion_lexicon() -> EmotionLexicon:
    """The emotion lexicon shipped with cxloop."""
    with resources.as_file(DEFAULT_EMOTION_PATH) as p:
        return load_emotion_lexicon(p)
