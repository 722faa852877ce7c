"""Pure text processing for Chinese customer feedback (no database, no Prefect).

    >>> from nlp import normalize_text, redact, default_segmenter, default_taxonomy
    >>> from nlp import default_emotion_lexicon, detect_urgency, is_plain_inquiry
"""

from nlp.emotion import (
    EMOTIONS,
    EmotionLexicon,
    EmotionLexiconError,
    default_emotion_lexicon,
    load_emotion_lexicon,
)
from nlp.inquiry import InquiryRules, InquiryRulesError, default_inquiry_rules, is_plain_inquiry, load_inquiry_rules
from nlp.normalize import dedup_key, normalize_many, normalize_text
from nlp.pii import Redaction, redact, redact_many
from nlp.rules import rules_fingerprint
from nlp.segment import (
    Segmenter,
    SegmenterError,
    corpus_keywords,
    default_segmenter,
    join_words,
    keywords,
    keywords_many,
    segmenter_engine,
    split_words,
)
from nlp.taxonomy import Taxonomy, TaxonomyError, Topic, default_taxonomy, load_taxonomy
from nlp.urgency import (
    URGENCY_CATEGORIES,
    URGENT_PATTERN,
    UrgencyRules,
    UrgencyRulesError,
    default_urgency_rules,
    detect_urgency,
    is_urgent,
    load_urgency_rules,
)

__all__ = [
    "EMOTIONS",
    "URGENCY_CATEGORIES",
    "URGENT_PATTERN",
    "EmotionLexicon",
    "EmotionLexiconError",
    "InquiryRules",
    "InquiryRulesError",
    "Redaction",
    "Segmenter",
    "SegmenterError",
    "Taxonomy",
    "TaxonomyError",
    "Topic",
    "UrgencyRules",
    "UrgencyRulesError",
    "corpus_keywords",
    "dedup_key",
    "default_emotion_lexicon",
    "default_inquiry_rules",
    "default_segmenter",
    "default_taxonomy",
    "default_urgency_rules",
    "detect_urgency",
    "is_plain_inquiry",
    "is_urgent",
    "join_words",
    "keywords",
    "keywords_many",
    "load_emotion_lexicon",
    "load_inquiry_rules",
    "load_taxonomy",
    "load_urgency_rules",
    "normalize_many",
    "normalize_text",
    "redact",
    "redact_many",
    "rules_fingerprint",
    "segmenter_engine",
    "split_words",
]
