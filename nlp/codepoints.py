"""Texts as arrays of code points, the form the compiled kernels read (``nlp.keyword_rank``,
``models.tfidf_kernel``): one array for a whole batch, and each piece's offsets into it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain

import numpy as np

CODEPOINT_BITS = 21   # every code point fits (max 0x10FFFF): keys pack code points this many bits each


def codepoints(text: str) -> np.ndarray:
    """The code points of ``text`` as int64 (lone surrogates kept, one each, as ``len`` counts them)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)


def offsets(lengths: Iterable[int], count: int) -> np.ndarray:
    """``count + 1`` offsets: where each of ``count`` consecutive pieces of these lengths starts, then the end."""
    out = np.zeros(count + 1, np.int64)
    np.cumsum(np.fromiter(lengths, np.int64, count), out=out[1:])
    return out


def packed(pieces: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``pieces`` (texts, words) as the kernels read them: their code points one after the other, and
    :func:`offsets` (piece ``j`` at ``cps[starts[j]:starts[j + 1]]``)."""
    return codepoints("".join(pieces)), offsets(map(len, pieces), len(pieces))


class PackedWords(list[list[str]]):
    """Token lists (one per text) with their packed form, made once for every kernel that reads the
    batch's words (both linear models' word features, the keyword ranking, the stored ``tokens``
    column): all words in one list (``flat``), their code points in one array (``cps``, word ``j`` at
    ``starts[j]:starts[j + 1]``) and each text's words (``docs[i]:docs[i + 1]``). A list of the token
    lists itself, so it goes wherever token lists go (``Analyzer.analyze`` returns it as the
    ``tokens`` column). Neither it nor its lists may change afterwards."""

    def __init__(self, lists: Sequence[list[str]]) -> None:
        super().__init__(lists)
        self._flat: list[str] | None = list(chain.from_iterable(lists))
        self.cps, self.starts = packed(self._flat)
        self.docs = offsets(map(len, lists), len(lists))

    @classmethod
    def of_arrays(cls, lists: Sequence[list[str]], cps: np.ndarray, starts: np.ndarray,
                  docs: np.ndarray) -> PackedWords:
        """``lists`` with a packed form made elsewhere (``nlp.clause_words`` copies it from the
        texts' packed words): it must be what packing them gives (``tests/test_segment_taxonomy.py``)."""
        out = cls.__new__(cls)
        list.__init__(out, lists)
        out._flat, out.cps, out.starts, out.docs = None, cps, starts, docs
        return out

    @property
    def flat(self) -> list[str]:
        """Every word, text after text (made on first use where the packed form came from elsewhere)."""
        if self._flat is None:
            self._flat = list(chain.from_iterable(self))
        return self._flat


def packed_words(lists: Sequence[Sequence[str]]) -> PackedWords:
    """``lists`` packed (returned as is when it already is)."""
    return lists if isinstance(lists, PackedWords) else PackedWords(lists)  # type: ignore[arg-type]
