"""Bring your own ladder, as docs/configuration.md, "Bring your own models", walks through it, through `dvc repro`:
1. a ladder imported in the generic JSONL format whose outputs cover only MBPP's test and validation
   prompts stops at `sample`, before any code runs, with an error naming the split and the fix, and
   registers nothing; with `prepare.split.method: outputs` it trains a router and writes a report;
2. a ladder whose middle model beats its largest is judged against its best single model, and the
   report says the ladder is not monotone.
MBPP+ is off (hidden = visible tests) to keep the sandbox work to a few minutes."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest
import yaml

from complexitynet.providers.recorded import read_complexitynet
from tests.project import make_project, run

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

RECORDED = {"codellama-7b-python": ("mbpp_label_llama.jsonl", "llama"),
            "gpt-3.5-turbo-1106": ("label.jsonl", "gpt3_5"), "gpt-4-1106-preview": ("label.jsonl", "gpt4")}


def rung(name: str, price: float, **recorded: str) -> dict:
    return {"name": name, "provider": "recorded", "recorded": recorded, "price": {"input": price, "output": price}}


def set_params(root, update) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    update(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def registered_versions(env: dict) -> list:
    import mlflow

    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    return client.search_model_versions("name = 'complexitynet-classifier'")


def test_own_ladders_through_dvc_repro(tmp_path, mirror):
    root, env = make_project(tmp_path, mirror, prepare={"mbppplus": False})
    dvc = [sys.executable, "-m", "dvc"]

    # Three models' outputs for MBPP's test and validation prompts only (task_ids 11-600), one file.
    rows = []
    for model, (file, field) in RECORDED.items():
        for raw in read_complexitynet(mirror / "recorded/mbpp-complexitynet" / file, field):
            if 11 <= int(raw.task_id.split("/")[1]) <= 600:
                rows.append({"task_id": raw.task_id, "model": model, "trial": 0, "completion": raw.completion,
                             "source_pass": raw.source_pass})
    (root / "imports/tv.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tv = [rung(f"open-{i}", price, source="jsonl", path="imports/tv.jsonl", model=model)
          for i, (model, price) in enumerate(zip(RECORDED, (0.2, 1.0, 10.0)))]
    set_params(root, lambda p: (p["ladders"].update(tv=tv), p["base"].update(ladder="tv")))

    proc = run_failing([*dvc, "repro"], root, env)
    assert "Running stage 'execute'" not in proc, "the missing train outputs must stop the run before the sandbox"
    assert "374 of 374 train prompts" in proc and "prepare.split.method: outputs" in proc
    assert registered_versions(env) == []

    set_params(root, lambda p: p["prepare"]["split"].update(method="outputs"))
    out = run([*dvc, "repro"], root, env)
    assert "Running stage 'evaluate'" in out
    problems = [json.loads(line) for line in (root / "data/problems.jsonl").read_text().splitlines()]
    splits = Counter(p["split"] for p in problems)
    # 589 prompts have outputs of every rung: the GPT recordings have none for MBPP/440
    assert splits["unused"] == 974 - 589 and (splits["train"], splits["validation"], splits["test"]) == (353, 118, 118)
    assert (root / "models/router/router.json").exists() and (root / "reports/report.md").exists()
    flags = json.loads((root / "reports/execute.json").read_text())["models"]["open-2"]["source_flags"]
    assert flags["compared"] > 500  # the import's own pass flags are compared with our verdicts
    assert len(registered_versions(env)) == 1

    # The paper's models, priced so that GPT-4 is the middle rung and GPT-3.5 the largest.
    inverted = [rung("codellama", 0.2, source="complexitynet-mbpp", model="codellama-7b-python"),
                rung("gpt-4", 1.0, source="complexitynet-mbpp", model="gpt-4-1106-preview"),
                rung("gpt-3.5-dear", 10.0, source="complexitynet-mbpp", model="gpt-3.5-turbo-1106")]
    set_params(root, lambda p: (p["ladders"].update(inverted=inverted), p["base"].update(ladder="inverted"),
                                p["prepare"]["split"].update(method="dataset")))
    run([*dvc, "repro"], root, env)
    evaluation = json.loads((root / "reports/evaluate.json").read_text())
    assert evaluation["reference"]["model"] == "gpt-4" and not evaluation["reference"]["monotone"]
    assert evaluation["policies"]["always:gpt-4"]["pgr"] == pytest.approx(1.0)
    report = (root / "reports/report.md").read_text()
    assert "This ladder is not monotone" in report and "Always `gpt-4` (the best single model)" in report


def run_failing(cmd: list[str], cwd, env: dict) -> str:
    import subprocess

    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0, f"{cmd} should have failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr
