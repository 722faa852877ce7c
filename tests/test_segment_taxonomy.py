import random
import re
from itertools import chain
from pathlib import Path

import numpy as np
import pytest

from models.predict import analysis_version
from nlp import TaxonomyError, corpus_keywords, default_segmenter, default_taxonomy, keywords, load_taxonomy
from nlp.clause_words import _SEPARATORS, _spans, clause_words, joined_clause_words
from nlp.clauses import split_clauses
from nlp.codepoints import PackedWords
from nlp.segment import ENGINES, Segmenter, SegmenterError, segmenter_engine
from nlp.taxonomy import Taxonomy, Topic
from nlp.word_scan import WordScanner
from nlp.wordlists import alternation

REQUIRED = {"logistics", "product_quality", "customer_service", "after_sales", "price_fees", "packaging",
            "authenticity", "digital_experience", "wait_time", "environment", "food_taste", "marketing_sales",
            "security_privacy", "policy_process"}


@pytest.mark.parametrize("engine", ENGINES)
def test_user_dictionary_keeps_cx_terms_whole(engine: str) -> None:
    words = Segmenter(engine=engine).cut("手机银行更新后一直闪退，转人工也要排队")
    for term in ("手机银行", "闪退", "转人工", "排队"):
        assert term in words


@pytest.mark.parametrize("engine", ENGINES)
def test_placeholders_survive_segmentation(engine: str) -> None:
    assert "<PHONE>" in Segmenter(engine=engine).cut("请回电<PHONE>谢谢")


@pytest.mark.parametrize("engine", ENGINES)
def test_extra_dictionary(tmp_path: Path, engine: str) -> None:
    d = tmp_path / "dict.txt"
    d.write_text("星河优享卡 100 n\n", encoding="utf-8")
    assert "星河优享卡" in Segmenter(extra_dicts=[d], engine=engine).cut("我办了星河优享卡")


AGREEMENT_TEXTS = [
    "等了一个半小时饭才到。真的会谢。",
    "快递员态度很差，包装也破了，申请退货三天没人处理",
    "信用卡年费说好免除结果还是扣了，打客服电话排队四十分钟",
    "手机银行App更新后一直闪退，转账失败了好几次",
    "这家店的菜味道不错，环境也干净，就是上菜有点慢",
    "宽带老是掉线，维修师傅约了两次都没来，我要投诉到工信部",
    "航班延误五个小时，没有任何补偿，地勤人员爱答不理",
    "客服小姐姐很耐心，帮我把问题解决了，点赞 <PHONE>",
]


def test_rjieba_cuts_cx_texts_as_jieba_does() -> None:
    """The faster engine is only an option if it agrees with the reference on ordinary feedback."""
    ref, fast = Segmenter(engine="jieba"), Segmenter(engine="rjieba")
    for text in AGREEMENT_TEXTS:
        assert fast.cut(text) == ref.cut(text), text


@pytest.mark.parametrize("engine", ENGINES)
def test_cut_many_is_cut_of_each_text(engine: str) -> None:
    """Texts are cut as one joined string: every text keeps exactly its own words, empty and
    whitespace-only texts included, and a text holding the separator falls back to one call each."""
    texts = [*AGREEMENT_TEXTS, "", "  ", "好", "ok!", "<EMAIL>已签收", "12.5%折扣 太贵了", "a b\tc"]
    seg = Segmenter(engine=engine)
    assert seg.cut_many(texts) == [seg.cut(t) for t in texts]
    assert seg.cut_many(iter(texts[:3])) == [seg.cut(t) for t in texts[:3]]
    odd = ["前\x00后", "快递很慢"]
    assert seg.cut_many(odd) == [seg.cut(t) for t in odd]
    assert seg.cut_many([]) == [] and seg.cut_many(["很好"]) == [seg.cut("很好")]


_CLAUSE_PIECES = ["快递很快", "质量太差了", "客服态度好", "但是", "不过价格贵", "超值", "好评", "哈哈", "3.5元",
                  "iPhone 12", "<PHONE>", "，", "。", "！", "！！", "？", ",", ".", "~", "…", " ", "退款",
                  "很好但是贵", "另外包装破了", "😀", "Ｗi-Fi", "12315"]


