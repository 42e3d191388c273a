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
    from complexitynet.io import read_jsonl, write_json
    from complexitynet.sample import sample_recorded, summarize, write_samples
    from complexitynet.schemas import Problem

    problems = {p.task_id: p for p in read_jsonl(args.problems, Problem)}
    per_model = {
        model.name: sample_recorded(model, problems, args.sources, params.sample.chars_per_token)
        for model in params.ladder
    }
    write_samples(args.out, per_model)
    metrics = {name: summarize(samples, problems) for name, samples in per_model.items()}
    write_json(args.metrics, {"ladder": params.ladder_name, "models": metrics})
    for name, m in metrics.items():
        log.info("sample: %-28s %5d samples over %d tasks (%d missing), $%.4f%s", name, m["samples"],
                 m["tasks"], m["missing_tasks"], m["cost_usd"],
                 " (tokens estimated)" if m["tokens_estimated_share"] else "")


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
    p.add_argument("--metrics", type=Path, default=Path("metrics/sample.json"))
    p.set_defaults(func=cmd_sample)
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
