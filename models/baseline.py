"""The baseline sentiment classifier: TF-IDF on jieba words and character n-grams, linear model.

Fast and explainable: the largest weights per class are the words that drive a label. It is the
floor every other model must beat. Artifacts are plain files — ``model.json`` (configuration) and
``weights.npz`` (vocabularies, IDF and coefficients, loaded with ``allow_pickle=False``) — so
loading a model from an untrusted folder never executes code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from models.features import FeatureConfig, TextFeatures

FORMAT = "cxloop-baseline-sentiment/1"
LABELS = ("neg", "neu", "pos")


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of scores (stable: the row maximum is subtracted first)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ModelLoadError(RuntimeError):
    """A model artifact that is missing, corrupt or of an unknown format; names the path."""


def read_artifact(path: Path, what: str = "model artifact") -> tuple[dict, dict[str, np.ndarray]]:
    """``model.json`` and the arrays of ``weights.npz`` of a linear model's
    folder, never unpickling; a missing or corrupt file raises ``ModelLoadError`` naming it."""
    try:
        doc = json.loads((path / "model.json").read_text(encoding="utf-8"))
        with np.load(path / "weights.npz", allow_pickle=False) as w:
            arrays = {k: w[k] for k in w.files}
    except FileNotFoundError as e:
        raise ModelLoadError(f"{what} incomplete: {e.filename} is missing") from None
    except (ValueError, OSError, KeyError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{what} in {path} is corrupt: {e}") from None
    return doc, arrays


@dataclass(frozen=True)
class BaselineConfig(FeatureConfig):
    """Feature and model options of the baseline (stored with the artifact)."""

    C: float = 0.3                  # LinearSVC regularisation of the polar classes (neg, pos), tuned on dev
    C_neutral: float | None = 0.6   # ... of the neutral class (None: ``C``); the plain model's dev choice
    nb_alpha: float = 0.5           # NB-SVM: polar classes see features scaled by their naive-Bayes log-count
                                    # ratio, smoothed by this count (0: plain TF-IDF); dev: binary +0.4 pt
    temperature: float = 1.0        # softmax temperature over SVM margins, fitted on dev

    @classmethod
    def from_doc(cls, cfg: dict) -> BaselineConfig:
        """The config stored in ``model.json``; artifacts from before NB-SVM are plain one-vs-rest."""
        cfg = {"nb_alpha": 0.0, "C_neutral": None, **cfg}
        return cls(**{**cfg, "word_ngrams": tuple(cfg["word_ngrams"]), "char_ngrams": tuple(cfg["char_ngrams"])})


def binarised(x: sp.csr_matrix) -> sp.csr_matrix:
    """``x`` with every stored value 1 (which features a text has)."""
    present = x.copy()
    present.data[:] = 1
    return present


def nb_ratio(present: sp.csr_matrix, positive: np.ndarray, alpha: float) -> np.ndarray:
    """Naive-Bayes log-count ratio of each feature for one class against the rest (Wang & Manning
    2012, NB-SVM): log of its smoothed share of the class's counts in ``present`` (:func:`binarised`
    features) over its share of the rest's."""
    p = alpha + np.asarray(present[positive].sum(axis=0)).ravel()
    q = alpha + np.asarray(present[~positive].sum(axis=0)).ravel()
    return np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)


