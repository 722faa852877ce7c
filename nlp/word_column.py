"""The stored form of a batch's words, encoded by a compiled kernel (numba): ``feedback_nlp.tokens``
holds each text's words joined by :data:`nlp.segment.WORD_SEP` (:func:`nlp.segment.join_words`),
and :func:`join_words_utf8` gives the whole batch's joined texts as one UTF-8 buffer and their byte
offsets, the two buffers of an Arrow string array (``pipelines.enrich`` builds the column from them).

The words come packed (:class:`nlp.codepoints.PackedWords`, made once per batch for the scoring
kernels), so one pass over their code points writes every text: a join and an encode per text, then
Arrow's conversion of each string, cost 2.4–3.4 µs per 60-character review; this 0.2–0.3."""

from __future__ import annotations

from collections.abc import Sequence

import numba as nb
import numpy as np

from nlp.codepoints import offsets, packed_words
from nlp.segment import WORD_SEP, join_words


@nb.njit(cache=True, nogil=True)
def _join_utf8(cps: np.ndarray, starts: np.ndarray, doc_words: np.ndarray, sep: np.uint8
               ) -> tuple[np.ndarray, np.ndarray]:
    n_docs = len(doc_words) - 1
    out = np.empty(4 * len(cps) + len(starts), np.uint8)   # at most 4 bytes a code point, 1 a separator
    at = np.zeros(n_docs + 1, np.int64)
    m = 0
    for d in range(n_docs):
        for w in range(doc_words[d], doc_words[d + 1]):
            if w > doc_words[d]:
                out[m] = sep
                m += 1
            for i in range(starts[w], starts[w + 1]):
                c = cps[i]
                if c < 0x80:
                    out[m] = c
                    m += 1
                elif c < 0x800:
                    out[m] = 0xC0 | (c >> 6)
                    out[m + 1] = 0x80 | (c & 0x3F)
                    m += 2
                elif c < 0x10000:
                    out[m] = 0xE0 | (c >> 12)
                    out[m + 1] = 0x80 | ((c >> 6) & 0x3F)
                    out[m + 2] = 0x80 | (c & 0x3F)
                    m += 3
                else:
                    out[m] = 0xF0 | (c >> 18)
                    out[m + 1] = 0x80 | ((c >> 12) & 0x3F)
                    out[m + 2] = 0x80 | ((c >> 6) & 0x3F)
                    out[m + 3] = 0x80 | (c & 0x3F)
                    m += 4
        at[d + 1] = m
    return at, out[:m]


def join_words_utf8(docs: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nlp.segment.join_words` of ``docs``, encoded: each joined text's UTF-8 byte offsets
    (``len(docs) + 1``) and the bytes of all of them one after the other (uint8). Words
    :func:`~nlp.segment.join_words` refuses (empty, holding a space) and lone surrogates (which have
    no UTF-8) go through it and Python's encoder instead, so they fail as they do there."""
    words = packed_words(docs)
    cps, starts = words.cps, words.starts
    sep = ord(WORD_SEP)
    if len(starts) > 1 and (np.diff(starts).min() == 0 or (cps == sep).any()
                            or ((cps >= 0xD800) & (cps <= 0xDFFF)).any()):
        joined = [s.encode("utf-8") for s in join_words(docs)]   # raises for a bad word or a surrogate
        return offsets(map(len, joined), len(joined)), np.frombuffer(b"".join(joined), np.uint8)
    return _join_utf8(cps, starts, words.docs, np.uint8(sep))


def warm_up() -> None:
    """Load the kernel's compiled code now (see ``nlp.keyword_rank.warm_up``)."""
    join_words_utf8([["快递", "很快"]])
