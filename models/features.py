"""Lexical features shared by the linear models: TF-IDF on jieba words and on character n-grams.

``TextFeatures`` fits, applies and persists the two vectorisers (vocabularies in ``model.json``,
IDF vectors in ``weights.npz``, never pickles). The baseline sentiment model and the topic model
both use it, so a text is featurised one way everywhere.

Fitting uses scikit-learn's vectorisers. Serving (:meth:`TextFeatures.transform`) counts the same
features without a Python loop per n-gram: the texts become one array of code points, each
character n-gram one integer (21 bits per character), looked up in a hash index of the fitted vocabulary's
keys (``pandas.Index.get_indexer``); words are looked up once per token. The counts then go
through the same TF-IDF steps scikit-learn applies (sublinear tf, idf, l2 norm), so the matrix is
the one ``TfidfVectorizer.transform`` returns, value for value (``tests/test_speed.py``). The linear
models score through :meth:`TextFeatures.linear`, which multiplies each block by its own weights
instead of stacking the blocks first.
Configurations this path does not cover (word n-grams beyond unigrams, character n-grams longer
than 3, binary counts, accent stripping) fall back to scikit-learn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l1, inplace_csr_row_normalize_l2

from nlp import default_segmenter


def word_ngrams(tokens: Sequence[str], lo: int = 1, hi: int = 2) -> list[str]:
    """Word n-grams of a token list (n from ``lo`` to ``hi``, joined with a space)."""
    toks = [t for t in tokens if not t.isspace()]
    out: list[str] = []
    for n in range(lo, hi + 1):
        out.extend(" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1))
    return out


class _WordAnalyzer:
    """Picklable-free callable for TfidfVectorizer over pre-tokenised documents."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def __call__(self, tokens: Sequence[str]) -> list[str]:
        return word_ngrams(tokens, self.lo, self.hi)


_WHITE_SPACES = re.compile(r"\s\s+")   # scikit-learn's char analyzer collapses these to one space
_BITS = 21                              # every code point fits (max 0x10FFFF)
MAX_FAST_CHAR_N = 3                     # 3 × 21 bits in an int64


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)


