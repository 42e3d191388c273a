"""The pipeline's Prefect tasks.

Units of work and how Prefect treats them:
- `sample_model`: one model's samples (a recorded source, or every request of a live model through
  the sampling engine, which bounds requests in flight and retries each one). Holds the model's
  concurrency limit, so two runs never drive one model's cache at once.
- `execute_batch`: one batch of sandbox jobs, in sandboxes the task opens and closes itself (so it
  can run on any worker). Holds `sandboxes_per_task` slots of the sandbox concurrency limit.
- the other stages: one task each; `train` holds the GPU limit (one slot).

Retries: only infrastructure errors (a sandbox that will not start, a connection, a timeout, live
requests that failed after the engine's own retries) are retried, with exponential backoff and
jitter; a bad input or a spent budget fails at once. Finished work is never redone on a retry or a
rerun: live answers and verdicts are content-addressed caches (data/cache/), and the unit tasks
carry a Prefect cache key built from the same content addresses plus the package's source code.

Data (problems, samples, jobs, verdicts) reaches a task in a `Parcel`, which Prefect passes on
without walking its elements (see `Parcel`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from docker.errors import APIError as DockerAPIError
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.tasks import exponential_backoff

import complexitynet
from complexitynet import evaluate as evaluate_stage
from complexitynet import execute as execute_stage
from complexitynet import fetch as fetch_stage
from complexitynet import label as label_stage
from complexitynet import prepare as prepare_stage
from complexitynet import sample as sample_stage
from complexitynet import train as train_stage
from complexitynet.config import ModelSpec, Params
from complexitynet.paths import Paths
from complexitynet.sample import SamplingFailed
from complexitynet.sandbox.backends import SandboxError
from complexitynet.sandbox.pool import SandboxConfig

log = logging.getLogger("complexitynet")

GPU_LIMIT = "complexitynet-gpu"
SANDBOX_LIMIT = "complexitynet-sandbox"

# Worth another try: the infrastructure, not the input: the sandbox, the engine's API (a container
# the engine lost answers 404), connections. (ComplexityNetError subclasses other than these two mean
# bad params or data, or a spent budget: retrying cannot help; nor can another OSError: a full disk
# or a permission error stays until someone fixes it.)
TRANSIENT = (SandboxError, SamplingFailed, DockerAPIError, ConnectionError, TimeoutError)


class Parcel:
    """A task's data argument, passed through as one object. Prefect walks every list, tuple, dict,
    dataclass and pydantic argument element by element looking for futures, when it is submitted
    and again when the task starts: with MBPP+'s hidden tests one walk of the problems took ~22 s,
    and the flow's sample stage minutes against seconds from the CLI. Prefect's own `quote` avoids the walk on
    threads, but Dask rebuilds it as a plain tuple on the worker; a plain object is left alone by both."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def model_limit(name: str) -> str:
    return f"complexitynet-model-{name}"


def is_transient(task, task_run, state) -> bool:
    """retry_condition_fn: retry a failed task only when its exception is an infrastructure error."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except BaseException:  # noqa: BLE001 - anything else is permanent
        return False
    return False


@functools.cache
def code_version() -> str:
    """Hash of the complexitynet package's source: a cached unit result is reused only by the same code."""
    root = Path(complexitynet.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def content_key(context, parameters: dict[str, Any]) -> str | None:
    """Prefect cache key of a unit task: the content address its caller computed, plus the code
    (None: not cached by Prefect, e.g. live models, whose own request cache already resumes)."""
    return f"{parameters['key']}-{code_version()}" if parameters["key"] else None


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def where() -> str:
    """This process, as host:pid (shows which worker ran a unit)."""
    return f"{socket.gethostname()}:{os.getpid()}"


UNIT = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=2), "retry_jitter_factor": 0.5,
        "retry_condition_fn": is_transient}


@task(name="sample-model", tags=["sample"], cache_key_fn=content_key, persist_result=True, **UNIT)
def sample_model(params: Params, paths: Paths, model: ModelSpec, problems: Parcel, budget_usd: float | None,
                 key: str | None) -> tuple[Any, str]:
    """One model's samples (a LadderRun) and the worker that made them."""
    limit = concurrency(model_limit(model.name), occupy=1) if model.live else contextlib.nullcontext()
    with limit:
        return sample_stage.sample_models(params, paths, [model], problems.value, budget_usd), where()


@task(name="execute-batch", tags=["sandbox"], cache_key_fn=content_key, persist_result=True, **UNIT)
def execute_batch(batch: Parcel, sandbox: SandboxConfig, sessions: int, label: str,
                  key: str) -> tuple[list[tuple[tuple[str, str], dict]], str]:
    """Verdict records of one batch of sandbox jobs (a list of Job), in `sessions` sandboxes opened for it."""
    from complexitynet.execute import run_jobs

    with concurrency(SANDBOX_LIMIT, occupy=sessions):
        try:
            pool = sandbox.open_pool(workers=sessions)
        except SandboxError as exc:
            raise SandboxError(f"execute batch {label}: {exc}") from None
        try:
            return list(run_jobs(pool, batch.value)), where()
        except SandboxError as exc:
            raise SandboxError(f"execute batch {label}: {exc}") from None
        finally:
            pool.close()


@task(name="fetch", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_condition_fn=is_transient)
def fetch(params: Params, paths: Paths) -> None:
    fetch_stage.run(params, paths)


@task(name="prepare")
def prepare(params: Params, paths: Paths) -> None:
    prepare_stage.run(params, paths)


@task(name="write-samples", cache_policy=NO_CACHE)
def write_samples(params: Params, paths: Paths, problems: Parcel, runs: Parcel) -> None:
    sample_stage.write_outputs(params, paths, problems.value, runs.value)


@task(name="write-verdicts", cache_policy=NO_CACHE)
def write_verdicts(params: Params, paths: Paths, samples: Parcel, verdicts: Parcel, backend: str) -> None:
    execute_stage.write_outputs(params, paths, samples.value, verdicts.value, backend)


@task(name="label")
def label(params: Params, paths: Paths) -> None:
    label_stage.run(params, paths)


@task(name="train", tags=["gpu"])
def train(params: Params, paths: Paths) -> dict[str, Any]:
    """Training holds the single GPU slot (on a CPU-only machine it is simply uncontended)."""
    with concurrency(GPU_LIMIT, occupy=1):
        return train_stage.run(params, paths)


@task(name="evaluate")
def evaluate(params: Params, paths: Paths) -> dict[str, Any]:
    return evaluate_stage.run(params, paths)
