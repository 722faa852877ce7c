"""The words of each clause of a text, taken from the text's own words where that is exact (numba).

Per-topic sentiment (``models.topic_sentiment``) reads the clauses of every text with a topic
(:func:`nlp.clauses.split_clauses`), with their words. Cutting the clauses again cost about as much
as cutting the texts (6–8 µs per 60-character review with rjieba). But jieba (and rjieba) cut a text
run by run: punctuation such as "，" or "！" is never inside a run, so it is a word of its own, and
the words between two such words are exactly what cutting the text between them gives. A clause
that is exactly such a stretch therefore has those words; :func:`clause_words` takes them from the
text's words, and cuts only the other clauses: those that ``split_clauses`` merged (a short
fragment joined to its neighbour), split before a contrastive word inside a run ("很好但是贵"), or
that hold whitespace or a "." (which jieba keeps inside runs), about a quarter of them.

:func:`_spans` decides it for a batch in one compiled pass: per text, the stretches of words
between separator words, their characters compared with the clauses' characters in order; a clause
gets a stretch's words only if the two streams are equal and the clause starts and ends where the
stretch does. ``tests/test_segment_taxonomy.py`` checks that every clause gets the words cutting it
gives."""

from __future__ import annotations

from collections.abc import Sequence

import numba as nb
import numpy as np

from nlp.clauses import PUNCTUATION
from nlp.codepoints import PackedWords, packed, packed_words
from nlp.segment import Segmenter

# punctuation split_clauses splits at that jieba never puts inside a run ("." it does: "3.5")
_SEPARATORS = np.zeros(0x10000, np.bool_)
_SEPARATORS[[ord(c) for c in PUNCTUATION if c != "." and not c.isspace()]] = True


