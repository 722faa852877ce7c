"""Lexical features shared by the linear models: TF-IDF on jieba words and on character n-grams.

``TextFeatures`` fits, applies and persists the two vectorisers (vocabularies in ``model.json``,
IDF vectors in ``weights.npz``, never pickles). The baseline sentiment model and the topic model
both use it, so a text is featurised one way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

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

    @staticmethod
    def tokens(texts: Sequence[str], tokens: Sequence[Sequence[str]] | None) -> Sequence[Sequence[str]]:
        return tokens if tokens is not None else default_segmenter().cut_many(texts)

    def fit_transform(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> sp.csr_matrix:
        toks = self.tokens(texts, tokens)
        return self._stack(self.word_vec.fit_transform(toks), self.char_vec.fit_transform(texts))

    def transform(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> sp.csr_matrix:
        toks = self.tokens(texts, tokens)
        return self._stack(self.word_vec.transform(toks), self.char_vec.transform(texts))

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
            vec.vocabulary = {term: i for i, term in enumerate(vocab)}
            vec.idf_ = idf
