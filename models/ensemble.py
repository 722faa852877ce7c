"""A weighted ensemble of sentiment models: the fine-tuned transformer with the lexical baseline.

The two err differently (the transformer reads context and negation, the baseline remembers rare
domain words and n-grams it saw in 60k reviews), so a log-linear blend of their calibrated
probabilities, ``softmax(Σ wᵢ · log pᵢ)``, beats each. The weights are chosen on ``dev`` only.

An artifact is a ``model.json`` that names its members by folder name, resolved next to the
ensemble's own folder (shipped ones sit side by side in ``models/artifacts/``; trained ones in
``CXLOOP_HOME/models/``), so no member is stored twice.

**Cascade.** Most texts are easy: where the baseline member is sure of its label, the blend almost
always agrees with it. An ensemble with a ``cascade`` confidence scores every text with the baseline
first and runs the other member (the transformer, ~70× slower on a CPU) only on the texts whose top
baseline probability is below that confidence; the sure ones keep the baseline's probabilities. The
confidence is chosen on ``dev`` (:func:`choose_cascade`): the lowest at which the cascade scores within
a tolerance of the full blend. An artifact also records a **fast** point (:func:`choose_fast_cascade`,
served with ``CXLOOP_CASCADE=fast``): the lowest confidence at which the cascade stays within
:data:`FAST_TOLERANCE` of the slow member alone on ``dev``, binary and three-class accuracy each, i.e. the
transformer's accuracy for the fewest transformer runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.baseline import ModelLoadError, softmax

FORMAT = "cxloop-ensemble-sentiment/1"
LABELS = ("neg", "neu", "pos")
GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)
FAST_GRID = tuple(float(c) for c in np.round(np.arange(0.5, 0.99, 0.02), 2))   # 0.50, 0.52, …, 0.98
FAST_TOLERANCE = 0.005   # the fast point may be at most 0.5 points under the slow member alone, per task


def blend(probas: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``softmax(Σ wᵢ log pᵢ)`` row-wise."""
    return softmax(sum(w * np.log(np.clip(p, 1e-9, 1.0)) for p, w in zip(probas, weights, strict=True)))


def choose_weight(probas: Sequence[np.ndarray], score: Callable[[np.ndarray], float],
                  grid: Sequence[float] = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2))) -> tuple[float, float]:
    """The weight ``w`` of the first of two members (the second gets ``1 − w``) that maximises
    ``score(blend)``; returns (w, score)."""
    best = max((score(blend(probas, (w, 1 - w))), -abs(w - 0.5), w) for w in grid)
    return float(best[2]), float(best[0])


def cascaded(probas: Sequence[np.ndarray], weights: Sequence[float], screen: int, confidence: float) -> np.ndarray:
    """What a cascade returns given every member's probabilities: ``probas[screen]`` where its top
    probability reaches ``confidence``, the blend elsewhere."""
    out = blend(probas, weights)
    sure = probas[screen].max(axis=1) >= confidence
    out[sure] = probas[screen][sure]
    return out


def lowest_confidence(probas: Sequence[np.ndarray], weights: Sequence[float], screen: int,
                      good: Callable[[np.ndarray], bool], grid: Sequence[float]) -> float | None:
    """The lowest confidence of ``grid`` whose cascade (screened by member ``screen``) is ``good``."""
    return next((c for c in sorted(grid) if good(cascaded(probas, weights, screen, c))), None)


def blended_share(screen_proba: np.ndarray, confidence: float) -> float:
    """The share of texts a cascade at ``confidence`` sends past the screen."""
    return float((screen_proba.max(axis=1) < confidence).mean())


