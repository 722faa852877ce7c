"""Opt-in ONNX Runtime serving for the transformer's encoder.

:meth:`models.transformer.TransformerSentiment.use_onnx` hands :meth:`~models.transformer.TransformerSentiment.embed`
to an :class:`OnnxEncoder`: the encoder and its mean pooling (not the heads, so ``head_logits``,
``proba_from_embeddings`` and a semantic topic model read the same embeddings as with torch) exported
with ``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``: it needs ``onnx`` but not
``onnxscript``; opset 17, batch and sequence axes dynamic) and run by ONNX Runtime's CPU provider on
:func:`models.transformer.cpu_threads` threads, one batch per thread side by side (see
:class:`OnnxEncoder`). Tokens, length-sorted batches and the
embedding memo stay those of the torch path; on 2 cores it serves the shipped transformer about twice
as fast as torch fp32, probabilities within 2e-6 of its own (``benchmarks/sentiment_serving.py``).

The export is written once per machine to ``<cache_root>/onnx/<model_version>-<layers>l.onnx``
(a temporary file renamed into place, so concurrent first loads never read half a file) and reused
by every later load. It needs the optional extra: ``pip install 'cxloop[onnx]'``.

``int8=True`` (``CXLOOP_SERVING=onnx-int8``) serves that export quantised by
:func:`onnxruntime.quantization.quantize_dynamic` instead (:func:`quantize`): int8 weights, per output
channel and 7-bit (``reduce_range``), for all of the encoder's matrix products with constant weights
(activations quantised per batch at run time), and 8-bit embedding tables (per tensor). The
feed-forward output projections are quantised too, after :func:`split_outliers`: their input (the GELU
output) has one or two channels per layer with values up to 70 where the rest stay under about 7 (the
"massive activations" of trained transformers), which per-tensor activation quantisation cannot
represent. Those channels (:func:`outlier_channels`, found on a few calibration sentences at export
time) are taken out of the quantised product and computed exactly in a small float32 side path, so the
graph stays equal to the float32 one before quantisation. On the shipped transformer this serves about
30 % more documents per CPU-second than keeping those projections float32 (the scheme before this one)
and agrees with torch fp32 at least as often; 7-bit weights avoid the int16 saturation of AVX2's u8×s8
products, which cost accuracy on CPUs without VNNI. The file is about a third of the float32 export
(the 250k-token embedding table dominates both), cached beside it as
``<model_version>-<layers>l.int8-v2.onnx`` (``-v2``: an ``.int8.onnx`` from the earlier scheme is not
reused), written the same way.

ONNX Runtime's transformer fusions (:mod:`onnxruntime.transformers.optimizer`: Attention, SkipLayerNorm,
BiasGelu, EmbedLayerNorm) were measured and are not used: they fuse fully once the encoder is exported
with eager attention, but on 2 AVX2 cores the fused graph is no faster in float32 and about 10 % slower
in int8 (the fused Attention and SkipLayerNormalization kernels cost more than what they replace).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.baseline import ModelLoadError

INSTALL_HINT = "pip install 'cxloop[onnx]'"
OPSET = 17
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "embeddings"
INT8_SUFFIX = ".int8-v2.onnx"   # v2: outlier channels split out, feed-forward outputs quantised, 7-bit weights
OUTLIERS_PER_LAYER = 2          # input channels of each feed-forward output projection kept in float32
CALIBRATION = ("物流太慢了，等了一个星期才到，包装也破了", "客服态度很好，问题很快就解决了，点赞",
               "这家酒店的早餐一般般，位置不错，就是隔音差了点，晚上楼道里一直有人说话",
               "App 更新后登录闪退，烦死了!!", "质量不错，价格实惠，会回购", "退款申请提交三天了还没人处理",
               "房间干净，服务周到，下次还会再来", "一般")

log = logging.getLogger(__name__)


def require_onnx():
    """The ``onnxruntime`` module; a :class:`ModelLoadError` naming the extra when it (or ``onnx``,
    which the exporter needs) is not installed."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes through it)
        import onnxruntime
    except ImportError as e:
        missing = getattr(e, "name", None) or "onnxruntime"
        raise ModelLoadError(f"ONNX serving needs onnxruntime and onnx ({missing} is not installed): "
                             f"{INSTALL_HINT}") from None
    return onnxruntime


def onnx_path(model, cache_root: Path) -> Path:
    """Where ``model``'s export is cached: ``<cache_root>/onnx/<model_version>-<layers>l.onnx``."""
    version = model.meta.get("model_version")
    if not version:
        raise ModelLoadError("ONNX serving needs a model with a model_version (its export is cached by it)")
    layers = model.net.encoder.config.num_hidden_layers
    return Path(cache_root) / "onnx" / f"{version}-{layers}l.onnx"


def int8_path(model, cache_root: Path) -> Path:
    """Where ``model``'s int8 export is cached: beside the float32 one, ``<model_version>-<layers>l.int8-v2.onnx``."""
    fp32 = onnx_path(model, cache_root)
    return fp32.with_name(fp32.name[:-len(".onnx")] + INT8_SUFFIX)


