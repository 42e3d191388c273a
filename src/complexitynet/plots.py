"""PNG figures shared by train and evaluate (matplotlib, headless), and the data behind `dvc plots`."""

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

