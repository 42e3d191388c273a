"""Loading what the router serves: the router that pays (models/router), a LoRA level classifier
(a directory), a baseline .joblib file, or an MLflow model URI; and `SparseLinear`, the TF-IDF
baseline's fast serving path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from operator import mul
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from complexitynet.errors import ConfigError, DataError

if TYPE_CHECKING:
    from complexitynet.config import ModelSpec

from complexitynet.serve.decide import PayingRule

log = logging.getLogger(__name__)


def load_paying(path: str, ladder_name: str, ladder: list[ModelSpec], threads: int = 0) -> PayingRule:
    """models/router as `train` wrote it; its rungs must map one to one onto the serving ladder's."""
    from complexitynet.paying import load_router

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        spec, model = load_router(path)
    except DataError as exc:
        raise ConfigError(f"serve.router '{path}': {exc}; or set serve.router: null to serve the level "
                          "classifier (serve.classifier)") from None
    if len(spec.models) != len(ladder):
        raise ConfigError(f"serve.router '{path}' predicts {len(spec.models)} rungs ({', '.join(spec.models)}) but "
                          f"ladder '{ladder_name}' has {len(ladder)}; serve a ladder with {len(spec.models)} rungs, "
                          "cheapest first, or retrain on a ladder of that size")
    return PayingRule(spec, model)


class LevelClassifier(Protocol):
    """What the router needs of a classifier: its level names and one probability row per text."""

    classes: list[str]

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...


class SparseLinear:
    """The predict_proba of a fitted Padded(TfidfVectorizer -> LogisticRegression) in plain Python, for
    serving: the vectorizer's own analyzer, vocabulary and idf weights, the model's own coefficients
    and softmax, so the probabilities are scikit-learn's to rounding. A prompt has a few dozen terms,
    so a loop over them beats both scikit-learn's per-call input validation and sparse machinery
    (~1.3 ms a call) and numpy's per-operation overhead: ~35 us a prompt here, which is what lets
    the router classify inline. `compile` returns None for any other model or option it does not
    reproduce."""

    def __init__(self, analyzer, vocabulary: dict[str, int], idf: list[float], sublinear_tf: bool,
                 weights: list[tuple[float, ...]], intercept: list[float], columns: list[int], num_labels: int):
        self.analyzer, self.vocabulary, self.idf, self.sublinear_tf = analyzer, vocabulary, idf, sublinear_tf
        self.intercept, self.columns, self.num_labels = intercept, columns, num_labels
        # per class, every term's idf x coefficient (weights[term] = the term's coefficient per class)
        self.scaled = [[i * w[k] for i, w in zip(idf, weights)] for k in range(len(intercept))]

    @classmethod
    def compile(cls, model) -> SparseLinear | None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        from complexitynet.baselines import Padded

        if not isinstance(model, Padded) or not isinstance(model.model, Pipeline) or len(model.model.steps) != 2:
            return None
        vec, lr = model.model[0], model.model[1]
        if not (type(vec) is TfidfVectorizer and type(lr) is LogisticRegression):
            return None
        if vec.analyzer != "word" or vec.norm != "l2" or not vec.use_idf or vec.binary or len(lr.classes_) < 3:
            return None  # binary models use a sigmoid, not the softmax below
        return cls(vec.build_analyzer(), dict(vec.vocabulary_), [float(x) for x in vec.idf_], bool(vec.sublinear_tf),
                   [tuple(float(x) for x in col) for col in np.asarray(lr.coef_, dtype=np.float64).T],
                   [float(x) for x in lr.intercept_], [int(c) for c in lr.classes_], model.num_labels)

    def scores(self, text: str) -> list[float]:
        """The logistic regression's decision values for one text: intercept + (tf x idf / norm) . coef,
        summed term by term in C (map) rather than in Python loops."""
        counts: dict[int, int] = {}
        for j in map(self.vocabulary.get, self.analyzer(text)):
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        terms = list(counts)
        tf = [math.log(n) + 1.0 for n in counts.values()] if self.sublinear_tf else [float(n) for n in counts.values()]
        tfidf = list(map(mul, tf, map(self.idf.__getitem__, terms)))
        norm = math.sqrt(sum(map(mul, tfidf, tfidf))) or 1.0
        return [b + sum(map(mul, tf, map(col.__getitem__, terms))) / norm for b, col in zip(self.intercept, self.scaled)]

    def proba_one(self, text: str) -> list[float]:
        """One text's probability per level (the softmax of its scores, in the levels' columns)."""
        scores = self.scores(text)
        top = max(scores)
        exp = [math.exp(x - top) for x in scores]
        total = sum(exp)
        out = [0.0] * self.num_labels
        for column, e in zip(self.columns, exp):
            out[column] = e / total
        return out

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.array([self.proba_one(t) for t in texts], dtype=np.float64).reshape(len(texts), self.num_labels)