class _CharLookup:
    """A fitted character n-gram vocabulary as integer keys in a hash index, one per n."""

    def __init__(self, vocabulary: dict[str, int], lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.tables: dict[int, tuple[pd.Index, np.ndarray]] = {}
        terms = list(vocabulary)
        ids = np.fromiter(vocabulary.values(), np.int64, len(terms))
        lengths = np.fromiter(map(len, terms), np.int64, len(terms))
        cps = _codepoints("".join(terms))
        starts = np.cumsum(lengths) - lengths
        for n in range(lo, hi + 1):
            of_n = np.flatnonzero(lengths == n)
            keys = np.zeros(len(of_n), np.int64)
            for k in range(n):
                keys = (keys << _BITS) | cps[starts[of_n] + k]
            self.tables[n] = (pd.Index(keys), ids[of_n])

    def features(self, docs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(document index, feature index) of every in-vocabulary n-gram of ``docs`` (already
        lower-cased and whitespace-collapsed as scikit-learn's char analyzer does)."""
        lengths = np.fromiter(map(len, docs), np.int64, len(docs))
        cps = _codepoints("".join(docs))
        doc_of = np.repeat(np.arange(len(docs), dtype=np.int64), lengths)
        room = np.repeat(np.cumsum(lengths), lengths) - np.arange(len(cps), dtype=np.int64)  # chars left in its doc
        rows, cols = [], []
        for n in range(self.lo, self.hi + 1):
            index, ids = self.tables[n]
            at = np.flatnonzero(room >= n) if n > 1 else np.arange(len(cps))
            if not len(at) or not len(ids):
                continue
            keys = cps[at]
            for k in range(1, n):
                keys = (keys << _BITS) | cps[at + k]
            pos = index.get_indexer(keys)
            hit = pos >= 0
            rows.append(doc_of[at[hit]])
            cols.append(ids[pos[hit]])
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(rows), np.concatenate(cols)


def _tfidf(vec: TfidfVectorizer, rows: np.ndarray, cols: np.ndarray, n_docs: int, n_features: int) -> sp.csr_matrix:
    """The matrix ``vec.transform`` returns for documents whose in-vocabulary features are the
    (row, column) pairs given: counts as ``CountVectorizer`` builds them (float, indices sorted),
    then ``TfidfTransformer``'s steps. The pairs are counted by scipy's COO → CSR conversion, which
    sorts each row's few columns (a 60-character text has about 130 in-vocabulary n-grams) instead
    of sorting all pairs of the batch at once: half the time of ``np.unique`` on the pairs."""
    index_dtype = np.int32 if max(n_docs, n_features) <= np.iinfo(np.int32).max else np.int64
    x = sp.coo_matrix((np.ones(len(rows), vec.dtype), (rows.astype(index_dtype), cols.astype(index_dtype))),
                      shape=(n_docs, n_features)).tocsr()   # duplicates summed, indices sorted
    x.has_sorted_indices = True
    if vec.sublinear_tf:
        np.log(x.data, x.data)
        x.data += 1.0
    if vec.use_idf:
        x.data *= vec.idf_[x.indices]
    if vec.norm in ("l1", "l2") and n_docs:   # what sklearn's normalize runs, without its per-call checks
        (inplace_csr_row_normalize_l2 if vec.norm == "l2" else inplace_csr_row_normalize_l1)(x)
    elif vec.norm is not None and n_docs:
        x = normalize(x, norm=vec.norm, copy=False)
    return x


def _vocabulary(vec: TfidfVectorizer) -> dict[str, int]:
    """The vocabulary ``vec.transform`` would use (the fitted one, else the one given)."""
    return vec.vocabulary_ if hasattr(vec, "vocabulary_") else vec.vocabulary


@dataclass(frozen=True)
class FeatureConfig:
    word_ngrams: tuple[int, int] = (1, 1)
    char_ngrams: tuple[int, int] = (1, 3)
    word_weight: float = 0.5        # the word block's scale next to the character block
    max_word_features: int = 100_000
    max_char_features: int = 300_000
    min_df: int = 2


class TextFeatures:
    """Word + character TF-IDF, stacked as one sparse matrix (words scaled by ``word_weight``)."""

    def __init__(self, config: FeatureConfig) -> None:
        c = self.config = config
        self.word_vec = TfidfVectorizer(analyzer=_WordAnalyzer(*c.word_ngrams), sublinear_tf=True,
                                        min_df=c.min_df, max_features=c.max_word_features, dtype=np.float32)
        self.char_vec = TfidfVectorizer(analyzer="char", ngram_range=c.char_ngrams, sublinear_tf=True,
                                        min_df=c.min_df, max_features=c.max_char_features,
                                        lowercase=True, dtype=np.float32)
        self._char_lookup: tuple[dict[str, int], _CharLookup] | None = None   # built on first transform
        self._coef_split: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None   # see linear()

    @staticmethod
    def tokens(texts: Sequence[str], tokens: Sequence[Sequence[str]] | None) -> Sequence[Sequence[str]]:
        return tokens if tokens is not None else default_segmenter().cut_many(texts)

    def fit_transform(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> sp.csr_matrix:
        toks = self.tokens(texts, tokens)
        return self._stack(self.word_vec.fit_transform(toks), self.char_vec.fit_transform(texts))

    def transform(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> sp.csr_matrix:
        toks = self.tokens(texts, tokens)
        return self._stack(self._word_matrix(toks), self._char_matrix(texts))

    def linear(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None, coef: np.ndarray) -> np.ndarray:
        """``transform(texts, tokens) @ coef.T`` for a linear model's ``coef`` (classes × features),
        without stacking the word and character blocks into one matrix: each block is multiplied by
        its own columns of ``coef`` (kept transposed and contiguous per ``coef``). Equal to the
        stacked product up to float rounding (the sums are grouped by block)."""
        toks = self.tokens(texts, tokens)
        words, chars = self._split_coef(coef)
        out = np.asarray(self._char_matrix(texts) @ chars)
        out += np.asarray(self._word_matrix(toks) @ words) * np.float32(self.config.word_weight)
        return out

    def _split_coef(self, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._coef_split is None or self._coef_split[0] is not coef:
            n_words = len(self.word_vec.idf_)
            if coef.shape[1] != n_words + len(self.char_vec.idf_):
                raise ValueError(f"coef has {coef.shape[1]} features, the vectorisers {self.size}")
            self._coef_split = (coef, np.ascontiguousarray(coef[:, :n_words].T),
                                np.ascontiguousarray(coef[:, n_words:].T))
        return self._coef_split[1], self._coef_split[2]

    def transform_slow(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> sp.csr_matrix:
        """:meth:`transform` through scikit-learn's own vectorisers (the reference of the fast path)."""
        toks = self.tokens(texts, tokens)
        return self._stack(self.word_vec.transform(toks), self.char_vec.transform(texts))

    def _word_matrix(self, toks: Sequence[Sequence[str]]) -> sp.spmatrix:
        vec = self.word_vec
        if self.config.word_ngrams != (1, 1) or not hasattr(vec, "idf_") or vec.binary:
            return vec.transform(toks)
        vocab = _vocabulary(vec)
        lengths = np.fromiter(map(len, toks), np.int64, len(toks))
        flat = list(chain.from_iterable(toks))
        ids = np.fromiter(map(vocab.get, flat, repeat(-1)), np.int64, len(flat))
        if any(map(str.isspace, flat)):  # word_ngrams drops whitespace tokens (the segmenter never makes them)
            ids[np.fromiter(map(str.isspace, flat), bool, len(flat))] = -1
        rows = np.repeat(np.arange(len(toks), dtype=np.int64), lengths)
        hit = ids >= 0
        return _tfidf(vec, rows[hit], ids[hit], len(toks), len(vocab))

    def _char_matrix(self, texts: Sequence[str]) -> sp.spmatrix:
        vec = self.char_vec
        lo, hi = self.config.char_ngrams
        if (not (1 <= lo <= hi <= MAX_FAST_CHAR_N) or not hasattr(vec, "idf_") or not vec.lowercase or vec.binary
                or vec.analyzer != "char" or vec.strip_accents or vec.preprocessor is not None):
            return vec.transform(texts)
        vocab = _vocabulary(vec)
        if self._char_lookup is None or self._char_lookup[0] is not vocab:
            self._char_lookup = (vocab, _CharLookup(vocab, lo, hi))
        docs = [_WHITE_SPACES.sub(" ", t.lower()) for t in texts]
        rows, cols = self._char_lookup[1].features(docs)
        return _tfidf(vec, rows, cols, len(docs), len(vocab))

    def _stack(self, words: sp.spmatrix, chars: sp.spmatrix) -> sp.csr_matrix:
        return sp.hstack([words * np.float32(self.config.word_weight), chars], format="csr")

    @property
    def size(self) -> int:
        return len(self.word_vec.idf_) + len(self.char_vec.idf_)

    def names(self) -> list[str]:
        return list(self.word_vec.get_feature_names_out()) + list(self.char_vec.get_feature_names_out())

    # -- persistence: vocabularies go into model.json, IDF vectors into weights.npz -------------------
    def vocab_doc(self) -> dict:
        return {"word_vocab": list(self.word_vec.get_feature_names_out()),
                "char_vocab": list(self.char_vec.get_feature_names_out())}

    def idf_arrays(self) -> dict[str, np.ndarray]:
        return {"word_idf": self.word_vec.idf_.astype(np.float32), "char_idf": self.char_vec.idf_.astype(np.float32)}

    def restore(self, doc: dict, arrays: dict[str, np.ndarray]) -> None:
        """Set vocabularies and IDF from a saved artifact; ``ValueError`` if they do not fit."""
        for vec, vocab, idf in ((self.word_vec, doc["word_vocab"], arrays["word_idf"]),
                                (self.char_vec, doc["char_vocab"], arrays["char_idf"])):
            if len(vocab) != len(idf):
                raise ValueError("vocabulary and IDF sizes differ")
            vec.vocabulary = dict(zip(vocab, range(len(vocab)), strict=True))
            vec.idf_ = idf