def choose_cascade(probas: Sequence[np.ndarray], weights: Sequence[float], screen: int,
                   score: Callable[[np.ndarray], float], tolerance: float, grid: Sequence[float] = GRID,
                   ) -> tuple[float | None, float, float]:
    """The lowest confidence of ``grid`` at which the cascade screened by member ``screen`` scores at
    least the full blend's ``score`` minus ``tolerance``: (confidence, its score, the share of texts
    the other members still read). (None, blend's score, 1.0) when no confidence is good enough."""
    full = score(blend(probas, weights))
    c = lowest_confidence(probas, weights, screen, lambda p: score(p) >= full - tolerance, grid)
    if c is None:
        return None, full, 1.0
    return c, score(cascaded(probas, weights, screen, c)), blended_share(probas[screen], c)


def choose_fast_cascade(probas: Sequence[np.ndarray], weights: Sequence[float], screen: int,
                        accuracies: Callable[[np.ndarray], Sequence[float]],
                        tolerance: float = FAST_TOLERANCE, grid: Sequence[float] = FAST_GRID,
                        ) -> tuple[float | None, float]:
    """The lowest confidence of ``grid`` at which the cascade's ``accuracies`` (e.g. binary and
    three-class) are each at least the slow member's own minus ``tolerance``: (confidence, the share of
    texts the slow member still reads); (None, 1.0) when none is."""
    slow = [p for k, p in enumerate(probas) if k != screen]
    if len(slow) != 1:
        raise ValueError("the fast cascade point compares against one slow member")
    reference = accuracies(slow[0])
    c = lowest_confidence(probas, weights, screen, lambda p: all(
        a >= r - tolerance for a, r in zip(accuracies(p), reference, strict=True)), grid)
    return (None, 1.0) if c is None else (c, blended_share(probas[screen], c))


@dataclass(frozen=True)
class Context:
    """Probabilities a batch of texts will be blended with, ``softmax((1 − weight)·log p_text +
    weight·log proba)``, one row per text: per-topic polarity reads a topic's clauses with the whole
    text's sentiment (``models.topic_sentiment``). Given to :meth:`EnsembleSentiment.predict_proba`,
    the cascade screens that blend. On the aspect sets' dev split (fast point, 0.66) this sent 31 %
    fewer clauses to the transformer than screening each clause alone, and read per-topic polarity
    better (0.7794 against 0.7764; test 0.7768 against 0.7759; at 0.9: 18 % fewer, 0.7831 against 0.7820)."""

    proba: np.ndarray
    weight: float


def predict_in_context(model: object, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None,
                       context: Context) -> np.ndarray:
    """``model.predict_proba`` of texts that will be read with ``context``: an ensemble's cascade
    screens the blend; any other model reads the texts alone (its result is the same either way)."""
    if isinstance(model, EnsembleSentiment):
        return model.predict_proba(texts, tokens, context)
    return model.predict_proba(texts, tokens)  # type: ignore[attr-defined]


def screen_member(members: Sequence[object]) -> int | None:
    """The index of the member a cascade screens with: the (cheap) baseline; None without one."""
    return next((i for i, m in enumerate(members) if getattr(m, "kind", None) == "baseline"), None)


