"""Plain inquiries: feedback that asks something and complains nowhere.

"请问信用卡账单分期怎么操作?" or a hotline note "客户来电咨询网点周末营业时间,已解答" is neither
praise nor a complaint, but sentiment models trained on reviews (where questions are rare) call
many such texts negative, and then they count as unhappy customers and surface as topic
candidates. ``is_plain_inquiry`` says which texts ask (an ``asks`` word or an ``ask_patterns``
frame) without any complaint: no ``complaint`` word, no negative emotion word (words that only press
for the answer, ``pressing`` such as 在线等, do not count), no urgent word, and
no more than ``max_chars`` characters (a letter that mentions 询问 tells a story, and the stories
customers write at length are mostly complaints worded politely).
``models.predict`` scores those neutral.

The word lists live in ``nlp/resources/inquiry.yaml`` (data, not code).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from nlp.emotion import default_emotion_lexicon
from nlp.taxonomy import _UniqueKeyLoader
from nlp.urgency import default_urgency_rules
from nlp.wordlists import trie_alternation

DEFAULT_INQUIRY_PATH = resources.files("nlp") / "resources" / "inquiry.yaml"
_NEGATIVE_EMOTIONS = ("anger", "disappointment", "anxiety")


class InquiryRulesError(ValueError):
    """Inquiry rules that cannot be used; the message names the file and the problem."""


def _compiled(words: Sequence[str]) -> re.Pattern[str] | None:
    return re.compile(trie_alternation(words)) if words else None   # alternation's matches, faster


class InquiryRules:
    """Asking words and frames, A-not-A question words, words pressing for the answer, complaint words,
    the longest plain inquiry."""

    def __init__(self, asks: Sequence[str], ask_patterns: Sequence[str], a_not_a: Sequence[str],
                 complaint: Sequence[str], source: str = "<memory>", max_chars: int | None = None,
                 pressing: Sequence[str] = ()) -> None:
        self.source = source
        if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int)
                                      or max_chars <= 0):
            raise InquiryRulesError(f"inquiry rules {source}: max_chars must be a positive whole number, "
                                    f"got {max_chars!r}")
        self.max_chars = max_chars
        for what, words in (("asks", asks), ("a_not_a", a_not_a), ("pressing", pressing), ("complaint", complaint)):
            for w in words:
                if not isinstance(w, str) or not w.strip():
                    raise InquiryRulesError(f"inquiry rules {source}: {what} word {w!r} must be non-empty text")
        try:
            patterns = [re.compile(p) for p in ask_patterns]
        except (re.error, TypeError) as e:
            raise InquiryRulesError(f"inquiry rules {source}: ask_patterns: {e}") from e
        self._asks = _compiled(asks)
        self._patterns = patterns
        self._a_not_a = _compiled(a_not_a)
        self._pressing = _compiled(pressing)
        self._complaint = _compiled(complaint)

    def asks(self, text: str) -> bool:
        return bool(text) and ((self._asks is not None and self._asks.search(text) is not None)
                               or any(p.search(text) for p in self._patterns))

    def complains(self, text: str) -> bool:
        plain = self._a_not_a.sub("〇", text) if self._a_not_a is not None else text
        if self._complaint is not None and self._complaint.search(plain):
            return True
        if default_urgency_rules().is_urgent(text):
            return True
        scores, _ = default_emotion_lexicon().scores(plain)
        return any(scores[e] > 0 for e in _NEGATIVE_EMOTIONS)

    def is_plain_inquiry(self, text: str) -> bool:
        """``text`` (normalised) asks something and voices no complaint (read without the words that
        press for the answer: "可以备注送到前台吗?在线等" is the yes/no question before 在线等)."""
        if self.max_chars is not None and len(text) > self.max_chars:
            return False
        asked = self._pressing.sub("", text) if self._pressing is not None else text
        return self.asks(asked) and not self.complains(asked)


def load_inquiry_rules(path: str | Path) -> InquiryRules:
    """Read and validate an inquiry YAML file (``asks``, ``ask_patterns``, ``a_not_a``, ``pressing``,
    ``complaint``, ``max_chars``)."""
    p = Path(path)
    try:
        doc = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InquiryRulesError(f"inquiry rules {p}: cannot read: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("asks"), list) \
            or not isinstance(doc.get("complaint"), list):
        raise InquiryRulesError(f"inquiry rules {p}: expected lists under 'asks' and 'complaint'")
    unknown = set(doc) - {"asks", "ask_patterns", "a_not_a", "pressing", "complaint", "max_chars"}
    if unknown:
        raise InquiryRulesError(f"inquiry rules {p}: unknown section(s) {sorted(unknown)}")
    return InquiryRules(doc["asks"], doc.get("ask_patterns") or [], doc.get("a_not_a") or [], doc["complaint"],
                        source=str(p), max_chars=doc.get("max_chars"), pressing=doc.get("pressing") or [])


@lru_cache(maxsize=1)
def default_inquiry_rules() -> InquiryRules:
    with resources.as_file(DEFAULT_INQUIRY_PATH) as p:
        return load_inquiry_rules(p)


def is_plain_inquiry(text: str) -> bool:
    """The default rules: ``text`` asks something and voices no complaint."""
    return default_inquiry_rules().is_plain_inquiry(text)
