from pathlib import Path

import pytest

from nlp import TaxonomyError, corpus_keywords, default_segmenter, default_taxonomy, keywords, load_taxonomy
from nlp.segment import Segmenter

REQUIRED = {"logistics", "product_quality", "customer_service", "after_sales", "price_fees", "packaging",
            "authenticity", "digital_experience", "wait_time", "environment", "food_taste", "marketing_sales",
            "security_privacy", "policy_process"}


def test_user_dictionary_keeps_cx_terms_whole() -> None:
    words = default_segmenter().cut("手机银行更新后一直闪退，转人工也要排队")
    for term in ("手机银行", "闪退", "转人工", "排队"):
        assert term in words


def test_placeholders_survive_segmentation() -> None:
    assert "<PHONE>" in default_segmenter().cut("请回电<PHONE>谢谢")


def test_extra_dictionary(tmp_path: Path) -> None:
    d = tmp_path / "dict.txt"
    d.write_text("星河优享卡 100 n\n", encoding="utf-8")
    assert "星河优享卡" in Segmenter(extra_dicts=[d]).cut("我办了星河优享卡")


def test_keywords_drop_stopwords_and_rank_content_words() -> None:
    seg = default_segmenter()
    kws = keywords(seg.cut("骑手送餐超时一个小时，饭菜都凉了，我们真的很生气"))
    assert "骑手" in kws and "的" not in kws and "我们" not in kws
    group = corpus_keywords([seg.cut("闪退闪退"), seg.cut("又闪退了"), seg.cut("登录不上")], k=2)
    assert group[0] == "闪退"


def test_default_taxonomy_has_required_topics() -> None:
    tax = default_taxonomy()
    assert set(tax.keys) >= REQUIRED
    for t in tax:
        assert t.name and t.team and t.keywords


def test_keyword_rules_match_topics() -> None:
    tax = default_taxonomy()
    assert tax.match("送餐超时一个小时，饭菜都凉了") == ["logistics", "food_taste"]
    assert "digital_experience" in tax.match("App更新后闪退")
    assert tax.match("今天天气不错") == []


@pytest.mark.parametrize(("content", "message"), [
    ("topics: [", "not valid YAML"),
    ("topics:\n  a:\n    name: x\n  a:\n    name: y\n", "duplicate key"),
    ("topics:\n  logistics:\n    name: 物流\n", "lacks"),
    ("topics:\n  logistics:\n    name: 物流\n    stage: nowhere\n    team: t\n    keywords: [a]\n", "stage"),
    ("nothing: here\n", "topics"),
])
def test_bad_taxonomy_files_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "taxonomy.yaml"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(TaxonomyError) as e:
        load_taxonomy(f)
    assert str(f) in str(e.value) and message in str(e.value)


def test_missing_taxonomy_file(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="not found"):
        load_taxonomy(tmp_path / "nope.yaml")
