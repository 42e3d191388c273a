"""Where every stage reads and writes (the DVC layout of dvc.yaml), and the loaders of the files
more than one stage reads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from complexitynet.config import Params


@dataclass(frozen=True)
class Paths:
    """Every file a stage reads or writes; the defaults are the DVC layout of dvc.yaml."""

    sources: Path = Path("data/sources")
    problems: Path = Path("data/problems.jsonl")
    samples: Path = Path("data/samples")
    sample_cache: Path = Path("data/cache/samples")
    sample_metrics: Path = Path("metrics/sample.json")  # metrics/: each stage's headline numbers (DVC metrics)
    sample_report: Path = Path("reports/sample.json")  # reports/: the detail behind them
    verdicts: Path = Path("data/verdicts")
    verdict_cache: Path = Path("data/cache/verdicts")
    execute_metrics: Path = Path("metrics/execute.json")
    execute_report: Path = Path("reports/execute.json")
    labels: Path = Path("data/labels.jsonl")
    label_metrics: Path = Path("metrics/label.json")
    label_report: Path = Path("reports/label.json")
    classifier: Path = Path("models/classifier")
    baselines: Path = Path("models/baselines")
    router: Path = Path("models/router")
    train_metrics: Path = Path("metrics/train.json")
    train_report: Path = Path("reports/train.json")
    evaluate_metrics: Path = Path("metrics/evaluate.json")
    evaluate_report: Path = Path("reports/evaluate.json")
    plots: Path = Path("plots")
    report: Path = Path("reports/report.md")

    def under(self, root: Path) -> Paths:
        """The same layout below `root` (absolute paths stay as they are)."""
        return Paths(**{f.name: root / getattr(self, f.name) for f in dataclasses.fields(self)})


def load_problems(paths: Paths) -> dict:
    from complexitynet.io import read_jsonl
    from complexitynet.schemas import Problem

    return {p.task_id: p for p in read_jsonl(paths.problems, Problem)}


def load_samples(params: Params, paths: Paths) -> dict:
    from complexitynet.io import read_jsonl
    from complexitynet.schemas import Sample

    return {m.name: read_jsonl(paths.samples / f"{m.name}.jsonl", Sample) for m in params.ladder}
