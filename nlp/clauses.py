"""Split a feedback text into clauses, so that each topic can get the polarity of its own clauses.

A mixed review praises one thing and condemns another in different clauses: "配送很快，但是质量太差"
→ ["配送很快", "但是质量太差"]. Clauses end at sentence and clause punctuation and before a
contrastive conjunction (但是, 不过, 可是, …). Very short fragments (a lone "哈哈") are merged into
the clause before them so that every clause keeps enough context to be scored.
"""

from __future__ import annotations

import re

CONTRAST = ("但是", "不过", "可是", "然而", "只是", "反而", "另外")   # a clause starts before these
PUNCTUATION = "，。！？；,.!?;\n…~～"   # a clause ends at a run of these
_PUNCT = f"[{re.escape(PUNCTUATION)}]+"
_SPLIT = re.compile(rf"{_PUNCT}|(?=(?:{'|'.join(CONTRAST)}))")
MIN_CHARS = 3


def split_clauses(text: str, min_chars: int = MIN_CHARS) -> list[str]:
    """Clauses of ``text`` in order (punctuation dropped); ``[text]`` when there is nothing to split."""
    parts = [p.strip() for p in _SPLIT.split(text or "")]
    out: list[str] = []
    for p in parts:
        if not p:
            continue
        if out and (len(p) < min_chars or len(out[-1]) < min_chars):
            out[-1] += p
        else:
            out.append(p)
    return out or ([text] if text else [])
