"""Benchmark: what Prefect orchestration costs, as wall time of the flow over the plain CLI pipeline.

Two fresh copies of the repository (no outputs, no caches), the same params, the same run:
- anchor: the seven stages as `complexitynet <stage>` processes, one after another (what
  `dvc repro` runs, without DVC's own bookkeeping);
- flow: `python flows/pipeline.py` on a fresh ephemeral Prefect server (its start-up counts: a
  one-off run pays it), threads task runner, `orchestrate.record_version` off (the anchor does
  not `dvc commit` either).
Both execute every sample in the sandbox (cold verdict caches). Training is cut to the tests'
smoke run by default (1 epoch on 16 prompts), which makes the fixed costs of orchestration a
larger share than in a real run; `--full` keeps params.yaml's training. The two runs' outputs
are compared (all but the verdict files, whose timings differ) so the ratio compares equal work.
Target: overhead under 25%.

    .venv/bin/python benchmarks/flow_overhead.py [--full]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.project

from tests.project import make_project, tree_digest  # noqa: E402

TARGET = 0.25
STAGES = ("fetch", "prepare", "sample", "execute", "label", "train", "evaluate")


def mirror() -> Path:
    path = Path(os.environ.get("COMPLEXITYNET_MIRROR", REPO.parent / "shared" / "data"))
    if not (path / "mbpp" / "mbpp.jsonl").exists():
        sys.exit(f"{path}: no public data mirror here; set COMPLEXITYNET_MIRROR (see docs/data-contracts.md, Data sources)")
    return path


def timed(cmds: list[list[str]], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    for cmd in cmds:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def outputs(root: Path) -> dict[str, str]:
    """Every output's hash but the verdict files' (timings differ between two cold runs) and, in the
    evaluation, the verified cascade's sandbox seconds, which are summed from those timings."""
    out = {f"{sub}/{name}": h for sub in ("data", "metrics", "reports") for name, h in tree_digest(root / sub).items()
           if not name.startswith("verdicts/")}

    def untimed(tree):
        if isinstance(tree, dict):
            return {k: untimed(v) for k, v in tree.items() if k != "sandbox_seconds"}
        return [untimed(v) for v in tree] if isinstance(tree, list) else tree

    evaluation = untimed(json.loads((root / "reports/evaluate.json").read_text()))
    out["reports/evaluate.json"] = hashlib.sha256(json.dumps(evaluation, sort_keys=True).encode()).hexdigest()
    report = re.sub(r"[\d,.]+ sandbox seconds", "_ sandbox seconds", (root / "reports/report.md").read_text())
    out["reports/report.md"] = hashlib.sha256(report.encode()).hexdigest()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="params.yaml's training instead of the smoke run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flow-overhead-") as tmp:
        tmp = Path(tmp)
        runs = {}
        for name in ("cli", "flow"):
            (tmp / name).mkdir()
            updates = {"orchestrate": {"record_version": False}}
            root, env = make_project(tmp / name, mirror(), smoke=not args.full, **updates)
            env.update(PREFECT_HOME=str(tmp / name / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                       PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120", CI="true")
            env.pop("PREFECT_API_URL", None)
            runs[name] = (root, env)
        cli_root, cli_env = runs["cli"]
        cli_s = timed([[sys.executable, "-m", "complexitynet", stage] for stage in STAGES], cli_root, cli_env)
        print(f"cli pipeline (7 stage processes): {cli_s:7.1f} s", flush=True)
        flow_root, flow_env = runs["flow"]
        flow_s = timed([[sys.executable, "flows/pipeline.py"]], flow_root, flow_env)
        print(f"prefect flow (ephemeral server):  {flow_s:7.1f} s", flush=True)
        same = outputs(cli_root) == outputs(flow_root)
        print(f"outputs identical (verdict timings and the sandbox seconds summed from them aside): {same}")
        if not same:
            diff = sorted(k for k in outputs(cli_root).keys() | outputs(flow_root).keys()
                          if outputs(cli_root).get(k) != outputs(flow_root).get(k))
            print(json.dumps(diff[:20]))
    overhead = flow_s / cli_s - 1
    print(f"RESULT flow_overhead={overhead:.3f} target={TARGET} ok={str(same and overhead < TARGET).lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
