"""An open-addressing hash table from non-negative int64 keys to int64 values, for compiled kernels
(``nlp.word_scan``'s trie, ``models.tfidf_kernel``'s vocabularies): one ``(size, 2)`` array of
(key, value) pairs, probed linearly from a Fibonacci hash of the key."""

from __future__ import annotations

import numba as nb
import numpy as np

EMPTY = np.int64(-1)                    # a free slot (no key is negative)
_MIX = np.uint64(0x9E3779B97F4A7C15)


@nb.njit(cache=True, nogil=True, inline="always")
def slot(key: np.int64, shift: np.uint64) -> np.int64:
    """The home slot of ``key`` in a table of ``64 - shift`` bits (Fibonacci hashing)."""
    return np.int64((np.uint64(key) * _MIX) >> shift)


@nb.njit(cache=True, nogil=True)
def build_table(keys: np.ndarray, values: np.ndarray, bits: np.int64) -> np.ndarray:
    """An open-addressing table of non-negative int64 ``keys`` → ``values``, each pair side by side
    (one cache line per probe); linear probing from :func:`slot`."""
    size = np.int64(1) << bits
    shift = np.uint64(64 - bits)
    table = np.full((size, 2), EMPTY, np.int64)
    for j in range(len(keys)):
        s = slot(keys[j], shift)
        while table[s, 0] != EMPTY:
            s = (s + 1) & (size - 1)
        table[s, 0] = keys[j]
        table[s, 1] = values[j]
    return table


def table_bits(n: int) -> int:
    """The bits of a table for ``n`` keys, at most half full."""
    return max(4, int(np.ceil(np.log2(max(n, 1)))) + 1)
