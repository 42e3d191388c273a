"""sample: one file of completions per ladder model, data/samples/<model>.jsonl.

This module holds the provider-independent part: turning raw completions into `Sample` records
(code extraction, token counts or a flagged estimate, cost from the ladder's prices) and the
per-model summary. Recorded providers replay completions made earlier.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from complexitynet.config import ModelSpec, Price
from complexitynet.errors import DataError
from complexitynet.extract import extract_code
from complexitynet.io import write_jsonl
from complexitynet.providers.recorded import RECORDED_SOURCES, RawCompletion, read_generic
from complexitynet.schemas import Problem, Sample, sample_key, task_key
from complexitynet.sources import FILES


def estimate_tokens(text: str, chars_per_token: float) -> int:
    """A declared estimate for sources without token counts (see `sample.chars_per_token`)."""
    return math.ceil(len(text) / chars_per_token) if text else 0


def cost_usd(price: Price, prompt_tokens: int, completion_tokens: int) -> float:
    return round((prompt_tokens * price.input + completion_tokens * price.output) / 1e6, 9)


def to_sample(raw: RawCompletion, model: ModelSpec, problem: Problem, chars_per_token: float) -> Sample:
    """Extract the code and account tokens and cost for one recorded completion."""
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
        source="recorded",
        source_pass=raw.source_pass,
    )


def recorded_completions(model: ModelSpec, sources_dir: Path) -> tuple[Path, Iterable[RawCompletion]]:
    """The file a recorded model replays, and its raw completions."""
    spec = model.recorded
    assert spec is not None  # guaranteed by config validation
    if spec.source == "jsonl":
        path = Path(spec.path or "")
        return path, read_generic(path, spec.model)
    source = RECORDED_SOURCES[spec.source]
    file_key, field = source.models[spec.model]
    path = sources_dir / FILES[file_key].relpath
    if not path.exists():
        raise DataError(f"{path}: recorded source not found; run `complexitynet fetch` first")
    return path, source.reader(path, field)


def sample_recorded(model: ModelSpec, problems: dict[str, Problem], sources_dir: Path,
                    chars_per_token: float) -> list[Sample]:
    """Every recorded completion of `model` for the given problems (others in the source are ignored
    for built-in sources; in a user's jsonl file an unknown task_id is an error)."""
    path, raws = recorded_completions(model, sources_dir)
    strict = model.recorded is not None and model.recorded.source == "jsonl"
    samples: dict[tuple[str, int], Sample] = {}
    for raw in raws:
        problem = problems.get(raw.task_id)
        if problem is None:
            if strict:
                raise DataError(f"{path}: task_id '{raw.task_id}' (model '{model.name}') is not in "
                                "data/problems.jsonl; check the dataset in params (base.dataset)")
            continue
        if (raw.task_id, raw.trial) in samples:
            raise DataError(f"{path}: task '{raw.task_id}' trial {raw.trial} appears twice for model "
                            f"'{model.name}'; keep one row per (task_id, trial)")
        samples[raw.task_id, raw.trial] = to_sample(raw, model, problem, chars_per_token)
    return sorted(samples.values(), key=sample_key)


def summarize(samples: list[Sample], problems: dict[str, Problem]) -> dict[str, Any]:
    """Per-model totals for metrics/sample.json."""
    tasks = {s.task_id for s in samples}
    missing = sorted(set(problems) - tasks, key=task_key)
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
