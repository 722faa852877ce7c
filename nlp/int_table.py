"""An open-addressing hash table from non-negative int64 keys to int64 values, for compiled kernels
(``nlp.word_scan``'s trie, ``nlp.keyword_rank``'s keyword weights, ``models.tfidf_kernel``'s
vocabularies): one ``(size, 2)`` array of (key, value) pairs, probed linearly from a Fibonacci hash
of the key; and the keys of words (:func:`word_key`) for tables of words."""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

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


@intrinsic
def prefetch(typingctx: object, arr: types.Array, row: types.Integer) -> tuple | None:
    """In a compiled kernel: ask the CPU to bring the first cache line of ``arr[row]`` (a 2-d array)
    towards its caches, and go on. A hint only (``llvm.prefetch``: no fault, no result, nothing to
    wait for), for rows that will be read soon in an order the CPU cannot guess: a vocabulary of
    hundreds of thousands of features does not fit its caches, and each row read cold waits for
    memory (``models.tfidf_kernel``'s scores, the look-ups of a text's n-grams)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2 and isinstance(row, types.Integer)):
        return None
    sig = types.void(arr, row)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aryty, rowty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        at = [context.cast(builder, args[1], rowty, types.intp), context.get_constant(types.intp, 0)]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, at)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])   # read, keep, data
        return context.get_dummy_value()

    return sig, codegen


def table_bits(n: int) -> int:
    """The bits of a table for ``n`` keys, at most half full."""
    return max(4, int(np.ceil(np.log2(max(n, 1)))) + 1)


# -- words as keys: a word is a span of a code-point array (``nlp.codepoints``) ----------------------
_KEY_MASK = np.int64(0x7FFF_FFFF_FFFF_FFFF)


@nb.njit(cache=True, nogil=True)
def word_key(cps: np.ndarray, start: np.int64, end: np.int64) -> np.int64:
    """The key of the word ``cps[start:end]``: FNV-1a over its code points, made non-negative.
    Different words may share a key: a table of words holds each word's code points too, and a
    look-up checks them (:func:`same_term`)."""
    h = np.uint64(1469598103934665603)
    for i in range(start, end):
        h = (h ^ np.uint64(cps[i])) * np.uint64(1099511628211)
    return np.int64(h) & _KEY_MASK


@nb.njit(cache=True, nogil=True)
def word_keys(cps: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """:func:`word_key` of each word ``j`` at ``cps[starts[j]:starts[j + 1]]``."""
    keys = np.empty(len(starts) - 1, np.int64)
    for j in range(len(keys)):
        keys[j] = word_key(cps, starts[j], starts[j + 1])
    return keys


@nb.njit(cache=True, nogil=True, inline="always")
def same_term(cps: np.ndarray, a: np.int64, b: np.int64, term_cps: np.ndarray, term_starts: np.ndarray,
              j: np.int64) -> bool:
    """Whether ``cps[a:b]`` are term ``j``'s code points (``term_cps[term_starts[j]:term_starts[j + 1]]``)."""
    ta, tb = term_starts[j], term_starts[j + 1]
    same = tb - ta == b - a
    k = 0
    while same and k < b - a:
        same = term_cps[ta + k] == cps[a + k]
        k += 1
    return same
