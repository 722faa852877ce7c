"""Text normalisation for Chinese customer feedback.

``normalize_text`` makes texts comparable without changing what the customer said:
NFKC (full-width letters, digits and punctuation become half-width), traditional → simplified
Chinese (OpenCC ``t2s``), control and zero-width characters removed, URLs replaced by ``<URL>``,
whitespace collapsed. ``dedup_key`` goes further (case, punctuation and spaces dropped) and is only
used to recognise the same text arriving twice.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

import opencc

URL_PLACEHOLDER = "<URL>"

_URL_RE = re.compile(r"(?:https?://|www\.)[^\s\u3000-\u303f\uff00-\uffef<>\"'，。！？]+", re.IGNORECASE)
# C0/C1 controls (except \t \n \r, which become spaces), zero-width and BOM characters, bidi marks
_INVISIBLE_RE = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b-\u200f\u2028\u2029"
                           "\u202a-\u202e\u2060-\u2064\ufeff\ufff9-\ufffb]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# dedup key: keep letters, digits and CJK; drop punctuation, symbols, spaces
_NON_WORD_RE = re.compile(r"[\W_]+")


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def normalize_text(text: str) -> str:
    """Return ``text`` normalised for storage and analysis (idempotent)."""
    if not text:
        return ""
    if text.isascii() and text.isprintable():
        # ids, dates, channel names: NFKC, OpenCC and the invisible characters leave printable ASCII
        # as it is, and its only whitespace is the space
        return " ".join(_without_urls(text).split())
    if text.isprintable():
        # most feedback: no control, surrogate, zero-width or bidi character, no whitespace but the
        # space (all of them are unprintable), and NFKC maps no printable character to one, so the
        # two substitutions that remove them have nothing to do (tests/test_normalize.py compares)
        text = _nfkc(text)
    else:
        text = _SURROGATE_RE.sub("\ufffd", text)
        text = unicodedata.normalize("NFKC", text)
        text = _INVISIBLE_RE.sub("", text)
    text = _without_urls(text)
    if not text.isascii():
        text = _t2s().convert(text)
    text = " ".join(text.split())   # whitespace collapsed and stripped (str.split and \s agree on it)
    # NFKC after t2s is a no-op on every mapping OpenCC makes, but keep the function idempotent
    return unicodedata.normalize("NFKC", text)


@lru_cache(maxsize=1)
def _to_ascii() -> dict[int, str]:
    """Every BMP character whose full compatibility decomposition is ASCII (the full-width forms,
    the ideographic space, …) → that decomposition: a ``str.translate`` table."""
    table = {}
    for cp in range(0x80, 0x10000):
        d = unicodedata.normalize("NFKD", chr(cp))
        if d.isascii() and d != chr(cp):
            table[cp] = d
    return table


@lru_cache(maxsize=1)
def _to_ascii_runs() -> re.Pattern[str]:
    """Runs of the characters :func:`_to_ascii` maps, as one character class of code point ranges."""
    cps = sorted(_to_ascii())
    ranges: list[tuple[int, int]] = []
    for cp in cps:
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return re.compile("[" + "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges) + "]+")


def _ascii_run(m: re.Match[str]) -> str:
    return m.group().translate(_to_ascii())


def _nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)`` of a printable text, faster for Chinese feedback, whose
    full-width punctuation (，！？) is most of what NFKC changes: those characters are replaced
    by their decompositions first, which leaves the text's NFKD, so its NFKC, as it was; what is
    then NFKC already (most texts; the check costs a hundredth of normalising) is the result.
    The replacement runs on the runs of such characters a regular expression finds, not on every
    character through ``str.translate``'s per-character look-up (4.1–4.8 → 2.1–2.5 µs per 60-character
    review; 6.6 µs with NFKC itself; ``tests/test_normalize.py`` compares)."""
    text = _to_ascii_runs().sub(_ascii_run, text)
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


def _without_urls(text: str) -> str:
    """URLs replaced by ``<URL>``. The pattern runs only on a text that could hold one ("://" or
    "www." in any case): scanning every position of every text cost a sixth of ingest's record work."""
    if "://" in text or ("." in text and "www." in text.lower()):
        return _URL_RE.sub(URL_PLACEHOLDER, text)
    return text


def normalize_many(texts: Iterable[str]) -> list[str]:
    """Normalise a batch of texts (one OpenCC call per text; order kept)."""
    return [normalize_text(t) for t in texts]


def dedup_key(text: str, normalized: bool = False) -> str:
    """A key equal for texts that differ only in width, script, case, spacing or punctuation.
    ``normalized=True`` skips normalisation for text that already went through ``normalize_text``."""
    return _NON_WORD_RE.sub("", (text if normalized else normalize_text(text)).lower())
