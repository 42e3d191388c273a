"""The routing decision for one prompt: the classifier's level probabilities and the ladder's prices
in, the cheapest rung whose predicted success meets the target out, with the reasons.

The rule is the evaluate stage's (`routing.choose`): rung i succeeds with probability P(level <= i);
take the cheapest rung that meets the target, else the largest. The classifier's level i is served
by rung i of the serving ladder, so the two must have the same number of rungs. Everything here is
pure except the loaders at the bottom, which read files (or the MLflow registry).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import mul
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from complexitynet import policy
from complexitynet.errors import ConfigError, DataError

if TYPE_CHECKING:
    from complexitynet.config import ModelSpec, Params

log = logging.getLogger(__name__)

ROUTED = "complexitynet"  # the model name that routes; "complexitynet:0.9" routes with target 0.9


@dataclass(frozen=True)
class Decision:
    """One prompt's routing decision and everything needed to explain it."""

    probs: dict[str, float]  # per classifier level (the ladder's rungs, then "none"); empty for the paying rule
    success: dict[str, float]  # per rung: predicted P(the rung solves the prompt)
    target: float | None  # the level rule's target; None under the paying rule
    index: int  # the chosen rung (policy.REFUSE: none, by the paying rule's fallback)
    model: str
    met: bool  # False: no rung reached the target (or every rung was predicted hopeless): the fallback
    lam: float | None = None  # the paying rule's price of quality
    unit_cost: tuple[float, ...] = ()  # the paying rule's cost per call of each rung, largest = 1

    @property
    def level(self) -> str:
        """The most likely level (a rung's name, or "none"); under the paying rule, the chosen rung."""
        if not self.probs:
            return self.model
        return max(self.probs, key=self.probs.__getitem__)

    def explain(self, ladder: list[ModelSpec]) -> str:
        if self.lam is not None:
            return self._explain_paying()
        spec = ladder[self.index]
        price = f"${spec.price.input:g}/${spec.price.output:g} per 1M input/output tokens"
        if not self.met:
            return (f"no rung reaches predicted success {self.target:g} (best: {max(self.success.values()):.3f}); "
                    f"routing to the largest, {self.model} ({price})")
        cheaper = [f"{m} {p:.3f}" for m, p in list(self.success.items())[: self.index]]
        why = f"; cheaper rungs fall short ({', '.join(cheaper)})" if cheaper else " and is the cheapest rung"
        return (f"{self.model} is predicted to succeed with {self.success[self.model]:.3f} >= target "
                f"{self.target:g}{why}; price {price}")

    def _explain_paying(self) -> str:
        values = ", ".join(f"{m} {s:.3f} - {self.lam:g} x {u:.3g}" for (m, s), u in zip(self.success.items(),
                                                                                      self.unit_cost))
        if self.index < 0:
            return f"every rung is predicted to fail ({values}); refused (train.router.fallback: refuse)"
        if not self.met:
            return f"every rung is predicted to fail ({values}); the fallback rung {self.model}"
        return f"{self.model} has the best predicted success minus price of quality x cost ({values})"

    def as_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "index": self.index, "level": self.level, "target": self.target,
               "met": self.met, "probs": self.probs, "success": {m: round(p, 6) for m, p in self.success.items()}}
        return out if self.lam is None else {**out, "lam": self.lam}


class PayingRule:
    """The router that pays (models/router, see routers.py): its success model's columns are the
    rungs; a request is routed by policy.choose and, when it carries tests, escalated by the learned
    gate (policy.escalate): the code evaluate replays offline."""

    def __init__(self, spec: Any, model: Any) -> None:
        self.spec, self.model = spec, model

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.predict(texts), dtype=np.float64)

    def decide(self, success_row: np.ndarray | list[float], ladder: list[ModelSpec], verified: bool) -> Decision:
        """Prompt-only routing uses the rule's lambda; a request with tests starts the verified
        cascade, at the cascade's lambda (both chosen by cross-validation in `train`)."""
        row = np.asarray(success_row, dtype=np.float64).ravel()
        rule = replace(self.spec.rule, lam=self.spec.cascade_lam if verified else self.spec.rule.lam)
        index = int(policy.choose(row[None, :], self.spec.unit_cost, rule)[0])
        names = [m.name for m in ladder]
        return Decision(probs={}, success=dict(zip(names, row.tolist())), target=None, index=index,
                        model=names[index] if index >= 0 else "refused",
                        met=bool(row.max() >= rule.hopeless_below), lam=rule.lam,
                        unit_cost=tuple(self.spec.unit_cost))

    def escalate(self, decision: Decision, rung: int, visible_frac: float) -> bool:
        return policy.escalate(self.spec.gate, list(decision.success.values()), rung, visible_frac,
                               self.spec.unit_cost, decision.lam)


def load_paying(path: str, ladder_name: str, ladder: list[ModelSpec], threads: int = 0) -> PayingRule:
    """models/router as `train` wrote it; its rungs must map one to one onto the serving ladder's."""
    from complexitynet.routers import load_router

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


