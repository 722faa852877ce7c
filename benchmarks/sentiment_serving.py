"""CPU serving benchmark: the baseline and the transformer side by side, and what each serving
optimisation buys, on the shipped transformer and on compact (distilled) students.

For texts of 30, 60 and 200 characters (real test-split reviews, cut or joined to that length) it
measures documents per second (``--docs`` × 60 / length texts, at least 300) at each batch size in
``--batches`` and reports the best, with the
process's peak RSS, for:

- ``baseline``              the TF-IDF + linear SVM model (segmentation included, as in ``enrich``);
- ``transformer-naive``     the transformer fed in input order with padding to the longest text of each
                            batch (what a plain ``for batch in chunks(texts)`` loop does);
- ``transformer``           the shipped serving path: length-sorted batches under a token budget, fp32;
- ``transformer-int8``      the same with dynamic int8 linear layers (feed-forward outputs kept fp32);
- ``transformer-onnx``      the serving path of ``CXLOOP_SERVING=onnx``: the same model loaded with
                            ``load_sentiment_model(..., backend="onnx")`` (``models/onnx_serving.py``),
                            its encoder and mean pooling exported once per machine to
                            ``<cache>/onnx/`` and run by ONNX Runtime's CPU provider on ``--threads``
                            intra-op threads, the same tokens in the same length-sorted batches;
- ``transformer-onnx-int8`` ``CXLOOP_SERVING=onnx-int8``: that export quantised with ONNX Runtime's
                            ``quantize_dynamic`` (7-bit int8 weights per channel, the feed-forward
                            outputs' outlier channels split out into float32), cached beside it as
                            ``<version>-<layers>l.int8-v2.onnx``;
- ``transformer-onnx-int8-intraop`` ``transformer-onnx-int8`` with one batch at a time on all
                            ``--threads`` intra-op threads (``OnnxEncoder(lanes=1)``, the way it
                            served before batches ran side by side, one thread each);
- ``transformer-onnx-int8-v1`` the int8 scheme before that one, kept here only to compare in the same
                            run: 8-bit weights, feed-forward output projections float32, ONNX Runtime's
                            default (spinning) thread pool; cached as ``<version>-<layers>l.int8.onnx``.

The two ONNX configurations need ``onnxruntime`` and ``onnx`` (the ``onnx`` extra); without them they
are skipped with a message. The transformer configurations run on each ``--model`` (a transformer
artifact folder, repeatable; default: the shipped transformer), so compact students distilled with
``--layers N`` can be put on one accuracy/speed curve with their teacher; results are keyed by model
version.

Every configuration runs in its own subprocess (so peak memory is its own), with ``torch`` limited
to ``--threads`` threads (default 2, the CI machine's cores); ``--configs`` picks some of them. The
accuracy cost of int8, ONNX and ONNX int8 is measured per model on ``--accuracy-rows`` rows of the
review ``test`` split, against that model's fp32 torch on the same rows: binary accuracy of each, and
the largest absolute difference of a class probability and the share of equal three-class labels
against fp32. Last comes the accuracy/speed curve: per model its layers, the held-out binary accuracy
on ``test`` and on the out-of-domain probe recorded in its ``model.json`` (``meta.metrics``), and its
docs/s at 60 characters per backend. Figures are printed and written to
``benchmarks/results/sentiment_serving.json``; nothing is asserted.

    .venv/bin/python benchmarks/sentiment_serving.py [--data DIR] [--docs 2000] [--threads 2]
        [--configs transformer,transformer-int8,transformer-onnx,transformer-onnx-int8]
        [--model models/artifacts/sentiment-transformer --model PATH ...] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "sentiment_serving.json"
LENGTHS = (30, 60, 200)
CONFIGS = ("baseline", "transformer-naive", "transformer", "transformer-int8", "transformer-onnx",
           "transformer-onnx-int8", "transformer-onnx-int8-intraop", "transformer-onnx-int8-v1")
ONNX_CONFIGS = {"transformer-onnx": "onnx", "transformer-onnx-int8": "onnx-int8",
                "transformer-onnx-int8-intraop": "onnx-int8-intraop",
                "transformer-onnx-int8-v1": "onnx-int8-v1"}   # config → backend
VARIANTS = {"transformer-int8": "int8", "transformer-onnx": "onnx", "transformer-onnx-int8": "onnx-int8",
            "transformer-onnx-int8-v1": "onnx-int8-v1"}
SPEEDUPS = {"length_bucketing": ("transformer", "transformer-naive"), "int8": ("transformer-int8", "transformer"),
            "onnx": ("transformer-onnx", "transformer"), "onnx_int8": ("transformer-onnx-int8", "transformer"),
            "onnx_int8_vs_onnx": ("transformer-onnx-int8", "transformer-onnx"),
            "onnx_int8_vs_v1": ("transformer-onnx-int8", "transformer-onnx-int8-v1"),
            "onnx_lanes": ("transformer-onnx-int8", "transformer-onnx-int8-intraop")}
CURVE_LENGTH = 60


def texts_of_length(data_dir: Path, n: int, length: int) -> list[str]:
    """``n`` texts of exactly ``length`` characters built from test-split reviews (joined when short)."""
    import pandas as pd
    df = pd.read_csv(data_dir / "sentiment" / "reviews_sentiment.csv", dtype=str, keep_default_na=False)
    pool = df[df.split == "test"].text.sample(frac=1.0, random_state=0).tolist()
    out, buf, i = [], "", 0
    while len(out) < n:
        buf += pool[i % len(pool)].replace("\n", " ")
        i += 1
        if len(buf) >= length:
            out.append(buf[:length])
            buf = ""
    return out


def describe(folder: Path) -> dict:
    """What the report says of a model artifact: version, kind, layers and the held-out binary
    accuracies its ``model.json`` records (``meta.metrics``)."""
    from models.transformer import FORMAT as TRANSFORMER_FORMAT
    doc = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    meta = doc.get("meta", {})
    metrics = meta.get("metrics", {})
    out = {"path": str(folder), "version": meta.get("model_version") or folder.name,
           "kind": "transformer" if doc.get("format") == TRANSFORMER_FORMAT else "baseline",
           "layers": doc.get("layers"),
           "test_binary_accuracy": metrics.get("test", {}).get("binary", {}).get("accuracy"),
           "probe_binary_accuracy": metrics.get("ood_probe", {}).get("binary_accuracy")}
    return out   # "layers" is None for an artifact from before the key (all of its base's layers)


def label(model: dict) -> str:
    return model["version"] + (f" ({model['layers']}l)" if model.get("layers") else "")


def onnx_missing() -> str | None:
    """Why the ONNX configurations cannot run in this environment, or None."""
    from models.baseline import ModelLoadError
    from models.onnx_serving import require_onnx
    try:
        require_onnx()
    except ModelLoadError as e:
        return str(e)
    return None


def v1_path(model) -> Path:
    """Where the benchmark keeps the earlier int8 scheme's file (its old cache name)."""
    from models.e5_base import default_cache_root
    from models.onnx_serving import onnx_path
    fp32 = onnx_path(model, default_cache_root())
    return fp32.with_name(fp32.name[:-len(".onnx")] + ".int8.onnx")


