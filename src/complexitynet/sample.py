"""sample: one file of completions per ladder model, data/samples/<model>.jsonl.

This module holds the provider-independent part: turning raw completions into `Sample` records
(code extraction, token counts or a flagged estimate, cost from the ladder's prices), running the
ladder (recorded providers replay completions made earlier; live ones go through the sampling
engine and its cache, `complexitynet.live`), and the per-model summary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from complexitynet.config import ModelSpec, SampleParams
from complexitynet.errors import ComplexityNetError
from complexitynet.extract import extract_code
from complexitynet.io import progress_bars, write_jsonl
from complexitynet.live import (
    Budget,
    LiveModel,
    ModelStats,
    cost_usd,
    estimate_tokens,
    latency_summary,
    open_caches,
    run_live,
)
from complexitynet.paths import load_problems
from complexitynet.providers import LiveProvider, make_provider
from complexitynet.providers.recorded import RawCompletion, RecordedProvider
from complexitynet.schemas import Problem, Sample, sample_key, task_key

if TYPE_CHECKING:
    from complexitynet.config import Params
    from complexitynet.paths import Paths

log = logging.getLogger(__name__)


class BudgetExceeded(ComplexityNetError):
    """The next live request could take the run past `sample.budget_usd`; everything done is cached."""


class SamplingFailed(ComplexityNetError):
    """Some live requests failed after their retries; everything else is cached."""


def to_sample(raw: RawCompletion, model: ModelSpec, problem: Problem, chars_per_token: float,
              source: Literal["live", "recorded"] = "recorded") -> Sample:
    """Extract the code and account tokens and cost for one completion."""
    estimated = raw.prompt_tokens is None or raw.completion_tokens is None
    prompt_tokens = raw.prompt_tokens
    if prompt_tokens is None:
        prompt_tokens = estimate_tokens(raw.source_prompt or problem.prompt, chars_per_token)
    completion_tokens = raw.completion_tokens
    if completion_tokens is None:
        completion_tokens = estimate_tokens(raw.completion, chars_per_token)
    stub = problem.text if problem.dataset == "humaneval" else None
    return Sample(
        task_id=raw.task_id,
        trial=raw.trial,
        model=model.name,
        completion=raw.completion,
        code=extract_code(raw.completion, problem.entry_point, stub),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        tokens_estimated=estimated,
        cost_usd=cost_usd(model.price, prompt_tokens, completion_tokens),
        latency_s=raw.latency_s,
        source=source,
        source_pass=raw.source_pass,
    )


def recorded_completions(model: ModelSpec, sources_dir: Path) -> tuple[Path, Iterable[RawCompletion]]:
    """The file a recorded model replays, and its raw completions."""
    return RecordedProvider(model, sources_dir).source()


def sample_recorded(model: ModelSpec, problems: dict[str, Problem], sources_dir: Path,
                    chars_per_token: float) -> list[Sample]:
    """Every recorded completion of `model` for the given problems but `unused` ones (others in the
    source are ignored for built-in sources; in a user's jsonl file an unknown task_id is an error)."""
    raws = RecordedProvider(model, sources_dir).completions(problems)
    samples = [to_sample(raw, model, problems[raw.task_id], chars_per_token) for raw in raws
               if problems[raw.task_id].split != "unused"]
    return sorted(samples, key=sample_key)


@dataclass
class LadderRun:
    """The samples of every model, and for live models what the run did (for metrics and the log)."""

    samples: dict[str, list[Sample]]
    live: dict[str, ModelStats] = field(default_factory=dict)
    live_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # latency, truncations


def sample_ladder(ladder: list[ModelSpec], problems: dict[str, Problem], sources_dir: Path, cache_dir: Path,
                  cfg: SampleParams, progress: bool = False, seed: int = 0) -> LadderRun:
    """Samples of every model of the ladder for `problems`.

    Every provider is checked (e.g. that its API-key variable is set) before any request is sent.
    Live models sample `cfg.k` trials of the first `cfg.limit` problems (all when None) outside the
    `unused` split, all models
    concurrently through the sampling engine; their answers are cached in
    `cache_dir/<model>.jsonl`. Raises BudgetExceeded or SamplingFailed (after the run, with every
    finished request cached) when not every sample could be had.
    """
    providers = {m.name: make_provider(m, sources_dir) for m in ladder}
    for provider in providers.values():
        provider.check()
    run = LadderRun(samples={m.name: sample_recorded(m, problems, sources_dir, cfg.chars_per_token)
                             for m in ladder if not m.live})
    live = [m for m in ladder if m.live]
    if not live:
        return run
    budget = Budget(cfg.budget_usd)
    used = sorted((t for t, p in problems.items() if p.split != "unused"), key=task_key)
    selected = {t: problems[t] for t in used[:cfg.limit]}
    with open_caches(cache_dir, [m.name for m in live]) as caches:
        jobs = []
        for spec in live:
            provider = providers[spec.name]
            assert isinstance(provider, LiveProvider)
            jobs.append(LiveModel(spec.name, provider, spec.price, provider.requests(selected, cfg.k),
                                  caches[spec.name]))
        asyncio.run(run_live(jobs, budget, cfg.chars_per_token, progress, seed))
    for job in jobs:
        run.live[job.name] = job.stats
        log.info("sample: %-28s %d requests sent (%d retries), %d from the cache, $%.4f spent in this run",
                 job.name, job.stats.sent, job.stats.retries, job.stats.cached, job.stats.spent_usd)
    _raise_if_incomplete(run, budget, cache_dir)
    for job, spec in zip(jobs, live):
        records = [job.cache.records[job.keys[r.task_id, r.trial]] for r in job.requests]
        run.live_metrics[job.name] = latency_summary(list({r["key"]: r for r in records}.values()))
        run.samples[job.name] = [
            _live_sample(record, r.task_id, r.trial, spec, problems[r.task_id], cfg.chars_per_token)
            for record, r in zip(records, job.requests)]
    return run


def _live_sample(record: dict[str, Any], task_id: str, trial: int, model: ModelSpec, problem: Problem,
                 chars_per_token: float) -> Sample:
    # Wall-clock latency varies from run to run, so it stays in the cache and metrics: with it here,
    # a resumed run could not write the same bytes as an uninterrupted one.
    raw = RawCompletion(task_id=task_id, trial=trial, completion=record["completion"],
                        prompt_tokens=record["prompt_tokens"], completion_tokens=record["completion_tokens"])
    return to_sample(raw, model, problem, chars_per_token, source="live")


def _raise_if_incomplete(run: LadderRun, budget: Budget, cache_dir: Path) -> None:
    failures = [f for stats in run.live.values() for f in stats.failures]
    unsent = sum(stats.unsent for stats in run.live.values())
    kept = f"Every finished request is kept in {cache_dir}/ and will not be sent again"
    if unsent:
        failed = f"; {len(failures)} more failed (see the log)" if failures else ""
        for failure in failures:
            log.error("sample: %s", failure)
        raise BudgetExceeded(
            f"sample.budget_usd is ${budget.limit:g}: this run spent ${budget.spent:.4f}, and "
            f"{budget.refused}, so {unsent} requests were not sent{failed}. {kept}: raise "
            "sample.budget_usd (or set it to null) and rerun to continue")
    if failures:
        shown = "\n  ".join(failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise SamplingFailed(f"{len(failures)} requests failed:\n  {shown}{more}\n{kept}: rerun to retry "
                             "only the failed ones")


def summarize(samples: list[Sample], problems: dict[str, Problem]) -> dict[str, Any]:
    """Per-model totals for reports/sample.json (prompts of the `unused` split are not missing)."""
    tasks = {s.task_id for s in samples}
    missing = sorted({t for t, p in problems.items() if p.split != "unused"} - tasks, key=task_key)
    return {
        "samples": len(samples),
        "tasks": len(tasks),
        "missing_tasks": len(missing),
        "missing_task_ids": missing[:20],
        "trials_max": max((s.trial + 1 for s in samples), default=0),
        "empty_completions": sum(not s.completion.strip() for s in samples),
        "prompt_tokens": sum(s.prompt_tokens for s in samples),
        "completion_tokens": sum(s.completion_tokens for s in samples),
        "tokens_estimated_share": round(sum(s.tokens_estimated for s in samples) / max(len(samples), 1), 4),
        "cost_usd": round(sum(s.cost_usd for s in samples), 6),
    }


def write_samples(out_dir: Path, per_model: dict[str, list[Sample]]) -> None:
    """Write one sorted file per model and remove files of models no longer in the ladder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, samples in per_model.items():
        write_jsonl(out_dir / f"{name}.jsonl", samples, key=sample_key)
    for stale in out_dir.glob("*.jsonl"):
        if stale.stem not in per_model:
            stale.unlink()


# --- the stage's edge: params and paths in, files out (dvc.yaml and the Prefect flow call it) ---

def check_providers(params: Params, paths: Paths) -> None:
    """Every model of the ladder can be sampled (e.g. its API-key variable is set), before any request."""
    from complexitynet.providers import make_provider

    for model in params.ladder:
        make_provider(model, paths.sources).check()


def sample_models(params: Params, paths: Paths, models: list[ModelSpec], problems: dict,
                  budget_usd: float | None = None):
    """Samples of `models` (a LadderRun); live ones go through the engine with `budget_usd` as their cap."""

    cfg = params.sample if budget_usd is None else params.sample.model_copy(update={"budget_usd": budget_usd})
    return sample_ladder(models, problems, paths.sources, paths.sample_cache, cfg, progress=progress_bars(),
                         seed=params.base.seed)


def write_outputs(params: Params, paths: Paths, problems: dict, runs: list) -> None:
    """data/samples/<model>.jsonl and metrics/ + reports/sample.json from one or more LadderRuns."""
    from complexitynet.io import write_metrics
    from complexitynet.label import check_outputs

    samples = {name: rows for run in runs for name, rows in run.samples.items()}
    samples = {m.name: samples[m.name] for m in params.ladder}  # ladder order, whoever sampled what
    check_outputs(samples, problems, params.label.max_missing if params.label.allow_missing else 0)
    write_samples(paths.samples, samples)
    metrics = {name: summarize(rows, problems) for name, rows in samples.items()}
    for run in runs:
        for name, stats in run.live.items():
            metrics[name].update(run.live_metrics[name], run={
                "requests_sent": stats.sent, "cache_hits": stats.cached, "retries": stats.retries,
                "cost_usd": round(stats.spent_usd, 6)})
    write_metrics(paths.sample_report, paths.sample_metrics, {"ladder": params.ladder_name, "models": metrics},
                  {"models": {name: {k: m[k] for k in ("samples", "missing_tasks", "cost_usd")}
                              for name, m in metrics.items()}})
    for name, m in metrics.items():
        log.info("sample: %-28s %5d samples over %d tasks (%d missing), %d+%d tokens, $%.4f%s", name,
                 m["samples"], m["tasks"], m["missing_tasks"], m["prompt_tokens"], m["completion_tokens"],
                 m["cost_usd"], " (tokens estimated)" if m["tokens_estimated_share"] else "")


def run(params: Params, paths: Paths) -> None:
    problems = load_problems(paths)
    write_outputs(params, paths, problems, [sample_models(params, paths, params.ladder, problems)])
