"""The `complexitynet` Prefect flow: the whole DAG, one subflow per stage.

It writes the same files as `dvc repro` (the DVC layout, byte for byte) through the same stage
functions, and adds what an orchestrator is for: sampling fans out one task per model and
execution one task per batch of sandbox jobs, on threads or on Dask workers (params
`orchestrate`); infrastructure failures are retried per unit; a failed or killed run resumes
from the content-addressed caches; a stage whose inputs did not change since dvc.lock was
written is skipped, like `dvc repro` skips it, and each stage that ran is recorded in dvc.lock
(`dvc commit`); the evaluation is published as Prefect artifacts of the top-level run; and the
run ends with `dvc push` when a DVC remote is configured.

    python flows/pipeline.py                      # once, on an ephemeral Prefect server
    prefect deploy --name nightly                 # a scheduled deployment (prefect.yaml; see docs/orchestration.md)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tasks/ sits beside flows/ and is not an installed package
    sys.path.insert(0, str(REPO))

from prefect import flow, get_run_logger  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from complexitynet import execute as ex  # noqa: E402
from complexitynet import sample as sample_stage  # noqa: E402
from complexitynet.config import OrchestrateParams, Params, load_params  # noqa: E402
from complexitynet.errors import ComplexityNetError  # noqa: E402
from complexitynet.sandbox.backends import SandboxError  # noqa: E402
from complexitynet.paths import Paths, load_problems, load_samples  # noqa: E402
from complexitynet.sandbox.pool import SandboxConfig  # noqa: E402
from flows.publish import publish, record_stage, record_version, stage_changes, unversioned  # noqa: E402
from tasks import pipeline as t  # noqa: E402

log = logging.getLogger("complexitynet")
STARTUP_TIMEOUT_VAR, STARTUP_TIMEOUT_S = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 120


# --- where fanned-out tasks run ---------------------------------------------------------------

@contextlib.contextmanager
def task_runners(cfg: OrchestrateParams) -> Iterator[Callable[[], Any]]:
    """A factory of task runners for the fan-out subflows: threads here, or one Dask cluster for
    the whole run (a running scheduler's address, or a LocalCluster started at the first call, so
    a run whose fan-out stages are all skipped starts none, and stopped here)."""
    if cfg.task_runner == "threads":
        workers = cfg.max_workers or os.cpu_count() or 1
        yield lambda: ThreadPoolTaskRunner(max_workers=workers)
        return
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        yield lambda: DaskTaskRunner(address=cfg.dask_address)
        return
    with contextlib.ExitStack() as stack:
        clusters: list[Any] = []

        def runner() -> DaskTaskRunner:
            if not clusters:
                from distributed import LocalCluster

                clusters.append(stack.enter_context(LocalCluster(
                    n_workers=cfg.dask_workers, threads_per_worker=1, processes=True, dashboard_address=None)))
            return DaskTaskRunner(address=clusters[0].scheduler_address)

        yield runner


def ensure_limits(params: Params) -> None:
    """Create (or resize) the global concurrency limits the tasks hold: one GPU slot, a slot per
    sandbox (execute.workers, else this machine's cores), one engine per live model."""
    from prefect import get_client

    limits = {t.GPU_LIMIT: 1, t.SANDBOX_LIMIT: params.execute.workers or os.cpu_count() or 1}
    limits.update({t.model_limit(m.name): 1 for m in params.ladder if m.live})
    with get_client(sync_client=True) as client:
        for name, limit in limits.items():
            client.upsert_global_concurrency_limit_by_name(name, limit)


def retrying(unit, cfg: OrchestrateParams):
    """A unit task with the retry policy of params `orchestrate` (exponential backoff, jittered)."""
    from prefect.tasks import exponential_backoff

    return unit.with_options(retries=cfg.retries, retry_delay_seconds=exponential_backoff(cfg.retry_delay_s))


# --- one subflow per stage --------------------------------------------------------------------

@flow(name="fetch")
def fetch_flow(params: Params, paths: Paths) -> None:
    t.fetch(params, paths)


@flow(name="prepare")
def prepare_flow(params: Params, paths: Paths) -> None:
    t.prepare(params, paths)


@flow(name="sample")
def sample_flow(params: Params, paths: Paths) -> list[str]:
    """One task per model. Live models share sample.budget_usd equally (each engine enforces its share)."""
    sample_stage.check_providers(params, paths)  # a missing API key stops the run before any request
    problems = load_problems(paths)
    live = [m for m in params.ladder if m.live]
    share = None if params.sample.budget_usd is None else params.sample.budget_usd / max(len(live), 1)
    problems_digest = hashlib.sha256(paths.problems.read_bytes()).hexdigest()
    unit, futures = retrying(t.sample_model, params.orchestrate), []
    for model in params.ladder:
        key = None if model.live else t.digest("sample", model.model_dump(), params.sample.model_dump(),
                                                problems_digest)
        futures.append(unit.submit(params, paths, model, t.Parcel(problems), share if model.live else None, key))
    results = [f.result() for f in futures]
    t.write_samples(params, paths, t.Parcel(problems), t.Parcel([run for run, _ in results]))
    return sorted({worker for _, worker in results})


@flow(name="execute")
def execute_flow(params: Params, paths: Paths, sandbox: SandboxConfig) -> list[str]:
    """Batches of the jobs the verdict cache cannot answer, one task each; every finished batch is
    appended to the cache as it arrives, so a failed batch fails the run but loses nothing else."""
    samples, fingerprint = load_samples(params, paths), sandbox.fingerprint()
    work = ex.plan(samples, load_problems(paths), fingerprint,
                   paths.verdict_cache if params.execute.cache else None)
    names = {(m, key): f"{m} {task_id}#{trial}" for m, keyed in work.keyed.items()
             for (task_id, trial), keys in keyed.items() for key in keys if key is not None}
    jobs = list(work.todo.values())
    size, sessions = params.orchestrate.execute_batch, params.orchestrate.sandboxes_per_task
    unit, workers, failures = retrying(t.execute_batch, params.orchestrate), set(), []
    try:
        futures = {}
        for start in range(0, len(jobs), size):
            batch = jobs[start:start + size]
            label = f"{names[batch[0].key]} .. {names[batch[-1].key]} ({len(batch)} jobs)"
            future = unit.submit(t.Parcel(batch), sandbox, sessions, label,
                                 t.digest(fingerprint, [j.key for j in batch]))
            futures[future] = label
        for future in as_completed(list(futures)):
            try:
                records, worker = future.result()
            except Exception as exc:  # noqa: BLE001 - collected; the other batches still land in the cache
                failures.append(f"{futures[future]}: {exc}")
                continue
            workers.add(worker)
            for (model, key), record in records:
                work.add(model, key, record)
    finally:
        work.close()
    if failures:
        raise SandboxError(f"{len(failures)} sandbox batches failed after retries (every finished batch is "
                           f"cached; rerun to resume):\n  " + "\n  ".join(failures))
    t.write_verdicts(params, paths, t.Parcel(samples), t.Parcel(ex.assemble(samples, work)), sandbox.backend)
    return sorted(workers)


@flow(name="label")
def label_flow(params: Params, paths: Paths) -> None:
    t.label(params, paths)


@flow(name="train")
def train_flow(params: Params, paths: Paths) -> dict[str, Any]:
    return t.train(params, paths)


@flow(name="evaluate")
def evaluate_flow(params: Params, paths: Paths) -> dict[str, Any]:
    return t.evaluate(params, paths)


# --- which stages run -------------------------------------------------------------------------

T = TypeVar("T")


class Stages:
    """Runs a stage only when `dvc status` finds it changed against dvc.lock (as `dvc repro` would),
    and records each stage that ran in dvc.lock (`dvc commit`), so the next stage, and the next
    run, compare against what it wrote. When dvc.lock cannot describe this run (no DVC repository,
    or params other than params.yaml's), every stage runs and nothing is recorded."""

    def __init__(self, root: Path, params: Params, params_file: Path, logger: Any) -> None:
        self.root, self.logger = root, logger
        self.unversioned = unversioned(root, params, params_file)
        self.record = self.unversioned is None and params.orchestrate.record_version
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def run(self, stage: str, work: Callable[[], T], instead: Callable[[], T]) -> T:
        """`work()` when the stage must run, else `instead()` (what its files on disk give the rest
        of the run); one log line either way: ran or skipped, and why."""
        why = f"{self.unversioned}: every stage runs" if self.unversioned else stage_changes(self.root, stage)
        if why is None:
            self.logger.info("%s: skipped (up to date with dvc.lock)", stage)
            self.skipped.append(stage)
            return instead()
        result = work()
        if self.record:
            record_stage(self.root, stage)
        self.logger.info("%s: ran (%s)%s", stage, why, "; recorded in dvc.lock" if self.record else "")
        self.ran.append(stage)
        return result


# --- the whole DAG ----------------------------------------------------------------------------

@flow(name="complexitynet")
def complexitynet(dataset: str | None = None, ladder: str | None = None, k: int | None = None,
                  task_runner: str | None = None, params_file: str = "params.yaml") -> dict[str, Any]:
    """fetch -> prepare -> sample -> execute -> label -> train -> evaluate, in the working directory
    (the repository root). None leaves a setting as params.yaml has it; `k` sets both the live
    trials per (prompt, model) and the labels' k for the dataset."""
    logger = get_run_logger()
    overrides: dict[str, Any] = {"base.dataset": dataset, "base.ladder": ladder,
                                 "orchestrate.task_runner": task_runner}
    if k is not None:
        base = load_params(params_file, {"base.dataset": dataset} if dataset else None)
        overrides.update({"sample.k": k, f"label.k.{base.base.dataset}": k})
    params = load_params(params_file, {key: v for key, v in overrides.items() if v is not None})
    root = Path.cwd()
    paths = Paths().under(root)
    ensure_limits(params)
    stages = Stages(root, params, Path(params_file), logger)
    stages.run("fetch", lambda: fetch_flow(params, paths), lambda: None)
    stages.run("prepare", lambda: prepare_flow(params, paths), lambda: None)
    with task_runners(params.orchestrate) as runner:
        sampled_on = stages.run("sample", lambda: sample_flow.with_options(task_runner=runner())(params, paths),
                                lambda: [])
        executed_on = stages.run("execute", lambda: execute_flow.with_options(task_runner=runner())(
            params, paths, SandboxConfig.from_params(params).resolved()), lambda: [])
    stages.run("label", lambda: label_flow(params, paths), lambda: None)
    trained = stages.run("train", lambda: train_flow(params, paths), lambda: {"run_id": None})
    result = stages.run("evaluate", lambda: evaluate_flow(params, paths),
                        lambda: json.loads(paths.evaluate_report.read_text(encoding="utf-8")))
    publish(result, params, paths)  # on this, the top-level run: where the UI shows a run's headline
    version = record_version(root, params, Path(params_file)) if params.orchestrate.record_version else "off"
    router = result["policies"]["router"]
    summary = {"dataset": params.base.dataset, "ladder": params.ladder_name, "task_runner": params.orchestrate.task_runner,
               "flow_run_id": str(flow_run.id), "ran": stages.ran, "skipped": stages.skipped,
               "sample_workers": sampled_on, "execute_workers": executed_on, "lora_run_id": trained["run_id"],
               "router_pass_rate": router["pass_rate"], "router_cost_vs_largest": router["cost_vs_largest"],
               "data_version": version}
    logger.info("complexitynet summary: %s", json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the complexitynet flow once (ephemeral Prefect server "
                                     "unless PREFECT_API_URL points at one).")
    parser.add_argument("--dataset", choices=["mbpp", "humaneval"])
    parser.add_argument("--ladder")
    parser.add_argument("--k", type=int)
    parser.add_argument("--task-runner", choices=["threads", "dask"])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # An ephemeral Prefect server needs ~20 s to start on a busy 2-core machine, over Prefect's own
    # default; 120 s unless set. Prefect read its settings when it was imported, so the default goes
    # through its settings context too (the environment carries it to any child process).
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    timeout = os.environ.setdefault(STARTUP_TIMEOUT_VAR, str(STARTUP_TIMEOUT_S))
    try:
        with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: int(timeout)}):
            complexitynet(args.dataset, args.ladder, args.k, args.task_runner, args.params)
    except ComplexityNetError as exc:
        log.error("error: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
