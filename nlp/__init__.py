"""Pure text processing for Chinese customer feedback (no database, no Prefect).

    >>> from nlp import normalize_text, redact, default_segmenter, default_taxonomy
"""

from nlp.normalize import dedup_key, normalize_many, normalize_text
from nlp.pii import Redaction, redact, redact_many
from nlp.segment import Segmenter, corpus_keywords, default_segmenter, keywords
from nlp.taxonomy import Taxonomy, TaxonomyError, Topic, default_taxonomy, load_taxonomy

__all__ = [
    "Redaction",
    "Segmenter",
    "Taxonomy",
    "TaxonomyError",
    "Topic",
    "corpus_keywords",
    "dedup_key",
    "default_segmenter",
    "default_taxonomy",
    "keywords",
    "load_taxonomy",
    "normalize_many",
    "normalize_text",
    "redact",
    "redact_many",
]
