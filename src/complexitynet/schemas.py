"""Record types of every data file the stages exchange (see docs in README, "Data contracts").

Records are validated on read: a file that does not match its schema stops the stage with the
file, line and field named. Each file is sorted by its key (`task_key`, then `trial`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Dataset = Literal["mbpp", "humaneval"]
Split = Literal["fewshot", "train", "validation", "test"]

_TASK_ID = re.compile(r"^(?P<prefix>.*?)(?P<num>\d+)$")


def task_key(task_id: str) -> tuple[str, int, str]:
    """Natural sort key for task ids: "MBPP/11" sorts before "MBPP/100"."""
    m = _TASK_ID.match(task_id)
    return (m["prefix"], int(m["num"]), task_id) if m else (task_id, -1, task_id)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tests(Record):
    """A problem's tests, kept structured so the sandbox can run them one by one."""

    setup: str = ""  # code run before the tests (MBPP's test_setup_code)
    asserts: list[str] = Field(default_factory=list)  # MBPP: one `assert ...` statement each
    check: str | None = None  # HumanEval: source defining `check(candidate)`, called with the entry point
    challenge: list[str] = Field(default_factory=list)  # MBPP's harder challenge asserts (not used for labels)


class Problem(Record):
    """One row of data/problems.jsonl."""

    task_id: str  # "MBPP/11", "HumanEval/0"
    dataset: Dataset
    split: Split
    text: str  # the benchmark's own problem statement (MBPP text; HumanEval prompt stub)
    prompt: str  # the prompt as shown to models, from the template in params
    entry_point: str  # the function the tests call
    tests: Tests
    reference: str  # a complete program that solves the problem


class Sample(Record):
    """One row of data/samples/<model>.jsonl: one completion for one (task, trial)."""

    task_id: str
    trial: int = Field(ge=0)
    model: str  # the ladder's name for the model
    completion: str  # raw text as the model returned it
    code: str  # the program extracted from the completion
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    tokens_estimated: bool  # True when either count is an estimate (the source had none)
    cost_usd: float = Field(ge=0)
    latency_s: float | None  # None when the source did not record it
    source: Literal["live", "recorded"]
    source_pass: bool | None = None  # the recorded source's own pass flag, for comparison only


def sample_key(sample: Sample) -> tuple[tuple[str, int, str], int]:
    return task_key(sample.task_id), sample.trial


Status = Literal["pass", "fail", "timeout", "error", "crash"]


class Verdict(Record):
    """One row of data/verdicts/<model>.jsonl: the sandbox's verdict on one sample."""

    task_id: str
    trial: int = Field(ge=0)
    model: str
    status: Status
    tests_passed: int = Field(ge=0)
    tests_total: int = Field(ge=0)
    duration_s: float = Field(ge=0)  # wall clock of the first execution (verdicts are cached, see execute)
    detail: str  # the first failure, short; empty on pass


def verdict_key(verdict: Verdict) -> tuple[tuple[str, int, str], int]:
    return task_key(verdict.task_id), verdict.trial


class Label(Record):
    """One row of data/labels.jsonl: how hard a prompt is for the ladder."""

    task_id: str
    split: Split
    label: int = Field(ge=0)  # index in the ladder of the cheapest model that reliably solves it; len(ladder) = none
    label_name: str  # that model's name, or "none"
    label_first_trial: int = Field(ge=0)  # the same rule on trial 0 only (the paper's 1-trial labels)
    passes: dict[str, int]  # per model: passing trials among the first k
    trials: dict[str, int]  # per model: trials judged (at most k)
    pass_rate: dict[str, float | None]  # passes / trials; None when a model has no trial
    flagged: bool = False  # fewer than k trials for some model (allowed by label.allow_missing)


def label_key(label: Label) -> tuple[str, int, str]:
    return task_key(label.task_id)
