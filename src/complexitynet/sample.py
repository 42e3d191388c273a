"""sample: one file of completions per ladder model, data/samples/<model>.jsonl.

This module holds the provider-independent part: turning raw completions into `Sample` records
(code extraction, token counts or a flagged estimate, cost from the ladder's prices), running the
ladder (recorded providers replay completions made earlier; live ones go through the sampling
engine and its cache, `complexitynet.sampling`), and the per-model summary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from complexitynet.config import ModelSpec
from complexitynet.config import Sample as SampleParams
from complexitynet.errors import ComplexityNetError
from complexitynet.extract import extract_code
from complexitynet.io import write_jsonl
from complexitynet.providers import LiveProvider, make_provider
from complexitynet.providers.recorded import RawCompletion, RecordedProvider
from complexitynet.sampling import (
    Budget,
    LiveModel,
    ModelStats,
    cost_usd,
    estimate_tokens,
    latency_summary,
    open_caches,
    run_live,
)
from complexitynet.schemas import Problem, Sample, sample_key, task_key

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
    """Per-model totals for metrics/sample.json (prompts of the `unused` split are not missing)."""
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
