"""Compiled word-list scanning (numba): every leftmost-longest match of a word list in a batch of texts.

A rule word list (the taxonomy's keywords, …) is matched as Python's ``re`` matches its alternation
longest word first (:func:`nlp.wordlists.alternation`): from the start of a text, the longest word
that starts at the position is a match and the scan goes on after it; where none starts, one
character further. :class:`WordScanner` does exactly that for a whole batch in one compiled call
over the texts' code points, walking a trie of the words whose transitions are an open-addressing
table keyed by (node, code point). ``re`` spends about a quarter of a microsecond per character on
the trie pattern, and a call per text or clause on top; this about 50 ns per character, once per
batch (``tests/test_segment_taxonomy.py`` compares the two on random texts)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numba as nb
import numpy as np

from nlp.codepoints import CODEPOINT_BITS, packed
from nlp.int_table import EMPTY, build_table, slot, table_bits

_BITS = CODEPOINT_BITS


@nb.njit(cache=True, nogil=True)
def _scan(cps: np.ndarray, offs: np.ndarray, table: np.ndarray, shift: np.uint64, root: np.ndarray,
          word_at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_docs = len(offs) - 1
    mask = len(table) - 1
    doc = np.empty(16, np.int64)
    start = np.empty(16, np.int64)
    word = np.empty(16, np.int64)
    m = 0
    for d in range(n_docs):
        p, b = offs[d], offs[d + 1]
        while p < b:
            node = np.int64(0)
            q = p
            end, found = np.int64(-1), np.int64(-1)
            while q < b:
                child = np.int64(-1)
                if q == p and cps[q] < len(root):   # most positions end here: an array, no hashing
                    child = root[cps[q]]
                else:
                    key = (node << _BITS) | cps[q]
                    s = slot(key, shift)
                    while table[s, 0] != EMPTY:
                        if table[s, 0] == key:
                            child = table[s, 1]
                            break
                        s = (s + 1) & mask
                if child < 0:
                    break
                node = child
                q += 1
                if word_at[node] >= 0:
                    end, found = q, word_at[node]
            if found < 0:
                p += 1
                continue
            if m == len(doc):   # grow the outputs
                doc = np.concatenate((doc, np.empty(m, np.int64)))
                start = np.concatenate((start, np.empty(m, np.int64)))
                word = np.concatenate((word, np.empty(m, np.int64)))
            doc[m], start[m], word[m] = d, p - offs[d], found
            m += 1
            p = end
    return doc[:m], start[:m], word[:m]


class WordScanner:
    """The leftmost-longest matches of a fixed word list in batches of texts (see the module doc)."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words: list[str] = sorted({w for w in words if w})
        keys: list[int] = []
        children: list[int] = []
        word_at = [-1]                            # per trie node: the word ending there, or -1
        nodes: dict[tuple[int, int], int] = {}    # (node, code point) → child
        for j, w in enumerate(self.words):
            node = 0
            for ch in w:
                edge = (node, ord(ch))
                if edge not in nodes:
                    nodes[edge] = len(word_at)
                    keys.append((node << _BITS) | ord(ch))
                    children.append(len(word_at))
                    word_at.append(-1)
                node = nodes[edge]
            word_at[node] = j
        if len(word_at) >= 1 << (63 - _BITS):
            raise ValueError(f"a word list of {len(word_at)} trie nodes is too large to scan")
        bits = table_bits(len(keys))
        self._shift = np.uint64(64 - bits)
        self._table = build_table(np.array(keys, np.int64), np.array(children, np.int64), np.int64(bits))
        self._word_at = np.array(word_at, np.int64)
        self._root = np.full(0x10000, -1, np.int64)   # the root's children by code point (the BMP)
        for (node, cp), child in nodes.items():
            if node == 0 and cp < len(self._root):
                self._root[cp] = child

    def found(self, texts: Sequence[str]) -> Iterator[tuple[int, int, str]]:
        """Every match in ``texts`` as (text index, start within the text, word): :meth:`scan` in
        Python values."""
        if not texts:
            return
        words = self.words
        docs, starts, found = self.scan(texts)
        for d, a, j in zip(docs.tolist(), starts.tolist(), found.tolist(), strict=True):
            yield d, a, words[j]

    def scan(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every match in ``texts``, in text order then position: (text index, start within the text,
        index into :attr:`words`) as three int64 arrays; a match ends at start + the word's length."""
        return _scan(*packed(texts), self._table, self._shift, self._root, self._word_at)
