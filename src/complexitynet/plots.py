"""PNG figures shared by train and evaluate (matplotlib, headless), and the data behind `dvc plots`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from complexitynet.io import atomic_write


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def confusion_png(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Rows: true level; columns: predicted level; cells: counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(classes), 1.2 + 1.0 * len(classes)), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (cheapest model that solves it)")
    ax.set_title(title, fontsize=9)
    peak = matrix.max() or 1
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def frontier_png(curves: dict[str, list[tuple[float, float]]], points: dict[str, tuple[float, float]],
                 path: Path, title: str, hull: list[tuple[float, float]] | None = None) -> None:
    """Cost (relative to always-largest) against pass rate: sweeps as lines, policies as points with
    their own marker. Every name is in the legend beside the axes, so no label overlaps a point or
    another label. `hull`: the always-one-model policies' hull, dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.0, 5.2), dpi=110)
    for name, xy in curves.items():
        xs, ys = zip(*sorted(xy))
        ax.plot(xs, ys, marker=".", markersize=3, linewidth=1.0, alpha=0.8, label=f"{name} (sweep)", zorder=2)
    if hull:
        xs, ys = zip(*hull)
        ax.plot(xs, ys, linestyle="--", color="black", linewidth=1.0, label="ladder hull", zorder=1)
    markers = "osD^vP*Xh<>p"
    for i, (name, (x, y)) in enumerate(points.items()):
        ax.scatter([x], [y], s=55, zorder=4, marker=markers[i % len(markers)], edgecolors="black", linewidths=0.6,
                   label=name)
    ax.set_xscale("log")
    ax.set_xlabel("cost relative to always using the largest model (log scale)")
    ax.set_ylabel("pass rate (our sandbox verdicts)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    """A small table for `dvc plots show` / `dvc plots diff` (dvc.yaml's top-level `plots`)."""
    import csv

    with atomic_write(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_evaluation_plots(result: dict[str, Any], labels: np.ndarray, router_probs: np.ndarray, classes: list[str],
                           plots_dir: Path, title: str) -> None:
    """evaluate's figures and `dvc plots` data: the cost/quality frontier of every policy (the ladder's
    hull shaded), plots/policies.csv, and the router classifier's confusion matrix on the test split."""
    from complexitynet import scores as R

    largest = result["largest"]["cost_usd"]
    curves_xy = {name: [(pt["cost_usd"] / largest, pt["pass_rate"]) for pt in c["curve"]]
                 for name, c in result["curves"].items() if isinstance(c, dict)}
    points = {name: (p["cost_vs_largest"], p["pass_rate"]) for name, p in result["policies"].items()
              if name.startswith("always:") or name in ("oracle", "random_mix", "router")}
    points = {name.replace("always:", ""): xy for name, xy in points.items()}
    points[f"paper router @ {result['target']:g}"] = points.pop("router")
    curves_xy = {("paper router" if name == "router" else name): xy for name, xy in curves_xy.items()}
    pay = result.get("paying")
    if pay:
        curves_xy.update(pay["curves"])
        points.update({name: (p["cost_vs_largest"]["value"], p["pass_rate"]["value"])
                       for name, p in pay["policies"].items()})
    ladder = np.array([(result["policies"][f"always:{m}"]["cost_vs_largest"], result["policies"][f"always:{m}"]["pass_rate"])
                       for m in result["models"]])
    xs = np.geomspace(ladder[:, 0].min(), 1.0, 200)  # mixing is linear in cost: a curve on the log axis
    hull = list(zip(xs.tolist(), R.hull(np.r_[0.0, ladder[:, 0]], np.r_[0.0, ladder[:, 1]])(xs).tolist()))
    frontier_png(curves_xy, points, plots_dir / "frontier.png", title, hull)
    write_csv(plots_dir / "policies.csv", ["policy", "cost_vs_largest", "pass_rate"],
              [(name, round(x, 6), round(y, 6)) for name, (x, y) in sorted(points.items())])
    matrix = confusion_matrix(labels, router_probs.argmax(axis=1), router_probs.shape[1])
    confusion_png(matrix, classes, plots_dir / "confusion.png",
                  f"{title}: router classifier on the test split (n={len(labels)})")
