"""Compiled TF-IDF serving (numba): look-ups, counts, TF-IDF and linear scores in one pass per text.

:class:`models.features.TextFeatures` serves both linear models with these kernels. A fitted
vocabulary becomes a :class:`CharIndex` or :class:`WordIndex`, an open-addressing hash table over
integer keys:

* a character n-gram's key is its code points packed 21 bits each (n ≤ 3 fits an int64), so the
  key *is* the n-gram and a hit needs no further check;
* a word's key is a 64-bit hash of its code points; the table keeps every term's code points, and
  a hit counts only when they equal the token's (no collision can map a word to another's feature);
* a key's value holds its feature id in up to two vocabularies (:func:`pack_ids`): two models that
  read the same texts with the same analysers share one table, and one probe per n-gram or word
  finds a text's features for both (``models.features.SharedLookups``).

:func:`term_ids` turns a batch of texts (one array of code points and each text's offsets) into
the feature ids of every in-vocabulary term, text by text. :func:`tfidf_rows` turns those into the
rows ``TfidfVectorizer.transform`` returns (sorted indices, sublinear tf, idf, l2 norm) and
:func:`tfidf_scores` into those rows times a linear model's weights without materialising them.
Both repeat scikit-learn's float32 arithmetic step by step (the logarithms come from numpy as a
table, the norms are summed in float64 as its Cython kernel sums them, the products accumulate in
float32 in index order as scipy's sparse × dense product does), so the matrix equals scikit-learn's
bit for bit and the scores equal ``matrix @ coef.T`` (``tests/test_speed.py``).

Kernels compile on first use and are cached beside this file (``cache=True``; ``NUMBA_CACHE_DIR``
moves the cache where the package folder is read-only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numba as nb
import numpy as np
import scipy.sparse as sp

from nlp.codepoints import CODEPOINT_BITS, codepoints, offsets, packed, packed_words
from nlp.int_table import EMPTY, build_table, prefetch, same_term, slot, table_bits, word_key, word_keys

BITS = CODEPOINT_BITS
MAX_CHAR_N = 3                     # 3 × 21 bits in an int64
_LOW = np.int64(0xFFFF_FFFF)   # a table value's first-vocabulary part (see pack_ids)

# Python's str.isspace() code points: a word token made only of these is dropped, as scikit-learn's
# word analyzer (``models.features.word_ngrams``) drops it
_SPACES = np.array([9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, *range(8192, 8203), 8232, 8233,
                    8239, 8287, 12288], np.int64)


_AHEAD = 12   # n-grams ahead whose table slot _char_ids fetches


@nb.njit(cache=True, nogil=True, inline="always")
def _ngram(cps: np.ndarray, i: np.int64, n: np.int64) -> np.int64:
    """The key of the n-gram at ``cps[i:i + n]`` (code points packed :data:`BITS` each)."""
    key = cps[i]
    for k in range(1, n):
        key = (key << BITS) | cps[i + k]
    return key


@nb.njit(cache=True, nogil=True)
def _char_ids(cps: np.ndarray, offsets: np.ndarray, lo: np.int64, hi: np.int64, table: np.ndarray,
              shift: np.uint64, unigram: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_docs = len(offsets) - 1
    indptr = np.zeros(n_docs + 1, np.int64)
    indptr_b = np.zeros(n_docs + 1, np.int64)
    size = max(np.int64(1), (hi - lo + 1) * len(cps))
    out = np.empty(size, np.int32)
    out_b = np.empty(size, np.int32)
    mask = len(table) - 1
    direct = len(unigram)
    m = 0
    m_b = 0
    for d in range(n_docs):
        a, b = offsets[d], offsets[d + 1]
        for n in range(lo, hi + 1):
            if n > 1:
                for i in range(a, min(a + _AHEAD, b - n + 1)):
                    prefetch(table, slot(_ngram(cps, i, n), shift))
            for i in range(a, b - n + 1):
                key = cps[i]
                if n == 1 and key < direct:   # most characters: a small array, no hashing
                    v = unigram[key]
                else:
                    # the slot of the n-gram _AHEAD places on is fetched now: a vocabulary's table does
                    # not fit the caches, and each probe waited on memory (past the text's end it is
                    # the next text's, or a harmless miss); 5.6-6.2 -> 4.6 us per 60-character review
                    if i + _AHEAD + n <= len(cps):
                        prefetch(table, slot(_ngram(cps, i + _AHEAD, n), shift))
                    key = _ngram(cps, i, n)
                    s = slot(key, shift)
                    v = 0
                    while table[s, 0] != EMPTY:
                        if table[s, 0] == key:
                            v = table[s, 1]
                            break
                        s = (s + 1) & mask
                # its id in each vocabulary that holds it (pack_ids); written out here and in _word_ids,
                # since through a helper (even inlined, counters passed and returned) numba kept the
                # counters out of registers: 4.3 -> 6.0 us per 60-character text
                if v & _LOW:
                    out[m] = (v & _LOW) - 1
                    m += 1
                if v >> 32:
                    out_b[m_b] = (v >> 32) - 1
                    m_b += 1
        indptr[d + 1] = m
        indptr_b[d + 1] = m_b
    return indptr, out[:m], indptr_b, out_b[:m_b]


@nb.njit(cache=True, nogil=True)
def _word_ids(cps: np.ndarray, starts: np.ndarray, doc_tokens: np.ndarray, table: np.ndarray,
              shift: np.uint64, term_cps: np.ndarray, term_starts: np.ndarray, term_cps_b: np.ndarray,
              term_starts_b: np.ndarray, spaces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_docs = len(doc_tokens) - 1
    indptr = np.zeros(n_docs + 1, np.int64)
    indptr_b = np.zeros(n_docs + 1, np.int64)
    out = np.empty(max(np.int64(1), len(starts) - 1), np.int32)
    out_b = np.empty(max(np.int64(1), len(starts) - 1), np.int32)
    mask = len(table) - 1
    m = 0
    m_b = 0
    for d in range(n_docs):
        for t in range(doc_tokens[d], doc_tokens[d + 1]):
            a, b = starts[t], starts[t + 1]
            blank = b > a
            i = a
            while blank and i < b:
                blank = False
                for c in spaces:
                    if cps[i] == c:
                        blank = True
                        break
                i += 1
            if blank:
                continue
            key = word_key(cps, a, b)
            s = slot(key, shift)
            v = 0
            while table[s, 0] != EMPTY:   # a hash hit counts only if the code points are the term's
                if table[s, 0] == key:
                    v = table[s, 1]   # the term as the first vocabulary has it, else as the second
                    if (same_term(cps, a, b, term_cps, term_starts, (v & _LOW) - 1) if v & _LOW
                            else same_term(cps, a, b, term_cps_b, term_starts_b, (v >> 32) - 1)):
                        break
                    v = 0
                s = (s + 1) & mask
            if v & _LOW:   # its id in each vocabulary that holds it (pack_ids)
                out[m] = (v & _LOW) - 1
                m += 1
            if v >> 32:
                out_b[m_b] = (v >> 32) - 1
                m_b += 1
        indptr[d + 1] = m
        indptr_b[d + 1] = m_b
    return indptr, out[:m], indptr_b, out_b[:m_b]


_SORT_BUCKETS = 256   # one counting pass on an id's top 8 bits, then insertion sort within buckets


@nb.njit(cache=True, nogil=True, inline="always")
def _sort_ids(ids: np.ndarray, a: np.int64, b: np.int64, shift: np.int64, count: np.ndarray,
              out: np.ndarray) -> None:
    """``ids[a:b]`` sorted into ``out[:b - a]``: bucketed by the top bits, then an insertion sort that
    only moves ids within their bucket (a text's hundred-odd ids fall in a few per bucket), about a
    third of the time of a quicksort on so few."""
    count[:] = 0
    for i in range(a, b):
        count[(ids[i] >> shift) + 1] += 1
    for k in range(1, len(count)):
        count[k] += count[k - 1]
    for i in range(a, b):
        k = ids[i] >> shift
        out[count[k]] = ids[i]
        count[k] += 1
    for i in range(1, b - a):
        x = out[i]
        j = i - 1
        while j >= 0 and out[j] > x:
            out[j + 1] = out[j]
            j -= 1
        out[j + 1] = x


@nb.njit(cache=True, nogil=True, inline="always")
def _row(ids: np.ndarray, a: np.int64, b: np.int64, log1: np.ndarray, idf: np.ndarray, sublinear: bool,
         l2: bool, shift: np.int64, count: np.ndarray, s: np.ndarray, cols: np.ndarray,
         vals: np.ndarray) -> np.int64:
    """One text's TF-IDF row into ``cols``/``vals`` (sorted columns); returns its length. ``shift``,
    ``count`` and ``s`` are :func:`_sort_ids`' scratch."""
    if b == a:
        return np.int64(0)
    _sort_ids(ids, a, b, shift, count, s)
    size = b - a
    n = 0
    run = 1
    for i in range(1, size + 1):
        if i < size and s[i] == s[i - 1]:
            run += 1
            continue
        col = s[i - 1]
        v = np.float32((log1[run] if sublinear else np.float32(run)) * idf[col])
        cols[n] = col
        vals[n] = v
        n += 1
        run = 1
    if l2:
        total = 0.0
        for i in range(n):
            total += np.float64(vals[i] * vals[i])
        if total != 0.0:
            total = np.sqrt(total)
            for i in range(n):
                vals[i] = np.float32(np.float64(vals[i]) / total)
    return np.int64(n)


@nb.njit(cache=True, nogil=True)
def _scratch(indptr: np.ndarray, n_features: np.int64) -> tuple[np.int64, np.ndarray, np.ndarray]:
    longest = 0
    for d in range(len(indptr) - 1):
        longest = max(longest, indptr[d + 1] - indptr[d])
    bits = 0
    while (np.int64(1) << bits) < n_features:
        bits += 1
    return max(np.int64(0), bits - 8), np.zeros(_SORT_BUCKETS + 1, np.int64), np.empty(max(1, longest), np.int32)


@nb.njit(cache=True, nogil=True)
def _rows(indptr: np.ndarray, ids: np.ndarray, log1: np.ndarray, idf: np.ndarray, sublinear: bool,
          l2: bool, n_features: np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_docs = len(indptr) - 1
    out_ptr = np.zeros(n_docs + 1, np.int64)
    cols = np.empty(max(np.int64(1), len(ids)), np.int32)
    vals = np.empty(max(np.int64(1), len(ids)), np.float32)
    shift, count, s = _scratch(indptr, n_features)
    m = 0
    for d in range(n_docs):
        n = _row(ids, indptr[d], indptr[d + 1], log1, idf, sublinear, l2, shift, count, s, cols[m:], vals[m:])
        m += n
        out_ptr[d + 1] = m
    return out_ptr, cols[:m], vals[:m]


@nb.njit(cache=True, nogil=True)
def _scores(indptr: np.ndarray, ids: np.ndarray, log1: np.ndarray, idf: np.ndarray, sublinear: bool,
            l2: bool, coef_t: np.ndarray) -> np.ndarray:
    n_docs = len(indptr) - 1
    n_out = coef_t.shape[1]
    out = np.zeros((n_docs, n_out), np.float32)
    shift, count, s = _scratch(indptr, np.int64(len(coef_t)))
    cols = np.empty(len(s), np.int32)
    vals = np.empty(len(s), np.float32)
    if n_docs:
        for j in range(indptr[0], indptr[1]):
            prefetch(coef_t, ids[j])
    for d in range(n_docs):
        n = _row(ids, indptr[d], indptr[d + 1], log1, idf, sublinear, l2, shift, count, s, cols, vals)
        # the next text's weight rows are fetched while this one's are summed: a large model's do not
        # fit the caches, and the sums waited on memory (12.5 -> 10.3 us per 60-character review over
        # the 8 calls of an analysis)
        a = indptr[d + 1]
        m = (indptr[d + 2] if d + 2 <= n_docs else a) - a
        for i in range(n):
            if i < m:
                prefetch(coef_t, ids[a + i])
            v = vals[i]
            w = coef_t[cols[i]]
            for k in range(n_out):
                out[d, k] += v * w[k]
        for i in range(n, m):
            prefetch(coef_t, ids[a + i])
    return out


def _terms(vocabulary: dict[str, int] | list[str]) -> list[str]:
    """The vocabulary's terms in feature order (term ``j`` is feature ``j``); a list is that already."""
    if isinstance(vocabulary, list):
        return vocabulary
    ids = np.fromiter(vocabulary.values(), np.int64, len(vocabulary))
    if np.array_equal(ids, np.arange(len(ids))):   # a restored artifact's vocabulary: already in order
        return list(vocabulary)
    if not np.array_equal(np.sort(ids), np.arange(len(ids))):
        raise ValueError("the vocabulary's feature ids are not 0 … n−1")
    terms = list(vocabulary)
    return [terms[i] for i in np.argsort(ids)]


def pack_ids(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A term's feature ids in two vocabularies as one int64, the value its table holds: the first
    vocabulary's id + 1 in the low 32 bits, the second's + 1 in the high 32 (0: not in that one)."""
    return (first.astype(np.int64) + 1) | ((second.astype(np.int64) + 1) << 32)


@nb.njit(cache=True, nogil=True)
def _add_second(table: np.ndarray, shift: np.uint64, keys: np.ndarray, cps: np.ndarray, starts: np.ndarray,
                term_cps: np.ndarray, term_starts: np.ndarray, verify: bool) -> np.int64:
    """Merge a second vocabulary (term ``j``: ``keys[j]``, code points ``cps[starts[j]:starts[j + 1]]``)
    into a table of the first's: a term both hold gets the second's id in the high half of its value
    (:func:`pack_ids`), any other is added. ``verify``: keys are hashes, so a term is the first's only
    if its code points are too (``term_cps``/``term_starts``: the first's). Returns the terms added."""
    mask = len(table) - 1
    added = 0
    for j in range(len(keys)):
        s = slot(keys[j], shift)
        while True:
            if table[s, 0] == EMPTY:
                table[s, 0] = keys[j]
                table[s, 1] = np.int64(j + 1) << 32
                added += 1
                break
            v = table[s, 1]
            if table[s, 0] == keys[j] and (not verify or (
                    v & _LOW and same_term(cps, starts[j], starts[j + 1], term_cps, term_starts, (v & _LOW) - 1))):
                table[s, 1] = v | (np.int64(j + 1) << 32)
                break
            s = (s + 1) & mask
    return added


def _table(keys: np.ndarray, bits: int) -> tuple[np.ndarray, np.uint64]:
    """A table of ``bits`` bits holding one vocabulary's ``keys`` (term ``j``: :func:`pack_ids` of ``j``
    alone), and its shift."""
    ids = np.arange(len(keys))
    return build_table(keys, pack_ids(ids, np.full(len(keys), -1)), np.int64(bits)), np.uint64(64 - bits)


def _joint_table(keys: np.ndarray, keys_b: np.ndarray, add: Callable[[np.ndarray, np.uint64], int]
                 ) -> tuple[np.ndarray, np.uint64]:
    """A table of the first vocabulary's ``keys`` with the second's merged in by ``add(table, shift)``:
    at most half full, as :func:`nlp.int_table.table_bits` sizes one (tried at the larger vocabulary's
    size first: the two mostly overlap)."""
    bits = table_bits(max(len(keys), len(keys_b)))
    while True:
        table, shift = _table(keys, bits)
        if 2 * (len(keys) + add(table, shift)) <= len(table):
            return table, shift
        bits += 1


Ids = tuple[np.ndarray, np.ndarray]   # (row pointer, feature ids) of a batch


class CharIndex:
    """A fitted character n-gram vocabulary (n from ``lo`` to ``hi`` ≤ :data:`MAX_CHAR_N`) as a hash
    table of packed n-grams, plus an array for the single characters of the Basic Multilingual Plane.
    Code points are stored plus one, so no key is zero and n-grams of different lengths never share
    a key. With ``second``, a second vocabulary of the same n-grams shares the table: one probe per
    n-gram finds a text's features in both (:meth:`ids_both`)."""

    def __init__(self, vocabulary: dict[str, int] | list[str], lo: int, hi: int,
                 second: dict[str, int] | list[str] | None = None) -> None:
        if not 1 <= lo <= hi <= MAX_CHAR_N:
            raise ValueError(f"character n-grams {lo}–{hi}: the compiled path packs at most {MAX_CHAR_N}")
        self.lo, self.hi = lo, hi
        keys = self._keys(_terms(vocabulary))
        if second is None:
            self.table, self.shift = _table(keys, table_bits(len(keys)))
        else:
            keys_b, none = self._keys(_terms(second)), np.zeros(1, np.int64)
            self.table, self.shift = _joint_table(keys, keys_b, lambda table, shift: _add_second(
                table, shift, keys_b, none, none, none, none, False))
        self._direct()

    def _direct(self) -> None:
        """The single characters of the Basic Multilingual Plane in an array (their table values)."""
        self.unigram = np.zeros(0x10001 if self.lo == 1 else 0, np.int64)
        used = np.flatnonzero(self.table[:, 0] != EMPTY)
        keys = self.table[used, 0]
        single = keys < len(self.unigram)   # only a single character's key is this small
        self.unigram[keys[single]] = self.table[used[single], 1]

    def _keys(self, terms: list[str]) -> np.ndarray:
        lengths = np.fromiter(map(len, terms), np.int64, len(terms))
        if len(terms) and (lengths.min() < self.lo or lengths.max() > self.hi):
            raise ValueError(f"the vocabulary holds n-grams outside {self.lo}–{self.hi}")
        keys = np.zeros(len(terms), np.int64)
        cps = codepoints("".join(terms)) + 1
        starts = offsets(lengths, len(terms))
        for n in range(1, self.hi + 1):   # left to right: shift in one code point per position
            of_n = np.flatnonzero(lengths >= n)
            keys[of_n] = (keys[of_n] << BITS) | cps[starts[of_n] + n - 1]
        return keys

    def ids(self, docs: Sequence[str]) -> Ids:
        """(row pointer, feature ids) of every in-vocabulary n-gram of each of ``docs`` (already
        lower-cased and whitespace-collapsed as scikit-learn's char analyzer does)."""
        return self.ids_both(docs)[0]

    def ids_both(self, docs: Sequence[str]) -> tuple[Ids, Ids]:
        """:meth:`ids` in the first vocabulary and in the second (empty without one)."""
        cps, starts = packed(docs)
        ptr, ids, ptr_b, ids_b = _char_ids(cps + 1, starts, np.int64(self.lo), np.int64(self.hi), self.table,
                                           self.shift, self.unigram)
        return (ptr, ids), (ptr_b, ids_b)


class WordIndex:
    """A fitted word vocabulary as a hash table of the words' code-point hashes (hits verified).
    With ``second``, a second vocabulary shares the table (see :class:`CharIndex`)."""

    def __init__(self, vocabulary: dict[str, int] | list[str],
                 second: dict[str, int] | list[str] | None = None) -> None:
        self.term_cps, self.term_starts = self._terms(vocabulary)
        keys = word_keys(self.term_cps, self.term_starts)
        if second is None:
            self.term_cps_b, self.term_starts_b = self.term_cps[:0], self.term_starts[:1]
            self.table, self.shift = _table(keys, table_bits(len(keys)))
        else:
            self.term_cps_b, self.term_starts_b = self._terms(second)
            keys_b = word_keys(self.term_cps_b, self.term_starts_b)
            self.table, self.shift = _joint_table(keys, keys_b, lambda table, shift: _add_second(
                table, shift, keys_b, self.term_cps_b, self.term_starts_b, self.term_cps, self.term_starts, True))

    @staticmethod
    def _terms(vocabulary: dict[str, int] | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The terms' code points, one after the other, and where each starts (then the end)."""
        return packed(_terms(vocabulary))

    def ids(self, tokens: Sequence[Sequence[str]]) -> Ids:
        """(row pointer, feature ids) of the in-vocabulary words of each token list; whitespace
        tokens are skipped as scikit-learn's word analyzer skips them."""
        return self.ids_both(tokens)[0]

    def ids_both(self, tokens: Sequence[Sequence[str]]) -> tuple[Ids, Ids]:
        """:meth:`ids` in the first vocabulary and in the second (empty without one)."""
        words = packed_words(tokens)
        ptr, ids, ptr_b, ids_b = _word_ids(words.cps, words.starts, words.docs, self.table, self.shift,
                                           self.term_cps, self.term_starts, self.term_cps_b, self.term_starts_b,
                                           _SPACES)
        return (ptr, ids), (ptr_b, ids_b)


class Weighting:
    """scikit-learn's TF-IDF steps for one vectoriser fitted with idf: (sublinear) tf, idf, l2 norm."""

    def __init__(self, idf: np.ndarray, sublinear: bool, l2: bool) -> None:
        self.idf, self.sublinear, self.l2 = idf, sublinear, l2
        self._log1 = np.zeros(1, np.float32)

    def _logs(self, indptr: np.ndarray) -> np.ndarray:
        """1 + log(count) for every count a row may hold, from numpy's float32 log (as scikit-learn
        computes it), grown when a longer row comes."""
        longest = int(np.diff(indptr).max()) if len(indptr) > 1 else 0
        if longest >= len(self._log1):
            with np.errstate(divide="ignore"):
                table = np.log(np.arange(max(longest + 1, 2 * len(self._log1)), dtype=np.float32))
            table += np.float32(1.0)
            table[0] = 0.0
            self._log1 = table
        return self._log1

    def _check(self, ids: np.ndarray, n_features: int) -> None:
        """The kernels index arrays without bounds checks: ids must fit the vectoriser's features."""
        if n_features > len(self.idf):
            raise ValueError(f"{n_features} features but {len(self.idf)} idf weights")
        if len(ids) and (int(ids.max()) >= n_features or int(ids.min()) < 0):
            raise ValueError(f"feature ids {int(ids.min())}…{int(ids.max())} outside 0…{n_features - 1}")

    def rows(self, indptr: np.ndarray, ids: np.ndarray, n_features: int) -> sp.csr_matrix:
        """The TF-IDF matrix of the texts whose feature ids ``ids`` holds (row pointer ``indptr``)."""
        self._check(ids, n_features)
        ptr, cols, vals = _rows(indptr, ids, self._logs(indptr), self.idf, self.sublinear, self.l2,
                                np.int64(n_features))
        index = np.int32 if max(len(indptr), n_features, len(cols)) <= np.iinfo(np.int32).max else np.int64
        x = sp.csr_matrix((vals, cols.astype(index), ptr.astype(index)), shape=(len(indptr) - 1, n_features))
        x.has_sorted_indices = True
        return x

    def scores(self, indptr: np.ndarray, ids: np.ndarray, coef_t: np.ndarray) -> np.ndarray:
        """``rows(indptr, ids) @ coef_t`` (``coef_t``: features × outputs, float32), row by row."""
        self._check(ids, len(coef_t))
        return _scores(indptr, ids, self._logs(indptr), self.idf, self.sublinear, self.l2, coef_t)


def warm_up() -> None:
    """Load every serving kernel's cached machine code now (importing numba and initialising its
    compiler takes most of the 0.3–0.45 s), by running each on a tiny vocabulary with the argument
    types a fitted model uses. For a caller that is waiting anyway (``pipelines.cli``, while Prefect's
    temporary API starts), so that the first model to score does not pay it."""
    vocab = {"快": 0, "快递": 1, "递": 2}
    idf = np.ones(len(vocab), np.float32)
    coef_t = np.ones((len(vocab), 3), np.float32)
    weighting = Weighting(idf, True, True)
    for indptr, ids in (CharIndex(vocab, 1, 3, second=vocab).ids(["快递很快"]),   # as SharedLookups makes them
                        WordIndex(vocab, second=vocab).ids([["快递", "很快"]])):
        weighting.scores(indptr, ids, coef_t)
