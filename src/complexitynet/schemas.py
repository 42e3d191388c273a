"""Record types of every data file the stages exchange (docs/data-contracts.md).

Records are validated on read: a file that does not match its schema stops the stage with the
file, line and field named. Each file is sorted by its key (`task_key`, then `trial`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Dataset = Literal["mbpp", "humaneval"]
Split = Literal["fewshot", "train", "validation", "test", "unused"]  # unused: outside the experiment (prepare.split)

_TASK_ID = re.compile(r"^(?P<prefix>.*?)(?P<num>\d+)$")


def task_key(task_id: str) -> tuple[str, int, str]:
    """Natural sort key for task ids: "MBPP/11" sorts before "MBPP/100"."""
    m = _TASK_ID.match(task_id)
    return (m["prefix"], int(m["num"]), task_id) if m else (task_id, -1, task_id)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cases(Record):
    """Input/output tests (MBPP+): call the entry point on each input, compare with the expected output.

    Values are in the sandbox protocol's tagged JSON (sandbox/protocol.py), so tuples, sets and
    complex numbers keep their types. The expected outputs never enter the sandbox: the trusted
    harness compares them with what the solution returned.
    """

    inputs: list[Any]  # one tagged argument list per test
    expected: list[Any]  # the reference solution's output on each input, tagged
    atol: float = Field(0.0, ge=0)  # float tolerance (EvalPlus's atol); float outputs get 1e-6 when 0
    compare: Literal["exact", "set", "not_none"] = "exact"  # EvalPlus's per-problem output oracles
    cpu_s: list[float] | None = None  # per-input CPU limits from the reference's cost (None: execute's case_s)
    budget_cpu_s: float | None = Field(None, gt=0)  # CPU seconds for the whole suite, when above execute's cpu_s

    @model_validator(mode="after")
    def _paired(self) -> Cases:
        if len(self.inputs) != len(self.expected):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.expected)} expected outputs")
        if self.cpu_s is not None and (len(self.cpu_s) != len(self.inputs) or min(self.cpu_s, default=1) <= 0):
            raise ValueError(f"cpu_s needs one positive CPU limit per input ({len(self.inputs)})")
        return self


class Tests(Record):
    """A problem's tests, kept structured so the sandbox can run them one by one.

    Exactly one kind is set: `asserts` (MBPP's statements, or a user's), `check` (HumanEval), or
    `cases` (MBPP+ inputs with expected outputs). No kind at all means "no tests" (`total` 0).
    """

    setup: str = ""  # code run before the tests (MBPP's test_setup_code)
    asserts: list[str] = Field(default_factory=list)  # one `assert ...` statement each
    check: str | None = None  # HumanEval: source defining `check(candidate)`, called with the entry point
    cases: Cases | None = None  # input/expected-output pairs, all run in one sandboxed process
    challenge: list[str] = Field(default_factory=list)  # MBPP's harder challenge asserts (not used for labels)

    @model_validator(mode="after")
    def _one_kind(self) -> Tests:
        if sum((bool(self.asserts), self.check is not None, self.cases is not None)) > 1:
            raise ValueError("tests hold more than one kind (asserts, check, cases); split them")
        return self

    @property
    def total(self) -> int:
        """How many tests a verdict counts: asserts or cases one by one; a `check` function as one."""
        if self.cases is not None:
            return len(self.cases.inputs)
        return 1 if self.check is not None else len(self.asserts)


# Where a problem's hidden tests come from: MBPP+ inputs, HumanEval's `check`, a user's own list,
# or nowhere ("visible": the problem has no tests beyond those the prompt shows; hidden = visible).
HiddenSource = Literal["mbpp+", "check", "user", "visible"]


class Problem(Record):
    """One row of data/problems.jsonl."""

    task_id: str  # "MBPP/11", "HumanEval/0"
    dataset: Dataset
    split: Split
    text: str  # the benchmark's own problem statement (MBPP text; HumanEval prompt stub)
    prompt: str  # the prompt as shown to models, from the template in params
    entry_point: str  # the function the tests call
    visible: Tests  # what the prompt (or the user at routing time) has: MBPP's asserts, docstring examples
    hidden: Tests  # what judges: MBPP+ inputs, HumanEval's check; equal to `visible` when none exist
    hidden_source: HiddenSource
    notes: list[str] = Field(default_factory=list)  # tests dropped by prepare, and why
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


class Result(Record):
    """How one sample did on one suite of tests (visible or hidden)."""

    status: Status
    tests_passed: int = Field(ge=0)
    tests_total: int = Field(ge=0)
    failed: list[int] = Field(default_factory=list)  # indices of the tests that did not pass (incl. not reached)
    detail: str  # the first failure, short; empty on pass
    duration_s: float = Field(0.0, ge=0)  # wall clock of this suite's first execution (the cascade's sandbox cost)


class Producer(Record):
    """What produced a verdict: the sandbox (backend and image), its interpreter and hash seed."""

    sandbox: str  # "docker complexitynet-sandbox:<hash>" or "bwrap /usr/bin/python3"
    python: str  # the interpreter's version inside the sandbox
    hash_seed: int  # PYTHONHASHSEED inside the sandbox


Truth = Literal["hidden", "visible"]


class Verdict(Record):
    """One row of data/verdicts/<model>.jsonl: the sandbox's verdict on one sample."""

    task_id: str
    trial: int = Field(ge=0)
    model: str
    visible: Result | None  # None when the problem shows no tests (some HumanEval docstrings have no example)
    hidden: Result  # the truth by default (label.truth)
    duration_s: float = Field(ge=0)  # wall clock of the first executions (verdicts are cached, see execute)
    produced_by: Producer

    def result(self, truth: Truth) -> Result | None:
        return self.hidden if truth == "hidden" else self.visible


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
