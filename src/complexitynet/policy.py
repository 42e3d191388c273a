"""Routing that pays: a cost-aware rule over per-model success probabilities, and a verified cascade.

Conventions (as scores.py): the ladder has L models, cheapest first. `success[p, i]` is the
predicted probability that model i's answer to prompt p passes the judging (hidden) tests.
`unit_cost[i]` is model i's expected cost of one call relative to the largest model's (the largest
costs 1), so the price of quality `lam` reads "pass probability given up per call of the largest
model saved". A choice of REFUSE (-1) answers nothing: it costs nothing and passes nothing.

Everything here is pure, so `evaluate` (offline, over recorded answers) and `complexitynet serve`
(live, one request at a time) take their decisions with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from complexitynet import scores as R

REFUSE = -1
Fallback = Literal["cheapest", "largest", "refuse"]


@dataclass(frozen=True)
class Rule:
    """Pick the rung that maximises P(pass) - lam * unit cost; prompts on which no rung is predicted
    to reach `hopeless_below` go to the fallback instead (never silently to the largest)."""

    lam: float
    fallback: Fallback = "cheapest"
    hopeless_below: float = 0.0


def choose(success: np.ndarray, unit_cost: Sequence[float], rule: Rule) -> np.ndarray:
    """One rung index (or REFUSE) per prompt. Ties go to the cheaper rung."""
    success = np.atleast_2d(np.asarray(success, dtype=np.float64))
    value = success - rule.lam * np.asarray(unit_cost, dtype=np.float64)[None, :]
    picks = value.argmax(axis=1)
    fallback = {"cheapest": 0, "largest": success.shape[1] - 1, "refuse": REFUSE}[rule.fallback]
    return np.where(success.max(axis=1) < rule.hopeless_below, fallback, picks)


def per_prompt(choices: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's pass rate and cost under `choices` (REFUSE: 0 and 0)."""
    rows, served = np.arange(len(choices)), choices >= 0
    picked = np.maximum(choices, 0)
    return (np.where(served, quality[rows, picked], 0.0), np.where(served, cost[rows, picked], 0.0))


def shares(choices: np.ndarray, models: int) -> np.ndarray:
    """The share of prompts sent to each rung (refused prompts count toward none)."""
    return np.bincount(choices[choices >= 0], minlength=models) / len(choices)


# --- the verified cascade -----------------------------------------------------------------------

def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def gate_features(success_row: Sequence[float], rung: int, visible_frac: float) -> list[float]:
    """What the gate sees after rung `rung`'s answer failed the visible tests: the next rung's and
    this rung's predicted success (as logits) and the share of visible tests this answer passed."""
    return [_logit(success_row[rung + 1]), _logit(success_row[rung]), float(visible_frac)]


@dataclass(frozen=True)
class Gate:
    """P(the next rung's answer passes | this rung's answer failed the visible tests): a logistic
    model over `gate_features`, fitted out of fold on train + validation. Without coefficients it
    is the next rung's predicted success as it stands."""

    coef: tuple[float, ...] | None = None
    intercept: float = 0.0

    def prob(self, success_row: Sequence[float], rung: int, visible_frac: float) -> float:
        if self.coef is None:
            return float(success_row[rung + 1])
        z = self.intercept + sum(w * x for w, x in zip(self.coef, gate_features(success_row, rung, visible_frac)))
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


def escalate(gate: Gate, success_row: Sequence[float], rung: int, visible_frac: float,
             unit_cost: Sequence[float], lam: float) -> bool:
    """After rung `rung`'s answer failed the visible tests: is the next rung worth its price?"""
    if rung + 1 >= len(unit_cost):
        return False
    return gate.prob(success_row, rung, visible_frac) - lam * unit_cost[rung + 1] > 0


def pick_answer(tried: Sequence[tuple[int, float]]) -> int:
    """When no answer passed the visible tests: the rung whose answer passed the most of them (the
    larger rung on a tie). `tried` holds (rung, share of visible tests passed)."""
    return max(tried, key=lambda t: (t[1], t[0]))[0]


