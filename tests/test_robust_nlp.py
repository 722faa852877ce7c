"""Property tests on every function of ``nlp``: none raises on any Unicode string (lone surrogates,
controls, emoji, every plane), normalisation is idempotent, and redaction never leaves a validated
phone number, ID card, bank card or e-mail address behind."""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fixtures.bad_input import bank_card, email, id_card, phone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nlp import (
    TaxonomyError,
    corpus_keywords,
    dedup_key,
    default_segmenter,
    default_taxonomy,
    keywords,
    load_taxonomy,
    normalize_many,
    normalize_text,
    redact,
    redact_many,
)
from nlp.codepoints import PackedWords
from nlp.keyword_rank import WeightTable
from nlp.pii import PLACEHOLDERS, classify_number, id_card_valid, luhn_valid
from nlp.segment import _KEYWORD_IDF, _keyword_table, content_words, keywords_many, stopwords
from nlp.segment import _keyword_idf as keyword_weight

# every code point, lone surrogates included (bytes that did not decode arrive as those)
ANY_CHAR = st.characters(codec=None, exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=200)
# the characters that exercise the code paths: CJK in both scripts, full-width forms, digits and
# separators (PII), e-mail characters, URLs, invisible and space characters, emoji
INTERESTING = st.text(st.sampled_from(list(
    "的是不客服態度產品這個体验退款闪退閃退ＡＢＣ１２３０９８６＋－．＠０1234567890Xx -+@._%abcAZ"
    "httpsw:/\u200b\u200d\u2060\ufeff\u3000\t\n\r\x00\x7f\u202e😡👍🏻🇨🇳<>PHONEIDCARDEMAILURL，。！？")),
    max_size=120)
TEXTS = st.one_of(ANY_TEXT, INTERESTING)
SEPARATORS = st.text(st.sampled_from(list("，。！？ 、：；（）「」《》说了电话号是给我们abc\n\t")), min_size=1,
                     max_size=4)
PLACEHOLDER_RE = re.compile("|".join(map(re.escape, PLACEHOLDERS.values())))
EXAMPLES = int(os.environ.get("CXLOOP_HYPOTHESIS_EXAMPLES", "150"))  # more to hunt: CXLOOP_HYPOTHESIS_EXAMPLES=5000
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(TEXTS)
def test_normalize_never_raises_and_is_idempotent(s: str) -> None:
    once = normalize_text(s)
    assert normalize_text(once) == once
    assert once == once.strip() and "  " not in once
    assert not re.search("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u200b-\u200f\u2060-\u2064\ufeff\ud800-\udfff]", once)
    assert normalize_many([s, once]) == [once, once]


@FAST
@given(TEXTS)
def test_dedup_key_ignores_what_normalisation_and_punctuation_change(s: str) -> None:
    key = dedup_key(s)
    assert key == dedup_key(normalize_text(s)) == dedup_key(normalize_text(s), normalized=True)
    assert not re.search(r"[\W_]", key) and key == key.lower()


@FAST
@given(TEXTS)
def test_redaction_never_raises_and_leaves_nothing_that_validates(s: str) -> None:
    for text in (s, normalize_text(s)):
        r = redact(text)
        assert redact(r.text).found == {}, (text, r.text)  # nothing left that a second pass would find
        assert sum(r.found.values()) == len(PLACEHOLDER_RE.findall(r.text)) - len(PLACEHOLDER_RE.findall(text))
    assert redact_many([s]) == [redact(s)]


@FAST
@given(st.integers(0, 2**32), st.lists(st.tuples(SEPARATORS, st.sampled_from(["phone", "spaced", "id", "card",
                                                                                 "email"])), min_size=1, max_size=4),
       SEPARATORS)
def test_every_validated_item_between_arbitrary_words_is_redacted(seed: int, parts: list[tuple[str, str]],
                                                                   tail: str) -> None:
    rng = random.Random(seed)
    make = {"phone": phone, "spaced": lambda r: phone(r, spaced=True), "id": id_card, "card": bank_card,
            "email": email}
    items, text = [], ""
    for sep, kind in parts:
        item = make[kind](rng)
        items.append(item)
        text += sep + item
    text += tail
    for t in (text, normalize_text(text)):
        out = redact(t).text
        for item in items:
            assert item not in out and item.replace(" ", "") not in out.replace(" ", ""), (t, out)
        assert redact(out).found == {}


@FAST
@given(TEXTS)
def test_number_checks_never_raise(s: str) -> None:
    assert isinstance(id_card_valid(s), bool) and isinstance(luhn_valid(s), bool)
    assert classify_number(s) in (None, "phone", "id_card", "bank_card")


@FAST
@given(TEXTS)
@example("快递\ud800很快")   # a lone surrogate, which rjieba cannot take (UTF-8): a word of its own
def test_segmentation_keeps_every_character_and_placeholders_whole(s: str) -> None:
    tokens = default_segmenter().cut(s)
    assert all(t and not t.isspace() for t in tokens)
    assert "".join(tokens) == "".join(c for c in s if not c.isspace())
    red = redact(normalize_text(s)).text
    red_tokens = default_segmenter().cut(red)
    assert [t for t in red_tokens if PLACEHOLDER_RE.fullmatch(t)] == PLACEHOLDER_RE.findall(red)
    assert default_segmenter().cut_many([s, red]) == [tokens, red_tokens]


