"""The topic taxonomy: topic key → Chinese name, journey stage, owning team, keywords.

``load_taxonomy(path)`` reads a ``taxonomy.yaml``; ``default_taxonomy()`` the shipped one.
``Taxonomy.match(text)`` assigns topics by keyword rules (one compiled alternation, so the cost
does not grow with the number of topics); a learned topic model may replace the rules but keeps
these keys, names, stages and teams.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:   # imported when first used: it loads numba, which a run with nothing new never needs
    from nlp.word_scan import WordScanner


JOURNEY_STAGES = ("awareness", "consideration", "purchase", "usage", "after_sales")
DEFAULT_TAXONOMY_PATH = resources.files("nlp") / "resources" / "taxonomy.yaml"


class TaxonomyError(ValueError):
    """A taxonomy file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Topic:
    key: str
    name: str
    stage: str
    team: str
    keywords: tuple[str, ...]


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last (on
    libyaml's parser where PyYAML has it: the rule word lists load about five times faster)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class Taxonomy:
    """An ordered set of topics with a keyword matcher."""

    def __init__(self, topics: Iterable[Topic], source: str = "<memory>") -> None:
        self.topics: dict[str, Topic] = {t.key: t for t in topics}
        self.source = source
        owners: dict[str, list[str]] = {}
        for t in self.topics.values():
            for kw in t.keywords:
                owners.setdefault(kw.lower(), []).append(t.key)
        self._owners = owners
        self._scanner: WordScanner | None = None   # built on the first match (it imports numba)

    def __contains__(self, key: object) -> bool:
        return key in self.topics

    def __iter__(self):
        return iter(self.topics.values())

    def __len__(self) -> int:
        return len(self.topics)

    @property
    def keys(self) -> list[str]:
        return list(self.topics)

    @property
    def fingerprint(self) -> str:
        """A short hash of the keys and keywords: rows matched under another taxonomy are re-scored."""
        doc = "\n".join(f"{t.key}:{'|'.join(t.keywords)}" for t in self.topics.values())
        return hashlib.sha1(doc.encode()).hexdigest()[:8]

    def match(self, text: str) -> list[str]:
        """Topic keys whose keywords occur in ``text`` (taxonomy order)."""
        return self.match_many([text])[0]

    def match_many(self, texts: Sequence[str]) -> list[list[str]]:
        """:meth:`match` of each text, from one scan (see :meth:`match_evidence_many`)."""
        order = list(self.topics)
        return [[k for k in order if k in hits] if hits else [] for hits in self.match_evidence_many(texts)]

    def match_evidence(self, text: str) -> dict[str, list[str]]:
        """Topic key → the keywords found for it in ``text`` (lower-cased), in the order found."""
        return self.match_evidence_many([text])[0]

    def match_evidence_many(self, texts: Sequence[str]) -> list[dict[str, list[str]]]:
        """:meth:`match_evidence` of each text, from one compiled scan of them all
        (``nlp.word_scan``): a batch's texts and their clauses, without a call per text."""
        out: list[dict[str, list[str]]] = [{} for _ in texts]
        if not self._owners or not texts:
            return out
        if self._scanner is None:
            # the longest keyword at a position wins ("人工客服" over "客服"), as in a regex
            # alternation of the keywords longest first
            from nlp.word_scan import WordScanner

            self._scanner = WordScanner(self._owners)
        owners = self._owners
        for i, _, word in self._scanner.found([t.lower() for t in texts]):
            hits = out[i]
            for key in owners[word]:
                kws = hits.setdefault(key, [])
                if word not in kws:
                    kws.append(word)
        return out


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read and validate a taxonomy YAML file; errors name the file and the offending entry."""
    p = Path(path)
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise TaxonomyError(f"taxonomy file not found: {p}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise TaxonomyError(f"taxonomy file {p} is not valid YAML: {' '.join(str(e).split())}") from None
    return _parse(raw, str(p))


def _parse(raw: object, source: str) -> Taxonomy:
    if not isinstance(raw, dict) or not isinstance(raw.get("topics"), dict) or not raw["topics"]:
        raise TaxonomyError(f"taxonomy file {source} needs a non-empty 'topics:' mapping")
    topics = []
    for key, spec in raw["topics"].items():
        if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise TaxonomyError(f"taxonomy file {source}: topic key {key!r} must be lower_snake_case")
        if not isinstance(spec, dict):
            raise TaxonomyError(f"taxonomy file {source}: topic {key!r} must be a mapping")
        missing = [f for f in ("name", "stage", "team", "keywords") if f not in spec]
        if missing:
            raise TaxonomyError(f"taxonomy file {source}: topic {key!r} lacks {', '.join(missing)}")
        if spec["stage"] not in JOURNEY_STAGES:
            raise TaxonomyError(f"taxonomy file {source}: topic {key!r} has stage {spec['stage']!r}, "
                                f"expected one of {', '.join(JOURNEY_STAGES)}")
        kws = spec["keywords"]
        if not isinstance(kws, list) or not all(isinstance(k, str | int) for k in kws):
            raise TaxonomyError(f"taxonomy file {source}: topic {key!r} keywords must be a list of strings")
        topics.append(Topic(key, str(spec["name"]), spec["stage"], str(spec["team"]),
                            tuple(str(k) for k in kws if str(k).strip())))
    return Taxonomy(topics, source)


@lru_cache(maxsize=1)
def default_taxonomy() -> Taxonomy:
    """The taxonomy shipped with cxloop."""
    with resources.as_file(DEFAULT_TAXONOMY_PATH) as p:
        return load_taxonomy(p)
