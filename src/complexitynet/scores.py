"""The routing decision and the numbers that judge it (pure functions over numpy arrays).

Conventions: the ladder has L models, cheapest first; a classifier gives, per prompt, L+1
probabilities over levels 0..L, where level i < L means "model i is the cheapest that reliably
solves it" and level L means "none does". Model i is then predicted to succeed with probability
P(level <= i). `quality[p, i]` is model i's measured pass rate on prompt p (our sandbox verdicts),
`cost[p, i]` its measured cost in USD.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def success_probs(level_probs: np.ndarray) -> np.ndarray:
    """P(model i succeeds) = P(level <= i), for i in 0..L-1."""
    return np.cumsum(level_probs, axis=1)[:, :-1]


def choose(level_probs: np.ndarray, target: float) -> np.ndarray:
    """Per prompt: the cheapest model whose predicted success meets `target`, else the largest."""
    ok = success_probs(level_probs) >= target - 1e-12
    largest = ok.shape[1] - 1
    return np.where(ok.any(axis=1), ok.argmax(axis=1), largest)


@dataclass(frozen=True)
class Point:
    """A policy's outcome: mean pass rate and total cost over the prompts."""

    quality: float
    cost: float


def outcome(choices: np.ndarray, quality: np.ndarray, cost: np.ndarray, overhead: float = 0.0) -> Point:
    rows = np.arange(len(choices))
    return Point(float(quality[rows, choices].mean()), float(cost[rows, choices].sum() + overhead * len(choices)))


def fixed(model: int, n: int) -> np.ndarray:
    return np.full(n, model, dtype=np.int64)


def oracle_choices(quality: np.ndarray) -> np.ndarray:
    """The cheapest model that reaches the best pass rate any model has on the prompt."""
    best = quality.max(axis=1, keepdims=True)
    return (quality >= best - 1e-12).argmax(axis=1)


def random_mix(choices: np.ndarray, quality: np.ndarray, cost: np.ndarray, overhead: float = 0.0) -> Point:
    """Expected outcome of assigning models at random in the same proportions as `choices`."""
    share = np.bincount(choices, minlength=quality.shape[1]) / len(choices)
    return Point(float((quality @ share).mean()), float((cost @ share).sum() + overhead * len(choices)))


def sweep(level_probs: np.ndarray, quality: np.ndarray, cost: np.ndarray, targets: np.ndarray,
          overhead: float = 0.0) -> list[tuple[float, Point]]:
    return [(float(t), outcome(choose(level_probs, t), quality, cost, overhead)) for t in targets]


def calibrate_target(level_probs: np.ndarray, quality: np.ndarray, cost: np.ndarray, targets: np.ndarray,
                     goal: float) -> float:
    """The target with the lowest cost whose pass rate keeps `goal` of the best single model's pass
    rate (computed on held-out prompts, e.g. the validation split); the highest target if none does."""
    reference = float(quality.mean(axis=0).max())
    best: tuple[float, float] | None = None
    for target, point in sweep(level_probs, quality, cost, targets):
        if point.quality >= goal * reference - 1e-12 and (best is None or point.cost < best[1] - 1e-12):
            best = (target, point.cost)
    return best[0] if best else float(targets.max())


def pgr(q: float, q_weak: float, q_strong: float) -> float:
    """Performance gap recovered: 0 at always-cheapest, 1 at the strong reference (the ladder's best
    single model; the oracle can exceed 1)."""
    gap = q_strong - q_weak
    return float("nan") if abs(gap) < 1e-12 else (q - q_weak) / gap


def _normalised(points: list[Point], c_weak: float, c_strong: float) -> np.ndarray:
    span = max(c_strong - c_weak, 1e-12)
    return np.array([(p.cost - c_weak) / span for p in points])


def hull(xs: np.ndarray, ys: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The non-decreasing concave upper envelope of points (x, y): what mixing policies can reach.
    Left of the cheapest point it is undefined (nan); right of the best point it stays flat."""
    order = np.lexsort((-ys, xs))
    pts: list[tuple[float, float]] = []
    for x, y in zip(xs[order], ys[order]):
        if pts and y <= pts[-1][1]:  # costs more, no better: never on a non-decreasing frontier
            continue
        while len(pts) >= 2:
            (x1, y1), (x2, y2) = pts[-2], pts[-1]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:  # middle point under the chord
                pts.pop()
            else:
                break
        pts.append((float(x), float(y)))
    hx, hy = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])

    def envelope(x: np.ndarray) -> np.ndarray:
        out = np.interp(x, hx, hy, left=np.nan, right=hy[-1])
        return np.where(np.asarray(x) < hx[0] - 1e-12, np.nan, out)

    return envelope


def aiq(points: list[Point], c_lo: float, c_hi: float, grid: int = 2001) -> float:
    """Average quality over the cost range [c_lo, c_hi] of the non-decreasing convex hull
    (RouterBench's AIQ); where the hull is undefined (cheaper than every point) it counts 0."""
    xs = np.linspace(c_lo, c_hi, grid)
    env = hull(np.array([p.cost for p in points]), np.array([p.quality for p in points]))(xs)
    return float(np.trapezoid(np.nan_to_num(env, nan=0.0), xs) / max(c_hi - c_lo, 1e-12))


def pgr_curve(points: list[Point], weak: Point, strong: Point) -> tuple[np.ndarray, np.ndarray]:
    """(normalised cost, PGR) of the hull of `points`: cost 0 = always-cheapest, 1 = always-`strong`."""
    xs = _normalised(points, weak.cost, strong.cost)
    ys = np.array([pgr(p.quality, weak.quality, strong.quality) for p in points])
    return xs, ys


def apgr(points: list[Point], weak: Point, strong: Point, grid: int = 2001) -> float:
    """Average PGR over normalised cost in [0, 1] (RouteLLM's APGR, with cost instead of the share
    of calls to the strong model, since the ladder has more than two models)."""
    xs, ys = pgr_curve(points + [weak, strong], weak, strong)
    grid_x = np.linspace(0.0, 1.0, grid)
    env = np.nan_to_num(hull(xs, ys)(grid_x), nan=0.0)
    return float(np.trapezoid(env, grid_x))


def cpt(points: list[Point], weak: Point, strong: Point, level: float) -> float:
    """Cost threshold: the least normalised cost at which some policy point reaches `level` PGR
    (RouteLLM's CPT(x%)); nan if no point does."""
    xs, ys = pgr_curve(points, weak, strong)
    reached = xs[ys >= level - 1e-12]
    return float(reached.min()) if reached.size else float("nan")


def bootstrap_ci(metric: Callable[[np.ndarray], float], n: int, rounds: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric(indices)` over prompts resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = np.array([metric(rng.integers(0, n, n)) for _ in range(rounds)])
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))
