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
