"""Compiled ranking of each text's keywords (numba), for :func:`nlp.segment.keywords_many`.

A text's keywords are its distinct content words ordered by ``(−count × idf, word)``, the first
``k`` kept. :func:`top_words` does that for a batch in one call: the batch's words are one array
of code points (``starts`` gives each word's span, ``doc_words`` each text's words), ``weights``
each word's idf as a keyword (0: not a keyword). Equal words are found by comparing code points,
and ties in score are broken by the words' code points, which is how Python orders strings, so the
result is what ``sorted`` over ``(−n × w, word)`` tuples gives."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, inline="always")
def _same(cps: np.ndarray, starts: np.ndarray, a: np.int64, b: np.int64) -> bool:
    la, lb = starts[a + 1] - starts[a], starts[b + 1] - starts[b]
    if la != lb:
        return False
    for i in range(la):  # noqa: SIM110 (numba compiles the loop; it does not take all() of a generator)
        if cps[starts[a] + i] != cps[starts[b] + i]:
            return False
    return True


@nb.njit(cache=True, nogil=True, inline="always")
def _before(cps: np.ndarray, starts: np.ndarray, a: np.int64, b: np.int64) -> bool:
    """Whether word ``a`` sorts before word ``b`` (code point order, a prefix first)."""
    la, lb = starts[a + 1] - starts[a], starts[b + 1] - starts[b]
    for i in range(min(la, lb)):
        ca, cb = cps[starts[a] + i], cps[starts[b] + i]
        if ca != cb:
            return ca < cb
    return la < lb


@nb.njit(cache=True, nogil=True)
def top_words(cps: np.ndarray, starts: np.ndarray, doc_words: np.ndarray, weights: np.ndarray,
              k: np.int64) -> tuple[np.ndarray, np.ndarray]:
    """(row pointer, word indices): each text's top ``k`` distinct keywords, best first, each as
    the index of its first occurrence."""
    n_docs = len(doc_words) - 1
    ptr = np.zeros(n_docs + 1, np.int64)
    out = np.empty(max(np.int64(1), min(k * n_docs, len(weights))), np.int64)
    longest = 0
    for d in range(n_docs):
        longest = max(longest, doc_words[d + 1] - doc_words[d])
    first = np.empty(max(1, longest), np.int64)     # a distinct word's first occurrence
    count = np.empty(max(1, longest), np.int64)
    score = np.empty(max(1, longest), np.float64)
    taken = np.empty(max(1, longest), np.bool_)
    m = 0
    for d in range(n_docs):
        n = 0
        for t in range(doc_words[d], doc_words[d + 1]):
            w = weights[t]
            if w == 0.0:
                continue
            seen = -1
            for j in range(n):
                if weights[first[j]] == w and _same(cps, starts, first[j], t):
                    seen = j
                    break
            if seen >= 0:
                count[seen] += 1
            else:
                first[n] = t
                count[n] = 1
                n += 1
        for j in range(n):
            score[j] = -count[j] * weights[first[j]]   # as Python computes −n × w
            taken[j] = False
        for _ in range(min(k, n)):
            best = -1
            for j in range(n):
                if taken[j]:
                    continue
                if (best < 0 or score[j] < score[best]
                        or (score[j] == score[best] and _before(cps, starts, first[j], first[best]))):
                    best = j
            taken[best] = True
            out[m] = first[best]
            m += 1
        ptr[d + 1] = m
    return ptr, out[:m]
