"""Where models live and which one is in use.

Shipped defaults sit in ``models/artifacts/<name>/`` (small, with a model card). Models trained by
``cxloop train`` are written to ``<models_home>/<model_version>/``; ``<models_home>/promoted.json``
records which version is promoted per task. Resolution order for "the current model": the
promoted version if there is one, else the shipped default. Every artifact carries its
``model_version`` in its ``model.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from models.baseline import FORMAT as BASELINE_FORMAT
from models.baseline import BaselineSentiment, ModelLoadError
from models.e5_base import default_cache_root
from models.ensemble import FORMAT as ENSEMBLE_FORMAT
from models.ensemble import cascade_points, member_folders
from models.features import VOCAB_KEYS
from models.topics import TopicModel
from models.transformer import FORMAT as TRANSFORMER_FORMAT

SHIPPED_DIR = Path(__file__).resolve().parent / "artifacts"
SHIPPED = {"sentiment": "sentiment-ensemble",   # the default: best on dev and test (see README)
           "topics": "topics"}
# "student": the compact transformer distilled from "transformer" (3 layers, 3.3-4.2x its speed)
KIND_FORMATS = {"baseline": BASELINE_FORMAT, "transformer": TRANSFORMER_FORMAT, "student": TRANSFORMER_FORMAT,
                "ensemble": ENSEMBLE_FORMAT}
KIND_SHIPPED = {"baseline": "sentiment-baseline", "transformer": "sentiment-transformer",
                "student": "sentiment-student", "ensemble": "sentiment-ensemble"}
KINDS = tuple(KIND_FORMATS)
BACKENDS = ("torch", "onnx", "onnx-int8")   # how a transformer (alone or in an ensemble) runs its encoder


class SentimentModel(Protocol):
    """What every sentiment model kind offers (the baseline and the transformer)."""

    labels: tuple[str, ...]

    def predict_proba(self, texts: Sequence[str],
                      tokens: Sequence[Sequence[str]] | None = None) -> np.ndarray: ...


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"model file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"model file {path} is corrupt: {e}") from None


_LARGE_KEYS = frozenset(VOCAB_KEYS)   # a linear model's vocabularies, in model.json before 2026-11-25: megabytes


@lru_cache(maxsize=32)
def _artifact_summary(path: str, mtime_ns: int, size: int) -> dict:
    doc = _read_json(Path(path))
    return {k: v for k, v in doc.items() if k not in _LARGE_KEYS}


def artifact_doc(model_json: Path) -> dict:
    """An artifact's ``model.json`` without its vocabularies (format, meta, cascade …), remembered
    while the file is unchanged: the version checks of every ``enrich`` and flow run (several per run)
    otherwise parsed megabytes of vocabulary each time. Treat it as read-only."""
    try:
        st = model_json.stat()
    except FileNotFoundError:
        raise ModelLoadError(f"model file not found: {model_json}") from None
    return _artifact_summary(str(model_json.resolve()), st.st_mtime_ns, st.st_size)


def model_version_of(path: str | os.PathLike[str]) -> str:
    """The ``model_version`` recorded in an artifact folder."""
    doc = artifact_doc(Path(path) / "model.json")
    version = doc.get("meta", {}).get("model_version")
    if not version:
        raise ModelLoadError(f"{Path(path) / 'model.json'} records no model_version")
    return version


def cascade_setting() -> float | str | None:
    """``CXLOOP_CASCADE``: unset (None: each ensemble's own cascade), ``off`` (every text through
    every member), ``fast`` (each ensemble's recorded fast point: the transformer's accuracy for the
    fewest transformer runs) or a confidence in (0, 1] for every ensemble loaded (``models.ensemble``):
    lower is faster, higher closer to the full blend (the curve is in the README)."""
    raw = os.environ.get("CXLOOP_CASCADE", "").strip().lower()
    if not raw:
        return None
    if raw in ("off", "none", "fast"):
        return "off" if raw == "none" else raw
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise ModelLoadError(f"CXLOOP_CASCADE={raw!r}: give a confidence in (0, 1] (e.g. 0.7), 'fast' or 'off'")
    return value


def _cascade_override(doc: dict, where: Path) -> tuple[bool, float | None]:
    """(whether ``CXLOOP_CASCADE`` changes the ensemble whose ``model.json`` (at ``where``) is ``doc``,
    the cascade confidence it sets: None for off). Unset, another kind of model, or the artifact's own
    value change nothing; ``fast`` on an ensemble that records no fast point is a ``ModelLoadError``."""
    setting = cascade_setting()
    if setting is None or doc.get("format") != ENSEMBLE_FORMAT:
        return False, None
    own, fast = cascade_points(doc, where)
    if setting == "fast" and fast is None:
        raise ModelLoadError(f"CXLOOP_CASCADE=fast: {where} records no fast cascade point (an ensemble trained "
                             "before 2026-11-24 or without a baseline member); give a confidence instead")
    value = None if setting == "off" else fast if setting == "fast" else float(setting)
    return value != own, value


def serving_version_of(path: str | os.PathLike[str]) -> str:
    """The ``model_version`` a sentiment model's predictions carry: the artifact's, plus
    ``+cascade-<c>`` (or ``+cascade-off``) when ``CXLOOP_CASCADE`` overrides an ensemble's cascade,
    so rows scored either way are told apart (and re-scored when it changes)."""
    version = model_version_of(path)
    changes, value = _cascade_override(artifact_doc(Path(path) / "model.json"), Path(path) / "model.json")
    return f"{version}+cascade-{'off' if value is None else f'{value:g}'}" if changes else version


def promoted(models_home: Path | None, task: str = "sentiment") -> Path | None:
    """The folder of the promoted model for ``task`` under ``models_home``, if any."""
    if models_home is None:
        return None
    pointer = models_home / "promoted.json"
    if not pointer.exists():
        return None
    version = _read_json(pointer).get(task)
    if not version:
        return None
    path = models_home / version
    if not (path / "model.json").exists():
        raise ModelLoadError(f"{pointer} promotes {version!r} but {path} has no model.json")
    return path


def promote(models_home: Path, model_dir: Path, task: str = "sentiment") -> None:
    """Make ``model_dir`` (inside ``models_home``) the current model for ``task``."""
    pointer = models_home / "promoted.json"
    doc = _read_json(pointer) if pointer.exists() else {}
    doc[task] = model_dir.name
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    tmp.replace(pointer)


def resolve_model(name: str | None = None, models_home: Path | None = None, task: str = "sentiment") -> Path:
    """The artifact folder for ``name``: None (current model), a kind (``baseline``), a
    model_version under ``models_home``, or a folder path."""
    if name is None:
        return promoted(models_home, task) or SHIPPED_DIR / SHIPPED[task]
    if name in KINDS and task == "sentiment":
        current = promoted(models_home, task)
        if current is not None and kind_of(artifact_doc(current / "model.json")) == name:
            return current
        shipped = SHIPPED_DIR / KIND_SHIPPED[name]
        if not (shipped / "model.json").exists():
            raise ModelLoadError(f"no {name} model is shipped or promoted (train one: cxloop train sentiment "
                                 f"--model {name})")
        return shipped
    candidate = Path(name).expanduser()
    if (candidate / "model.json").exists():
        return candidate
    if models_home is not None and (models_home / name / "model.json").exists():
        return models_home / name
    known = ", ".join([*KINDS, *(p.name for p in _versions(models_home))])
    raise ModelLoadError(f"unknown model {name!r}: not a model folder or a known version (known: {known})")


def kind_of(doc: dict) -> str | None:
    """The model kind of an artifact's ``model.json``: a transformer trained with fewer layers
    (``--layers``, as the distilled student is) counts as a ``student``."""
    fmt = doc.get("format")
    if fmt == TRANSFORMER_FORMAT:
        return "student" if doc.get("meta", {}).get("options", {}).get("layers") else "transformer"
    return next((k for k, f in KIND_FORMATS.items() if f == fmt), None)


def _versions(models_home: Path | None) -> list[Path]:
    if models_home is None or not models_home.is_dir():
        return []
    return sorted(p for p in models_home.iterdir() if (p / "model.json").exists())


def serving_backend(backend: str | None = None) -> str:
    """The transformer serving backend: ``backend``, else ``CXLOOP_SERVING``, else ``torch``."""
    chosen = backend if backend is not None else os.environ.get("CXLOOP_SERVING", "")
    value = chosen.strip().lower() or "torch"
    if value not in BACKENDS:
        where = "backend" if backend is not None else "CXLOOP_SERVING"
        raise ModelLoadError(f"{where}={chosen!r}: choose one of {', '.join(BACKENDS)}")
    return value


def load_sentiment_model(path: str | os.PathLike[str], cache_root: Path | None = None,
                         quantize: bool = False, backend: str | None = None) -> SentimentModel:
    """Load a sentiment artifact of any supported format (never executing code from it).
    ``cache_root`` holds converted base encoders (transformer models) and their ONNX exports;
    ``quantize`` serves a transformer with dynamic int8; ``backend`` (``torch``, ``onnx`` or
    ``onnx-int8``, default :func:`serving_backend`: ``CXLOOP_SERVING``) runs a transformer's encoder
    in torch or in ONNX Runtime, float32 or dynamic int8 (:mod:`models.onnx_serving`). Both apply to
    an ensemble's transformer member."""
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"model folder not found: {p}")
    backend = serving_backend(backend)
    doc = artifact_doc(p / "model.json")
    fmt = doc.get("format")
    if fmt == BASELINE_FORMAT:
        return BaselineSentiment.load(p)
    if fmt == TRANSFORMER_FORMAT:
        from models.transformer import TransformerSentiment
        if backend != "torch":
            from models.onnx_serving import require_onnx
            if quantize:
                raise ModelLoadError("int8 (quantize) and ONNX serving are alternatives: choose one")
            require_onnx()  # before the encoder loads: a missing extra fails at once
        cache = cache_root or default_cache_root()
        model = TransformerSentiment.load(p, cache, quantize=quantize)
        return model if backend == "torch" else model.use_onnx(cache, int8=backend == "onnx-int8")
    if fmt == ENSEMBLE_FORMAT:
        from models.ensemble import EnsembleSentiment
        changes, cascade = _cascade_override(doc, p / "model.json")
        ensemble = EnsembleSentiment.load(p, lambda member: load_sentiment_model(member, cache_root, quantize, backend))
        if changes:
            ensemble.set_cascade(cascade, f"CXLOOP_CASCADE={os.environ.get('CXLOOP_CASCADE', '').strip()} ({p})")
        return ensemble
    raise ModelLoadError(f"{p / 'model.json'}: unknown model format {fmt!r}")


