"""Opt-in ONNX Runtime serving (models/onnx_serving.py): the same embeddings as torch, one export per
machine, the choice reaching an ensemble's transformer, and a clear error without the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.baseline import ModelLoadError
from models.registry import load_sentiment_model, resolve_model
from models.transformer import TransformerSentiment

TEXTS = ["物流太慢了，等了一个星期才到", "好", "客服态度很好，问题解决了", "App 8.2 更新后登录闪退，烦死了!!",
         "hello world, nice hotel", "这家酒店的早餐一般般，位置不错，就是隔音差了点，晚上楼道里一直有人说话"]


@pytest.fixture()
def onnx_installed() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")


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


def test_batches_run_side_by_side_in_order(tmp_path: Path, tiny_model: Path, onnx_installed,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from models.onnx_serving import OnnxEncoder
    monkeypatch.setenv("CXLOOP_THREADS", "2")
    cache = tmp_path / "cache"
    fp32 = load_sentiment_model(tiny_model, cache, backend="torch")
    served = load_sentiment_model(tiny_model, cache, backend="onnx")
    assert served.onnx.lanes == 2 and served.onnx.session.get_session_options().intra_op_num_threads == 1
    texts = TEXTS * 5   # 30 batches of one text: more than the lanes' window of four
    side_by_side = served.embed(texts, batch_size=1)
    np.testing.assert_allclose(side_by_side, fp32.embed(texts), atol=1e-4)   # each row its own text
    served.onnx = OnnxEncoder(served.onnx.path, 2, lanes=1)
    assert served.onnx.session.get_session_options().intra_op_num_threads == 2
    np.testing.assert_allclose(served.embed(texts, batch_size=1), side_by_side, atol=1e-6)


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
    with pytest.raises(ModelLoadError, match="CXLOOP_SERVING=.tensorrt.: choose one of torch, onnx, onnx-int8"):
        load_sentiment_model(tiny_model, cache)
    monkeypatch.setenv("CXLOOP_SERVING", "torch")
    assert load_sentiment_model(tiny_model, cache).onnx is None


def test_onnx_int8_is_cached_beside_the_export_and_close_to_torch(tmp_path: Path, tiny_model: Path, onnx_installed,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import models.onnx_serving as onnx_serving
    cache = tmp_path / "cache"
    fp32 = load_sentiment_model(tiny_model, cache, backend="torch")
    served = load_sentiment_model(tiny_model, cache, backend="onnx-int8")
    exported = cache / "onnx" / "tiny-onnx-1-1l.onnx"
    quantized = cache / "onnx" / "tiny-onnx-1-1l.int8-v2.onnx"
    assert served.onnx is not None and served.onnx.path == quantized
    assert sorted(p.name for p in quantized.parent.iterdir()) == sorted([exported.name, quantized.name])  # no tmp file
    import onnx
    graph = onnx.load(str(quantized)).graph
    ops = {n.op_type for n in graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops   # int8 matrix products
    # the feed-forward output projection is quantised; its outlier input channels run in a float32 side path
    assert not [n for n in graph.node if n.name.endswith("/output/dense/MatMul") and "/attention/" not in n.name
                and n.op_type == "MatMul"]
    assert [n for n in graph.node if "/output/dense/outlier/" in n.name and n.op_type == "MatMul"]

    p, ref = served.predict_proba(TEXTS), fp32.predict_proba(TEXTS)
    assert p.shape == ref.shape and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.abs(p - ref).max() < 0.1   # the tiny model measures about 0.01
    assert (p.argmax(1) == ref.argmax(1)).mean() >= 5 / 6
    assert served.predict_proba([]).shape == (0, 3)

    # a second load on this machine (backend chosen by CXLOOP_SERVING) reuses both files
    stamps = (exported.stat().st_mtime_ns, quantized.stat().st_mtime_ns)

    def no_export(*_a, **_k):
        raise AssertionError("made again")

    monkeypatch.setattr(onnx_serving, "export", no_export)
    monkeypatch.setattr(onnx_serving, "quantize", no_export)
    monkeypatch.setenv("CXLOOP_SERVING", "onnx-int8")
    again = load_sentiment_model(tiny_model, cache)
    assert again.onnx.path == quantized and (exported.stat().st_mtime_ns, quantized.stat().st_mtime_ns) == stamps
    np.testing.assert_allclose(again.predict_proba(TEXTS), p, atol=1e-6)
    with pytest.raises(ModelLoadError, match="alternatives"):
        load_sentiment_model(tiny_model, cache, quantize=True)
    monkeypatch.undo()

    # a damaged int8 file is quantised again; so is a missing one, from the cached export
    quantized.write_bytes(b"not an onnx model")
    np.testing.assert_allclose(load_sentiment_model(tiny_model, cache, backend="onnx-int8").predict_proba(TEXTS),
                               p, atol=1e-6)
    quantized.unlink()
    monkeypatch.setattr(onnx_serving, "export", no_export)
    np.testing.assert_allclose(load_sentiment_model(tiny_model, cache, backend="onnx-int8").predict_proba(TEXTS),
                               p, atol=1e-6)


def test_splitting_the_outlier_channels_leaves_the_float32_graph_equal(tmp_path: Path, tiny_model: Path,
                                                                       onnx_installed) -> None:
    import onnx
    import onnxruntime as ort

    from models.onnx_serving import outlier_channels, split_outliers
    cache = tmp_path / "cache"
    served = load_sentiment_model(tiny_model, cache, backend="onnx")
    outliers = outlier_channels(served)
    assert set(outliers) == {0} and len(outliers[0]) == 2   # 1 layer, 2 channels
    proto = onnx.load(str(served.onnx.path))
    side = split_outliers(proto, outliers)
    assert len(side) == 5
    split = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    input_ids, mask = served.collate(served.encode(TEXTS))
    feed = {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()}
    np.testing.assert_allclose(split.run(None, feed)[0], served.onnx(feed["input_ids"], feed["attention_mask"]),
                               atol=1e-5)
