"""CPU serving benchmark: the baseline and the transformer side by side, and what each serving
optimisation buys.

For texts of 30, 60 and 200 characters (real test-split reviews, cut or joined to that length) it
measures documents per second (``--docs`` × 60 / length texts, at least 300) at each batch size in
``--batches`` and reports the best, with the
process's peak RSS, for:

- ``baseline``          the TF-IDF + linear SVM model (segmentation included, as in ``enrich``);
- ``transformer-naive`` the transformer fed in input order with padding to the longest text of each
                        batch (what a plain ``for batch in chunks(texts)`` loop does);
- ``transformer``       the shipped serving path: length-sorted batches under a token budget, fp32;
- ``transformer-int8``  the same with dynamic int8 linear layers (feed-forward outputs kept fp32);
- ``transformer-onnx``  the serving path of ``CXLOOP_SERVING=onnx``: the same model loaded with
                        ``load_sentiment_model(..., backend="onnx")`` (``models/onnx_serving.py``),
                        its encoder and mean pooling exported once per machine to
                        ``<cache>/onnx/`` and run by ONNX Runtime's CPU provider on ``--threads``
                        intra-op threads, the same tokens in the same length-sorted batches. Needs
                        ``onnxruntime`` and ``onnx`` (the ``onnx`` extra); without them it is skipped
                        with a message.

Every configuration runs in its own subprocess (so peak memory is its own), with ``torch`` limited
to ``--threads`` threads (default 2, the CI machine's cores); ``--configs`` picks some of them. The
accuracy cost of int8 and ONNX is measured on ``--accuracy-rows`` rows of the review ``test``
split, against fp32 torch on the same rows: binary accuracy of each, and the largest absolute
difference of a class probability and the share of equal three-class labels against fp32.
Figures are printed and written to ``benchmarks/results/sentiment_serving.json``; nothing is asserted.

    .venv/bin/python benchmarks/sentiment_serving.py [--data DIR] [--docs 2000] [--threads 2]
        [--configs transformer,transformer-int8,transformer-onnx]
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
CONFIGS = ("baseline", "transformer-naive", "transformer", "transformer-int8", "transformer-onnx")
SPEEDUPS = {"length_bucketing": ("transformer", "transformer-naive"), "int8": ("transformer-int8", "transformer"),
            "onnx": ("transformer-onnx", "transformer"), "baseline_vs_transformer": ("baseline", "transformer")}


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


def onnx_missing() -> str | None:
    """Why ``transformer-onnx`` cannot run in this environment, or None."""
    from models.baseline import ModelLoadError
    from models.onnx_serving import require_onnx
    try:
        require_onnx()
    except ModelLoadError as e:
        return str(e)
    return None


def export_onnx() -> dict:
    """Export the shipped transformer for ONNX serving unless this machine's cache holds it already
    (called in a child, so that no timed child carries the exporter's memory)."""
    from models.e5_base import default_cache_root
    from models.onnx_serving import onnx_path
    from models.registry import load_sentiment_model, resolve_model
    model = load_sentiment_model(resolve_model("transformer"), backend="torch")
    path = onnx_path(model, default_cache_root())
    cached = path.exists()
    t0 = time.perf_counter()
    model.use_onnx(default_cache_root())
    return {"path": str(path), "cached": cached, "export_s": None if cached else round(time.perf_counter() - t0, 2),
            "onnx_mib": round(path.stat().st_size / 2**20, 1)}


def backend_of(config: str) -> str:
    return "onnx" if config == "transformer-onnx" else "torch"


def run_config(config: str, texts: list[str], batch: int) -> dict:
    """Time one configuration in this process (called in a child)."""
    from models.registry import load_sentiment_model, resolve_model
    from nlp import default_segmenter
    kind = "baseline" if config == "baseline" else "transformer"
    t0 = time.perf_counter()
    model = load_sentiment_model(resolve_model(kind), quantize=config == "transformer-int8", backend=backend_of(config))
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


def accuracy(data_dir: Path, rows: int, variants: list[str]) -> dict:
    """Binary test accuracy of the transformer in fp32 and each of ``variants`` (``int8``, ``onnx``)
    on the same rows, and how far each variant's probabilities and labels are from fp32's."""
    import gc

    import numpy as np
    import pandas as pd

    from models.registry import load_sentiment_model, resolve_model
    df = pd.read_csv(data_dir / "sentiment" / "reviews_sentiment.csv", dtype=str, keep_default_na=False)
    test = df[df.split == "test"].sample(n=min(rows, int((df.split == "test").sum())), random_state=1)
    out: dict = {"rows": len(test), "binary_accuracy": {}, "vs_fp32": {}}
    ref = None
    for name in ("fp32", *variants):
        m = load_sentiment_model(resolve_model("transformer"), quantize=name == "int8",
                                 backend="onnx" if name == "onnx" else "torch")
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="32,64")
    ap.add_argument("--accuracy-rows", type=int, default=3000)
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated, from {', '.join(CONFIGS)} (default: all)")
    ap.add_argument("--child", nargs=3, metavar=("CONFIG", "LENGTH", "BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--export", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or not configs:
        ap.error(f"--configs: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(CONFIGS)}")
    sys.path.insert(0, str(REPO_ROOT))
    from models.data import DataMissingError, shared_data_dir
    try:
        data_dir = shared_data_dir(args.data)
    except DataMissingError as e:
        print(f"error: {e} (the benchmark needs the shared review data; pass --data DIR)", file=sys.stderr)
        return 2
    os.environ["CXLOOP_THREADS"] = str(args.threads)
    if args.export:
        print(json.dumps(export_onnx()))
        return 0
    if args.child:
        config, length, batch = args.child[0], int(args.child[1]), int(args.child[2])
        texts = texts_of_length(data_dir, max(300, args.docs * 60 // length), length)
        print(json.dumps(run_config(config, texts, batch)))
        return 0

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "CXLOOP_THREADS": str(args.threads)}
    results: dict = {"machine": {"cpus": os.cpu_count(), "threads": args.threads, "python": platform.python_version(),
                                 "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                                                          capture_output=True, text=True).stdout.strip()},
                     "date": time.strftime("%Y-%m-%d %H:%M"), "docs": args.docs, "configs": configs, "runs": {}}
    if "transformer-onnx" in configs:
        why = onnx_missing()
        if why is None:
            # exported (once per machine) in a child of its own, so that no timed child carries the exporter
            proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--export"]
                                  + (["--data", str(args.data)] if args.data else []),
                                  capture_output=True, text=True, env=env, cwd=REPO_ROOT)
            if proc.returncode == 0:
                results["onnx_export"] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"ONNX export: {results['onnx_export']}", flush=True)
            else:
                why = "the ONNX export failed:\n" + proc.stderr[-2000:]
        if why is not None:
            print(f"skipping transformer-onnx: {why}", flush=True)
            configs.remove("transformer-onnx")
            results["skipped"] = {"transformer-onnx": why}
    for length in LENGTHS:
        for config in configs:
            best = None
            for batch in [int(b) for b in args.batches.split(",")]:
                cmd = [sys.executable, __file__, "--docs", str(args.docs), "--threads", str(args.threads),
                       "--child", config, str(length), str(batch)]
                if args.data:
                    cmd += ["--data", str(args.data)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return 1
                r = json.loads(proc.stdout.strip().splitlines()[-1]) | {"batch": batch}
                results["runs"].setdefault(f"{config}@{length}", []).append(r)
                if best is None or r["docs_per_s"] > best["docs_per_s"]:
                    best = r
            results.setdefault("best", {})[f"{config}@{length}"] = best
            print(f"{length:>4} chars  {config:<18} {best['docs_per_s']:>8.1f} docs/s  batch {best['batch']:>3}  "
                  f"peak {best['peak_rss_mib']:>7.1f} MiB", flush=True)
    def ratio(a: str, b: str, n: int) -> float:
        return round(results["best"][f"{a}@{n}"]["docs_per_s"] / results["best"][f"{b}@{n}"]["docs_per_s"], 2)

    results["speedups"] = {str(n): {name: ratio(a, b, n) for name, (a, b) in SPEEDUPS.items()
                                    if a in configs and b in configs}
                           for n in LENGTHS}
    print("speed-ups:", json.dumps(results["speedups"]))
    variants = [v for v, c in (("int8", "transformer-int8"), ("onnx", "transformer-onnx")) if c in configs]
    if args.accuracy_rows and variants:
        results["accuracy"] = accuracy(data_dir, args.accuracy_rows, variants)
        acc = results["accuracy"]
        print(f"binary test accuracy on {acc['rows']} rows:", acc["binary_accuracy"], "against fp32:", acc["vs_fp32"])
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"written to {RESULTS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