def export(model, path: Path) -> Path:
    """Export ``model``'s encoder + mean pooling (float32 embeddings, shape ``(batch, hidden)``) to
    ``path``, atomically."""
    import torch
    from torch import nn

    class Pooled(nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.net.pooled(input_ids, attention_mask).float()

    path.parent.mkdir(parents=True, exist_ok=True)
    model.net.eval()
    # two lengths, so the traced graph pads and masks (an all-ones mask would be traced away)
    input_ids, mask = model.collate(model.encode(["很好", "房间干净，服务周到，下次还会再来"]))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(Pooled(model.net), (input_ids, mask), tmp, dynamo=False, opset_version=OPSET,
                              input_names=list(INPUTS), output_names=[OUTPUT],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                            "attention_mask": {0: "batch", 1: "seq"}, OUTPUT: {0: "batch"}})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("exported %s in %.1f s (%.0f MiB)", path, time.perf_counter() - t0, path.stat().st_size / 2**20)
    return path


def ffn_output_matmuls(graph) -> list[str]:
    """Names of the feed-forward output projections' MatMul nodes (``layer.N/output/dense``, not the
    attention's ``attention/output/dense``): the ones whose input has outlier channels."""
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and n.name.endswith("/output/dense/MatMul") and "/attention/" not in n.name]


def outlier_channels(model, k: int = OUTLIERS_PER_LAYER) -> dict[int, list[int]]:
    """Per encoder layer, the ``k`` input channels of the feed-forward output projection with the
    largest absolute value on :data:`CALIBRATION` (torch, float32; these channels are a property of
    the weights, the same on any text)."""
    import torch
    peaks: dict[int, torch.Tensor] = {}

    def hook(i: int):
        def record(_module, inputs, _output) -> None:
            peaks[i] = inputs[0].detach().abs().amax(dim=(0, 1)).float()
        return record

    layers = model.net.encoder.encoder.layer
    handles = [layer.output.dense.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        input_ids, mask = model.collate(model.encode(list(CALIBRATION)))
        model.net.eval()
        with torch.inference_mode():
            # pads count too: the served batches are padded the same way
            model.net.pooled(input_ids, mask)
    finally:
        for h in handles:
            h.remove()
    return {i: [int(c) for c in torch.argsort(p, descending=True)[:min(k, p.numel())]] for i, p in peaks.items()}


def split_outliers(model_proto, outliers: dict[int, list[int]]) -> list[str]:
    """Take each layer's ``outliers`` (input channels of its feed-forward output projection) out of
    the projection, in place: their pre-activation bias becomes -1e4 (GELU gives exactly 0, so the
    quantised product no longer sees them) and a float32 side path ``GELU(x·W_in[:, C] + b_in[C]) ·
    W_out[C, :]`` adds them back. The graph computes what it did before. Returns the side path's
    node names (to keep float32); a layer whose nodes are not found is left as it was."""
    from onnx import helper, numpy_helper

    graph = model_proto.graph
    inits = {t.name: t for t in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    side_nodes: list[str] = []
    out_nodes = list(graph.node)
    for i, channels in sorted(outliers.items()):
        found = [next((n for name, n in by_name.items() if name.endswith(f"layer.{i}/{part}")), None)
                 for part in ("intermediate/dense/MatMul", "intermediate/dense/Add", "output/dense/MatMul")]
        if any(n is None for n in found) or not channels:
            continue
        mat_in, add_in, mat_out = found
        bias = next((t for t in add_in.input if t in inits), None)
        if bias is None or mat_in.input[1] not in inits or mat_out.input[1] not in inits:
            continue
        w_in, b_in = numpy_helper.to_array(inits[mat_in.input[1]]), numpy_helper.to_array(inits[bias])
        w_out = numpy_helper.to_array(inits[mat_out.input[1]])
        c = np.asarray(channels)
        p = mat_out.name.rsplit("/", 1)[0] + "/outlier"
        graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(w_in[:, c]), f"{p}/w_in"),
                                  numpy_helper.from_array(b_in[c].copy(), f"{p}/b_in"),
                                  numpy_helper.from_array(np.ascontiguousarray(w_out[c, :]), f"{p}/w_out")])
        b_in = b_in.copy()
        b_in[c] = -1e4
        inits[bias].CopyFrom(numpy_helper.from_array(b_in, bias))
        w_out = w_out.copy()
        w_out[c, :] = 0.0
        inits[mat_out.input[1]].CopyFrom(numpy_helper.from_array(w_out, mat_out.input[1]))
        result = mat_out.output[0]
        mat_out.output[0] = f"{p}/main"
        extra = [helper.make_node("MatMul", [mat_in.input[0], f"{p}/w_in"], [f"{p}/h0"], name=f"{p}/in/MatMul"),
                 helper.make_node("Add", [f"{p}/h0", f"{p}/b_in"], [f"{p}/h"], name=f"{p}/in/Add"),
                 helper.make_node("Gelu", [f"{p}/h"], [f"{p}/g"], name=f"{p}/Gelu", domain="com.microsoft"),
                 helper.make_node("MatMul", [f"{p}/g", f"{p}/w_out"], [f"{p}/y"], name=f"{p}/out/MatMul"),
                 helper.make_node("Add", [f"{p}/main", f"{p}/y"], [result], name=f"{p}/Add")]
        at = out_nodes.index(mat_out) + 1
        out_nodes[at:at] = extra
        side_nodes += [n.name for n in extra]
    del graph.node[:]
    graph.node.extend(out_nodes)
    if side_nodes and not any(o.domain == "com.microsoft" for o in model_proto.opset_import):
        model_proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return side_nodes


