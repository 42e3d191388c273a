"""The flow's fan-out stages on a temporary Prefect server: live sampling against a fake
OpenAI-compatible server over real HTTP, and sandbox batches in the real sandbox. Failures are
injected into the infrastructure; assertions are on what the server saw, what the sandbox ran,
and the files the stages wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.states import Completed, Failed

from complexitynet import execute as ex
from complexitynet.config import load_params
from complexitynet.errors import ConfigError, DataError
from complexitynet.sample import BudgetExceeded, SamplingFailed
from complexitynet.sandbox.backends import SandboxError
from complexitynet.paths import Paths
from complexitynet.sandbox.pool import SandboxConfig
from flows.pipeline import execute_flow, sample_flow, task_runners
from tasks.pipeline import is_transient
from tests.fake_openai import FakeOpenAI, fraction
from tests.live_helpers import rows, setup_workdir

pytestmark = pytest.mark.integration
KEY_VAR = "CNET_FLOW_TEST_KEY"
REAL_RUN_JOBS = ex.run_jobs


@pytest.mark.parametrize("exc, retried", [
    (SandboxError("no container"), True), (SamplingFailed("3 requests failed"), True),
    (ConnectionError("reset"), True), (TimeoutError(), True),
    (ConfigError("params.yaml: bad key"), False), (DataError("data/x.jsonl:3: bad row"), False),
    (BudgetExceeded("budget spent"), False), (ValueError("a bug"), False),
])
def test_only_infrastructure_errors_are_retried(exc, retried):
    assert is_transient(None, None, Failed(data=exc)) is retried
    assert is_transient(None, None, Completed(data=1)) is False


def rung(name: str, base_url: str, **openai: object) -> dict:
    return {"name": name, "provider": "openai", "price": {"input": 1.0, "output": 2.0},
            "openai": {"base_url": base_url, "model": f"fake-{name}", "api_key_env": KEY_VAR, "backoff_s": 0.001,
                       "max_retries": 2, "timeout_s": 5, "params": {"max_tokens": 64, "seed": 7}, **openai}}


@pytest.fixture()
def work(tmp_path, monkeypatch, prefect_results):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(KEY_VAR, "sk-flow-test-secret")
    return tmp_path


def params_for(work: Path, **orchestrate):
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["orchestrate"].update({"retries": 2, "retry_delay_s": 0.01, "execute_batch": 4, **orchestrate})
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    return load_params(work / "params.yaml")


def test_failed_requests_are_retried_by_prefect_without_resending_finished_ones(work):
    # A third of the requests fail on every attempt the engine makes (3): the model's task fails with
    # SamplingFailed, Prefect retries it, and the retry sends only those requests again.
    doomed = lambda key, attempt, body: "500" if fraction(key, 0) < 0.33 and attempt < 3 else None  # noqa: E731
    with FakeOpenAI(faults=doomed) as server:
        setup_workdir(work, [rung("small", server.base_url), rung("big", server.base_url)], n=6, k=2)
        params, paths = params_for(work), Paths().under(work)
        sample_flow(params, paths)
    retried = [key for key, n in server.attempts.items() if n > 1]
    assert retried and all(server.attempts[key] == 4 for key in retried)  # 3 in the first run, 1 in the retry
    assert set(server.successes.values()) == {1} and len(server.successes) == 24
    for model in ("small", "big"):
        assert [(s["task_id"], s["trial"]) for s in rows(f"data/samples/{model}.jsonl")] == [
            (f"MBPP/{i}", t) for i in range(1, 7) for t in range(2)]


@pytest.mark.slow
def test_live_models_sample_on_different_dask_workers(work):
    # One task per model, each model's engine one request at a time against 0.3 s answers: with a
    # LocalCluster of 2 single-thread workers, the two models run side by side, one per worker.
    with FakeOpenAI(latency_s=0.3) as server:
        setup_workdir(work, [rung("small", server.base_url, concurrency=1),
                             rung("big", server.base_url, concurrency=1)], n=3, k=2)
        params = params_for(work, task_runner="dask", dask_workers=2)
        with task_runners(params.orchestrate) as runner:
            workers = sample_flow.with_options(task_runner=runner())(params, Paths().under(work))
    assert len(workers) == 2
    assert set(server.successes.values()) == {1} and len(server.successes) == 12
    assert len(rows("data/samples/small.jsonl")) == len(rows("data/samples/big.jsonl")) == 6


def test_missing_api_key_stops_the_flow_before_any_request(work, monkeypatch):
    with FakeOpenAI() as server:
        setup_workdir(work, [rung("small", server.base_url)], n=2)
        monkeypatch.delenv(KEY_VAR)
        with pytest.raises(ConfigError, match=KEY_VAR):
            sample_flow(params_for(work), Paths().under(work))
        assert server.requests == 0


@pytest.fixture()
def sampled(work):
    """Twelve live samples (6 problems x 2 trials), ready for the execute stage."""
    with FakeOpenAI() as server:
        setup_workdir(work, [rung("small", server.base_url)], n=6, k=2)
        params, paths = params_for(work, max_workers=2), Paths().under(work)
        sample_flow(params, paths)
    return params, paths


def spy_on_sandbox_runs(monkeypatch, fail_when=lambda jobs: False) -> list[list]:
    """Record every batch of jobs the sandbox runs; raise SandboxError for the batches `fail_when` picks."""
    batches: list[list] = []

    def run_jobs(pool, jobs, *args, **kwargs):
        jobs = list(jobs)
        if fail_when(jobs):
            raise SandboxError("the engine lost the container")
        batches.append(jobs)
        return REAL_RUN_JOBS(pool, jobs, *args, **kwargs)

    monkeypatch.setattr(ex, "run_jobs", run_jobs)
    return batches


def test_sandbox_batch_failure_is_retried_then_the_stage_completes(sampled, monkeypatch):
    params, paths = sampled
    calls = {"n": 0}

    def first_call_fails(jobs):
        calls["n"] += 1
        return calls["n"] == 1

    batches = spy_on_sandbox_runs(monkeypatch, first_call_fails)
    workers = execute_flow(params, paths, SandboxConfig.from_params(params).resolved())
    assert len(workers) == 1  # threads: every batch ran in this process
    assert calls["n"] == 4 and sorted(len(b) for b in batches) == [4, 4, 4]  # 3 batches + 1 retry
    verdicts = rows(paths.verdicts / "small.jsonl")
    assert len(verdicts) == 12 and {v["hidden"]["status"] for v in verdicts} == {"fail"}


def test_permanent_batch_failure_names_the_samples_and_a_rerun_resumes(sampled, monkeypatch):
    params, paths = sampled
    sandbox = SandboxConfig.from_params(params).resolved()
    spy_on_sandbox_runs(monkeypatch, lambda jobs: any(j.entry_point == "f5" for j in jobs))
    with pytest.raises(SandboxError) as failure:
        execute_flow(params, paths, sandbox)
    message = str(failure.value)
    assert "1 sandbox batches failed" in message and "small MBPP/5#0 .. small MBPP/6#1 (4 jobs)" in message
    assert len(rows(paths.verdict_cache / "small.jsonl")) == 8  # the other two batches are kept
    assert not (paths.verdicts / "small.jsonl").exists()

    batches = spy_on_sandbox_runs(monkeypatch)  # the infrastructure is back
    execute_flow(params, paths, sandbox)
    assert [len(b) for b in batches] == [4]  # only the failed batch runs again
    assert len(rows(paths.verdicts / "small.jsonl")) == 12


def test_prefect_never_walks_problems_samples_or_jobs(work, monkeypatch):
    # Prefect walks a task's arguments element by element looking for futures (unless they come in a
    # Parcel): with MBPP+'s hidden tests, ~22 s per walk of the problems. Every visit is counted.
    import prefect.utilities.collections as collections

    from complexitynet.sandbox.pool import Job
    from complexitynet.schemas import Problem, Sample

    walked: list[str] = []
    real = collections.visit_collection

    def visit_collection(expr, *args, **kwargs):
        if isinstance(expr, (Problem, Sample, Job)):
            walked.append(type(expr).__name__)
        return real(expr, *args, **kwargs)

    monkeypatch.setattr(collections, "visit_collection", visit_collection)
    with FakeOpenAI() as server:
        setup_workdir(work, [rung("small", server.base_url)], n=3, k=2)
        params, paths = params_for(work), Paths().under(work)
        sample_flow(params, paths)
        execute_flow(params, paths, SandboxConfig.from_params(params).resolved())
    assert len(rows(paths.verdicts / "small.jsonl")) == 6
    assert walked == []
