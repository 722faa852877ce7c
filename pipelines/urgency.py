"""Urgent wording in negative feedback: money lost to fraud, a regulator or lawyer named, health
and safety, media exposure. A negative feedback that matches counts in ``urgent_count``, raises
a pain point's priority (``urgency_factor``) and an ``urgent`` alert.

The rule is a word list matched by DuckDB's ``regexp_matches`` on the stored (normalised,
simplified) text; it lives here because it is a pipeline rule, not a model. Keep it short:
every word here pages somebody.
"""

from __future__ import annotations

import re

URGENT_WORDS: tuple[str, ...] = (
    # money and fraud
    "盗刷", "被盗", "诈骗", "被骗", "资金安全", "钱没了", "冻结",
    # regulators, lawyers, police, media
    "报警", "起诉", "律师", "法院", "银保监", "金融监管", "监管局", "人民银行", "消协", "消费者协会", "12315",
    "12378", "投诉到", "曝光", "媒体", "记者",
    # health and safety
    "食物中毒", "中毒", "过敏", "受伤", "住院", "人身安全",
)

URGENT_PATTERN = "|".join(re.escape(w) for w in URGENT_WORDS)


def is_urgent(text: str) -> bool:
    """The same rule in Python (for tests and notebooks)."""
    return re.search(URGENT_PATTERN, text) is not None
