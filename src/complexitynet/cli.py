"""`complexitynet <stage>`: the command dvc.yaml and people call.

Each subcommand reads params.yaml (its own sections), resolves paths, and calls the stage's
plain function; all logic lives in the stage modules.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from complexitynet.config import Params, load_params
from complexitynet.errors import ComplexityNetError

log = logging.getLogger("complexitynet")


def cmd_fetch(params: Params, args: argparse.Namespace) -> None:
    from complexitynet.fetch import fetch, mirror_dirs

    results = fetch(args.out, mirror_dirs(params.fetch.mirrors), params.fetch.timeout_s)
    for item in results:
        log.info("%-34s %s", item.name, item.origin)
    log.info("fetch: %d files verified in %s", len(results), args.out)


def cmd_prepare(params: Params, args: argparse.Namespace) -> None:
    from complexitynet.io import write_jsonl
    from complexitynet.prepare import prepare
    from complexitynet.schemas import task_key

    dataset = params.base.dataset
    problems = prepare(dataset, args.sources, params.prepare.templates[dataset],
                       params.prepare.humaneval_split, params.base.seed)
    n = write_jsonl(args.out, problems, key=lambda p: task_key(p.task_id))
    counts = {s: sum(p.split == s for p in problems) for s in ("fewshot", "train", "validation", "test")}
    log.info("prepare: %d %s problems -> %s %s", n, dataset, args.out, counts)


def cmd_sample(params: Params, args: argparse.Namespace) -> None:
    import os

    from complexitynet.io import read_jsonl, write_json
    from complexitynet.sample import sample_ladder, summarize, write_samples
    from complexitynet.schemas import Problem

    cfg = params.sample
    problems = {p.task_id: p for p in read_jsonl(args.problems, Problem)}
    run = sample_ladder(params.ladder, problems, args.sources, args.cache, cfg,
                        progress=sys.stderr.isatty() and not os.environ.get("CI"), seed=params.base.seed)
    write_samples(args.out, run.samples)
    metrics = {name: summarize(samples, problems) for name, samples in run.samples.items()}
    for name, stats in run.live.items():
        metrics[name].update(run.live_metrics[name], run={
            "requests_sent": stats.sent, "cache_hits": stats.cached, "retries": stats.retries,
            "cost_usd": round(stats.spent_usd, 6)})
    write_json(args.metrics, {"ladder": params.ladder_name, "models": metrics})
    for name, m in metrics.items():
        log.info("sample: %-28s %5d samples over %d tasks (%d missing), %d+%d tokens, $%.4f%s", name,
                 m["samples"], m["tasks"], m["missing_tasks"], m["prompt_tokens"], m["completion_tokens"],
                 m["cost_usd"], " (tokens estimated)" if m["tokens_estimated_share"] else "")


def cmd_execute(params: Params, args: argparse.Namespace) -> None:
    import dataclasses
    import json
    import os

    from complexitynet.execute import execute, summarize
    from complexitynet.io import read_jsonl, write_json, write_jsonl
    from complexitynet.sandbox.backends import Limits, make_backend
    from complexitynet.sandbox.harness import Timeouts
    from complexitynet.sandbox.image import image_name
    from complexitynet.sandbox.pool import SandboxPool
    from complexitynet.schemas import Problem, Sample, verdict_key

    cfg = params.execute
    problems = {p.task_id: p for p in read_jsonl(args.problems, Problem)}
    samples = {m.name: read_jsonl(args.samples / f"{m.name}.jsonl", Sample) for m in params.ladder}
    limits = Limits(**cfg.limits.model_dump())
    timeouts = Timeouts(**cfg.timeouts.model_dump())
    fingerprint = json.dumps([image_name(), dataclasses.asdict(limits), dataclasses.asdict(timeouts)])
    backend = make_backend(args.backend or cfg.backend, limits, cfg.image_build)
    pool = SandboxPool(backend, cfg.workers or os.cpu_count() or 1, limits, timeouts)
    log.info("execute: %s backend, %d workers", backend.name, pool.workers)
    try:
        verdicts = execute(samples, problems, pool, fingerprint, args.cache if cfg.cache else None,
                           progress=sys.stderr.isatty() and not os.environ.get("CI"))
    finally:
        pool.close()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in verdicts.items():
        write_jsonl(args.out / f"{name}.jsonl", rows, key=verdict_key)
    for stale in args.out.glob("*.jsonl"):
        if stale.stem not in verdicts:
            stale.unlink()
    metrics = {name: summarize(samples[name], verdicts[name]) for name in verdicts}
    write_json(args.metrics, {"ladder": params.ladder_name, "backend": backend.name, "models": metrics})
    for name, m in metrics.items():
        flags = m["source_flags"]
        log.info("execute: %-28s pass rate %.3f %s; agrees with the source's flags on %s/%s",
                 name, m["pass_rate"] or 0, m["status"], flags["agree"], flags["compared"])


def cmd_sandbox_image(params: Params, args: argparse.Namespace) -> None:
    from complexitynet.sandbox.backends import DockerBackend, Limits

    backend = DockerBackend(Limits(), params.execute.image_build)
    log.info("sandbox image: %s", backend.image)
    backend.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="complexitynet", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("fetch", help="fetch and verify every public source")
    p.add_argument("--out", type=Path, default=Path("data/sources"))
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("prepare", help="write data/problems.jsonl")
    p.add_argument("--sources", type=Path, default=Path("data/sources"))
    p.add_argument("--out", type=Path, default=Path("data/problems.jsonl"))
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("sample", help="write data/samples/<model>.jsonl for the ladder")
    p.add_argument("--problems", type=Path, default=Path("data/problems.jsonl"))
    p.add_argument("--sources", type=Path, default=Path("data/sources"))
    p.add_argument("--out", type=Path, default=Path("data/samples"))
    p.add_argument("--cache", type=Path, default=Path("data/cache/samples"),
                   help="live answers, by request key (see README, Live models)")
    p.add_argument("--metrics", type=Path, default=Path("metrics/sample.json"))
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("execute", help="run every sample in the sandbox -> data/verdicts/<model>.jsonl")
    p.add_argument("--problems", type=Path, default=Path("data/problems.jsonl"))
    p.add_argument("--samples", type=Path, default=Path("data/samples"))
    p.add_argument("--out", type=Path, default=Path("data/verdicts"))
    p.add_argument("--cache", type=Path, default=Path("data/cache/verdicts"))
    p.add_argument("--metrics", type=Path, default=Path("metrics/execute.json"))
    p.add_argument("--backend", choices=["auto", "docker", "bwrap"], help="override params execute.backend")
    p.set_defaults(func=cmd_execute)

    p = sub.add_parser("sandbox-image", help="build the Docker sandbox image if the engine lacks it")
    p.set_defaults(func=cmd_sandbox_image)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    try:
        args.func(load_params(args.params), args)
    except ComplexityNetError as exc:
        log.error("error: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
