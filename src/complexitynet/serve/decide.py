"""The routing decision for one prompt: the classifier's level probabilities (or the paying router's
per-rung success) and the ladder's prices in, the cheapest rung whose predicted success meets the
target out, with the reasons. Pure: the loaders that read classifiers live in classifiers.py.

The level rule is the evaluate stage's (`scores.choose`): rung i succeeds with probability
P(level <= i); take the cheapest rung that meets the target, else the largest. The classifier's
level i is served by rung i of the serving ladder, so the two must have the same number of rungs.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """The router that pays (models/router, see paying.py): its success model's columns are the
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


def decide(level_probs: np.ndarray | list[float], ladder: list[ModelSpec], classes: list[str], target: float) -> Decision:
    """The decision for one prompt's probabilities over `classes` (len(ladder) + 1 levels)."""
    # scores.choose's rule on one row, in plain Python (numpy's per-call overhead dominates one row
    # of four numbers; the router decides per request). tests/serve/test_decide.py checks the two agree.
    probs = level_probs if isinstance(level_probs, list) else np.asarray(level_probs, dtype=np.float64).ravel().tolist()
    success = list(itertools.accumulate(probs))[:-1]  # scores.success_probs
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


def default_target(configured: float | None, evaluate_metrics: Path, fallback: float) -> tuple[float, str]:
    """(target, where it came from): the configured one, else the calibrated one that evaluate wrote
    to metrics/evaluate.json, else the fallback param."""
    if configured is not None:
        return configured, "serve.target"
    if evaluate_metrics.exists():
        try:
            target = float(json.loads(evaluate_metrics.read_text())["target"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{evaluate_metrics}: no numeric 'target' ({exc!r}); rerun `complexitynet evaluate` "
                            "or set serve.target in params.yaml") from None
        return target, f"calibrated ({evaluate_metrics})"
    return fallback, "serve.fallback_target (no metrics/evaluate.json)"


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