class EnsembleSentiment:
    labels = LABELS

    def __init__(self, members: list, weights: list[float], names: list[str], meta: dict | None = None,
                 cascade: float | None = None, fast: float | None = None) -> None:
        self.members, self.weights, self.names, self.meta = members, weights, names, meta or {}
        for m in members:
            if tuple(m.labels) != LABELS:
                raise ModelLoadError(f"ensemble member with labels {m.labels} (expected {LABELS})")
        self.cascade: float | None = None   # None: every text through every member
        self.set_cascade(cascade)
        self.fast = fast   # the fast point recorded in training (CXLOOP_CASCADE=fast), if any

    def set_cascade(self, confidence: float | None, source: str = "cascade") -> None:
        """Screen with the baseline member below ``confidence`` (None: the full blend); ``source``
        names the setting in the error an ensemble without a baseline member raises."""
        if confidence is not None and screen_member(self.members) is None:
            raise ModelLoadError(f"{source}: the ensemble has no baseline member to screen the texts with")
        self.cascade = confidence

    def predict_proba(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None,
                      context: Context | None = None) -> np.ndarray:
        """Class probabilities (columns in ``labels`` order). With ``context`` (the texts are read
        blended with other probabilities, see :class:`Context`) the cascade screens that blend: the
        slow members run where the reading the caller will make is unsure, not where the text alone is."""
        if len(texts) == 0:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        if self.cascade is None:
            return blend([m.predict_proba(texts, tokens) for m in self.members], self.weights)
        screen = screen_member(self.members)
        assert screen is not None   # checked in __init__
        first = self.members[screen].predict_proba(texts, tokens)
        out = first.copy()
        read = first if context is None else blend([first, context.proba], (1 - context.weight, context.weight))
        unsure = np.flatnonzero(read.max(axis=1) < self.cascade)
        if len(unsure):  # only these reach the slow members
            some = [texts[i] for i in unsure]
            some_tokens = None if tokens is None else [tokens[i] for i in unsure]
            out[unsure] = blend([first[unsure] if k == screen else m.predict_proba(some, some_tokens)
                                 for k, m in enumerate(self.members)], self.weights)
        return out

    @staticmethod
    def save(folder: Path, members: list[Path], weights: list[float], meta: dict,
             cascade: float | None = None, fast: float | None = None) -> Path:
        """Write the ensemble's ``model.json``: a member beside ``folder`` is named, any other by path."""
        folder.mkdir(parents=True, exist_ok=True)
        refs = [{"name": m.name} if m.resolve().parent == folder.resolve().parent else {"path": str(m.resolve())}
                for m in members]
        doc = {"format": FORMAT, "labels": list(LABELS),
               "members": [{**r, "weight": w} for r, w in zip(refs, weights, strict=True)],
               **({"cascade": cascade_doc(cascade, fast)} if cascade is not None or fast is not None else {}),
               "meta": meta}
        (folder / "model.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Path, load_member: Callable[[Path], object]) -> EnsembleSentiment:
        doc = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        members, weights, names = [], [], []
        for m, path in zip(doc.get("members", []), member_folders(folder, doc), strict=True):
            if not (path / "model.json").exists():
                raise ModelLoadError(f"{folder / 'model.json'} needs member {m.get('name') or m.get('path')!r}, "
                                     f"not found at {path}")
            members.append(load_member(path))
            weights.append(float(m["weight"]))
            names.append(path.name)
        if not members:
            raise ModelLoadError(f"{folder / 'model.json'} lists no members")
        confidence, fast = cascade_points(doc, folder / "model.json")
        return cls(members, weights, names, doc.get("meta", {}), confidence, fast)


def member_folders(folder: Path, doc: dict) -> list[Path]:
    """The artifact folders of the members listed in an ensemble's ``model.json`` ``doc``: a
    ``name`` beside ``folder``, or a ``path``."""
    return [folder.parent / m["name"] if "name" in m else Path(m.get("path", "")) for m in doc.get("members", [])]


def cascade_doc(confidence: float | None, fast: float | None) -> dict:
    """The ``cascade`` entry of an ensemble's ``model.json``."""
    return {k: v for k, v in (("confidence", confidence), ("fast", fast)) if v is not None}


def cascade_points(doc: dict, where: Path | str) -> tuple[float | None, float | None]:
    """(the cascade's confidence, its fast point) recorded in an ensemble's ``model.json`` ``doc``
    (None where absent); a value outside (0, 1] is a ``ModelLoadError`` naming ``where``."""
    cascade = doc.get("cascade")
    if cascade is None:
        return None, None
    if not isinstance(cascade, dict) or not cascade.keys() & {"confidence", "fast"}:
        raise ModelLoadError(f"{where}: cascade needs a confidence in (0, 1], got {cascade!r}")
    out = []
    for key in ("confidence", "fast"):
        value = cascade.get(key)
        if value is not None and not (isinstance(value, int | float) and 0 < value <= 1):
            raise ModelLoadError(f"{where}: cascade needs a {key} in (0, 1], got {cascade!r}")
        out.append(None if value is None else float(value))
    return out[0], out[1]