@FAST
@given(st.lists(TEXTS, max_size=5), st.integers(0, 10))
def test_keywords_come_from_the_tokens_and_never_are_stopwords_or_placeholders(texts: list[str], k: int) -> None:
    docs = [default_segmenter().cut(normalize_text(t)) for t in texts]
    for tokens in docs:
        kws = keywords(tokens, k)
        assert len(kws) <= k and set(kws) <= set(tokens)
        assert not set(kws) & stopwords() and not any(PLACEHOLDER_RE.fullmatch(w) for w in kws)
        assert set(content_words(tokens)) <= set(tokens)
    top = corpus_keywords(docs, k)
    assert len(top) <= k and set(top) <= {w for d in docs for w in d}


KEYWORD_POOL = ["快递", "客服", "退款", "质量", "服务", "服务态度", "好", "很", "的", "<PHONE>",
                "a", "ab", "abc", "Ab", "😀", "太慢了", "物流", "物流太慢", " "]


@FAST
@given(st.lists(st.lists(st.sampled_from(KEYWORD_POOL), max_size=30), max_size=6), st.integers(0, 8))
def test_keywords_of_a_batch_rank_as_sorting_count_times_idf_then_the_word(docs: list[list[str]], k: int) -> None:
    """The compiled batch ranking (``keywords_many``) against its definition in plain Python: distinct
    content words by (−count × idf, word), the first k; repeated words, ties and empty texts included."""
    def reference(tokens: list[str]) -> list[str]:
        scored = sorted((-n * w, t) for t, n in Counter(tokens).items() if (w := keyword_weight(t)))
        return [t for _, t in scored[:k]]

    assert keywords_many(docs, k) == [reference(t) for t in docs]
    assert [keywords(t, k) for t in docs] == [reference(t) for t in docs]
    _keyword_table().copy(_KEYWORD_IDF)   # the weights now come from the compiled copy of the memo
    assert keywords_many(docs, k) == [reference(t) for t in docs]


WORDS = st.text(st.sampled_from("快递物流太慢了aAbé😀𠀀 "), min_size=1, max_size=4)


@FAST
@given(st.dictionaries(WORDS, st.floats(0, 20)), st.lists(WORDS | st.just(""), max_size=12))
def test_the_compiled_weight_table_gives_each_words_weight_in_the_dict(weights: dict[str, float],
                                                                       others: list[str]) -> None:
    """Words in the dict (prefixes of each other, astral characters, one letter apart in case) get
    their weight, any other word NaN."""
    table = WeightTable()
    packed = PackedWords([others + list(weights)])
    assert np.isnan(table.of(packed.cps, packed.starts)).all()   # no copy made yet
    table.copy(weights)
    want = np.array([weights.get(w, np.nan) for w in packed.flat], np.float64)
    assert np.array_equal(table.of(packed.cps, packed.starts), want, equal_nan=True)


@FAST
@given(TEXTS)
def test_topic_matching_never_raises_and_returns_known_keys_in_order(s: str) -> None:
    tax = default_taxonomy()
    for text in (s, normalize_text(s)):
        keys = tax.match(text)
        assert keys == [k for k in tax.keys if k in keys]
        assert set(tax.match_evidence(text)) == set(keys)


def test_every_keyword_finds_its_topic() -> None:
    tax = default_taxonomy()
    for topic in tax:
        for kw in topic.keywords:
            assert topic.key in tax.match(f"说{kw}了"), (topic.key, kw)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(ANY_TEXT, st.text(st.sampled_from(list("topics:\n -[]{}'\"&*!|>?#:name stage team keywords usage"
                                                        "abc_ 中文\t")), max_size=200)))
def test_a_taxonomy_file_is_a_taxonomy_or_one_error_naming_it(tmp_path: Path, content: str) -> None:
    f = tmp_path / "taxonomy.yaml"
    f.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        tax = load_taxonomy(f)
    except TaxonomyError as e:
        assert str(f) in str(e) and "\n" not in str(e)
        return
    assert len(tax) > 0


@pytest.mark.parametrize("content", [
    "topics:\n  a:\n    name: 甲\n    stage: usage\n    team: t\n    keywords: [x]\n  a:\n    name: 乙\n",
    "topics:\n  a: !!python/object/apply:os.system ['echo pwned']\n",
    "topics: [",
    b"\xff\xfe\x00garbage",
])
def test_broken_or_hostile_taxonomies_are_refused(tmp_path: Path, content: str | bytes) -> None:
    f = tmp_path / "taxonomy.yaml"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TaxonomyError, match=re.escape(str(f))):
        load_taxonomy(f)


def test_redaction_of_a_long_run_of_digits_stays_fast() -> None:
    import time

    t0 = time.monotonic()
    redact("1 " * 200_000 + phone(random.Random(1)))
    assert time.monotonic() - t0 < 10
