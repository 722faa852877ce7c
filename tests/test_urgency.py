"""Urgent wording (nlp/urgency.py): each category with its evidence, reasons in order and once,
and the DuckDB pattern that pipelines run agrees with the Python rule."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import duckdb
import pytest

from nlp import URGENCY_CATEGORIES, URGENT_PATTERN, detect_urgency, is_urgent, load_urgency_rules
from nlp.urgency import URGENT_WORDS, UrgencyRules, UrgencyRulesError, default_urgency_rules

ROOT = Path(__file__).resolve().parents[1]

SENTENCES = [
    "信用卡被盗刷了五千元,要报警",
    "再不处理我就打12315投诉你们",
    "已经向银保监会反映,等着看",
    "你们再这样我就找记者曝光",
    "我要起诉你们,律师函已经在写了",
    "明天就去销户,再也不用你们家了",
    "受不了了,准备携号转网",
    "外卖吃完全家食物中毒住院了",
    "充电宝突然起火,差点烧到孩子",
    "账户里的钱没了,也没收到任何短信",
    "莫名扣款三次,客服说查不到",
    "快递很快,包装完好",
    "请问怎么修改收货地址",
    "客服态度不好,等了很久",
    "价格有点贵",
    "",
]


@pytest.mark.parametrize(("text", "reason"), [
    ("我已经打了12315,也会向市场监管局反映", "escalation:12315"),
    ("再不退款就去法院起诉", "escalation:法院"),
    ("这事我要发抖音让大家评评理", "escalation:发抖音"),
    ("我要注销账户,这家银行不能再用了", "churn:注销账户"),
    ("已经卸载了,换一家", "churn:卸载"),
    ("宝宝吃了以后过敏,全身起疹子", "safety:过敏"),
    ("插座一插上就触电了", "safety:触电"),
    ("有人冒用我的身份开了卡,这是诈骗", "fraud:冒用"),
    ("银行卡被冻结了,工资取不出来", "fraud:冻结"),
    ("半夜收到消费提醒,境外被刷了两千多,急!", "fraud:被刷了"),
])
def test_each_category_with_evidence(text: str, reason: str) -> None:
    reasons = detect_urgency(text)
    assert reason in reasons
    assert is_urgent(text)
    category, word = reason.split(":", 1)
    assert category in URGENCY_CATEGORIES and word in text


def test_every_category_has_words() -> None:
    rules = default_urgency_rules().rules
    assert set(rules) == set(URGENCY_CATEGORIES)
    assert all(rules[c] for c in URGENCY_CATEGORIES)


def test_non_urgent_sentences() -> None:
    for text in ("快递很快,包装完好", "客服态度太差了,等了半小时", "请问信用卡账单日可以改吗", "", "  "):
        assert detect_urgency(text) == []
        assert not is_urgent(text)


def test_reasons_in_order_of_appearance_and_once_each() -> None:
    text = "卡被盗刷了!我要报警,还要打12315,不处理就销户,再打12315,再报警"
    assert detect_urgency(text) == ["fraud:被盗刷", "escalation:报警", "escalation:12315", "churn:销户"]


def test_longest_word_is_the_evidence() -> None:
    assert detect_urgency("吃了以后食物中毒") == ["safety:食物中毒"]
    assert detect_urgency("准备携号转网") == ["churn:携号转网"]
    assert detect_urgency("已经微博曝光了") == ["escalation:微博曝光"]


def test_the_words_urgent_before_the_move_still_are() -> None:
    before = ("盗刷", "被盗", "诈骗", "被骗", "资金安全", "钱没了", "冻结", "报警", "起诉", "律师", "法院",
              "银保监", "金融监管", "监管局", "人民银行", "消协", "消费者协会", "12315", "12378", "投诉到", "曝光",
              "媒体", "记者", "食物中毒", "中毒", "过敏", "受伤", "住院", "人身安全")
    assert set(before) <= set(URGENT_WORDS)


def test_pattern_agrees_with_python_and_duckdb() -> None:
    py = [is_urgent(t) for t in SENTENCES]
    assert py == [re.search(URGENT_PATTERN, t) is not None for t in SENTENCES]
    assert py == [bool(detect_urgency(t)) for t in SENTENCES]
    con = duckdb.connect()
    try:
        db = [row[0] for row in con.execute(
            "SELECT regexp_matches(t, ?) FROM unnest(?::VARCHAR[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
            [URGENT_PATTERN, SENTENCES]).fetchall()]
    finally:
        con.close()
    assert db == py
    assert sum(py) == 11


def test_rules_file_is_validated(tmp_path: Path) -> None:
    p = tmp_path / "u.yaml"
    p.write_text("fraud: [盗刷]\nchurn: [盗刷]\n", encoding="utf-8")
    with pytest.raises(UrgencyRulesError, match="both"):
        load_urgency_rules(p)
    p.write_text("weather: [下雨]\n", encoding="utf-8")
    with pytest.raises(UrgencyRulesError, match="unknown category"):
        load_urgency_rules(p)
    p.write_text("fraud: 盗刷\n", encoding="utf-8")
    with pytest.raises(UrgencyRulesError, match="list of words"):
        load_urgency_rules(p)
    with pytest.raises(UrgencyRulesError, match="not found"):
        load_urgency_rules(tmp_path / "missing.yaml")
    p.write_text("fraud: [盗刷]\nsafety: [12315, 起火]\n", encoding="utf-8")  # numbers are words too
    rules = load_urgency_rules(p)
    assert rules.detect("打了12315") == ["safety:12315"]
    assert UrgencyRules({}).detect("盗刷") == [] and not UrgencyRules({}).is_urgent("盗刷")


def test_nlp_rule_modules_import_no_models_or_pipelines() -> None:
    for name in ("urgency.py", "emotion.py"):
        tree = ast.parse((ROOT / "nlp" / name).read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m.split(".")[0] in ("models", "pipelines")}, name