def artifact_stamp(path: str | os.PathLike[str]) -> str:
    """A digest of the name, size and modification time of every file a sentiment artifact's load
    reads: its folder's and, for an ensemble, its members' (a changed, replaced or truncated file
    changes it)."""
    todo, seen, parts = [Path(path).resolve()], set(), []
    while todo:
        folder = todo.pop()
        if folder in seen or not folder.is_dir():
            continue
        seen.add(folder)
        for f in sorted(folder.iterdir()):
            if f.is_file():
                st = f.stat()
                parts.append(f"{f}\t{st.st_size}\t{st.st_mtime_ns}")
        doc = artifact_doc(folder / "model.json") if (folder / "model.json").is_file() else {}
        if doc.get("format") == ENSEMBLE_FORMAT:
            todo += [m.resolve() for m in member_folders(folder, doc)]
    return hashlib.sha1("\n".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def load_topic_model(path: str | os.PathLike[str]) -> TopicModel:
    """Load a topic model artifact (``models.topics``)."""
    p = Path(path)
    if not p.is_dir():
        raise ModelLoadError(f"topic model folder not found: {p}")
    return TopicModel.load(p)


def encoder_dir_for(topic_dir: Path, encoder: dict, models_home: Path | None) -> Path:
    """The folder of the sentiment transformer whose embeddings a semantic topic model reads: beside
    the topic model (shipped or trained), else a version under ``models_home``."""
    for candidate in (topic_dir.parent / encoder.get("name", ""), *(
            [models_home / encoder["model_version"]] if models_home is not None else [])):
        if (candidate / "model.json").exists() and model_version_of(candidate) == encoder["model_version"]:
            return candidate
    for candidate in SHIPPED_DIR.iterdir():
        if (candidate / "model.json").exists() and model_version_of(candidate) == encoder["model_version"]:
            return candidate
    raise ModelLoadError(f"topic model {topic_dir} reads embeddings of {encoder['model_version']}, "
                         f"which is neither beside it nor under {models_home}")
