from hypothesis import given
from hypothesis import strategies as st

from nlp import dedup_key, normalize_text


def test_full_width_traditional_and_invisible_characters() -> None:
    assert normalize_text("這個產品ＡＢＣ１２３，很好！\u200b") == "这个产品ABC123,很好!"


def test_urls_whitespace_and_controls() -> None:
    assert normalize_text("  看 https://example.com/a?b=1\t\n 吧\x00 ") == "看 <URL> 吧"


def test_empty_and_blank() -> None:
    assert normalize_text("") == ""
    assert normalize_text(" \u3000\t\n") == ""


def test_dedup_key_ignores_width_script_case_and_punctuation() -> None:
    assert dedup_key("這個 App 很難用！！") == dedup_key("这个app很难用!")
    assert dedup_key("送餐太慢") != dedup_key("送餐很快")


@given(st.text())
def test_normalize_is_idempotent_and_never_raises(s: str) -> None:
    once = normalize_text(s)
    assert normalize_text(once) == once
