import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nlp import redact
from nlp.pii import id_card_valid, luhn_valid


def _id_with_check(body17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body17 + "10X98765432"[sum(int(d) * w for d, w in zip(body17, weights, strict=True)) % 11]


def _luhn(body: str) -> str:
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError


VALID_ID = _id_with_check("11010519491231002")
VALID_CARD = _luhn("622202123456789012")


@pytest.mark.parametrize(("text", "kind", "placeholder"), [
    ("我的电话13812345678，尽快回电", "phone", "<PHONE>"),
    ("手机 138-1234-5678", "phone", "<PHONE>"),
    ("打 +86 139 1234 5678", "phone", "<PHONE>"),
    ("座机 021-64381234", "phone", "<PHONE>"),
    ("座机 010-1234567", "phone", "<PHONE>"),      # ten digits: the fewest any PII has
    ("座机0101234567转人工", "phone", "<PHONE>"),
    (f"身份证{VALID_ID}号", "id_card", "<ID>"),
    (f"卡号{VALID_CARD}被盗刷", "bank_card", "<CARD>"),
    ("发到 zhang.san@example.com 谢谢", "email", "<EMAIL>"),
])
def test_redacts_validated_pii(text: str, kind: str, placeholder: str) -> None:
    r = redact(text)
    assert r.found == {kind: 1}
    assert placeholder in r.text


def test_keeps_numbers_that_do_not_validate() -> None:
    bad_id = VALID_ID[:-1] + ("1" if VALID_ID[-1] != "1" else "2")
    for text in ["订单号 202609031234567 金额 128.5 元", "客服 400-820-8820", f"编号{bad_id}",
                 "1234567890123456"]:
        assert redact(text).text == text, text
    assert not id_card_valid(bad_id)


def test_reports_several_kinds() -> None:
    r = redact(f"电话13812345678 邮箱 a@b.cn 卡{VALID_CARD}")
    assert r.found == {"phone": 1, "email": 1, "bank_card": 1}
    assert re.search(r"\d{11}", r.text) is None


@given(st.text(), st.sampled_from(["13812345678", "a.b@example.org", VALID_ID, VALID_CARD]))
def test_never_leaves_a_validated_item_between_arbitrary_text(prefix: str, pii: str) -> None:
    text = "说" + prefix + " " + pii + " 了"
    assert pii not in redact(text).text
