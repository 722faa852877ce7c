"""Urgent wording in feedback: a regulator, the media or a lawyer named (escalation), a customer
leaving (churn), health and safety, money lost to fraud. A negative feedback that matches counts
in ``urgent_count``, raises a pain point's priority (``urgency_factor``) and an ``urgent`` alert.

The rules are word lists by category in ``nlp/resources/urgency.yaml`` (data, not code).
``URGENT_PATTERN`` joins all of them into one regex that DuckDB's ``regexp_matches`` (RE2) runs on
the stored (normalised, simplified) text; ``is_urgent`` is the same rule in Python and
``detect_urgency`` says why: ``["escalation:12315", "churn:销户"]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from nlp.taxonomy import _UniqueKeyLoader
from nlp.wordlists import alternation, trie_alternation

URGENCY_CATEGORIES = ("escalation", "churn", "safety", "fraud")
DEFAULT_URGENCY_PATH = resources.files("nlp") / "resources" / "urgency.yaml"


class UrgencyRulesError(ValueError):
    """Urgency rules that cannot be used; the message names the file and the problem."""


class UrgencyRules:
    """Urgent words by category, matched leftmost-longest by one compiled alternation."""

    def __init__(self, rules: Mapping[str, Sequence[str]], source: str = "<memory>") -> None:
        self.source = source
        self.rules: dict[str, tuple[str, ...]] = {}
        self._category: dict[str, str] = {}
        for category, words in rules.items():
            if category not in URGENCY_CATEGORIES:
                raise UrgencyRulesError(f"urgency rules {source}: unknown category {category!r}, "
                                        f"expected one of {', '.join(URGENCY_CATEGORIES)}")
            kept = []
            for word in words:
                if not word or any(ch.isspace() for ch in word):
                    raise UrgencyRulesError(f"urgency rules {source}: {category} word {word!r} must be "
                                            f"non-empty and without spaces")
                if word in self._category:
                    raise UrgencyRulesError(f"urgency rules {source}: {word!r} is listed under both "
                                            f"{self._category[word]} and {category}")
                self._category[word] = category
                kept.append(word)
            self.rules[category] = tuple(kept)
        # longest first: the same boolean as any order, and the most specific word as evidence
        self.pattern = alternation(self._category)
        # Python runs the trie form of the same alternation (same matches, fewer compares per character)
        self._re = re.compile(trie_alternation(self._category)) if self._category else None

    @property
    def words(self) -> tuple[str, ...]:
        """All urgent words, category by category."""
        return tuple(w for ws in self.rules.values() for w in ws)

    def detect(self, text: str) -> list[str]:
        """``"category:word"`` for each urgent word in ``text``, in order of appearance, once each."""
        if self._re is None or not text:
            return []
        reasons: list[str] = []
        for m in self._re.finditer(text):
            reason = f"{self._category[m.group(0)]}:{m.group(0)}"
            if reason not in reasons:
                reasons.append(reason)
        return reasons

    def is_urgent(self, text: str) -> bool:
        return self._re is not None and bool(text) and self._re.search(text) is not None


def load_urgency_rules(path: str | Path) -> UrgencyRules:
    """Read and validate an urgency YAML file (``category: [words]``)."""
    p = Path(path)
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise UrgencyRulesError(f"urgency rules not found: {p}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UrgencyRulesError(f"urgency rules {p} are not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict) or not raw:
        raise UrgencyRulesError(f"urgency rules {p} need a mapping of category: [words]")
    rules: dict[str, list[str]] = {}
    for category, words in raw.items():
        if not isinstance(words, list) or not all(isinstance(w, str | int) and not isinstance(w, bool)
                                                  for w in words):
            raise UrgencyRulesError(f"urgency rules {p}: {category!r} must be a list of words")
        rules[str(category)] = [str(w).strip() for w in words]
    return UrgencyRules(rules, str(p))


@lru_cache(maxsize=1)
def default_urgency_rules() -> UrgencyRules:
    """The urgency rules shipped with cxloop."""
    with resources.as_file(DEFAULT_URGENCY_PATH) as p:
        return load_urgency_rules(p)


URGENT_WORDS: tuple[str, ...] = default_urgency_rules().words
URGENT_PATTERN: str = default_urgency_rules().pattern


def detect_urgency(text: str) -> list[str]:
    """Why ``text`` is urgent: ``["escalation:12315", "fraud:盗刷"]`` (empty when it is not)."""
    return default_urgency_rules().detect(text)


def is_urgent(text: str) -> bool:
    """The rule of ``URGENT_PATTERN`` in Python (for tests and notebooks)."""
    return default_urgency_rules().is_urgent(text)
