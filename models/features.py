"""Lexical features shared by the linear models: TF-IDF on jieba words and on character n-grams.

``TextFeatures`` fits, applies and persists the two vectorisers (vocabularies as UTF-8 bytes and IDF
vectors in ``weights.npz``, never pickles). The baseline sentiment model and the topic model
both use it, so a text is featurised one way everywhere.

Fitting uses scikit-learn's vectorisers, made when first needed: serving a saved artifact never
imports scikit-learn (about 1 s of every command's start, with the SciPy modules it pulls in).
Serving (:meth:`TextFeatures.transform` and :meth:`TextFeatures.linear`) runs compiled kernels
(:mod:`models.tfidf_kernel`, imported when a model first scores): each character
n-gram and each word is looked up in a hash table of the fitted vocabulary, counted and weighted
per text as scikit-learn weights it (sublinear tf, idf, l2 norm), so the matrix is the one
``TfidfVectorizer.transform`` returns, bit for bit (``tests/test_speed.py``). The linear models
score through :meth:`TextFeatures.linear`, which multiplies each text's weighted features by the
model's weights as it goes, block by block, instead of building the matrix first.
Configurations the kernels do not cover (word n-grams beyond unigrams, character n-grams longer
than 3) fall back to scikit-learn. Two feature sets that read the same texts (the baseline sentiment
model's and the topic model's) look each text up once for both (:class:`SharedLookups`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from nlp import default_segmenter

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import TfidfVectorizer

    from models.tfidf_kernel import CharIndex, Weighting, WordIndex


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
_SEP = "\x00"   # joins a batch's texts (see char_docs): no whitespace, its own lower case, cased neither way


def char_docs(texts: Sequence[str]) -> list[str]:
    """The texts as scikit-learn's char analyzer reads them: lower-cased, runs of whitespace as one
    space. The batch is joined and done in three calls, not two per text (a third of a 60-character
    review's look-ups cost): the separator is no whitespace, so no run spans two texts, and as
    neither a cased nor a case-ignorable character it bounds ``lower``'s final-sigma context as
    the end of a text does."""
    texts = texts if isinstance(texts, list) else list(texts)
    joined = _SEP.join(texts)
    if len(texts) < 2 or joined.count(_SEP) != len(texts) - 1:   # a text holds the separator itself
        return [_WHITE_SPACES.sub(" ", t.lower()) for t in texts]
    return _WHITE_SPACES.sub(" ", joined.lower()).split(_SEP)


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
        self.config = config
        self._vecs: dict[str, TfidfVectorizer] = {}   # block → scikit-learn's vectoriser, made when first needed
        # block → a saved (terms in feature order, idf): serving builds its look-up tables from the
        # terms; the {term: id} dict scikit-learn wants is only made with its vectoriser (0.1 s per
        # 300,000 terms, about 0.2 s of every model load when it was made up front)
        self._restored: dict[str, tuple[list[str], np.ndarray]] = {}
        self._kernels: dict[str, tuple] = {}   # block → (vocabulary, idf, compiled kernel), see _kernel()
        self._coef_split: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None   # see linear()
        self._primed = threading.local()   # a thread's looked-up batch: see SharedLookups.primed

    def __getstate__(self) -> dict:   # picklable (a notebook's joblib.dump): without the per-thread batch
        return {**self.__dict__, "_primed": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _primed=threading.local())

    @property
    def word_vec(self) -> TfidfVectorizer:
        return self._vectorizer("word")

    @property
    def char_vec(self) -> TfidfVectorizer:
        return self._vectorizer("char")

    def _vectorizer(self, which: str) -> TfidfVectorizer:
        """scikit-learn's vectoriser of a block (``word`` or ``char``), with the restored vocabulary
        and IDF if any: for fitting, names and configurations the kernels do not cover."""
        vec = self._vecs.get(which)
        if vec is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            c = self.config
            if which == "word":
                vec = TfidfVectorizer(analyzer=_WordAnalyzer(*c.word_ngrams), sublinear_tf=True,
                                      min_df=c.min_df, max_features=c.max_word_features, dtype=np.float32)
            else:
                vec = TfidfVectorizer(analyzer="char", ngram_range=c.char_ngrams, sublinear_tf=True,
                                      min_df=c.min_df, max_features=c.max_char_features,
                                      lowercase=True, dtype=np.float32)
            if which in self._restored:
                terms, vec.idf_ = self._restored[which]
                vec.vocabulary = dict(zip(terms, range(len(terms)), strict=True))
            self._vecs[which] = vec
        return vec

    def _fitted(self, which: str) -> tuple[dict[str, int] | list[str], np.ndarray] | None:
        """(vocabulary, idf) of a block: the vectoriser's ({term: id}) once it exists, else the
        restored ones (the terms in feature order); None before fitting."""
        vec = self._vecs.get(which)
        if vec is None:
            return self._restored.get(which)
        return (_vocabulary(vec), vec.idf_) if hasattr(vec, "idf_") else None

    def _idf(self, which: str) -> np.ndarray:
        fitted = self._fitted(which)
        if fitted is None:
            raise ValueError(f"the {which} vectoriser is not fitted")
        return fitted[1]

    @staticmethod
    def tokens(texts: Sequence[str], tokens: Sequence[Sequence[str]] | None) -> Sequence[Sequence[str]]:
        return tokens if tokens is not None else default_segmenter().cut_many(texts)

    def fit_transform(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> sp.csr_matrix:
        toks = self.tokens(texts, tokens)
        return self._stack(self.word_vec.fit_transform(toks), self.char_vec.fit_transform(texts))

    def transform(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> sp.csr_matrix:
        toks = self.tokens(texts, tokens)
        return self._stack(self._block("word", toks), self._block("char", texts))

    def linear(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None, coef: np.ndarray) -> np.ndarray:
        """``transform(texts, tokens) @ coef.T`` for a linear model's ``coef`` (classes × features),
        without building the matrix: each block's kernel multiplies every text's weighted features
        by that block's columns of ``coef`` (kept transposed, contiguous and float32 per ``coef``).
        Equal to the stacked product up to float rounding (the sums are grouped by block)."""
        toks = self.tokens(texts, tokens)
        words, chars = self._split_coef(coef)
        out = self._block("char", texts, chars)
        out += self._block("word", toks, words) * np.float32(self.config.word_weight)
        return out

    def _split_coef(self, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._coef_split is None or self._coef_split[0] is not coef:
            n_words = len(self._idf("word"))
            if coef.shape[1] != n_words + len(self._idf("char")):
                raise ValueError(f"coef has {coef.shape[1]} features, the vectorisers {self.size}")
            self._coef_split = (coef, np.ascontiguousarray(coef[:, :n_words].T, dtype=np.float32),
                                np.ascontiguousarray(coef[:, n_words:].T, dtype=np.float32))
        return self._coef_split[1], self._coef_split[2]

    def transform_slow(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> sp.csr_matrix:
        """:meth:`transform` through scikit-learn's own vectorisers (the reference of the fast path)."""
        toks = self.tokens(texts, tokens)
        return self._stack(self.word_vec.transform(toks), self.char_vec.transform(texts))

    def _block(self, which: str, docs: Sequence, coef_t: np.ndarray | None = None) -> sp.csr_matrix | np.ndarray:
        """One block's TF-IDF matrix of ``docs`` (token lists for ``word``, texts for ``char``), or
        that matrix times ``coef_t`` when given."""
        kernel = self._kernel(which)
        if kernel is None:   # a configuration the kernels do not cover
            x = self._vectorizer(which).transform(docs)
            return x if coef_t is None else np.asarray(x @ coef_t)
        index, weighting = kernel
        primed = getattr(self._primed, which, None)
        if primed is not None and primed[0] is docs:   # looked up already, with another feature set's
            indptr, ids = primed[1]
        else:
            indptr, ids = index.ids(char_docs(docs) if which == "char" else docs)
        return (weighting.rows(indptr, ids, len(weighting.idf)) if coef_t is None
                else weighting.scores(indptr, ids, coef_t))

    def _kernel(self, which: str) -> tuple[CharIndex | WordIndex, Weighting] | None:
        """The compiled look-up and weighting of a fitted vectoriser (built once per vocabulary;
        numba is imported here, when a model first scores, not by every process that imports one)."""
        fitted = self._fitted(which)
        if fitted is None:   # not fitted
            return None
        vocab, idf = fitted
        cached = self._kernels.get(which)
        if cached is not None and cached[0] is vocab and cached[1] is idf:
            return cached[2]
        kernel = None
        if self._covers(which):
            from models.tfidf_kernel import CharIndex, Weighting, WordIndex

            index = WordIndex(vocab) if which == "word" else CharIndex(vocab, *self.config.char_ngrams)
            kernel = (index, Weighting(idf, True, True))
        self._kernels[which] = (vocab, idf, kernel)
        return kernel

    def _covers(self, which: str) -> bool:
        """Whether the kernels serve a block of this configuration (the vectorisers are made in
        _vectorizer only: sublinear tf, l2 norm, float32, lower-cased characters without accent
        stripping or a preprocessor; what varies is the n-gram ranges)."""
        from models.tfidf_kernel import MAX_CHAR_N

        lo, hi = self.config.char_ngrams
        return self.config.word_ngrams == (1, 1) if which == "word" else 1 <= lo <= hi <= MAX_CHAR_N

    def _stack(self, words: sp.spmatrix, chars: sp.spmatrix) -> sp.csr_matrix:
        return sp.hstack([words * np.float32(self.config.word_weight), chars], format="csr")

    @property
    def size(self) -> int:
        return len(self._idf("word")) + len(self._idf("char"))

    def names(self) -> list[str]:
        return list(self.word_vec.get_feature_names_out()) + list(self.char_vec.get_feature_names_out())

    # -- persistence: vocabularies and IDF vectors go into weights.npz (compressed) -------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The vocabularies (UTF-8, NUL-separated) and IDF vectors, for ``weights.npz``."""
        out = {}
        for which, vec in (("word", self.word_vec), ("char", self.char_vec)):
            out[f"{which}_vocab"] = vocab_array(list(vec.get_feature_names_out()))
            out[f"{which}_idf"] = vec.idf_.astype(np.float32)
        return out

    def restore(self, doc: dict, arrays: dict[str, np.ndarray]) -> None:
        """Set vocabularies and IDF from a saved artifact; ``ValueError`` if they do not fit. Artifacts
        written before 2026-11-25 keep their vocabularies as lists in ``model.json``."""
        def vocab(which: str) -> list[str]:
            key = f"{which}_vocab"
            return doc[key] if key in doc else vocab_list(arrays[key])
        for which, words, idf in (("word", vocab("word"), arrays["word_idf"]),
                                  ("char", vocab("char"), arrays["char_idf"])):
            if len(words) != len(idf):
                raise ValueError("vocabulary and IDF sizes differ")
            self._restored[which] = (words, idf)
            self._vecs.pop(which, None)   # made again, with these, when needed


class SharedLookups:
    """Two fitted feature sets with the same analysers (word unigrams, one character n-gram range)
    whose models read the same texts: inside :meth:`primed`, each text's n-grams and words are
    looked up once for both, in one table of both vocabularies per block (``CharIndex``/``WordIndex``
    with ``second``), instead of once per model. Each model still weights and scores its own
    features, so no result changes; texts only one of them reads (the topic model's clauses) it
    looks up in its own, smaller table. ``models.predict`` shares the baseline sentiment model's
    look-ups with the topic model's (per 60-character text, 4.8 instead of 7.9 µs for the character
    n-grams and 2.0 instead of 3.6 for the words)."""

    def __init__(self, first: TextFeatures, second: TextFeatures) -> None:
        self.first, self.second = first, second
        self._joint: dict[str, tuple] = {}   # block → (the two vocabularies, their joint index)

    @classmethod
    def of(cls, first: TextFeatures, second: TextFeatures) -> SharedLookups | None:
        """Shared look-ups of two feature sets, or None where they cannot share them (different
        analysers, not fitted)."""
        same = first.config.word_ngrams == second.config.word_ngrams and \
            first.config.char_ngrams == second.config.char_ngrams
        if first is second or not same or any(f._fitted(w) is None for f in (first, second) for w in ("word", "char")):
            return None
        return cls(first, second)   # the joint index is made (numba imported) when it first looks up

    def _index(self, which: str) -> CharIndex | WordIndex | None:
        """The joint index of a block (made again if either feature set was refitted); None where
        the kernels do not cover the configuration."""
        if not (self.first._covers(which) and self.second._covers(which)):
            return None
        vocabs = tuple(f._fitted(which)[0] for f in (self.first, self.second))   # type: ignore[index]
        cached = self._joint.get(which)
        if cached is not None and all(a is b for a, b in zip(cached[0], vocabs, strict=True)):
            return cached[1]
        from models.tfidf_kernel import CharIndex, WordIndex

        joint = (WordIndex(vocabs[0], second=vocabs[1]) if which == "word"
                 else CharIndex(vocabs[0], *self.first.config.char_ngrams, second=vocabs[1]))
        self._joint[which] = (vocabs, joint)
        return joint

    @contextmanager
    def primed(self, texts: Sequence[str], tokens: Sequence[Sequence[str]]) -> Iterator[None]:
        """Within the block, both feature sets find ``texts`` (with their words ``tokens``, these very
        objects) looked up already; any other texts they look up themselves."""
        chars, words = self._index("char"), self._index("word")
        if chars is None or words is None:
            yield
            return
        found = chars.ids_both(char_docs(texts)), words.ids_both(tokens)
        for k, f in enumerate((self.first, self.second)):
            f._primed.char, f._primed.word = (texts, found[0][k]), (tokens, found[1][k])
        try:
            yield
        finally:
            for f in (self.first, self.second):
                f._primed.char = f._primed.word = None


VOCAB_KEYS = ("word_vocab", "char_vocab")


def vocab_array(terms: list[str]) -> np.ndarray:
    """A vocabulary as one UTF-8 byte array, terms separated by NUL (which normalised text never holds)."""
    if any("\x00" in t for t in terms):
        raise ValueError("a vocabulary term holds a NUL character")
    return np.frombuffer("\x00".join(terms).encode("utf-8"), dtype=np.uint8)


def vocab_list(array: np.ndarray) -> list[str]:
    """The terms of :func:`vocab_array`, in order."""
    return array.tobytes().decode("utf-8").split("\x00") if array.size else []