@pytest.mark.parametrize("engine", ENGINES)
def test_clause_words_are_the_words_cutting_each_clause_gives(engine: str) -> None:
    """Per-topic sentiment takes a clause's words from its text's where the clause is a stretch of
    them between punctuation: for every clause of random texts (merged fragments, contrast splits
    inside a run, spaces, ".", placeholders), they are what cutting the clause gives."""
    rng = random.Random(8)
    seg = Segmenter(engine=engine)
    texts = ["".join(rng.choice(_CLAUSE_PIECES) for _ in range(rng.randint(1, 12))) for _ in range(400)]
    texts += ["物流很快，质量很好，但是价格太贵了", "好评！哈哈", "。。开头就是标点", "结尾是标点！！"]
    rows = [i for i, t in enumerate(texts) if split_clauses(t)]
    clauses = [split_clauses(texts[i]) for i in rows]
    words = seg.cut_many(texts)
    flat = [c for cs in clauses for c in cs]
    assert clause_words(words, rows, clauses, seg) == seg.cut_many(flat)
    got = clause_words(PackedWords(words), rows, clauses, seg)
    assert got == seg.cut_many(flat)
    # their packed form, copied from the texts' and the clauses cut again, is what packing them gives
    fresh = PackedWords(list(got))
    for a in ("cps", "starts", "docs"):
        assert getattr(got, a).tolist() == getattr(fresh, a).tolist(), a
    assert got.flat == fresh.flat
    assert clause_words(words, [], [], seg) == [] and clause_words(words, [], [], seg).docs.tolist() == [0]
    # and the stretches are taken, not cut again: every clause of the plain text is one
    lo, _ = _spans_of(seg, ["物流很快，质量很好，但是价格太贵了！"])
    assert (lo >= 0).all() and len(lo) == 3
    # a merged fragment ("超值" joins the clause before it), a split before 但是 inside a run: cut
    lo, _ = _spans_of(seg, ["东西很划算，超值，物流很快", "质量很好但是价格太贵"])
    assert (lo[[0, 2, 3]] < 0).all() and lo[1] >= 0


def test_joined_clause_words_are_the_clauses_words_with_the_join_between() -> None:
    """The words of selected clauses joined by "，" (what per-topic sentiment scores), copied in their
    packed form: the same lists and the same packing as making them from the words."""
    rng = random.Random(3)
    pieces = ["物流", "很快", "😀", "a", "質量", "，", "好"]
    words = PackedWords([[rng.choice(pieces) for _ in range(rng.randint(0, 4))] for _ in range(60)])
    groups = [sorted(rng.sample(range(60), rng.randint(1, 4))) for _ in range(200)] + [[7], [0, 59]]
    got = joined_clause_words(words, groups, "，")
    want = [[*chain.from_iterable(words[c] + ["，"] for c in g)][:-1] for g in groups]
    assert list(got) == want
    fresh = PackedWords(want)
    for a in ("cps", "starts", "docs"):
        assert getattr(got, a).tolist() == getattr(fresh, a).tolist(), a
    assert joined_clause_words(words, [], "，").docs.tolist() == [0]


def _spans_of(seg: Segmenter, texts: list[str]) -> tuple:
    from nlp.codepoints import packed

    words = PackedWords(seg.cut_many(texts))
    clauses = [split_clauses(t) for t in texts]
    ccps, cstarts = packed([c for cs in clauses for c in cs])
    per_row = np.cumsum([0, *map(len, clauses)])
    return _spans(words.cps, words.starts, words.docs, np.arange(len(texts)), ccps, cstarts, per_row, _SEPARATORS)


