"""The topic model, per-topic sentiment and the new NLP columns (issue 4).

Training runs on a small synthetic labelled set (tests never read ../shared); the shipped model is
checked on sentences written here, none of them in the training seeds or the evaluation probe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.baseline import ModelLoadError
from models.predict import Analyzer
from models.registry import SHIPPED, SHIPPED_DIR, load_topic_model
from models.topic_data import TopicData
from models.topic_sentiment import topic_sentiments
from models.train_topics import TopicOptions, train_topic_model
from nlp import default_taxonomy, rules_fingerprint
from nlp.clauses import split_clauses


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer.load(model="baseline")


def test_clauses_split_at_punctuation_and_contrast() -> None:
    assert split_clauses("配送很快，但是质量太差") == ["配送很快", "但是质量太差"]
    assert split_clauses("物流快不过包装破了!!") == ["物流快", "不过包装破了"]
    assert split_clauses("好") == ["好"]
    assert split_clauses("") == []


def test_shipped_model_finds_a_topic_without_its_keywords(analyzer: Analyzer) -> None:
    tax = default_taxonomy()
    model = analyzer.topic_model
    assert model is not None and model.keys
    for text, key in [("这衣服洗一次就缩水变形了", "product_quality"), ("瓶子裂了，洗发水流了一箱", "packaging")]:
        assert key not in tax.match(text), "the sentence must not contain one of the topic's keywords"
        p = model.proba([text])[0, model.keys.index(key)]
        assert p >= model.thresholds[model.keys.index(key)], (text, key, p)
        assert key in analyzer.analyze([text])["topics"][0]


def test_a_mixed_review_gets_opposite_polarities_per_topic(analyzer: Analyzer) -> None:
    cols = analyzer.analyze(["快递第二天就送到了，很快，但是质量太差了，用了一次就坏"])
    per_topic = {t["topic"]: t["sentiment"] for t in cols["topic_sentiments"][0]}
    assert per_topic.get("logistics") == "pos", per_topic
    assert per_topic.get("product_quality") == "neg", per_topic


def test_per_topic_sentiment_falls_back_to_the_text_without_clauses() -> None:
    tax = default_taxonomy()
    doc = np.array([[0.1, 0.2, 0.7]], np.float32)
    res = topic_sentiments(["物流很快"], [["logistics"]], doc, lambda xs, ws, ctx: pytest.fail("no clause to score"),
                           None, tax)
    assert res[0][0].sentiment == "pos" and res[0][0].score == pytest.approx(0.6)


def test_analyzer_columns_emotion_and_urgency(analyzer: Analyzer) -> None:
    texts = ["你们再不处理我就投诉到12315，还要找媒体曝光！", "感谢客服帮我拦截了一笔诈骗转账，非常满意",
             "请问信用卡账单日是每月几号"]
    cols = analyzer.analyze(texts)
    assert set(cols) >= {"topic_sentiments", "emotion", "emotion_evidence", "urgent", "urgency_reasons"}
    assert cols["urgent"][0] and any(r.startswith("escalation:") for r in cols["urgency_reasons"][0])
    assert cols["emotion"][0] == "anger"
    assert not cols["urgent"][1] and cols["urgency_reasons"][1] == []   # positive: never urgent
    assert cols["emotion"][1] == "joy"
    assert cols["emotion"][2] == "none" and cols["topics"][2] == []
    assert cols["sentiment"][2] == "neu"          # a plain question is no complaint (nlp.inquiry)
    assert analyzer.model_version.count("+") == 4 and "+tax-" in analyzer.model_version
    assert analyzer.model_version.endswith(f"+rules-{rules_fingerprint()}+seg-rjieba")   # rjieba: the default


def test_the_rules_fingerprint_follows_the_word_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows scored with other emotion, urgency or inquiry word lists get another analysis version."""
    import shutil

    import nlp.rules

    packaged = nlp.rules.resources.files("nlp")
    shutil.copytree(Path(str(packaged)) / "resources", tmp_path / "resources")
    monkeypatch.setattr(nlp.rules.resources, "files", lambda _pkg: tmp_path)
    assert nlp.rules.rules_fingerprint.__wrapped__() == rules_fingerprint()
    with (tmp_path / "resources" / "inquiry.yaml").open("a", encoding="utf-8") as f:
        f.write("  - 再也不\n")
    assert nlp.rules.rules_fingerprint.__wrapped__() != rules_fingerprint()


def test_a_key_the_model_does_not_know_is_matched_by_keywords(tmp_path: Path) -> None:
    from nlp import load_taxonomy

    path = tmp_path / "taxonomy.yaml"
    text = (Path(default_taxonomy().source).read_text(encoding="utf-8")
            + "  membership_points:\n    name: 会员积分\n    stage: usage\n    team: 会员运营\n"
              "    keywords: [积分清零, 积分过期]\n")
    path.write_text(text, encoding="utf-8")
    tax = load_taxonomy(path)
    a = Analyzer.load(model="baseline", taxonomy=tax)
    cols = a.analyze(["积分清零了也不提前通知，太坑了"])
    assert "membership_points" in cols["topics"][0]
    assert a.model_version != Analyzer.load(model="baseline").model_version   # re-scored on the next enrich


