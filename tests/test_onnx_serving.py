"""Opt-in ONNX Runtime serving (models/onnx_serving.py): the same embeddings as torch, one export per
machine, the choice reaching an ensemble's transformer, and a clear error without the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.baseline import ModelLoadError
from models.e5_base import ensure_base
from models.registry import load_sentiment_model, resolve_model
from models.transformer import TransformerSentiment

TEXTS = ["物流太慢了，等了一个星期才到", "好", "客服态度很好，问题解决了", "App 8.2 更新后登录闪退，烦死了!!",
         "hello world, nice hotel", "这家酒店的早餐一般般，位置不错，就是隔音差了点，晚上楼道里一直有人说话"]


@pytest.fixture()
def onnx_installed() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, base_cache: Path) -> Path:
    """A 2-layer, 64-wide BERT with the real e5 tokenizer (as in test_transformer.py)."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-base-onnx")
    tok = AutoTokenizer.from_pretrained(ensure_base(base_cache))
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=130, type_vocab_size=1,
                        pad_token_id=tok.pad_token_id)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, base_cache: Path) -> Path:
    """A saved tiny transformer keeping 1 of its base's 2 layers (the ``layers`` key of model.json)."""
    torch.manual_seed(1)
    model = TransformerSentiment.from_base(str(tiny_base), base_cache, max_length=64, layers=1)
    with torch.no_grad():  # an untrained but not degenerate head
        model.net.heads["sentiment"].weight.normal_(0, 1.0)
    return model.save(tmp_path_factory.mktemp("models") / "tiny-onnx", meta={"model_version": "tiny-onnx-1"})


def test_onnx_embeddings_equal_torch_and_the_export_is_cached(tmp_path: Path, tiny_model: Path, onnx_installed,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import models.onnx_serving as onnx_serving
    cache = tmp_path / "cache"
    fp32 = load_sentiment_model(tiny_model, cache, backend="torch")
    served = load_sentiment_model(tiny_model, cache, backend="onnx")
    assert fp32.onnx is None and served.onnx is not None
    exported = cache / "onnx" / "tiny-onnx-1-1l.onnx"
    assert served.onnx.path == exported and exported.is_file()
    assert [p.name for p in exported.parent.iterdir()] == [exported.name]   # no temporary file left behind
    for batch_size in (64, 2):   # one padded batch; several length-sorted ones
        np.testing.assert_allclose(served.embed(TEXTS, batch_size=batch_size), fp32.embed(TEXTS), atol=1e-4)
    np.testing.assert_allclose(served.embed(TEXTS[1:2]), fp32.embed(TEXTS[1:2]), atol=1e-4)
    np.testing.assert_allclose(served.predict_proba(TEXTS), fp32.predict_proba(TEXTS), atol=1e-4)
    assert served.predict_proba([]).shape == (0, 3)
    remembered = served.embed(TEXTS, remember=True)
    assert served.embed(TEXTS) is remembered   # the memo the semantic topic model shares
    np.testing.assert_allclose(served.proba_from_embeddings(remembered), fp32.predict_proba(TEXTS), atol=1e-4)

    # a second load on this machine reuses the export
    stamp = exported.stat().st_mtime_ns

    def no_export(*_a, **_k):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_serving, "export", no_export)
    again = load_sentiment_model(tiny_model, cache, backend="onnx")
    assert exported.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.embed(TEXTS), fp32.embed(TEXTS), atol=1e-4)
    monkeypatch.undo()

    # a damaged cached file is exported again rather than failing the load
    exported.write_bytes(b"not an onnx model")
    repaired = load_sentiment_model(tiny_model, cache, backend="onnx")
    np.testing.assert_allclose(repaired.embed(TEXTS), fp32.embed(TEXTS), atol=1e-4)


def test_cxloop_serving_reaches_an_ensembles_transformer(tmp_path: Path, tiny_model: Path, onnx_installed,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from models.ensemble import EnsembleSentiment
    folder = EnsembleSentiment.save(tmp_path / "ens", [tiny_model, resolve_model("baseline")], [0.5, 0.5],
                                    {"model_version": "ens-1"})
    cache = tmp_path / "cache"
    fp32 = load_sentiment_model(folder, cache)
    monkeypatch.setenv("CXLOOP_SERVING", "onnx")
    served = load_sentiment_model(folder, cache)
    assert served.members[0].onnx is not None and (cache / "onnx" / "tiny-onnx-1-1l.onnx").is_file()
    np.testing.assert_allclose(served.predict_proba(TEXTS), fp32.predict_proba(TEXTS), atol=1e-4)
    with pytest.raises(ModelLoadError, match="alternatives"):
        load_sentiment_model(tiny_model, cache, quantize=True)


def test_a_clear_error_without_the_onnx_extra_or_with_a_bad_choice(tmp_path: Path, tiny_model: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    model = load_sentiment_model(tiny_model, cache, backend="torch")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import onnxruntime → ImportError
    with pytest.raises(ModelLoadError, match=r"pip install 'cxloop\[onnx\]'"):
        load_sentiment_model(tiny_model, cache, backend="onnx")
    with pytest.raises(ModelLoadError, match=r"onnxruntime is not installed.*cxloop\[onnx\]"):
        model.use_onnx(cache)
    assert model.onnx is None and not (cache / "onnx").exists()
    monkeypatch.setenv("CXLOOP_SERVING", "tensorrt")
    with pytest.raises(ModelLoadError, match="CXLOOP_SERVING='tensorrt': choose one of torch, onnx"):
        load_sentiment_model(tiny_model, cache)
    monkeypatch.setenv("CXLOOP_SERVING", "torch")
    assert load_sentiment_model(tiny_model, cache).onnx is None