def quantize_v1(fp32: Path, path: Path) -> None:
    """The earlier int8 scheme, for comparison only: 8-bit weights per channel, the feed-forward output
    projections float32, no outlier split."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from models.onnx_serving import ffn_output_matmuls
    logging.getLogger().setLevel(logging.ERROR)
    exclude = ffn_output_matmuls(onnx.load(str(fp32), load_external_data=False).graph)
    quantize_dynamic(str(fp32), str(path), op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                     weight_type=QuantType.QInt8, nodes_to_exclude=exclude, extra_options={"MatMulConstBOnly": True})


class V1Encoder:
    """The earlier ONNX int8 serving (for comparison only): its file, ONNX Runtime's default spinning pool."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids, attention_mask):
        import numpy as np
        return self.session.run(["embeddings"], {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                                                 "attention_mask": np.ascontiguousarray(attention_mask,
                                                                                        dtype=np.int64)})[0]


def load_for(model_path: Path, backend: str, quantize: bool = False):
    """``load_sentiment_model`` for a backend, or the transformer served the v1 int8 way (``onnx-int8-v1``),
    or ONNX int8 one batch at a time (``onnx-int8-intraop``)."""
    from models.onnx_serving import OnnxEncoder
    from models.registry import load_sentiment_model
    from models.transformer import cpu_threads
    if backend == "onnx-int8-intraop":
        model = load_sentiment_model(model_path, backend="onnx-int8")
        model.onnx = OnnxEncoder(model.onnx.path, cpu_threads(), lanes=1)
        return model
    if backend != "onnx-int8-v1":
        return load_sentiment_model(model_path, quantize=quantize, backend=backend)
    model = load_sentiment_model(model_path, backend="torch")
    model.onnx = V1Encoder(v1_path(model), cpu_threads())
    return model