class BaselineSentiment:
    """Three-class sentiment (neg / neu / pos) with a score P(pos) − P(neg) in [-1, 1].

    A one-vs-rest linear SVM on TF-IDF features; its margins become probabilities through a
    softmax whose temperature is fitted on held-out data (:meth:`calibrate`). The polar classes are
    trained NB-SVM style, on features scaled by their naive-Bayes ratio ``r``; the stored weights are
    ``w ⊙ r``, so serving is the same linear model either way."""

    kind = "baseline"

    def __init__(self, config: BaselineConfig | None = None) -> None:
        self.config = config or BaselineConfig()
        c = self.config
        self.text_features = TextFeatures(c)
        self.labels: tuple[str, ...] = LABELS
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.meta: dict = {}

    # -- features -------------------------------------------------------------------------------
    def features(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> sp.csr_matrix:
        return self.text_features.transform(texts, tokens)

    # -- training -------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence[str],
            tokens: Sequence[Sequence[str]] | None = None) -> BaselineSentiment:
        return self.fit_features(self.text_features.fit_transform(texts, tokens), labels)

    def fit_features(self, x: sp.csr_matrix, labels: Sequence[str],
                     sample_weight: np.ndarray | None = None) -> BaselineSentiment:
        """Fit the linear model on already-vectorised features (lets tuning reuse one vectorisation)."""
        unknown = set(labels) - set(LABELS)
        if unknown:
            raise ValueError(f"unknown labels {sorted(unknown)}; expected {LABELS}")
        from sklearn.svm import LinearSVC  # training-only: keeps serving imports light

        c, y = self.config, np.asarray(labels)
        present = binarised(x) if c.nb_alpha > 0 else None   # once, for both polar classes
        coef, intercept = [], []
        for lab in LABELS:   # one binary SVM per class: liblinear's one-vs-rest, with per-class options
            positive = y == lab
            polar = lab != "neu"
            scale = nb_ratio(present, positive, c.nb_alpha) if polar and present is not None else None
            clf = LinearSVC(C=c.C if polar or c.C_neutral is None else c.C_neutral)
            clf.fit(x if scale is None else x @ sp.diags(scale), positive.astype(np.int8), sample_weight=sample_weight)
            w = clf.coef_.ravel()
            coef.append(w if scale is None else w * scale)
            intercept.append(clf.intercept_[0])
        self.coef = np.asarray(coef, dtype=np.float32)
        self.intercept = np.asarray(intercept, dtype=np.float32)
        return self

    def calibrate(self, x: sp.csr_matrix, labels: Sequence[str]) -> float:
        """Fit the softmax temperature on held-out features by minimising the log-loss."""
        from scipy.optimize import minimize_scalar  # training-only

        margins = self.margins(x)
        y = np.asarray([self.labels.index(lab) for lab in labels])

        def nll(log_t: float) -> float:
            z = margins / np.exp(log_t)
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            return float(-logp[np.arange(len(y)), y].mean())

        t = float(np.exp(minimize_scalar(nll, bounds=(-5, 3), method="bounded").x))
        self.config = BaselineConfig(**{**asdict(self.config), "temperature": round(t, 5)})
        return t

    # -- inference ------------------------------------------------------------------------------
    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        if self.coef is None or self.intercept is None:
            raise RuntimeError("the model is not trained")
        return self.coef, self.intercept

    def margins(self, x: sp.csr_matrix) -> np.ndarray:
        coef, intercept = self._weights()
        return np.asarray(x @ coef.T) + intercept

    def _proba(self, margins: np.ndarray) -> np.ndarray:
        return softmax(margins / self.config.temperature)

    def predict_proba_features(self, x: sp.csr_matrix) -> np.ndarray:
        return self._proba(self.margins(x))

    def predict_proba(self, texts: Sequence[str], tokens: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        """Class probabilities, columns in ``self.labels`` order (neg, neu, pos)."""
        if len(texts) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        coef, intercept = self._weights()   # scored block by block, not through the stacked matrix
        return self._proba(self.text_features.linear(texts, tokens, coef) + intercept)

    def top_features(self, label: str, k: int = 20) -> list[str]:
        """The ``k`` features with the largest weight towards ``label``."""
        assert self.coef is not None
        names = self.text_features.names()
        row = self.coef[self.labels.index(label)]
        return [names[i] for i in np.argsort(-row)[:k]]

    # -- persistence ----------------------------------------------------------------------------
    def save(self, folder: str | Path, meta: dict | None = None) -> Path:
        """Write ``model.json`` + ``weights.npz`` into ``folder`` (created if needed)."""
        assert self.coef is not None and self.intercept is not None
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.meta = {**self.meta, **(meta or {})}
        doc = {
            "format": FORMAT,
            "labels": list(self.labels),
            "config": asdict(self.config),
            "meta": self.meta,
        }
        (out / "model.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        np.savez_compressed(out / "weights.npz", **self.text_features.arrays(),
                            coef=self.coef.astype(np.float16), intercept=self.intercept)
        return out

    @classmethod
    def load(cls, folder: str | Path) -> BaselineSentiment:
        """Load an artifact written by :meth:`save`; any problem raises ``ModelLoadError`` naming it."""
        path = Path(folder)
        doc, arrays = read_artifact(path)
        if doc.get("format") != FORMAT:
            raise ModelLoadError(f"{path / 'model.json'} has format {doc.get('format')!r}, expected {FORMAT!r}")
        model = cls(BaselineConfig.from_doc(doc["config"]))
        model.labels = tuple(doc["labels"])
        try:
            model.text_features.restore(doc, arrays)
        except ValueError as e:
            raise ModelLoadError(f"model artifact in {path} is corrupt: {e}") from None
        if arrays["coef"].shape != (len(model.labels), model.text_features.size):
            raise ModelLoadError(f"model artifact in {path} is corrupt: coefficient shape {arrays['coef'].shape}")
        model.coef = arrays["coef"].astype(np.float32)
        model.intercept = arrays["intercept"].astype(np.float32)
        model.meta = doc.get("meta", {})
        return model
