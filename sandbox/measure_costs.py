"""Measure the CPU cost of MBPP+'s canonical solution on each of its inputs, in the sandbox, and pin
it in sandbox/mbppplus_cpu.json: the table `prepare` sizes each input's CPU limit from.

Measured once and committed, so the limits (and every verdict that depends on them) are the same on
every machine and run; a measurement taken during `prepare` moved a limit whenever a canonical
solution's cost sat at a doubling point and the machine was busy. Each input's cost is the minimum
of several rounds (load only ever adds CPU time); inputs under 0.05 s, whose limit is the floor
anyway, are left out. Rerun after changing the sandbox image or the machine class:

    .venv/bin/python sandbox/measure_costs.py [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

from complexitynet.config import load_params
from complexitynet.io import atomic_write
from complexitynet.mbppplus import load as load_plus
from complexitynet.prepare import COSTS_FILE, read_problems
from complexitynet.sandbox import protocol as P
from complexitynet.sandbox.backends import Limits, make_backend
from complexitynet.sandbox.harness import Timeouts
from complexitynet.sandbox.pool import Job, SandboxPool
from complexitynet.sources import source_path

REPO = Path(__file__).resolve().parents[1]
MIN_COST_S = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    sources = REPO / "data/sources"
    problems = {int(p.task_id.split("/")[1]): p for p in
                read_problems("mbpp", sources, params.prepare.templates["mbpp"], params.prepare.split.fractions, 0)}
    plus = load_plus(source_path(sources, "mbppplus"))
    limits, timeouts = Limits(**params.execute.limits.model_dump()), Timeouts(**params.execute.timeouts.model_dump())
    pool = SandboxPool(make_backend(args.backend, limits), args.workers, limits, timeouts)
    jobs = [Job(task, plus[task].canonical, problems[task].visible, plus[task].entry_point,
                inputs=[P.encode(a) for a in plus[task].inputs]) for task in sorted(set(plus) & set(problems))]
    best: dict[int, list[float]] = {}
    try:
        for r in range(args.rounds):
            for task, outcome, _ in pool.map(jobs):
                if outcome.status == "pass":
                    seen = best.setdefault(task, list(outcome.cpu_s))
                    best[task] = [min(a, b) for a, b in zip(seen, outcome.cpu_s)]
            print(f"round {r + 1}/{args.rounds}: {len(best)} canonical solutions measured")
    finally:
        pool.close()
    tasks = {str(task): {"total": round(sum(cpu), 3),
                         "inputs": {str(i): round(c, 3) for i, c in enumerate(cpu) if c >= MIN_COST_S}}
             for task, cpu in sorted(best.items()) if sum(cpu) >= MIN_COST_S}
    table = {"measured": f"{datetime.date.today()} on {platform.machine()} {platform.node()}, "
                         f"{pool.backend.sandbox}, min of {args.rounds} rounds",
             "min_cost_s": MIN_COST_S, "tasks": tasks}
    with atomic_write(REPO / "sandbox" / COSTS_FILE) as fh:
        json.dump(table, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print(f"sandbox/{COSTS_FILE}: {len(tasks)} tasks, {sum(len(t['inputs']) for t in tasks.values())} costly inputs")


if __name__ == "__main__":
    main()
