"""PNG figures shared by train and evaluate (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

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
                 path: Path, title: str) -> None:
    """Cost (relative to always-largest) against pass rate: classifier sweeps as lines, fixed
    policies as labelled points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=110)
    for name, xy in curves.items():
        xs, ys = zip(*sorted(xy))
        ax.plot(xs, ys, marker=".", markersize=3, linewidth=2.2 if name == "router" else 1.0,
                label=name, zorder=3 if name == "router" else 2)
    for name, (x, y) in points.items():
        ax.scatter([x], [y], s=40, zorder=4, edgecolors="black", linewidths=0.5)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("cost relative to always using the largest model (log scale)")
    ax.set_ylabel("pass rate (our sandbox verdicts)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
