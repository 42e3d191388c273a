"""MLflow tracking: where runs go, and the tags that tie a run to its code and data.

Default store: a sqlite file under mlflow/ (artifacts in mlflow/artifacts), so `make mlflow-ui`
shows every run with no server; `MLFLOW_TRACKING_URI` (and the usual MLflow variables) override
it, e.g. to share one tracking server between machines. DVC caches the data and models; MLflow
only tracks, it is never used as a cache.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import yaml

from complexitynet.io import pid_alive

DEFAULT_DIR = Path("mlflow")
EXPERIMENT = "complexitynet"
OWNER_HOST, OWNER_PID = "complexitynet.host", "complexitynet.pid"


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
        fail_orphaned_runs(found.experiment_id)
        return found.experiment_id
    artifacts = None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "artifacts").resolve().as_uri()
    experiment_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    return experiment_id


def owner_tags() -> dict[str, str]:
    """Which process owns a run, so a later start can tell a run whose process was killed."""
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid())}


def fail_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs whose process is gone (a SIGKILLed train or evaluate cannot end
    its own run). Runs of live processes, and of other hosts, are left alone. Returns their ids."""
    import logging

    import mlflow

    client = mlflow.MlflowClient()
    ended = []
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        pid = tags.get(OWNER_PID, "")
        if tags.get(OWNER_HOST) != socket.gethostname() or not pid.isdigit() or pid_alive(int(pid)):
            continue
        client.set_terminated(run.info.run_id, status="FAILED")
        ended.append(run.info.run_id)
    if ended:
        logging.getLogger(__name__).warning("marked %d MLflow run(s) FAILED: their process was killed (%s)",
                                            len(ended), ", ".join(ended))
    return ended


def provenance_tags(lock_file: Path = Path("dvc.lock"), stages: tuple[str, ...] = ("prepare", "label")
                    ) -> dict[str, str]:
    """git commit (and whether the tree was dirty), the data checksums DVC recorded, and the process
    that owns the run."""
    tags: dict[str, str] = owner_tags()
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
