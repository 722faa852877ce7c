"""Plain inquiries (nlp/inquiry.py) and their neutral sentiment (models/predict.py).

tests/data/inquiry_labelled.csv (44 rows: customer questions across industries and hotline notes
of answered questions, against complaints worded as questions and plain statements) was written
before the rules were run on it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.predict import INQUIRY_CONFIDENCE, neutral_inquiries
from nlp import InquiryRulesError, default_inquiry_rules, is_plain_inquiry, load_inquiry_rules, normalize_text

DATA = Path(__file__).parent / "data" / "inquiry_labelled.csv"
LABELS = ("neg", "neu", "pos")


def _rows() -> list[tuple[str, int]]:
    with DATA.open(encoding="utf-8", newline="") as f:
        return [(normalize_text(r["text"]), int(r["inquiry"])) for r in csv.DictReader(f)]


def test_labelled_set_accuracy_and_no_complaint_taken_for_an_inquiry() -> None:
    rows = _rows()
    assert len(rows) >= 40 and 15 <= sum(y for _, y in rows) <= len(rows) - 15
    pred = [(is_plain_inquiry(t), y) for t, y in rows]
    accuracy = sum(p == bool(y) for p, y in pred) / len(pred)
    print(f"\ninquiry_labelled.csv: accuracy {accuracy:.3f}")
    assert accuracy >= 0.9
    # the costly mistake: a complaint scored neutral hides a pain point
    assert [t for t, y in rows if not y and is_plain_inquiry(t)] == []


@pytest.mark.parametrize("text, inquiry", [
    ("请问能不能开电子发票?", True),                 # 能不能 is a question, not the complaint 不能
    ("客户来电咨询积分兑换规则,已详细解答", True),
    ("可以备注放在门口吗?", True),                   # a yes/no question that is the whole text
    ("东西坏了,这个还能用吗?真是无语", False),
    ("请问为什么我的退款还没到账?", False),
    ("咨询了好几次,客服都说在处理", False),
    ("请问我的卡被盗刷了怎么办", False),             # urgent wording is never a plain inquiry
    ("这个价格很划算", False),                       # asks nothing
    ("请问信用卡账单分期怎么操作?在线等", True),      # pressing for the answer is no complaint …
    ("您好,可以备注送到公司前台吗?在线等", True),
    ("请问为什么扣了我两次钱,在线等", False),         # … and does not hide one
    # a long letter that asks somewhere is a story, here a complaint in words no list holds
    ("您好,去年在贵行申请了经营贷款,整个审批流程比较顺利,最近收到通知说利率要上调,事先没有任何沟通,"
     "合同里的条款也写得很模糊。我打电话询问,客服只是照本宣科。希望贵行说明利率调整的依据。", False),
])
def test_asking_without_complaining(text: str, inquiry: bool) -> None:
    assert is_plain_inquiry(normalize_text(text)) is inquiry


def test_bad_rules_file_is_refused_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "inquiry.yaml"
    bad.write_text("asks: [请问]\ncomplaint: [还没]\nask_patterns: ['(unclosed']\n", encoding="utf-8")
    with pytest.raises(InquiryRulesError, match="inquiry.yaml.*ask_patterns"):
        load_inquiry_rules(bad)
    bad.write_text("asks: [请问]\ncomplains: [还没]\n", encoding="utf-8")
    with pytest.raises(InquiryRulesError, match=str(bad)):
        load_inquiry_rules(bad)
    bad.write_text("asks: [请问]\ncomplaint: [还没]\nmax_chars: many\n", encoding="utf-8")
    with pytest.raises(InquiryRulesError, match=f"{bad}.*max_chars"):
        load_inquiry_rules(bad)
    bad.write_text("asks: [请问]\ncomplaint: [还没]\npressing: ['']\n", encoding="utf-8")
    with pytest.raises(InquiryRulesError, match=f"{bad}.*pressing"):
        load_inquiry_rules(bad)
    bad.write_text("asks: [请问]\ncomplaint: [还没]\nmax_chars: 10\n", encoding="utf-8")
    rules = load_inquiry_rules(bad)
    assert rules.is_plain_inquiry("请问网点几点开门?") and not rules.is_plain_inquiry("请问网点周末和节假日几点开门?")
    assert default_inquiry_rules().asks("请问")


def test_an_unsure_plain_inquiry_becomes_neutral_a_sure_model_keeps_its_label() -> None:
    texts = ["想问一下信用卡怎么调整账单日?", "请问您给我一根筷子怎么用啊", "请问我的快递为什么还没到?"]
    proba = np.array([[0.58, 0.27, 0.15],                                   # unsure: neutral
                      [INQUIRY_CONFIDENCE + 0.05, 0.03, 0.02],              # sure (sarcasm): kept
                      [0.60, 0.30, 0.10]], np.float32)                      # a complaint: kept
    out = neutral_inquiries(texts, proba, LABELS)
    assert [LABELS[i] for i in out.argmax(1)] == ["neu", "neg", "neg"]
    assert np.allclose(out.sum(1), 1) and np.array_equal(out[1:], proba[1:])
    # the score keeps the model's sign at a quarter of its size, and pos-vs-neg is unchanged
    assert (out[0, 2] - out[0, 0]) == pytest.approx(0.25 * (proba[0, 2] - proba[0, 0]))
    assert neutral_inquiries([], np.zeros((0, 3), np.float32), LABELS).shape == (0, 3)
