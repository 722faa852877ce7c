"""Per-topic sentiment: each topic a text mentions gets the polarity of the clauses that carry it.

"配送很快，但是质量太差" is positive about logistics and negative about product quality. For every
(text, topic) pair the text is split into clauses (:func:`nlp.clauses.split_clauses`); the topic's
clauses are those with one of its keywords or a lexical topic score above the key's threshold (at
least the best-scoring clause); a clause too short to hold an opinion ("这个价格") takes the next one
with it. When that selection is the whole text the topic gets the text's own sentiment; otherwise
the sentiment model scores the selected clauses. Nothing is trained here: the quality comes from
the sentiment model and the topic model's lexical view, and is measured on the aspect sets'
held-out per-aspect polarities (``models.train_topics``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from models.ensemble import Context, blend
from models.topics import TopicModel
from nlp import Taxonomy, default_segmenter
from nlp.clauses import CONTRAST, split_clauses
from nlp.codepoints import PackedWords

LABELS = ("neg", "neu", "pos")
SHORT_CLAUSE = 6   # a selected clause this short takes the following clause along (its opinion)
JOIN = "，"         # selected clauses are scored as one text, joined by this (a word of its own)


class TopicSentiment(NamedTuple):   # a tuple: made for every (text, topic), in half a frozen dataclass's time
    topic: str
    sentiment: str      # neg | neu | pos
    score: float        # P(pos) − P(neg) of the text the polarity was read from


def _focus(clauses: list[str], selected: list[int]) -> list[int]:
    """The selected clauses, each short one with the clause after it unless that one turns the
    opinion (starts with 但是, 不过 …)."""
    out: set[int] = set()
    for i in selected:
        out.add(i)
        if (len(clauses[i]) <= SHORT_CLAUSE and i + 1 < len(clauses)
                and not clauses[i + 1].startswith(CONTRAST)):
            out.add(i + 1)
    return sorted(out)


def topic_sentiments(texts: Sequence[str], topics: Sequence[Sequence[str]], doc_proba: np.ndarray,
                     score: Callable[[list[str], list[list[str]], Context], np.ndarray], topic_model: TopicModel | None,
                     taxonomy: Taxonomy, labels: Sequence[str] = LABELS,
                     clause_weight: float | None = None,
                     words: Sequence[Sequence[str]] | None = None) -> list[list[TopicSentiment]]:
    """Per row, one :class:`TopicSentiment` per topic in ``topics`` (same order).

    ``doc_proba`` holds the texts' own sentiment probabilities (columns in ``labels`` order);
    ``score(texts, tokens, context)`` maps extra texts (selected clauses, with their words) to
    probabilities in the same layout; ``context`` (:class:`models.ensemble.Context`) holds the
    probabilities each will be blended with, so that a cascade can screen the blend
    (:func:`models.ensemble.predict_in_context`). Clauses are segmented once: the words of selected clauses joined by
    :data:`JOIN` are their words joined by it (jieba cuts at punctuation), so no text is cut twice; given
    ``words`` (the texts' words), a clause that is a stretch of them between punctuation takes its words
    from them (:func:`nlp.clause_words.clause_words`), and only the others are cut. A topic read
    from its clauses gets ``softmax(w·log p_clauses + (1 − w)·log p_text)``, ``w = clause_weight``
    (default: the topic model's, tuned on dev), so the text's context still counts."""
    w = clause_weight if clause_weight is not None else (topic_model.clause_weight if topic_model else 1.0)
    li = {lab: i for i, lab in enumerate(labels)}
    plan: list[list[tuple[str, int | None]]] = []     # per row: (topic, index into extra texts or None)
    extra: list[str] = []
    extra_groups: list[list[int]] = []   # per extra text, its clauses (indexes into ``flat``)
    clause_rows: list[tuple[int, list[str]]] = []
    for i, (text, keys) in enumerate(zip(texts, topics, strict=True)):
        if keys:
            clauses = split_clauses(text)
            if len(clauses) > 1:
                clause_rows.append((i, clauses))
    flat = [c for _, cs in clause_rows for c in cs]
    # compiled: numba is imported with it, here
    from nlp.clause_words import clause_words, joined_clause_words

    if words is None:
        flat_tokens = PackedWords(default_segmenter().cut_many(flat))
    else:   # the texts' own words where that is exact
        flat_tokens = clause_words(words, [i for i, _ in clause_rows], [cs for _, cs in clause_rows],
                                   default_segmenter())
    start_of: dict[int, int] = {}   # row → its first clause in ``flat``
    flat_evidence = taxonomy.match_evidence_many(flat)   # one scan for every clause, not a call per clause
    p = topic_model.lexical_proba(flat, flat_tokens) if topic_model is not None and flat else None
    # per key, whether each clause of ``flat`` scores above the key's threshold: compared and turned
    # into lists once for all rows, not row by row (numpy calls cost more than the few clauses)
    above_all = (p >= topic_model.thresholds).T.tolist() if p is not None and topic_model is not None else None
    pos = 0
    for i, cs in clause_rows:
        start_of[i] = pos
        pos += len(cs)
    clauses_of = dict(clause_rows)
    key_index = {k: j for j, k in enumerate(topic_model.keys)} if topic_model is not None else {}
    for i, keys in enumerate(topics):
        row: list[tuple[str, int | None]] = []
        clauses = clauses_of.get(i)
        if clauses is not None:
            lo, hi = start_of[i], start_of[i] + len(clauses)
            evidence = flat_evidence[lo:hi]
        for key in keys:
            if clauses is None:
                row.append((key, None))
                continue
            hits = [c for c, ev in enumerate(evidence) if key in ev]
            if above_all is not None and key in key_index:
                assert p is not None
                j = key_index[key]
                hits += [c for c, up in enumerate(above_all[j][lo:hi]) if up and c not in hits]
                if not hits:   # no clause above the threshold: the best-scoring one (first on a tie)
                    hits = [int(p[lo:hi, j].argmax())]
            chosen = _focus(clauses, hits)
            if not hits or len(chosen) == len(clauses):
                row.append((key, None))
            else:
                row.append((key, len(extra)))
                extra.append(JOIN.join(clauses[c] for c in chosen))
                extra_groups.append([lo + c for c in chosen])
        plan.append(row)
    if extra:   # each selected text is read with its whole text's probabilities (weight 1 − w)
        own_rows = [i for i, row in enumerate(plan) for _, k in row if k is not None]
        extra_tokens = joined_clause_words(flat_tokens, extra_groups, JOIN)   # their words, packed
        extra_proba = score(extra, extra_tokens, Context(doc_proba[own_rows], 1 - w))
    else:
        extra_proba = np.zeros((0, len(labels)), np.float32)
    # every (row, topic) at once: the text's own probabilities, or their blend with its clauses'
    pairs = [(i, k) for i, row in enumerate(plan) for _, k in row]
    own = [n for n, (_, k) in enumerate(pairs) if k is None]
    mixed = [n for n, (_, k) in enumerate(pairs) if k is not None]
    read: dict[int, tuple[str, float]] = {}
    if own:
        read.update(_read(own, doc_proba[[pairs[n][0] for n in own]], labels, li))
    if mixed:
        read.update(_read(mixed, blend([extra_proba[[pairs[n][1] for n in mixed]],
                                        doc_proba[[pairs[n][0] for n in mixed]]], (w, 1 - w)), labels, li))
    out: list[list[TopicSentiment]] = []
    n = 0
    for row in plan:
        res = []
        for key, _ in row:
            label, sc = read[n]
            res.append(TopicSentiment(key, label, round(sc, 4)))
            n += 1
        out.append(res)
    return out


def _read(members: list[int], p: np.ndarray, labels: Sequence[str], li: dict[str, int]) -> dict[int, tuple[str, float]]:
    """(label, P(pos) − P(neg)) of each probability row, keyed by ``members``."""
    names = np.asarray(labels)[p.argmax(axis=1)].tolist()
    scores = (p[:, li["pos"]] - p[:, li["neg"]]).tolist()
    return dict(zip(members, zip(names, scores, strict=True), strict=True))