def test_segmenter_engine_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """rjieba by default (its rows say so in their version, so rows jieba cut are re-scored); jieba,
    the reference, when the setting names it."""
    monkeypatch.delenv("CXLOOP_SEGMENTER", raising=False)
    assert segmenter_engine() == "rjieba" and default_segmenter().engine == "rjieba"
    assert analysis_version("s", "t", default_taxonomy()).endswith("+seg-rjieba")
    monkeypatch.setenv("CXLOOP_SEGMENTER", "hanlp")
    with pytest.raises(SegmenterError, match="CXLOOP_SEGMENTER='hanlp'"):
        segmenter_engine()
    monkeypatch.setenv("CXLOOP_SEGMENTER", " JIEBA ")
    assert default_segmenter().engine == "jieba"
    assert "+seg-" not in analysis_version("s", "t", default_taxonomy())


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
    assert tax.match("请问超时赔付怎么申请") == ["logistics"]
    assert "logistics" not in tax.match("手机银行登录超时，排队办理也超时")   # 超时 alone is no delivery
    assert "digital_experience" in tax.match("App更新后闪退")
    assert tax.match("半夜收到消费提醒,境外被刷了两千多") == ["security_privacy"]
    assert tax.match("境外消费的货币转换费收得不明不白") == ["price_fees"]
    assert tax.match("今天天气不错") == []


def _random_texts(words: list[str], n: int, seed: int) -> list[str]:
    """Texts glued from the words, pieces of them and other characters (overlaps, near misses,
    a character outside the BMP, upper case), as the scanners' tests need."""
    rng = random.Random(seed)
    filler = list("的了很太不是，。！？ a") + ["😡", "Ａ", "APP", "App"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            w = rng.choice(words)
            parts.append(rng.choice([w, w[:-1] or w, w[1:] or w, w.upper(), rng.choice(filler)]))
        out.append("".join(parts))
    return out


def test_word_scanner_matches_as_the_regex_alternation_does() -> None:
    words = ["快递", "快递员", "递员", "客服", "人工客服", "人工", "工客", "app", "😡气", "退款", "款到"]
    scanner = WordScanner(words)
    flat = re.compile(alternation(words))
    texts = _random_texts(words, 3000, seed=1) + ["", "快递员工客服", "人工客服快递快递员"]
    docs, starts, found = scanner.scan(texts)
    got: list[list[tuple[int, str]]] = [[] for _ in texts]
    for d, a, j in zip(docs.tolist(), starts.tolist(), found.tolist(), strict=True):
        got[d].append((a, scanner.words[j]))
    assert got == [[(m.start(), m.group()) for m in flat.finditer(t)] for t in texts]
    assert sum(map(len, got)) > 3000


def test_taxonomy_matches_a_batch_as_text_by_text_with_the_regex() -> None:
    tax = default_taxonomy()
    keywords = sorted({kw.lower() for t in tax for kw in t.keywords})
    pattern = re.compile(alternation(keywords))
    owners: dict[str, list[str]] = {}
    for t in tax:
        for kw in t.keywords:
            owners.setdefault(kw.lower(), []).append(t.key)
    texts = _random_texts(keywords, 2000, seed=2)
    expected = []
    for text in texts:
        ev: dict[str, list[str]] = {}
        for w in pattern.findall(text.lower()):
            for key in owners[w]:
                if w not in ev.setdefault(key, []):
                    ev[key].append(w)
        expected.append(ev)
    assert tax.match_evidence_many(texts) == expected
    assert [tax.match_evidence(t) for t in texts[:50]] == expected[:50]
    assert tax.match_many(texts) == [[k for k in tax.keys if k in ev] for ev in expected]
    assert Taxonomy([Topic("a", "A", "usage", "t", ())]).match_many(["快递", ""]) == [[], []]


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


def test_the_idf_table_is_cached_and_a_broken_cache_is_parsed_again(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import jieba

    from nlp import segment

    monkeypatch.setenv("CXLOOP_JIEBA_CACHE", str(tmp_path))
    parsed = segment._parse_idf((Path(jieba.__file__).parent / "analyse" / "idf.txt").read_text(encoding="utf-8"))
    segment._idf.cache_clear()
    try:
        assert segment._idf() == parsed                      # parsed, and written to the cache
        (cached,) = tmp_path.glob("cxloop-jieba-idf-*.marshal")
        segment._idf.cache_clear()
        assert segment._idf() == parsed                      # read back from it
        cached.write_bytes(b"\x00not marshal")
        segment._idf.cache_clear()
        assert segment._idf() == parsed                      # a broken cache: parsed again …
        assert cached.read_bytes() != b"\x00not marshal"     # … and rewritten
    finally:
        segment._idf.cache_clear()