def decide(level_probs: np.ndarray | list[float], ladder: list[ModelSpec], classes: list[str], target: float) -> Decision:
    """The decision for one prompt's probabilities over `classes` (len(ladder) + 1 levels)."""
    # routing.choose's rule on one row, in plain Python (numpy's per-call overhead dominates one row
    # of four numbers; the router decides per request). tests/unit/test_route.py checks the two agree.
    probs = level_probs if isinstance(level_probs, list) else np.asarray(level_probs, dtype=np.float64).ravel().tolist()
    success = list(itertools.accumulate(probs))[:-1]  # routing.success_probs
    index = next((i for i, s in enumerate(success) if s >= target - 1e-12), len(success) - 1)
    names = [m.name for m in ladder]
    return Decision(probs={c: round(p, 6) for c, p in zip(classes, probs)},
                    success={n: round(s, 6) for n, s in zip(names, success)},
                    target=target, index=index, model=names[index], met=success[index] >= target - 1e-12)


def parse_model(name: str) -> tuple[bool, float | None]:
    """(routed, target) for a request's model name: "complexitynet" -> (True, None),
    "complexitynet:0.9" -> (True, 0.9), anything else -> (False, None). A bad suffix is a ValueError."""
    if name != ROUTED and not name.startswith(ROUTED + ":"):
        return False, None
    if name == ROUTED:
        return True, None
    suffix = name[len(ROUTED) + 1:]
    try:
        target = float(suffix)
    except ValueError:
        target = math.nan
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"model '{name}': the quality target after '{ROUTED}:' must be a number in [0, 1], "
                         f"e.g. '{ROUTED}:0.9'")
    return True, target


def prompt_text(messages: Any) -> str:
    """What the classifier reads: the last user message (text parts joined). Raises ValueError or
    TypeError naming the problem when `messages` is not a Chat Completions message list with a user turn."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of chat messages")
    for message in reversed(messages):
        if not isinstance(message, dict):
            raise TypeError("every item of 'messages' must be an object with 'role' and 'content'")
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
                if not all(isinstance(t, str) for t in texts):
                    raise ValueError("a content part of type 'text' must carry its 'text' as a string")
                return "\n".join(texts)  # type: ignore[arg-type]
            raise ValueError("the last user message has no text 'content'")
    raise ValueError("'messages' has no message with role 'user' to route on")


def default_target(configured: float | None, eval_metrics: Path, fallback: float) -> tuple[float, str]:
    """(target, where it came from): the configured one, else the calibrated one that evaluate wrote
    to metrics/eval.json, else the fallback param."""
    if configured is not None:
        return configured, "serve.target"
    if eval_metrics.exists():
        try:
            target = float(json.loads(eval_metrics.read_text())["target"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{eval_metrics}: no numeric 'target' ({exc!r}); rerun `complexitynet evaluate` "
                            "or set serve.target in params.yaml") from None
        return target, f"calibrated ({eval_metrics})"
    return fallback, "serve.fallback_target (no metrics/eval.json)"


def serving_ladder(params: Params, name: str | None = None, live: bool = True) -> tuple[str, list[ModelSpec]]:
    """The ladder to route over (`name`, else serve.ladder); with `live`, every rung must be able to
    answer requests (provider: openai)."""
    name = name or params.serve.ladder
    if name is None:
        raise ConfigError("params.yaml: serve.ladder is not set; name a ladder of `provider: openai` rungs "
                          "(e.g. openai-router), one per classifier level, cheapest first")
    if name not in params.ladders:
        raise ConfigError(f"params.yaml: no ladder named '{name}'; defined: {sorted(params.ladders)}")
    ladder = params.ladders[name]
    if live:
        for spec in ladder:
            if spec.provider != "openai":
                raise ConfigError(
                    f"params.yaml: ladders.{name}: rung '{spec.name}' is provider '{spec.provider}', which cannot "
                    "answer live requests; serve a ladder whose rungs are all `provider: openai` "
                    "(set serve.ladder, e.g. openai-router)")
    return name, ladder


def check_levels(classes: list[str], ladder_name: str, ladder: list[ModelSpec], source: str) -> None:
    """The classifier's levels must map one to one onto the ladder's rungs (plus "none")."""
    if len(classes) != len(ladder) + 1:
        raise ConfigError(
            f"classifier {source} predicts {len(classes) - 1} levels ({', '.join(classes[:-1])}) but ladder "
            f"'{ladder_name}' has {len(ladder)} rungs; serve a ladder with {len(classes) - 1} rungs, cheapest "
            "first (rung i serves level i), or retrain the classifier on a ladder of that size")


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
    import joblib

    try:
        model = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - unpickling fails in many ways; all mean "not a readable model"
        raise ConfigError(f"serve.classifier '{source}': cannot read it as a joblib model ({type(exc).__name__}: "
                          f"{exc}); rerun `complexitynet train` to rewrite it, or {fix}") from None
    if not callable(getattr(model, "predict_proba", None)):
        raise ConfigError(f"serve.classifier '{source}': the {type(model).__name__} in it has no predict_proba(texts); "
                          f"{fix}")
    clf = FileClassifier(model, classes, _fast_path(model, source))
    columns = clf.predict_proba(["probe"]).shape[-1]
    if columns != len(classes):
        raise ConfigError(f"serve.classifier '{source}': predicts {columns} levels, but the training ladder "
                          f"(base.ladder) names {len(classes)} ({', '.join(classes)}); set base.ladder to the "
                          "ladder it was trained on, or retrain it (complexitynet train)")
    return clf


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
