"""MLflow tracking: where runs go, the tags that tie a run to its code, data and trained files, and
the lookups that let `evaluate` log its test numbers into the run `train` started for those files.

Default store: a sqlite file under mlflow/ (artifacts in mlflow/artifacts), so `make mlflow-ui`
shows every run with no server; `MLFLOW_TRACKING_URI` (and the usual MLflow variables) override
it, e.g. to share one tracking server between machines. DVC caches the data and models; MLflow
only tracks, it is never used as a cache.

Every run carries `kind` (classifier: the level classifiers, LoRA and baselines; router: the
success-model candidates of the router that pays; policy: a verified cascade; evaluate: the
report), `dataset`, `ladder` and, for a trained thing, `classifier` and `content_hash` (of its
saved files): `evaluate` finds the run by those, and the registry registers a version only for
files it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from complexitynet.io import pid_alive, sha256_file

log = logging.getLogger("complexitynet")

DEFAULT_DIR = Path("mlflow")
EXPERIMENT = "complexitynet"
OWNER_HOST, OWNER_PID = "complexitynet.host", "complexitynet.pid"
CONTENT = "content_hash"  # run and model-version tag: sha256 of the trained files
UI = "http://127.0.0.1:5000"  # `make mlflow-ui`
# The runs table's columns in the link `ui_url` prints (a view stored on the experiment): the
# Dataset column and the metric names the classifiers, candidates and policies share.
VIEW = "complexitynet"
VIEW_METRICS = ("val_accuracy", "val_macro_f1", "val_within_one", "test_accuracy", "test_macro_f1", "test_within_one",
                "val_margin_over_hull", "test_margin_over_hull", "test_pass_rate", "test_cost_vs_largest")
_warned: set[str] = set()


def tracking_uri(root: Path = DEFAULT_DIR) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def artifact_location(root: Path = DEFAULT_DIR) -> str | None:
    """Where a new experiment keeps its artifacts: beside the store's sqlite file (mlflow/artifacts
    for the default store), or, for any other store, wherever that store or server puts them (None)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return (root / "artifacts").resolve().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///").split("?")[0]).parent / "artifacts").resolve().as_uri()
    return None


def experiment_tags() -> dict[str, str]:
    """The experiment is model training, not a GenAI app (MLflow 3 UIs that read the kind open on the
    runs table), and it stores the runs-table view that `ui_url` links to."""
    columns = ["attributes.`Dataset`", *(f"metrics.`{m}`" for m in VIEW_METRICS)]
    view = {"selectedColumns": columns, "orderByKey": "attributes.start_time", "orderByAsc": False}
    return {"mlflow.experimentKind": "custom_model_development",
            f"mlflow.sharedViewState.{VIEW}": json.dumps(view, separators=(",", ":"))}


def setup(experiment: str = EXPERIMENT, root: Path = DEFAULT_DIR) -> str:
    """Point MLflow at the tracking store and select (or create) the experiment; returns its id."""
    import mlflow

    artifacts = artifact_location(root)  # before set_tracking_uri, which exports MLFLOW_TRACKING_URI itself
    root.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri(root))
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifacts, tags=experiment_tags())
        mlflow.set_experiment(experiment_id=experiment_id)
        return experiment_id
    client = mlflow.MlflowClient()
    for key, value in experiment_tags().items():
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    where = f"{tracking_uri(root)} {experiment}"
    if artifacts and found.artifact_location.rstrip("/") != artifacts.rstrip("/") and where not in _warned:
        _warned.add(where)
        log.warning("MLflow experiment '%s' keeps its artifacts in %s, not %s (it was created before they moved "
                    "there); to start afresh, rename it: mlflow experiments rename --experiment-id %s --new-name "
                    "%s-old", experiment, found.artifact_location, artifacts, found.experiment_id, experiment)
    mlflow.set_experiment(experiment_id=found.experiment_id)
    fail_orphaned_runs(found.experiment_id)
    return found.experiment_id


def ui_url(experiment_id: str) -> str:
    """The experiment's runs table, with the shared metric columns, in the MLflow UI (`make mlflow-ui`,
    or the tracking server MLFLOW_TRACKING_URI names). `workflowType` selects the UI's "Model
    training" mode: MLflow 3.17's UI takes its mode from there, not from the experiment's kind."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW}"


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


def content_hash(path: Path) -> str:
    """sha256 of a trained file, or of a directory's files (their relative paths and contents):
    the same training writes the same bytes, so the same hash."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def run_name(name: str, tags: dict[str, str]) -> str:
    """`name [dataset]` (`name [dataset/ladder]` when the ladder has another name): charts and the
    compare view label runs by name, and MBPP's runs sit beside HumanEval's in one experiment."""
    dataset, ladder = tags.get("dataset", ""), tags.get("ladder", "")
    return f"{name} [{dataset}]" if ladder in ("", dataset) else f"{name} [{dataset}/{ladder}]"


def find_run(experiment_id: str, tags: dict[str, str]) -> str | None:
    """The newest run of the experiment carrying all these tags (e.g. kind, classifier, dataset,
    ladder, content_hash), or None."""
    import mlflow

    # filter on the fixed vocabulary and the hash only; names from params (ladders) are compared here
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items() if k in ("kind", CONTENT))
    runs = mlflow.MlflowClient().search_runs([experiment_id], query, order_by=["attributes.start_time DESC"],
                                             max_results=200)
    return next((r.info.run_id for r in runs if all(r.data.tags.get(k) == v for k, v in tags.items())), None)


def log_dataset(dataset: str, split: str, task_ids: Sequence[str], texts: Sequence[str], levels: Iterable[str],
                context: str, source: Path) -> None:
    """Log a split as an input of the active run (the UI's Dataset column), named `<dataset>-<split>`:
    its prompts' ids, the text the classifiers read and the level label; MLflow digests the rows."""
    import warnings

    import mlflow
    import pandas as pd

    frame = pd.DataFrame({"task_id": list(task_ids), "text": list(texts), "level": list(levels)})
    with warnings.catch_warnings():  # MLflow registers its local-file source twice ("" and "file://") and says so
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        data = mlflow.data.from_pandas(frame, source=Path(source).resolve().as_uri(), targets="level",
                                       name=f"{dataset}-{split}")
    mlflow.log_input(data, context=context)


def champion_alias(dataset: str, ladder: str) -> str:
    """`champion-<dataset>-<ladder>`: the registry alias of the best version for one label set."""
    return "champion-" + re.sub(r"[^\w-]", "-", f"{dataset}-{ladder}")


def register_once(name: str, model_uri: str, content: str, tags: dict[str, str]) -> tuple[str, bool]:
    """Register `model_uri` as a new version of `name` unless a version with the same content hash
    exists; returns (the version, whether it is new)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        same = client.search_model_versions(f"name = '{name}' and tags.{CONTENT} = '{content}'")
    except MlflowException:  # no such registered model yet
        same = []
    if same:
        return str(min(int(v.version) for v in same)), False
    version = mlflow.register_model(model_uri, name, tags={**tags, CONTENT: content})
    return str(version.version), True
