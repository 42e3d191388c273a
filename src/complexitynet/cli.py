"""`complexitynet <stage>`: the command dvc.yaml and people call.

Each subcommand reads params.yaml, resolves paths, and calls the stage's plain function in
stages.py (which the Prefect flow calls too); no logic lives here.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

from complexitynet.config import Params, load_params
from complexitynet.errors import ComplexityNetError
from complexitynet.stages import Paths

log = logging.getLogger("complexitynet")


# Each subcommand: its stage function, help, and the paths it reads or writes (options named after
# the `Paths` fields, defaulting to the DVC layout).
STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fetch": ("fetch and verify every public source", ("sources",)),
    "prepare": ("write data/problems.jsonl", ("sources", "problems")),
    "sample": ("write data/samples/<model>.jsonl for the ladder (live answers cached by request key)",
               ("problems", "sources", "samples", "sample_cache", "sample_metrics")),
    "execute": ("run every sample in the sandbox -> data/verdicts/<model>.jsonl",
                ("problems", "samples", "verdicts", "verdict_cache", "execute_metrics")),
    "label": ("write data/labels.jsonl from the verdicts", ("problems", "verdicts", "labels", "label_metrics")),
    "train": ("train the LoRA classifier and baselines (tracked in MLflow)",
              ("problems", "labels", "classifier", "baselines", "train_metrics")),
    "evaluate": ("routing quality vs cost on the test split; report and plots",
                 ("problems", "labels", "samples", "classifier", "baselines", "execute_metrics", "eval_metrics",
                  "plots", "report")),
    "sandbox-image": ("build the Docker sandbox image if the engine lacks it", ()),
}


def run_stage(params: Params, args: argparse.Namespace) -> None:
    from complexitynet import stages

    paths = Paths(**{name: getattr(args, name) for name in STAGES[args.stage][1]})
    func = getattr(stages, args.stage.replace("-", "_"))
    if args.stage == "execute":
        func(params, paths, backend=args.backend)
    else:
        func(params, paths)


def cmd_route(params: Params, args: argparse.Namespace) -> None:
    from complexitynet.route import (
        check_levels,
        decide,
        default_target,
        load_router_classifier,
        serving_ladder,
    )

    cfg = params.serve
    name, ladder = serving_ladder(params, args.ladder, live=False)
    if cfg.router is not None and args.classifier is None and args.target is None:  # the router that pays
        from complexitynet.route import load_paying

        paying = load_paying(cfg.router, name, ladder, cfg.torch_threads)
        decision = paying.decide(paying.predict_proba([args.prompt])[0], ladder, verified=args.verified)
        if args.json:
            print(json.dumps({**decision.as_dict(), "router": cfg.router, "ladder": name}, indent=2))
            return
        print("P(success):      " + ", ".join(f"{m} {p:.3f}" for m, p in decision.success.items()))
        print(f"lambda:          {decision.lam:g} ({'verified cascade' if args.verified else 'prompt only'}, "
              f"{cfg.router})")
        print(f"chosen model:    {decision.model} (ladder {name})")
        print(f"why:             {decision.explain(ladder)}")
        return
    clf = load_router_classifier(args.classifier or cfg.classifier, params.classes, cfg.torch_threads)
    check_levels(clf.classes, name, ladder, args.classifier or cfg.classifier)
    target, origin = (args.target, "--target") if args.target is not None else \
        default_target(cfg.target, Path(cfg.eval_metrics), cfg.fallback_target)
    decision = decide(clf.predict_proba([args.prompt])[0], ladder, clf.classes, target)
    if args.json:
        print(json.dumps({**decision.as_dict(), "target_source": origin, "ladder": name}, indent=2))
        return
    print(f"predicted level: {decision.level}")
    print("probabilities:   " + ", ".join(f"{c} {p:.3f}" for c, p in decision.probs.items()))
    print("P(success):      " + ", ".join(f"{m} {p:.3f}" for m, p in decision.success.items()))
    print(f"target:          {target:g} ({origin})")
    print(f"chosen model:    {decision.model} (ladder {name})")
    print(f"why:             {decision.explain(ladder)}")


def cmd_serve(params: Params, args: argparse.Namespace) -> None:
    from complexitynet.serve import serve

    serve(params, args.classifier, args.ladder, args.host, args.port, args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="complexitynet", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="stage", required=True)
    defaults = Paths()
    for name, (help_text, path_names) in STAGES.items():
        p = sub.add_parser(name, help=help_text)
        for path_name in path_names:
            p.add_argument(f"--{path_name.replace('_', '-')}", type=Path, default=getattr(defaults, path_name))
        p.set_defaults(func=run_stage)
    sub.choices["execute"].add_argument("--backend", choices=["auto", "docker", "bwrap"],
                                        help="override params execute.backend")
    p = sub.add_parser("route", help="print the routing decision for one prompt, and why")
    p.add_argument("prompt", help="the prompt (what the classifier reads: the task statement)")
    p.add_argument("--target", type=float, help="quality target (default: serve.target, else metrics/eval.json)")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.add_argument("--verified", action="store_true",
                   help="the prompt comes with tests: the router that pays starts its verified cascade")
    p.set_defaults(func=cmd_route)
    q = sub.add_parser("serve", help="serve the OpenAI-compatible router (see README, Router service)")
    q.add_argument("--host", help="override serve.host")
    q.add_argument("--port", type=int, help="override serve.port")
    q.add_argument("--workers", type=int, help="override serve.workers (router processes sharing the port)")
    q.set_defaults(func=cmd_serve)
    for cmd in p, q:
        cmd.add_argument("--classifier", help="classifier directory, baseline .joblib file or MLflow model URI "
                         "(default: serve.router, else serve.classifier; given, it replaces serve.router)")
        cmd.add_argument("--ladder", help="ladder to route over (default: serve.ladder)")
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
    except OSError as exc:
        if exc.errno not in _STORAGE_FIXES:
            raise
        log.error("error: %s: %s; %s (nothing half-written was left behind: rerun when fixed, finished "
                  "work is kept)", exc.filename or "a file", exc.strerror, _STORAGE_FIXES[exc.errno])
        return 2
    return 0


# Storage failures a user fixes outside the program: one line naming the path, the cause and the fix.
_STORAGE_FIXES = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some space within your disk quota",
    errno.EROFS: "the file system is read-only; run from a writable checkout",
    errno.EACCES: "make it writable for this user (or run from a checkout you own)",
    errno.EPERM: "make it writable for this user (or run from a checkout you own)",
}


if __name__ == "__main__":
    sys.exit(main())