@dataclass(frozen=True)
class FileClassifier:
    """A baseline `train` saved with joblib (models/baselines/*.joblib): an sklearn-style object whose
    predict_proba has one column per level. The file holds no level names, so they come from the
    training ladder (`Params.classes`, as `train` names them); the column count is checked on load."""

    model: Any
    classes: list[str]
    fast: SparseLinear | None = None  # the same model without scikit-learn's per-call cost, when it has one

    @property
    def inline(self) -> Callable[[str], list[float]] | None:
        """One text's probabilities, when that is cheap enough to run inside the event loop (no
        micro-batching, no thread hop); None otherwise."""
        return self.fast.proba_one if self.fast is not None else None

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if self.fast is not None:
            return self.fast.predict_proba(texts)
        return np.asarray(self.model.predict_proba(texts), dtype=np.float64)


def load_router_classifier(source: str, classes: list[str], threads: int = 0) -> LevelClassifier:
    """Load the classifier from a directory (LoRA), a baseline .joblib file, or an MLflow URI
    (models:/name@alias, runs:/<id>/classifier, runs:/<id>/tfidf_lr.joblib). A LoRA classifier runs
    on the CPU or GPU that classifier.device() picks, `threads` > 0 capping torch's CPU threads;
    `classes` names a baseline file's levels (a LoRA directory carries its own). A .joblib file is a
    pickle: load only files you trust (the train stage's own)."""
    fix = ("point serve.classifier (or --classifier) at a classifier directory (models/classifier), a "
           "baseline file (models/baselines/tfidf_lr.joblib) or an MLflow model URI")
    if source.startswith(("models:/", "runs:/")):
        import mlflow

        from complexitynet.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())  # the project's store (mlflow/mlflow.db) unless MLFLOW_TRACKING_URI says
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
        except Exception as exc:  # noqa: BLE001 - any registry failure: say which URI and how to fix it
            raise ConfigError(f"serve.classifier '{source}': cannot load it from MLflow ({exc}); check "
                              "MLFLOW_TRACKING_URI and the model name/alias, or give a directory") from None
        path = local if local.is_file() else local / "artifacts" / "classifier"  # a logged pyfunc model
    else:
        path = Path(source)
    if path.is_dir():
        return _load_lora(path, threads)
    if not path.exists():
        raise ConfigError(f"serve.classifier '{source}': no such file or directory; run `complexitynet train`, or {fix}")
    if path.suffix != ".joblib":
        raise ConfigError(f"serve.classifier '{source}': unknown classifier file type '{path.suffix}' "
                          f"(only .joblib files are read); {fix}")
    return _load_joblib(path, source, classes, fix)


def _load_lora(path: Path, threads: int) -> LevelClassifier:
    import torch

    from complexitynet.classifier import load_classifier

    if threads:
        torch.set_num_threads(threads)
    return load_classifier(path)


def _load_joblib(path: Path, source: str, classes: list[str], fix: str) -> FileClassifier:
    from complexitynet.classifier import load_baseline

    try:
        model = load_baseline(path, classes, f"serve.classifier '{source}'", fix)
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    return FileClassifier(model, classes, _fast_path(model, source))


def _fast_path(model: Any, source: str) -> SparseLinear | None:
    """The model's SparseLinear form when it has one that agrees with it (checked on texts made of its
    own vocabulary); otherwise None, and scikit-learn serves it."""
    fast = SparseLinear.compile(model)
    if fast is None:
        return None
    words = list(fast.vocabulary)
    probes = ["", "probe"] + [" ".join(words[i::7][:40]) for i in range(7)]
    if not np.allclose(fast.predict_proba(probes), model.predict_proba(probes), rtol=0, atol=1e-9):
        log.warning("serve.classifier '%s': the fast TF-IDF path disagrees with scikit-learn here; "
                    "serving through scikit-learn (slower)", source)
        return None
    return fast