def quantize(fp32: Path, path: Path, outliers: dict[int, list[int]] | None = None) -> Path:
    """Write the dynamic-int8 version of the float32 export ``fp32`` to ``path``, atomically: the
    ``outliers`` split out first (:func:`split_outliers`), then QInt8 weights (per output channel,
    7-bit) for every MatMul with constant weights but the side paths, activations quantised to uint8
    per batch at run time; the embedding tables (the Gathers' data) stored as 8-bit per tensor. A
    feed-forward output projection whose outliers were not split out stays float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path.parent.mkdir(parents=True, exist_ok=True)
    model_proto = onnx.load(str(fp32))
    side = split_outliers(model_proto, outliers or {})
    split = {n.split("/outlier/")[0] + "/MatMul" for n in side}
    exclude = side + [n for n in ffn_output_matmuls(model_proto.graph) if n not in split]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    t0 = time.perf_counter()
    quant_log = logging.getLogger()   # the root logger, which quantize_dynamic writes to
    level = quant_log.level
    try:
        quant_log.setLevel(logging.ERROR)   # quantize_dynamic's "consider pre-processing" note
        quantize_dynamic(model_proto, tmp, op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                         reduce_range=True, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                         extra_options={"MatMulConstBOnly": True})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        quant_log.setLevel(level)
    log.info("quantised %s in %.1f s (%.0f MiB)", path, time.perf_counter() - t0, path.stat().st_size / 2**20)
    return path


class OnnxEncoder:
    """An ONNX Runtime session over an exported encoder: ``(input_ids, attention_mask)`` int64 arrays
    in, mean-pooled float32 embeddings out. Its intra-op threads sleep between operators instead of
    spinning: as fast on idle cores, and on cores shared with other work (CI, other services) the
    spinning threads took the time the computing ones needed (about 20 % fewer docs/s under load).

    :meth:`map` runs ``lanes`` batches at once (default: one per thread), each on ``threads // lanes``
    intra-op threads: one session serves concurrent runs and releases the GIL while it computes.
    The small matrix products of short texts split poorly over threads, so on 2 cores two batches
    side by side on one thread each serve more documents per second than one batch on two threads
    (``benchmarks/sentiment_serving.py``: ``transformer-onnx-int8`` against ``…-intraop``)."""

    def __init__(self, path: Path, threads: int, lanes: int | None = None) -> None:
        ort = require_onnx()
        self.lanes = max(1, min(threads, threads if lanes is None else lanes))
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads // self.lanes)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="cxloop-onnx") if self.lanes > 1 else None

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)}
        return self.session.run([OUTPUT], feed)[0]

    def map(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """The embeddings of each ``(input_ids, attention_mask)`` batch, in order; up to ``lanes``
        batches run at once (two per lane prepared ahead, so memory stays bounded)."""
        if self._pool is None:
            for ids, mask in batches:
                yield self(ids, mask)
            return
        window: deque[Future[np.ndarray]] = deque()
        for ids, mask in batches:
            window.append(self._pool.submit(self, ids, mask))
            if len(window) >= 2 * self.lanes:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def onnx_encoder(model, cache_root: Path, int8: bool = False) -> OnnxEncoder:
    """The ONNX encoder for ``model`` (a loaded ``TransformerSentiment``), exporting it on first use;
    ``int8`` serves the dynamic-int8 version of the export (quantised on first use)."""
    from models.transformer import cpu_threads
    require_onnx()
    if getattr(model, "quantized", False):
        raise ModelLoadError("int8 (quantize) and ONNX serving are alternatives: choose one")
    fp32 = onnx_path(model, cache_root)

    def make_fp32() -> Path:
        return export(model, fp32)

    def make_int8() -> Path:
        if not fp32.exists():
            make_fp32()
        outliers = outlier_channels(model)
        try:
            return quantize(fp32, path, outliers)
        except Exception as e:  # noqa: BLE001 - a damaged float32 export: export it again, then quantise
            log.warning("cannot quantise %s (%s): exporting it again", fp32, e)
            make_fp32()
            return quantize(fp32, path, outliers)

    path, make = (int8_path(model, cache_root), make_int8) if int8 else (fp32, make_fp32)
    if not path.exists():
        make()
        return OnnxEncoder(path, cpu_threads())
    try:
        return OnnxEncoder(path, cpu_threads())
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged cached file (edited, disk trouble): make it again
        log.warning("cached ONNX export %s unusable (%s): making it again", path, e)
        make()
        return OnnxEncoder(path, cpu_threads())
