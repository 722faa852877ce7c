"""Opt-in ONNX Runtime serving for the transformer's encoder.

:meth:`models.transformer.TransformerSentiment.use_onnx` hands :meth:`~models.transformer.TransformerSentiment.embed`
to an :class:`OnnxEncoder`: the encoder and its mean pooling (not the heads, so ``head_logits``,
``proba_from_embeddings`` and a semantic topic model read the same embeddings as with torch) exported
with ``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``: it needs ``onnx`` but not
``onnxscript``; opset 17, batch and sequence axes dynamic) and run by ONNX Runtime's CPU provider on
:func:`models.transformer.cpu_threads` intra-op threads. Tokens, length-sorted batches and the
embedding memo stay those of the torch path; on 2 cores it serves the shipped transformer about twice
as fast as torch fp32, probabilities within 2e-6 of its own (``benchmarks/sentiment_serving.py``).

The export is written once per machine to ``<cache_root>/onnx/<model_version>-<layers>l.onnx``
(a temporary file renamed into place, so concurrent first loads never read half a file) and reused
by every later load. It needs the optional extra: ``pip install 'cxloop[onnx]'``.

``int8=True`` (``CXLOOP_SERVING=onnx-int8``) serves that export quantised by
:func:`onnxruntime.quantization.quantize_dynamic` instead (:func:`quantize`): int8 weights, per output
channel, for the encoder's matrix products with constant weights (activations quantised per batch at
run time), and 8-bit embedding tables (per tensor); the feed-forward output projections stay float32,
as in the torch int8 path (quantising them as well changed 1–2 % of the shipped transformer's labels
on 800 test rows, against 0–0.3 % without). The int8 file is about a third of the float32 one
(the 250k-token embedding table dominates both). It is cached beside the float32 export as
``<model_version>-<layers>l.int8.onnx``, written the same way.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from models.baseline import ModelLoadError

INSTALL_HINT = "pip install 'cxloop[onnx]'"
OPSET = 17
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "embeddings"
INT8_SUFFIX = ".int8.onnx"

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
    """Where ``model``'s int8 export is cached: beside the float32 one, ``<model_version>-<layers>l.int8.onnx``."""
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
    attention's ``attention/output/dense``): the ones int8 costs accuracy on, kept float32."""
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and n.name.endswith("/output/dense/MatMul") and "/attention/" not in n.name]


def quantize(fp32: Path, path: Path) -> Path:
    """Write the dynamic-int8 version of the float32 export ``fp32`` to ``path``, atomically: QInt8
    weights (per output channel) for the MatMuls with constant weights except the feed-forward
    outputs (:func:`ffn_output_matmuls`), activations quantised to uint8 per batch at run time; the
    embedding tables (the Gathers' data) stored as 8-bit per tensor."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path.parent.mkdir(parents=True, exist_ok=True)
    exclude = ffn_output_matmuls(onnx.load(str(fp32), load_external_data=False).graph)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    t0 = time.perf_counter()
    quant_log = logging.getLogger()   # the root logger, which quantize_dynamic writes to
    level = quant_log.level
    try:
        quant_log.setLevel(logging.ERROR)   # quantize_dynamic's "consider pre-processing" note
        quantize_dynamic(str(fp32), tmp, op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
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
    in, mean-pooled float32 embeddings out."""

    def __init__(self, path: Path, threads: int) -> None:
        ort = require_onnx()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = Path(path)
        self.threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)}
        return self.session.run([OUTPUT], feed)[0]


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
        try:
            return quantize(fp32, path)
        except Exception as e:  # noqa: BLE001 - a damaged float32 export: export it again, then quantise
            log.warning("cannot quantise %s (%s): exporting it again", fp32, e)
            make_fp32()
            return quantize(fp32, path)

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
