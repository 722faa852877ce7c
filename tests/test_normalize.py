import re
import unicodedata

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


def _every_step(text: str) -> str:
    """normalize_text without its shortcuts: every substitution on every text."""
    from nlp.normalize import _INVISIBLE_RE, _SURROGATE_RE, _URL_RE, URL_PLACEHOLDER, _t2s

    text = unicodedata.normalize("NFKC", _SURROGATE_RE.sub("\ufffd", text))
    text = _t2s().convert(_URL_RE.sub(URL_PLACEHOLDER, _INVISIBLE_RE.sub("", text)))
    return unicodedata.normalize("NFKC", re.sub(r"\s+", " ", text).strip())


_PIECES = st.sampled_from(["這個", "产品", "ＡＢＣ", "１２３", "，", "！", " ", "\u3000", "\t", "\n", "\u200b",
                           "\ufeff", "\x00", "\ud800", "http://", "HTTPS://", "Www.", "www.", "wWw", "://",
                           "example.com", "ﬁ", "①", "ｗｗｗ．", "<URL>", "ſ", "é", "e\u0301", "é",
                           "Ａ\u0301", "\u0301", "™", "…", "～", "\uff61", "\u2002", "𝐀"])


@given(st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=12).map("".join))
def test_shortcuts_change_nothing(s: str) -> None:
    # printable text skips the control/invisible passes and texts without "://" or "www." the URL
    # pattern: the result is what every step on every text gives
    assert normalize_text(s) == _every_step(s)