@nb.njit(cache=True, nogil=True)
def _spans(cps: np.ndarray, starts: np.ndarray, doc_words: np.ndarray, rows: np.ndarray, ccps: np.ndarray,
           cstarts: np.ndarray, row_clauses: np.ndarray, separator: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per clause, the range of words (``lo``, ``hi``: indexes into the texts' words) that are its
    words, or ``lo = -1`` where it has to be cut. Text ``rows[r]`` (its words ``doc_words[rows[r]]`` …
    ``doc_words[rows[r] + 1]``) has the clauses ``row_clauses[r]`` … ``row_clauses[r + 1]``."""
    n_clauses = len(cstarts) - 1
    lo = np.full(n_clauses, -1, np.int64)
    hi = np.full(n_clauses, -1, np.int64)
    longest = 0
    for r in range(len(rows)):
        longest = max(longest, doc_words[rows[r] + 1] - doc_words[rows[r]])
    g_lo = np.empty(longest + 1, np.int64)    # each stretch's first word, last word + 1, characters
    g_hi = np.empty(longest + 1, np.int64)
    g_len = np.empty(longest + 1, np.int64)
    for r in range(len(rows)):
        w0, w1 = doc_words[rows[r]], doc_words[rows[r] + 1]
        n = 0
        open_ = False
        for w in range(w0, w1):
            a, b = starts[w], starts[w + 1]
            sep = b > a
            for i in range(a, b):
                c = cps[i]
                if c >= len(separator) or not separator[c]:
                    sep = False
                    break
            if sep:
                open_ = False
            else:
                if not open_:
                    g_lo[n], g_len[n] = w, 0
                    n += 1
                    open_ = True
                g_hi[n - 1] = w + 1
                g_len[n - 1] += b - a
        # the stretches' characters, in order, must be the clauses' characters, in order
        c0, c1 = row_clauses[r], row_clauses[r + 1]
        p, end = cstarts[c0], cstarts[c1]
        same = True
        for k in range(n):
            for w in range(g_lo[k], g_hi[k]):
                for i in range(starts[w], starts[w + 1]):
                    if p >= end or ccps[p] != cps[i]:
                        same = False
                        break
                    p += 1
                if not same:
                    break
            if not same:
                break
        if not same or p != end:
            continue
        k = 0
        at = 0   # where stretch k starts in the stream
        for c in range(c0, c1):
            c_at, c_len = cstarts[c] - cstarts[c0], cstarts[c + 1] - cstarts[c]
            while k < n and at < c_at:
                at += g_len[k]
                k += 1
            if k < n and at == c_at and g_len[k] == c_len:
                lo[c], hi[c] = g_lo[k], g_hi[k]
    return lo, hi


@nb.njit(cache=True, nogil=True)
def _copied(cps: np.ndarray, starts: np.ndarray, lo: np.ndarray, hi: np.ndarray, ptr: np.ndarray,
            join: np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The packed form (code points, word starts, each group's first word) of groups of runs of the
    packed words ``cps``/``starts``: group ``g`` is the runs ``ptr[g]`` … ``ptr[g + 1]`` (run ``r``:
    words ``lo[r]`` … ``hi[r]``) one after the other, with a word of the one code point ``join``
    between each two (none where ``join < 0``)."""
    n = len(ptr) - 1
    sep = 1 if join >= 0 else 0
    n_words, n_cps = 0, 0
    for g in range(n):
        for r in range(ptr[g], ptr[g + 1]):
            between = sep if r > ptr[g] else 0
            n_words += hi[r] - lo[r] + between
            n_cps += starts[hi[r]] - starts[lo[r]] + between
    out_cps = np.empty(n_cps, np.int64)
    out_starts = np.empty(n_words + 1, np.int64)
    out_docs = np.empty(n + 1, np.int64)
    w, p = 0, 0
    out_starts[0], out_docs[0] = 0, 0
    for g in range(n):
        for r in range(ptr[g], ptr[g + 1]):
            if sep and r > ptr[g]:
                out_cps[p] = join
                p += 1
                w += 1
                out_starts[w] = p
            for t in range(lo[r], hi[r]):
                for i in range(starts[t], starts[t + 1]):
                    out_cps[p] = cps[i]
                    p += 1
                w += 1
                out_starts[w] = p
        out_docs[g + 1] = w
    return out_cps, out_starts, out_docs


def clause_words(words: Sequence[Sequence[str]], rows: Sequence[int], clauses: Sequence[Sequence[str]],
                 segmenter: Segmenter) -> PackedWords:
    """The words of every clause of ``clauses`` (``clauses[j]``: the clauses of text ``rows[j]``, in
    order, flattened), as ``segmenter.cut_many`` of them gives them; ``words``: the texts' words as
    ``segmenter`` cut them (a :class:`nlp.codepoints.PackedWords` is used as it is). Packed: the
    topic model reads them so, and their packed form is copied from the texts' (:func:`_copied`),
    not made again from the words."""
    flat = [c for cs in clauses for c in cs]
    if not flat:
        return PackedWords([])
    packed_text = packed_words(words)
    ccps, cstarts = packed(flat)
    per_row = np.zeros(len(clauses) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, clauses), np.int64, len(clauses)), out=per_row[1:])
    lo, hi = _spans(packed_text.cps, packed_text.starts, packed_text.docs, np.asarray(rows, np.int64), ccps,
                    cstarts, per_row, _SEPARATORS)
    text_words = packed_text.flat
    out = [text_words[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)]
    miss = np.flatnonzero(lo < 0).tolist()
    cut = PackedWords(segmenter.cut_many([flat[j] for j in miss]))
    for j, words_j in zip(miss, cut, strict=True):
        out[j] = words_j
    # the clauses' packed form, copied (_copied) from the texts' words and, after them, the cut ones'
    n_text = len(packed_text.starts) - 1
    cps = np.concatenate([packed_text.cps, cut.cps])
    starts = np.concatenate([packed_text.starts[:-1], cut.starts + packed_text.starts[-1]])
    lo[miss], hi[miss] = cut.docs[:-1] + n_text, cut.docs[1:] + n_text
    return PackedWords.of_arrays(out, *_copied(cps, starts, lo, hi, np.arange(len(flat) + 1), np.int64(-1)))


def joined_clause_words(words: PackedWords, groups: Sequence[Sequence[int]], join: str) -> PackedWords:
    """Per group of clauses (indexes into ``words``, the clauses' words as :func:`clause_words` gives
    them), their words one after the other with the word ``join`` (one character) between each two
    clauses: the words of the clauses joined by ``join`` (``models.topic_sentiment`` scores such
    texts). Packed: copied from ``words``' packed form, not made again."""
    lists: list[list[str]] = []
    for group in groups:
        out: list[str] = []
        for k, c in enumerate(group):
            if k:
                out.append(join)
            out.extend(words[c])
        lists.append(out)
    ptr = np.zeros(len(groups) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, groups), np.int64, len(groups)), out=ptr[1:])
    members = np.fromiter((c for group in groups for c in group), np.int64, int(ptr[-1]))
    return PackedWords.of_arrays(lists, *_copied(words.cps, words.starts, words.docs[members],
                                                 words.docs[members + 1], ptr, np.int64(ord(join))))


def warm_up() -> None:
    """Load the kernel's compiled code now (see ``nlp.keyword_rank.warm_up``)."""
    from nlp.segment import default_segmenter

    words = clause_words([["好评", "，", "不错"]], [0], [["好评", "不错"]], default_segmenter())
    joined_clause_words(words, [[0, 1]], "，")
