"""Word lists as regular expressions: one alternation, longest word first, so that the longest word
wins at a position ("取消自动续费" over "取消"). Shared by the taxonomy-free rule modules (emotion,
urgency, plain inquiries)."""

from __future__ import annotations

import re
from collections.abc import Iterable


def alternation(words: Iterable[str], reverse: bool = False) -> str:
    """``w1|w2|…`` of the escaped distinct ``words``, longest first (``reverse``: each word reversed,
    for matching backwards from a position)."""
    ws = sorted({w[::-1] if reverse else w for w in words}, key=lambda w: (-len(w), w))
    return "|".join(map(re.escape, ws))


def trie_alternation(words: Iterable[str], reverse: bool = False) -> str:
    """The pattern of :func:`alternation`, factored as a trie: ``快(?:递(?:员|)|)`` for 快, 快递, 快递员.

    Python's ``re`` tries the branches of a flat alternation one by one at every position of the
    text (hundreds of literal compares per character for a lexicon); the trie tests one character
    per level. It matches exactly what :func:`alternation` matches, with any pattern around it:
    at a position only the branch of the next character can go on, and a node tries its longer
    words before ending, so the words that match there are tried longest first, as in the flat
    alternation (``tests/test_emotion.py`` compares the two)."""
    root: dict[str, dict] = {}
    for w in {w[::-1] if reverse else w for w in words}:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}   # "" marks the end of a word ("" is no character)

    def branches(node: dict[str, dict]) -> list[str]:
        out = [re.escape(ch) + _group(branches(child)) for ch, child in sorted(node.items()) if ch]
        if "" in node:
            out.append("")   # the word ending here comes after the longer ones through this node
        return out

    return "|".join(branches(root))


def _group(alternatives: list[str]) -> str:
    if alternatives == [""]:
        return ""
    if len(alternatives) == 1:
        return alternatives[0]
    return f"(?:{'|'.join(alternatives)})"