def export_onnx(model_path: Path, int8: bool, v1: bool = False) -> dict:
    """Export ``model_path``'s transformer for ONNX serving (and quantise it with ``int8``) unless this
    machine's cache holds it already (called in a child, so that no timed child carries the
    exporter's or the quantiser's memory)."""
    from models.e5_base import default_cache_root
    from models.onnx_serving import int8_path, onnx_encoder, onnx_path
    from models.registry import load_sentiment_model
    model = load_sentiment_model(model_path, backend="torch")
    out = {}
    for name, path, quantized in (("onnx", onnx_path(model, default_cache_root()), False),
                                  ("onnx-int8", int8_path(model, default_cache_root()), True))[:2 if int8 else 1]:
        cached = path.exists()
        t0 = time.perf_counter()
        onnx_encoder(model, default_cache_root(), int8=quantized)
        out[name] = {"path": str(path), "cached": cached,
                     "seconds": None if cached else round(time.perf_counter() - t0, 2),
                     "mib": round(path.stat().st_size / 2**20, 1)}
    if v1:
        path = v1_path(model)
        cached = path.exists()
        t0 = time.perf_counter()
        if not cached:
            quantize_v1(onnx_path(model, default_cache_root()), path)
        out["onnx-int8-v1"] = {"path": str(path), "cached": cached,
                               "seconds": None if cached else round(time.perf_counter() - t0, 2),
                               "mib": round(path.stat().st_size / 2**20, 1)}
    return out


def backend_of(config: str) -> str:
    return ONNX_CONFIGS.get(config, "torch")


