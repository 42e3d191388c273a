"""Benchmark and measurement: the CPU cost of routing one prompt, per classifier, pinned for `evaluate`.

Each trained classifier (the router's success-model candidates in models/router/ and the LoRA level
classifier in models/classifier) classifies the validation prompts one at a time on one thread, as
a lone request is served (a cost measurement, yet it reads no test prompt all the same); its CPU
seconds per prompt (process time, the least of `--rounds` passes) are written to
benchmarks/router_cpu.json with the machine and date. `evaluate` prices routing with them (params
`evaluate.router_cost`), so a router pays for its own inference; they are pinned rather than
measured by `evaluate` so that its outputs do not move with machine load.

The anchor, in the same run: the ladder's cheapest model's mean cost per call on those prompts
(data/samples). Target: routing one prompt costs under 5% of the cheapest call. Run from the repo
root after `make run` (`make router-cpu`):

    .venv/bin/python benchmarks/router_cpu.py [--rounds 3] [--prompts 100]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

TARGET_SHARE = 0.05


def cpu_per_prompt(predict, texts: list[str], rounds: int) -> float:
    """Least over `rounds` of the mean process CPU seconds of classifying one prompt at a time, each
    prompt new to the classifier (no memoised embeddings)."""
    from complexitynet.heads import Embedder

    predict(texts[:2])  # warm: lazy imports, first-call allocations
    best = float("inf")
    for _ in range(rounds):
        Embedder.forget()
        start = time.process_time()
        for text in texts:
            predict([text])
        best = min(best, (time.process_time() - start) / len(texts))
    return best


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=100, help="validation prompts classified per round")
    ap.add_argument("--out", type=Path, default=None, help="default: params' ROUTER_CPU_FILE")
    args = ap.parse_args()

    import torch

    from complexitynet.classifier import load_classifier
    from complexitynet.config import ROUTER_CPU_FILE, load_params
    from complexitynet.io import read_jsonl, write_json
    from complexitynet.paying import load_router
    from complexitynet.schemas import Label, Problem, Sample
    from complexitynet.classifier import quiet_libraries
    from complexitynet.paths import Paths

    quiet_libraries()
    torch.set_num_threads(1)
    params, paths = load_params(Path("params.yaml")), Paths()
    problems = {p.task_id: p for p in read_jsonl(paths.problems, Problem)}
    prompts = [lab.task_id for lab in read_jsonl(paths.labels, Label) if lab.split == "validation"][:args.prompts]
    if not prompts:
        sys.exit("no validation prompts in data/labels.jsonl: run `make run` first")
    spec, _ = load_router(paths.router)
    texts = [getattr(problems[t], spec.input) for t in prompts]
    measured: dict[str, float] = {}
    for name in spec.candidates:
        model = load_router(paths.router, name)[1]
        measured[name] = cpu_per_prompt(model.predict, texts, args.rounds)
        print(f"{name:>10}: {1000 * measured[name]:.2f} ms CPU per prompt")
    level = load_classifier(paths.classifier)
    level_texts = [getattr(problems[t], params.train.input) for t in prompts]
    measured["classifier"] = cpu_per_prompt(level.predict_proba, level_texts, args.rounds)
    print(f"{'classifier':>10}: {1000 * measured['classifier']:.2f} ms CPU per prompt (LoRA level classifier)")

    out = args.out or Path(ROUTER_CPU_FILE)
    write_json(out, {"measured": datetime.date.today().isoformat(), "machine": machine(), "prompts": len(texts), "split": "validation",
                     "rounds": args.rounds, "threads": 1,
                     "cpu_s": {k: float(f"{v:.3g}") for k, v in sorted(measured.items())}})
    print(f"wrote {out}")

    cheapest = params.ladder[0].name
    costs = {s.task_id: s.cost_usd for s in read_jsonl(paths.samples / f"{cheapest}.jsonl", Sample)}
    anchor = statistics.mean(costs[t] for t in prompts if t in costs)
    usd = measured[spec.candidate] * params.evaluate.router_cost.usd_per_cpu_hour / 3600
    share = usd / anchor
    print(f"chosen router `{spec.candidate}`: ${usd:.3g} per prompt; `{cheapest}`: ${anchor:.3g} per call")
    print(f"RESULT router_cost_share={share:.4f} target={TARGET_SHARE} ok={str(share < TARGET_SHARE).lower()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
