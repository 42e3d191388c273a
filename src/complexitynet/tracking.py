"""MLflow tracking: where runs go, and the tags that tie a run to its code and data.

Default store: a sqlite file under mlflow/ (artifacts in mlflow/artifacts), so `make mlflow-ui`
shows every run with no server; `MLFLOW_TRACKING_URI` (and the usual MLflow variables) override
it, e.g. to share one tracking server between machines. DVC caches the data and models; MLflow
only tracks, it is never used as a cache.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

DEFAULT_DIR = Path("mlflow")
EXPERIMENT = "complexitynet"


def tracking_uri(root: Path = DEFAULT_DIR) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def setup(experiment: str = EXPERIMENT, root: Path = DEFAULT_DIR) -> str:
    """Point MLflow at the tracking store and select (or create) the experiment; returns its id."""
    import mlflow

    root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(root))
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        mlflow.set_experiment(experiment)
        return found.experiment_id
    artifacts = None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "artifacts").resolve().as_uri()
    experiment_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    return experiment_id


def provenance_tags(lock_file: Path = Path("dvc.lock"), stages: tuple[str, ...] = ("prepare", "label")
                    ) -> dict[str, str]:
    """git commit (and whether the tree was dirty) plus the data checksums DVC recorded."""
    tags: dict[str, str] = {}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True)
        tags["git_commit"] = commit.stdout.strip()
        tags["git_dirty"] = str(bool(dirty.stdout.strip())).lower()
    except (OSError, subprocess.CalledProcessError):
        tags["git_commit"] = "unknown"
    if lock_file.exists():
        lock: dict[str, Any] = yaml.safe_load(lock_file.read_text()) or {}
        for stage in stages:
            for out in lock.get("stages", {}).get(stage, {}).get("outs", []):
                tags[f"dvc.{out['path']}"] = str(out.get("md5", ""))
    return tags