@dataclass
class Recorded:
    """Recorded answers of every ladder model on a set of prompts, as the cascade needs them.
    Trials beyond a model's recordings are missing: never verified, never passing."""

    task_ids: list[str]
    visible: np.ndarray  # [prompt, model, trial] 1 pass, 0 fail, -1 no visible tests (cannot verify)
    visible_frac: np.ndarray  # [prompt, model, trial] share of visible tests passed
    truth: np.ndarray  # [prompt, model, trial] passes the judging tests
    present: np.ndarray  # [prompt, model, trial] the trial was recorded and judged
    cost: np.ndarray  # [prompt, model] USD of one call (mean over trials)
    seconds: np.ndarray  # [prompt, model] sandbox seconds of one visible check (mean over trials)

    @property
    def quality(self) -> np.ndarray:
        """[prompt, model] pass rate over the recorded trials (0 where none)."""
        return (self.truth & self.present).sum(axis=2) / np.maximum(self.present.sum(axis=2), 1)

    def first(self, k: int) -> Recorded:
        """The same prompts with only the first k trials (costs and seconds stay per-call means)."""
        return Recorded(self.task_ids, self.visible[:, :, :k], self.visible_frac[:, :, :k], self.truth[:, :, :k],
                        self.present[:, :, :k], self.cost, self.seconds)

    def labels(self) -> np.ndarray:
        """The threshold rule's label per prompt: the cheapest rung whose every recorded trial passes
        (L = none)."""
        solves = (self.truth | ~self.present).all(axis=2) & self.present.any(axis=2)
        return np.where(solves.any(axis=1), solves.argmax(axis=1), solves.shape[1])


@dataclass
class CascadeRun:
    """Per prompt: pass rate, USD and sandbox seconds (means over trials), models called, and how
    often each rung's answer was the one returned."""

    quality: np.ndarray
    cost: np.ndarray
    seconds: np.ndarray
    calls: np.ndarray
    answered_by: np.ndarray  # [prompt, model] share of trials answered by that rung


def cascade(success: np.ndarray, rec: Recorded, rule: Rule, gate: Gate, unit_cost: Sequence[float]) -> CascadeRun:
    """Replay the verified cascade on recorded answers, trial by trial: start at the rung `rule`
    picks, check the answer against the visible tests, escalate while the gate says the next rung
    is worth its price; every tried model is paid. Judged on `rec.truth`."""
    n, models, trials = rec.truth.shape
    start = choose(success, unit_cost, rule)
    out = CascadeRun(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((n, models)))
    for p in range(n):
        if start[p] == REFUSE:
            continue
        row = success[p].tolist()
        for t in range(trials):
            rung, tried = int(start[p]), []
            while True:
                out.cost[p] += rec.cost[p, rung] / trials
                out.calls[p] += 1 / trials
                verdict = rec.visible[p, rung, t] if rec.present[p, rung, t] else 0
                if verdict == -1:  # nothing to check the answer with: it is the answer
                    answer = rung
                    break
                out.seconds[p] += rec.seconds[p, rung] / trials
                tried.append((rung, float(rec.visible_frac[p, rung, t])))
                if verdict == 1:
                    answer = rung
                    break
                if not escalate(gate, row, rung, tried[-1][1], unit_cost, rule.lam):
                    answer = pick_answer(tried)
                    break
                rung += 1
            out.quality[p] += rec.truth[p, answer, t] / trials
            out.answered_by[p, answer] += 1 / trials
    return out


# --- choosing lambda, and judging a policy ------------------------------------------------------

def reference_rung(quality: np.ndarray) -> int:
    """The ladder's best single model on these prompts: the rung with the highest mean pass rate (the
    cheaper on a tie). Pass-rate goals, budgets and PGR are relative to it, not to the last rung: on a
    ladder whose middle model beats its largest, always-largest is not what a user would pick."""
    means = quality.mean(axis=0)
    return int(np.flatnonzero(means >= means.max() - 1e-12)[0])


