"""The baseline model: a tiny real training run, the artifact round-trip, and the shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.baseline import BaselineConfig, BaselineSentiment, ModelLoadError
from models.predict import Analyzer
from models.registry import SHIPPED_DIR, load_sentiment_model, model_version_of, promote, resolve_model

TRAIN = [
    ("送餐太慢了，等了一个多小时", "neg"), ("客服态度很差，问题一直没解决", "neg"), ("App老是闪退，根本用不了", "neg"),
    ("质量太差，用了两天就坏了", "neg"), ("包装破损，东西都洒了", "neg"), ("价格太贵，不值这个钱", "neg"),
    ("送餐很快，饭菜还是热的", "pos"), ("客服很耐心，很快解决了问题", "pos"), ("新版App很流畅，好用", "pos"),
    ("质量很好，用了很久都没问题", "pos"), ("包装很严实，东西完好", "pos"), ("价格实惠，性价比高", "pos"),
    ("请问信用卡怎么办理", "neu"), ("我想咨询一下营业时间", "neu"), ("订单今天下午到", "neu"),
    ("这款有几种颜色", "neu"), ("网点在人民路上", "neu"), ("下周再看看", "neu"),
]


@pytest.fixture(scope="module")
def tiny() -> BaselineSentiment:
    texts, labels = zip(*TRAIN, strict=True)
    return BaselineSentiment(BaselineConfig(min_df=1, C=1.0)).fit(list(texts), list(labels))


def test_tiny_model_learns_and_probabilities_are_valid(tiny: BaselineSentiment) -> None:
    texts = [t for t, _ in TRAIN]
    p = tiny.predict_proba(texts)
    assert p.shape == (len(texts), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    acc = np.mean(np.asarray(tiny.labels)[p.argmax(1)] == np.asarray([lab for _, lab in TRAIN]))
    assert acc == 1.0


def test_plain_options_are_one_vs_rest_and_nb_weights_are_the_svm_on_scaled_features() -> None:
    """With ``nb_alpha=0`` and one C the per-class fit is scikit-learn's one-vs-rest LinearSVC; with NB-SVM
    the stored polar weights are the SVM's weights on ratio-scaled features times the ratio."""
    import scipy.sparse as sp
    from sklearn.svm import LinearSVC

    from models.baseline import LABELS, binarised, nb_ratio

    texts, labels = (list(c) for c in zip(*TRAIN, strict=True))
    plain = BaselineSentiment(BaselineConfig(min_df=1, C=1.0, C_neutral=None, nb_alpha=0.0))
    x = plain.text_features.fit_transform(texts)
    plain.fit_features(x, labels)
    ovr = LinearSVC(C=1.0).fit(x, labels)
    order = [list(ovr.classes_).index(lab) for lab in LABELS]
    np.testing.assert_allclose(plain.coef, ovr.coef_[order], atol=1e-4)
    np.testing.assert_allclose(plain.intercept, ovr.intercept_[order], atol=1e-4)

    nb = BaselineSentiment(BaselineConfig(min_df=1, C=1.0, C_neutral=1.0, nb_alpha=0.5))
    nb.text_features = plain.text_features
    nb.fit_features(x, labels)
    y = np.asarray(labels)
    r = nb_ratio(binarised(x), y == "neg", 0.5)
    assert r[plain.text_features.names().index("慢")] > 0 > r[plain.text_features.names().index("快")]
    svm = LinearSVC(C=1.0).fit(x @ sp.diags(r), (y == "neg").astype(int))
    np.testing.assert_allclose(nb.coef[0], svm.coef_.ravel() * r, atol=1e-4)
    np.testing.assert_allclose(nb.coef[1], plain.coef[1], atol=1e-4)   # the neutral class stays plain
    assert not np.allclose(nb.coef[0], plain.coef[0])


def test_artifact_round_trip(tiny: BaselineSentiment, tmp_path: Path) -> None:
    tiny.save(tmp_path / "m", meta={"model_version": "tiny-1"})
    loaded = load_sentiment_model(tmp_path / "m")
    texts = ["送餐太慢了", "客服很耐心"]
    np.testing.assert_allclose(loaded.predict_proba(texts), tiny.predict_proba(texts), atol=2e-3)
    assert model_version_of(tmp_path / "m") == "tiny-1"


