"""Training as a flow on a small labelled folder laid out like the shared data (tests never read
../shared): selection on dev, test scored, card written, registered, promoted only if better,
and a promotion back-fills older rows on the next enrich."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from models.data import DataMissingError, shared_data_dir
from pipelines.warehouse import Warehouse

pytestmark = pytest.mark.usefixtures("prefect_server")

NEG = ["送餐太慢了", "客服态度很差", "App总是闪退", "质量太差了", "包装破损严重", "价格太贵不值", "退款一直不到账",
       "排队等了一个小时"]
POS = ["送餐很快", "客服很耐心", "App很流畅", "质量非常好", "包装很严实", "价格实惠", "退款很及时", "基本不用排队"]
NEU = ["请问营业时间是几点", "我想咨询一下流程", "订单明天到", "这款有几种颜色", "网点在人民路", "下周再看看"]
TAILS = ["。", "！", "，就这样。", "，记录一下。", "。第二次了", "。说一下"]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_shared_data(root: Path, seed: int = 3) -> Path:
    rng = random.Random(seed)
    reviews = []
    for i in range(240):
        label = "neg" if i % 2 else "pos"
        text = rng.choice(NEG if label == "neg" else POS) + rng.choice(TAILS) + f"编号{i}"
        reviews.append([text, label, rng.choice(["hotel", "food_delivery"]), "synthetic",
                        ["train", "train", "train", "dev", "test"][i % 5]])
    _write(root / "sentiment" / "reviews_sentiment.csv", ["text", "label", "domain", "source", "split"], reviews)
    car = [[i, rng.choice(NEU) + rng.choice(TAILS) + f"车{i}", "内饰", "内饰:0", 1] for i in range(90)]
    _write(root / "aspects" / "car_forum_reviews.csv", ["content_id", "text", "aspects", "aspect_sentiments",
                                                        "n_aspects"], car)
    makeup = [[i, rng.choice(NEG) + f"妆{i}", "物流", "物流:负面", "负面", 1] for i in range(30)]
    _write(root / "aspects" / "ecommerce_makeup_reviews.csv", ["id", "text", "categories", "category_polarities",
                                                               "review_polarity", "has_negative"], makeup)
    rest = [[["train", "dev", "test"][i % 3], rng.choice(POS) + f"店{i}", 1, "x->y:POS", "POS"] for i in range(30)]
    _write(root / "aspects" / "restaurant_triplets.csv", ["split", "text", "n_triplets", "triplets",
                                                          "review_polarity"], rest)
    return root


def test_missing_shared_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match="reviews_sentiment.csv"):
        shared_data_dir(tmp_path)


def test_train_flow_registers_promotes_and_enrich_backfills(tmp_path: Path, sample_copy: Path) -> None:
    from pipelines.enrich import enrich_flow
    from pipelines.flows import train_flow
    from pipelines.ingest import ingest_flow

    data = make_shared_data(tmp_path / "shared")
    home, db = tmp_path / "home", tmp_path / "home" / "cx.duckdb"
    ingest_flow(paths=[str(sample_copy / "online_chat.jsonl")], db=str(db), home=str(home))
    first = enrich_flow(db=str(db), home=str(home))

    r = train_flow(data_dir=str(data), db=str(db), home=str(home))
    model_dir = Path(r["path"])
    assert (model_dir / "MODEL_CARD.md").read_text(encoding="utf-8").count("test") >= 2
    assert r["test"]["binary"]["accuracy"] > 0.9 and r["test"]["three_class"]["n"] > 0
    assert r["promoted"] == (r["dev_score"] > r["current_dev_score"])
    wh = Warehouse(db)
    row = wh.query("SELECT promoted FROM model_versions WHERE model_version = ?", [r["model_version"]]).to_pylist()
    assert row == [{"promoted": r["promoted"]}]
    assert r["promoted"], "the tiny in-domain model should beat the shipped one on its own dev split"

    second = enrich_flow(db=str(db), home=str(home))
    # rows carry the analysis version: the sentiment model's version, then the topic model's and the taxonomy's
    assert second["model_version"].split("+")[0] == r["model_version"] != first["model_version"].split("+")[0]
    assert second["scored"] == first["scored"]  # every older row re-scored, once
    assert wh.scalar("SELECT count(DISTINCT model_version) FROM feedback_nlp") == 1
    assert enrich_flow(db=str(db), home=str(home))["scored"] == 0