def _synthetic(n_per: int = 40) -> TopicData:
    """Three keys with varied wording, labelled like the aspect sets (y 1/0, polarity)."""
    rng = np.random.RandomState(0)
    pools = {
        "logistics": ["快递{}天才到", "物流太慢了等了{}天", "配送员{}次都没送上门", "发货速度很快第{}天就收到了"],
        "price_fees": ["价格贵了{}块", "这个价钱不值{}", "比别家贵{}元太坑", "价格便宜了{}块很划算"],
        "packaging": ["盒子压坏了{}个", "包装破损漏了{}瓶", "外箱湿透了{}层", "包装很严实{}层泡沫"],
    }
    rows = []
    for key, templates in pools.items():
        for i in range(n_per):
            tpl = templates[i % len(templates)]
            pol = "pos" if ("很快" in tpl or "划算" in tpl or "严实" in tpl) else "neg"
            rows.append({"text": tpl.format(rng.randint(2, 99)), "key": key, "pol": pol})
    keys = default_taxonomy().keys
    recs = []
    for i, r in enumerate(rows):
        rec = {"text": r["text"], "dataset": "synthetic", "split": ("test", "dev", "train", "train", "train")[i % 5]}
        for k in keys:
            rec[f"y:{k}"] = (1 if k == r["key"] else 0) if k in pools else -1
            rec[f"pol:{k}"] = r["pol"] if k == r["key"] else ""
        recs.append(rec)
    frame = pd.DataFrame(recs).drop_duplicates("text").reset_index(drop=True)
    return TopicData(frame, keys, {"synthetic": sorted(pools)})


def test_training_learns_saves_reports_and_reloads(tmp_path: Path) -> None:
    from models.registry import resolve_model

    logs: list[str] = []
    result = train_topic_model(default_taxonomy(), TopicOptions(semantic=False, min_dev_positives=3,
                                                               clause_weights=(0.5, 1.0)),
                               tmp_path, None, None, resolve_model("baseline"), log=logs.append,
                               data=_synthetic())
    test = result.metrics["test"]["synthetic"]
    assert test["micro_f1"] >= 0.9, test
    assert result.metrics["test_per_topic_sentiment"]["synthetic"]["n"] > 0
    assert "probe" in result.metrics and result.metrics["probe"]["n"] >= 50
    card = (result.model_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "micro-F1" in card and "synthetic" in card and "Licence" in card
    model = load_topic_model(result.model_dir)
    p = model.proba(["快递等了五天才到"])[0]
    assert model.keys[int(p.argmax())] == "logistics"
    doc = json.loads((result.model_dir / "model.json").read_text(encoding="utf-8"))
    assert doc["format"] == "cxloop-topics/1" and doc["meta"]["model_version"] == result.model_version
    assert any("per-topic polarity on dev" in m for m in logs)


def test_seed_sentences_are_well_formed_and_never_the_probe() -> None:
    """The seeds are training data: each names taxonomy keys with a polarity, and none may be a probe
    sentence (the probe is what measures the industries the seeds stand in for)."""
    from models.topic_data import SEEDS_PATH, _parse_topics
    from models.train_topics import load_topic_probe
    from nlp import normalize_text

    seeds = pd.read_csv(SEEDS_PATH, dtype=str, keep_default_na=False)
    keys = set(default_taxonomy().keys)
    for text, topics in zip(seeds.text, seeds.topics, strict=True):
        for key, pol in _parse_topics(topics).items():
            assert key in keys and pol in {"neg", "neu", "pos"}, (text, topics)
    normalised = [normalize_text(t) for t in seeds.text]
    assert len(set(normalised)) == len(normalised)
    assert not set(normalised) & set(load_topic_probe().text)
    assert (seeds.topics == "").sum() >= 10      # questions and small talk: no topic at all


def test_thresholds_weigh_weak_dev_rows_as_training_does() -> None:
    from models.train_topics import _best_threshold

    # labelled positives at 0.5 and 0.7; ten weak rows at 0.5 whose keywords say "negative"
    p = np.array([0.5, 0.5, 0.7, 0.7] + [0.5] * 10)
    y = np.array([1, 1, 1, 1] + [0] * 10)
    assert _best_threshold(p, y) > 0.5                                             # counted in full they win
    assert _best_threshold(p, y, np.array([1.0] * 4 + [0.01] * 10)) <= 0.5       # weighted, the labels decide


def test_corrupt_topic_artifacts_are_refused_with_the_path(tmp_path: Path) -> None:
    import shutil

    src = SHIPPED_DIR / SHIPPED["topics"]
    bad = tmp_path / "topics"
    shutil.copytree(src, bad)
    (bad / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_topic_model(bad)
    (bad / "weights.npz").unlink()
    with pytest.raises(ModelLoadError, match="weights.npz"):
        load_topic_model(bad)
    with pytest.raises(ModelLoadError, match="not found"):
        load_topic_model(tmp_path / "missing")


def test_analyze_pauses_the_garbage_collector_and_restores_it(analyzer: Analyzer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """analyze runs with the cyclic collector paused and leaves it as it found it: enabled, disabled
    (a caller's choice), after an error, and across nested pauses (the outermost restores it)."""
    import gc
    import threading

    from models import predict

    seen: list[bool] = []
    real = Analyzer._analyze

    def spy(self: Analyzer, texts: list[str]) -> dict[str, list]:
        seen.append(gc.isenabled())
        return real(self, texts)

    monkeypatch.setattr(Analyzer, "_analyze", spy)
    was = gc.isenabled()
    try:
        gc.enable()
        out = analyzer.analyze(["物流很快，但是包装破了"])
        assert out["topics"] and seen == [False] and gc.isenabled()
        gc.disable()
        analyzer.analyze(["好"])
        assert seen == [False, False] and not gc.isenabled()
        gc.enable()
        with pytest.raises(TypeError):
            analyzer.analyze(None)  # type: ignore[arg-type]
        assert gc.isenabled()
        with predict.gc_paused():
            with predict.gc_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled()
        # threads entering and leaving in any order: enabled once all have left
        barrier = threading.Barrier(4)

        def worker() -> None:
            with predict.gc_paused():
                barrier.wait()
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert gc.isenabled() and predict._gc_pauses == 0
    finally:
        (gc.enable if was else gc.disable)()