def test_vocabularies_live_in_weights_npz_and_older_artifacts_still_load(tiny: BaselineSentiment,
                                                                          tmp_path: Path) -> None:
    folder = tiny.save(tmp_path / "m", meta={"model_version": "tiny-1"})
    doc = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert "word_vocab" not in doc and "char_vocab" not in doc
    texts = ["送餐太慢了", "客服很耐心", "请问几点发货"]
    now = load_sentiment_model(folder).predict_proba(texts)
    # an artifact written before the move keeps its vocabularies as lists in model.json
    from models.features import vocab_list
    with np.load(folder / "weights.npz") as w:
        arrays = {k: w[k] for k in w.files}
    for key in ("word_vocab", "char_vocab"):
        doc[key] = vocab_list(arrays.pop(key))
    assert "送餐" in doc["word_vocab"]
    np.savez_compressed(folder / "weights.npz", **arrays)
    (folder / "model.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    np.testing.assert_array_equal(load_sentiment_model(folder).predict_proba(texts), now)


def test_corrupt_and_missing_artifacts_name_the_path(tiny: BaselineSentiment, tmp_path: Path) -> None:
    folder = tiny.save(tmp_path / "m", meta={"model_version": "tiny-1"})
    (folder / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_sentiment_model(folder)
    (folder / "weights.npz").unlink()
    with pytest.raises(ModelLoadError, match="weights.npz"):
        load_sentiment_model(folder)
    with pytest.raises(ModelLoadError, match="not found"):
        load_sentiment_model(tmp_path / "nowhere")
    doc = json.loads((folder / "model.json").read_text())
    doc["format"] = "pickle"
    (folder / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="unknown model format"):
        load_sentiment_model(folder)


def test_registry_resolution_and_promotion(tiny: BaselineSentiment, tmp_path: Path) -> None:
    home = tmp_path / "models"
    assert resolve_model(None, home) == SHIPPED_DIR / "sentiment-ensemble"      # the shipped default
    assert resolve_model("baseline", home) == SHIPPED_DIR / "sentiment-baseline"
    folder = tiny.save(home / "tiny-1", meta={"model_version": "tiny-1"})
    assert resolve_model("tiny-1", home) == folder
    promote(home, folder)
    assert resolve_model(None, home) == folder
    with pytest.raises(ModelLoadError, match="unknown model 'nope'"):
        resolve_model("nope", home)


@pytest.mark.parametrize("kind", ["baseline", None])   # None: the shipped default (the ensemble)
def test_shipped_model_reads_complaints_correctly(kind: str | None) -> None:
    a = Analyzer.load(kind)
    out = a.analyze(["手机银行更新以后一直闪退，登录不上，太耽误事了", "骑手送得很快，饭菜还是热的，点赞",
                     "送餐超时一个多小时，饭都凉了"])
    assert out["sentiment"] == ["neg", "pos", "neg"]
    assert out["sentiment_score"][0] < -0.3 < 0.3 < out["sentiment_score"][1]
    assert "digital_experience" in out["topics"][0]
    assert out["model_version"][0].startswith(f"sentiment-{kind or 'ensemble'}-")
    assert (resolve_model(kind) / "MODEL_CARD.md").exists()


def test_version_checks_see_a_rewritten_model_json_and_skip_its_vocabularies(tmp_path: Path) -> None:
    from models.registry import artifact_doc
    folder = tmp_path / "m"
    folder.mkdir()
    doc = {"format": "x", "word_vocab": ["快递"] * 1000, "meta": {"model_version": "m-1"}}
    (folder / "model.json").write_text(json.dumps(doc), encoding="utf-8")
    assert model_version_of(folder) == "m-1"
    assert "word_vocab" not in artifact_doc(folder / "model.json")
    doc["meta"]["model_version"] = "m-22"   # rewritten (retrained in place): read again, not remembered
    (folder / "model.json").write_text(json.dumps(doc), encoding="utf-8")
    assert model_version_of(folder) == "m-22"
    (folder / "model.json").unlink()
    with pytest.raises(ModelLoadError, match="not found"):
        model_version_of(folder)