def run_config(config: str, model_path: Path, texts: list[str], batch: int) -> dict:
    """Time one configuration of one model in this process (called in a child)."""
    from nlp import default_segmenter
    kind = "baseline" if config == "baseline" else "transformer"
    t0 = time.perf_counter()
    model = load_for(model_path, backend_of(config), quantize=config == "transformer-int8")
    load_s = time.perf_counter() - t0
    seg = default_segmenter()
    warm = texts[:min(64, len(texts))]
    if kind == "baseline":
        model.predict_proba(warm, seg.cut_many(warm))
        t0 = time.perf_counter()
        for s in range(0, len(texts), batch):
            chunk = texts[s:s + batch]
            model.predict_proba(chunk, seg.cut_many(chunk))
    elif config == "transformer-naive":
        import torch
        model.logits(warm)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(texts), batch):
                ids = model.encode(texts[s:s + batch])
                model.net(*model.collate(ids))
    else:
        model.logits(warm, batch_size=batch, max_tokens=batch * 512)
        t0 = time.perf_counter()
        model.logits(texts, batch_size=batch, max_tokens=batch * 512)
    seconds = time.perf_counter() - t0
    return {"docs_per_s": round(len(texts) / seconds, 1), "seconds": round(seconds, 2), "load_s": round(load_s, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def accuracy(data_dir: Path, rows: int, variants: list[str], model_path: Path) -> dict:
    """Binary test accuracy of ``model_path`` in fp32 and each of ``variants`` (``int8``, ``onnx``,
    ``onnx-int8``, ``onnx-int8-v1``) on the same rows, and how far each variant's probabilities and labels
    are from fp32's."""
    import gc

    import numpy as np
    import pandas as pd

    df = pd.read_csv(data_dir / "sentiment" / "reviews_sentiment.csv", dtype=str, keep_default_na=False)
    test = df[df.split == "test"].sample(n=min(rows, int((df.split == "test").sum())), random_state=1)
    out: dict = {"rows": len(test), "binary_accuracy": {}, "vs_fp32": {}}
    ref = None
    for name in ("fp32", *variants):
        m = load_for(model_path, name if name.startswith("onnx") else "torch", quantize=name == "int8")
        p = m.predict_proba(test.text.tolist())
        li = {lab: i for i, lab in enumerate(m.labels)}
        pred = np.where(p[:, li["pos"]] > p[:, li["neg"]], "pos", "neg")
        out["binary_accuracy"][name] = round(float((pred == test.label.to_numpy()).mean()), 4)
        if ref is None:
            ref = p
        else:
            out["vs_fp32"][name] = {"max_abs_prob_diff": float(f"{np.abs(p - ref).max():.3g}"),
                                    "label_agreement": round(float((p.argmax(1) == ref.argmax(1)).mean()), 4)}
        del m
        gc.collect()
    return out


def fmt(value, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def print_tables(results: dict, configs: list[str]) -> None:
    """The full table (model × backend × length) and the accuracy/speed curve."""
    models = results["models"]
    width = max(len(label(m)) for m in models.values())
    print(f"\n{'model':<{width}}  {'config':<24} {'chars':>5} {'docs/s':>8} {'batch':>5} {'peak MiB':>9} "
          f"{'bin acc':>7} {'agree':>7} {'max |dp|':>9}")
    for m in models.values():
        acc = m.get("accuracy", {})
        for config in configs:
            for length in LENGTHS:
                best = m.get("best", {}).get(f"{config}@{length}")
                if best is None:
                    continue
                variant = VARIANTS.get(config, "fp32" if config == "transformer" else None)
                vs = acc.get("vs_fp32", {}).get(variant, {})
                print(f"{label(m):<{width}}  {config:<24} {length:>5} {best['docs_per_s']:>8.1f} {best['batch']:>5} "
                      f"{best['peak_rss_mib']:>9.1f} {fmt(acc.get('binary_accuracy', {}).get(variant), '7.4f'):>7} "
                      f"{fmt(vs.get('label_agreement'), '7.4f'):>7} {fmt(vs.get('max_abs_prob_diff'), '9.3g'):>9}")
    curve = [c for c in configs if c.startswith("transformer")]
    transformers = [m for m in models.values() if m["kind"] == "transformer"]
    if not curve or not transformers:
        return
    print(f"\naccuracy/speed curve (docs/s at {CURVE_LENGTH} characters; test and probe accuracy from each "
          f"model.json, binary):")
    print(f"{'model':<{width}} {'layers':>6} {'test':>7} {'probe':>7} " + " ".join(f"{c:>24}" for c in curve))
    for m in sorted(transformers, key=lambda m: -(m["layers"] or 0)):
        speeds = [fmt(m.get("best", {}).get(f"{c}@{CURVE_LENGTH}", {}).get("docs_per_s"), ".1f") for c in curve]
        print(f"{label(m):<{width}} {fmt(m['layers'], 'd'):>6} {fmt(m['test_binary_accuracy'], '.4f'):>7} "
              f"{fmt(m['probe_binary_accuracy'], '.4f'):>7} " + " ".join(f"{v:>24}" for v in speeds))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="32,64")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every configuration and batch this many times, interleaved, and keep the best")
    ap.add_argument("--accuracy-rows", type=int, default=3000)
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated, from {', '.join(CONFIGS)} (default: all)")
    ap.add_argument("--model", type=Path, action="append", default=None, metavar="PATH",
                    help="a transformer artifact folder the transformer configurations run on (repeatable; "
                         "default: the shipped transformer)")
    ap.add_argument("--child", nargs=4, metavar=("CONFIG", "MODEL", "LENGTH", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--export", type=Path, metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--int8", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--v1", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or not configs:
        ap.error(f"--configs: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(CONFIGS)}")
    configs = [c for c in CONFIGS if c in configs]
    sys.path.insert(0, str(REPO_ROOT))
    from models.data import DataMissingError, shared_data_dir
    from models.registry import resolve_model
    try:
        data_dir = shared_data_dir(args.data)
    except DataMissingError as e:
        print(f"error: {e} (the benchmark needs the shared review data; pass --data DIR)", file=sys.stderr)
        return 2
    os.environ["CXLOOP_THREADS"] = str(args.threads)
    if args.export:
        print(json.dumps(export_onnx(args.export, args.int8, args.v1)))
        return 0
    if args.child:
        config, model_path, length, batch = args.child[0], Path(args.child[1]), int(args.child[2]), int(args.child[3])
        texts = texts_of_length(data_dir, max(300, args.docs * 60 // length), length)
        print(json.dumps(run_config(config, model_path, texts, batch)))
        return 0

    transformer_configs = [c for c in configs if c != "baseline"]
    models: dict[str, dict] = {}
    if "baseline" in configs:
        m = describe(resolve_model("baseline"))
        models[m["version"]] = m | {"configs": ["baseline"]}
    if transformer_configs:
        for path in args.model or [resolve_model("transformer")]:
            path = path.resolve()
            if not (path / "model.json").is_file():
                ap.error(f"--model {path}: not a model folder (no model.json)")
            m = describe(path)
            if m["kind"] != "transformer":
                ap.error(f"--model {path}: not a transformer artifact")
            if m["version"] in models:
                ap.error(f"--model {path}: version {m['version']} given twice")
            models[m["version"]] = m | {"configs": list(transformer_configs)}

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "CXLOOP_THREADS": str(args.threads)}
    results: dict = {"machine": {"cpus": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
                                 "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                                          capture_output=True, text=True).stdout.strip()},
                     "date": time.strftime("%Y-%m-%d %H:%M"), "docs": args.docs, "configs": configs,
                     "load_before": os.getloadavg(), "models": models}
    wanted_onnx = [c for c in configs if c in ONNX_CONFIGS]
    if wanted_onnx:
        why = onnx_missing()
        for m in models.values():
            if why is not None or m["kind"] != "transformer":
                continue
            # exported (once per machine) in a child of its own, so that no timed child carries the exporter
            proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--export", m["path"]]
                                  + (["--int8"] if {"transformer-onnx-int8", "transformer-onnx-int8-intraop"}
                                     & set(configs) else [])
                                  + (["--v1"] if "transformer-onnx-int8-v1" in configs else [])
                                  + (["--data", str(args.data)] if args.data else []),
                                  capture_output=True, text=True, env=env, cwd=REPO_ROOT)
            if proc.returncode == 0:
                m["onnx_export"] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"ONNX export of {label(m)}: {m['onnx_export']}", flush=True)
            else:
                why = f"the ONNX export of {m['version']} failed:\n" + proc.stderr[-2000:]
        if why is not None:
            print(f"skipping {', '.join(wanted_onnx)}: {why}", flush=True)
            configs = [c for c in configs if c not in ONNX_CONFIGS]
            for m in models.values():
                m["configs"] = [c for c in m["configs"] if c not in ONNX_CONFIGS]
            results["skipped"] = {c: why for c in wanted_onnx}
    for length in LENGTHS:
        # --rounds: every configuration and batch once per round, rounds interleaved, the best kept (shared
        # cores: a neighbour's burst then costs every configuration a round, not one configuration its figure)
        for rnd in range(args.rounds):
            for m in models.values():
                for config in m["configs"]:
                    for batch in [int(b) for b in args.batches.split(",")]:
                        cmd = [sys.executable, __file__, "--docs", str(args.docs), "--threads", str(args.threads),
                               "--child", config, m["path"], str(length), str(batch)]
                        if args.data:
                            cmd += ["--data", str(args.data)]
                        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
                        if proc.returncode != 0:
                            print(proc.stderr[-2000:], file=sys.stderr)
                            return 1
                        r = json.loads(proc.stdout.strip().splitlines()[-1]) | {"batch": batch, "round": rnd}
                        m.setdefault("runs", {}).setdefault(f"{config}@{length}", []).append(r)
                        best = m.setdefault("best", {}).get(f"{config}@{length}")
                        if best is None or r["docs_per_s"] > best["docs_per_s"]:
                            m["best"][f"{config}@{length}"] = r
        for m in models.values():
            for config in m["configs"]:
                best = m["best"][f"{config}@{length}"]
                print(f"{length:>4} chars  {config:<24} {label(m):<48} {best['docs_per_s']:>8.1f} docs/s  "
                      f"batch {best['batch']:>3}  peak {best['peak_rss_mib']:>7.1f} MiB", flush=True)

    baseline = next((m for m in models.values() if m["kind"] == "baseline"), None)
    for m in models.values():
        if m["kind"] != "transformer":
            continue

        def ratio(a: str, b: str, n: int, m=m) -> float:
            top = (baseline if a == "baseline" else m)["best"][f"{a}@{n}"]["docs_per_s"]
            return round(top / m["best"][f"{b}@{n}"]["docs_per_s"], 2)

        pairs = SPEEDUPS | ({"baseline_vs_transformer": ("baseline", "transformer")} if baseline else {})
        m["speedups"] = {str(n): {name: ratio(a, b, n) for name, (a, b) in pairs.items()
                                  if a in configs and b in configs}
                         for n in LENGTHS}
        print(f"speed-ups of {label(m)}:", json.dumps(m["speedups"]), flush=True)
    variants = [VARIANTS[c] for c in configs if c in VARIANTS]
    if args.accuracy_rows and variants:
        for m in models.values():
            if m["kind"] != "transformer":
                continue
            m["accuracy"] = accuracy(data_dir, args.accuracy_rows, variants, Path(m["path"]))
            acc = m["accuracy"]
            print(f"{label(m)}: binary test accuracy on {acc['rows']} rows:", acc["binary_accuracy"],
                  "against fp32:", acc["vs_fp32"], flush=True)
    results["load_after"] = os.getloadavg()
    print_tables(results, configs)
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"written to {RESULTS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
