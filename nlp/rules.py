"""The packaged word lists behind the rule-based NLP columns — emotion (``emotion.yaml``), urgency
(``urgency.yaml``) and plain inquiries (``inquiry.yaml``) — fingerprinted together, so that rows
scored with other lists are scored again (``models.predict.analysis_version``)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

RULE_FILES = ("emotion.yaml", "urgency.yaml", "inquiry.yaml")


@lru_cache(maxsize=1)
def rules_fingerprint() -> str:
    """Eight hex digits of a hash over the contents of :data:`RULE_FILES`."""
    digest = hashlib.sha1()
    for name in RULE_FILES:
        digest.update(name.encode() + b"\0" + (resources.files("nlp") / "resources" / name).read_bytes() + b"\0")
    return digest.hexdigest()[:8]