@dataclass(frozen=True)
class Objective:
    """What lambda is chosen for: the largest margin over the ladder's hull; the lowest cost that
    keeps `value` of the best single model's pass rate (quality_floor); or the best pass rate within
    `value` of the best single model's cost (budget). See `reference_rung`."""

    kind: Literal["margin", "quality_floor", "budget"] = "margin"
    value: float = 1.0


def ladder_hull(quality: np.ndarray, cost: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """What mixing always-one-model policies reaches: the hull of their (total cost, pass rate) points
    and of answering nothing (0, 0)."""
    xs = np.concatenate([[0.0], cost.sum(axis=0)])
    ys = np.concatenate([[0.0], quality.mean(axis=0)])
    return R.hull(xs, ys)


def margin(q: float, c: float, quality: np.ndarray, cost: np.ndarray) -> float:
    """Pass rate above the ladder's hull at the same total cost."""
    return q - float(ladder_hull(quality, cost)(np.array([c]))[0])


def best_lambda(run: Callable[[float], tuple[np.ndarray, np.ndarray]], lams: Sequence[float], objective: Objective,
                quality: np.ndarray, cost: np.ndarray) -> float:
    """The lambda whose policy (per-prompt pass rates and costs from `run(lam)`) best meets the
    objective on these prompts (out-of-fold predictions on train + validation, never test)."""
    ref = reference_rung(quality)
    ref_q, ref_c = float(quality[:, ref].mean()), float(cost[:, ref].sum())
    scored = []
    for lam in lams:
        q_pp, c_pp = run(float(lam))
        q, c = float(q_pp.mean()), float(c_pp.sum())
        if objective.kind == "margin":
            key = (margin(q, c, quality, cost), -c)
        elif objective.kind == "quality_floor":
            key = (q >= objective.value * ref_q - 1e-12, -c if q >= objective.value * ref_q - 1e-12 else q)
        else:
            key = (c <= objective.value * ref_c + 1e-12, q if c <= objective.value * ref_c + 1e-12 else -c)
        scored.append((key, float(lam)))
    return max(scored, key=lambda s: s[0])[1]


def lambda_grid(points: int = 121) -> np.ndarray:
    """0 (quality at any price), then log-spaced from 0.001 to 100 (the cheapest rung almost always),
    10% apart: the cascade's gate probabilities sit in a narrow band, so a coarser grid jumps over
    most of its curve."""
    return np.concatenate([[0.0], np.geomspace(1e-3, 100.0, points - 1)])


def judge(q_pp: np.ndarray, c_pp: np.ndarray, shares: np.ndarray, quality: np.ndarray, cost: np.ndarray,
          rounds: int, seed: int) -> dict[str, object]:
    """A policy's pass rate, cost relative to always-largest, margin over the ladder's hull at the
    same cost and over random routing with its mix (`shares` of prompts per rung), each with a 95%
    paired bootstrap interval (prompts resampled, the ladder re-measured on every resample)."""
    rand_q = quality @ shares

    def rel_cost(idx):
        return float(c_pp[idx].sum() / cost[idx, -1].sum())

    def over_hull(idx):
        return margin(float(q_pp[idx].mean()), float(c_pp[idx].sum()), quality[idx], cost[idx])

    def over_random(idx):
        return float((q_pp[idx] - rand_q[idx]).mean())

    everyone = np.arange(len(q_pp))
    out: dict[str, object] = {"n": len(q_pp)}
    for name, fn in (("pass_rate", lambda idx: float(q_pp[idx].mean())), ("cost_vs_largest", rel_cost),
                     ("margin_over_hull", over_hull), ("margin_over_random", over_random)):
        out[name] = {"value": fn(everyone), "ci95": list(R.bootstrap_ci(fn, len(q_pp), rounds, seed))}
    return out
