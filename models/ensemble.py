"""A weighted ensemble of sentiment models: the fine-tuned transformer with the lexical baseline.

The two err differently (the transformer reads context and negation, the baseline remembers rare
domain words and n-grams it saw in 60k reviews), so a log-linear blend of their calibrated
probabilities, ``softmax(Σ wᵢ · log pᵢ)``, beats each. The weights are chosen on ``dev`` only.

An artifact is a ``model.json`` that names its members by folder name, resolved next to the
ensemble's own folder (shipped ones sit side by side in ``models/artifacts/``; trained ones in
``CXLOOP_HOME/models/``), so no member is stored twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models.baseline import ModelLoadError, softmax

FORMAT = "cxloop-ensemble-sentiment/1"
LABELS = ("neg", "neu", "pos")


def blend(probas: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``softmax(Σ wᵢ log pᵢ)`` row-wise."""
    return softmax(sum(w * np.log(np.clip(p, 1e-9, 1.0)) for p, w in zip(probas, weights, strict=True)))


def choose_weight(probas: Sequence[np.ndarray], score: Callable[[np.ndarray], float],
                  grid: Sequence[float] = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2))) -> tuple[float, float]:
    """The weight ``w`` of the first of two members (the second gets ``1 − w``) that maximises
    ``score(blend)``; returns (w, score)."""
    best = max((score(blend(probas, (w, 1 - w))), -abs(w - 0.5), w) for w in grid)
    return float(best[2]), float(best[0])


class EnsembleSentiment:
    labels = LABELS

    def __init__(self, members: list, weights: list[float], names: list[str], meta: dict | None = None) -> None:
        self.members, self.weights, self.names, self.meta = members, weights, names, meta or {}
        for m in members:
            if tuple(m.labels) != LABELS:
                raise ModelLoadError(f"ensemble member with labels {m.labels} (expected {LABELS})")

    def predict_proba(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        return blend([m.predict_proba(texts, tokens) for m in self.members], self.weights)

    @staticmethod
    def save(folder: Path, members: list[Path], weights: list[float], meta: dict) -> Path:
        """Write the ensemble's ``model.json``: a member beside ``folder`` is named, any other by path."""
        folder.mkdir(parents=True, exist_ok=True)
        refs = [{"name": m.name} if m.resolve().parent == folder.resolve().parent else {"path": str(m.resolve())}
                for m in members]
        doc = {"format": FORMAT, "labels": list(LABELS),
               "members": [{**r, "weight": w} for r, w in zip(refs, weights, strict=True)], "meta": meta}
        (folder / "model.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Path, load_member: Callable[[Path], object]) -> EnsembleSentiment:
        doc = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        members, weights, names = [], [], []
        for m in doc.get("members", []):
            path = folder.parent / m["name"] if "name" in m else Path(m.get("path", ""))
            if not (path / "model.json").exists():
                raise ModelLoadError(f"{folder / 'model.json'} needs member {m.get('name') or m.get('path')!r}, "
                                     f"not found at {path}")
            members.append(load_member(path))
            weights.append(float(m["weight"]))
            names.append(path.name)
        if not members:
            raise ModelLoadError(f"{folder / 'model.json'} lists no members")
        return cls(members, weights, names, doc.get("meta", {}))
