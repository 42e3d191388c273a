"""Helpers for the live-sampling tests: a scratch workdir with a live ladder and synthetic problems."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from complexitynet.io import write_jsonl
from complexitynet.schemas import Problem, task_key
from complexitynet.schemas import Tests as ProblemTests

REPO = Path(__file__).resolve().parents[1]


def make_problems(n: int) -> list[Problem]:
    return [Problem(task_id=f"MBPP/{i}", dataset="mbpp", split="test", text=f"Problem {i}.",
                    prompt=f"Write a function f{i} that returns {i} squared.", entry_point=f"f{i}",
                    visible=(t := ProblemTests(asserts=[f"assert f{i}() == {i * i}"])), hidden=t,
                    hidden_source="visible", reference=f"def f{i}(): return {i * i}\n")
            for i in range(1, n + 1)]


def setup_workdir(work: Path, ladder: list[dict], n: int = 6, **sample: object) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ladders"]["live"] = ladder
    raw["base"]["ladder"] = "live"
    raw["sample"].update({"k": 2, **sample})
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    write_jsonl(work / "data/problems.jsonl", make_problems(n), key=lambda p: task_key(p.task_id))


def rows(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def metrics(model: str) -> dict:
    return json.loads(Path("reports/sample.json").read_text())["models"][model]
