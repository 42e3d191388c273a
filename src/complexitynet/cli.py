"""`complexitynet <stage>`: the command dvc.yaml and people call.

Each stage subcommand reads params.yaml, resolves paths, and calls `run(params, paths)` of the
stage's module (complexitynet/<stage>.py, which the Prefect flow calls too); no logic lives here.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path

from complexitynet.config import Params, load_params
from complexitynet.errors import ComplexityNetError
from complexitynet.paths import Paths

log = logging.getLogger("complexitynet")


# Each stage subcommand: help, and the paths it reads or writes (options named after the `Paths`
# fields, defaulting to the DVC layout); it runs complexitynet.<stage>.run.
STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fetch": ("fetch and verify every public source", ("sources",)),
    "prepare": ("write data/problems.jsonl", ("sources", "problems")),
    "sample": ("write data/samples/<model>.jsonl for the ladder (live answers cached by request key)",
               ("problems", "sources", "samples", "sample_cache", "sample_metrics", "sample_report")),
    "execute": ("run every sample in the sandbox -> data/verdicts/<model>.jsonl",
                ("problems", "samples", "verdicts", "verdict_cache", "execute_metrics", "execute_report")),
    "label": ("write data/labels.jsonl from the verdicts", ("problems", "verdicts", "labels", "label_metrics", "label_report")),
    "train": ("train the LoRA classifier and baselines (tracked in MLflow)",
              ("problems", "labels", "classifier", "baselines", "train_metrics", "train_report")),
    "evaluate": ("routing quality vs cost on the test split; report and plots",
                 ("problems", "labels", "samples", "classifier", "baselines", "execute_report", "evaluate_metrics", "evaluate_report",
                  "plots", "report")),
}


# What each path option is (the stage reads or writes it; defaults: the DVC layout in paths.py).
PATH_HELP = {
    "sources": "directory of the verified public source files",
    "problems": "problems file (JSONL; prepare writes it)",
    "samples": "directory of one samples file per model (sample writes them)",
    "sample_cache": "cache of live answers, by request key (a rerun sends nothing twice)",
    "verdicts": "directory of one verdicts file per model (execute writes them)",
    "verdict_cache": "cache of sandbox verdicts, by content (a killed run resumes)",
    "labels": "labels file (JSONL; label writes it)",
    "classifier": "LoRA level classifier directory (train writes it)",
    "baselines": "directory of the baseline classifiers (.joblib)",
    **{f"{stage}_metrics": f"{stage}'s headline numbers (JSON; DVC metrics)"
       for stage in ("sample", "execute", "label", "train", "evaluate")},
    **{f"{stage}_report": f"{stage}'s detailed numbers (JSON)" for stage in ("sample", "execute", "label", "train",
                                                                            "evaluate")},
    "plots": "directory of the figures and plot data",
    "report": "the evaluation report (Markdown)",
}


def run_stage(params: Params, args: argparse.Namespace) -> None:
    import importlib

    paths = Paths(**{name: getattr(args, name) for name in STAGES[args.stage][1]})
    stage = importlib.import_module(f"complexitynet.{args.stage}")
    if args.stage == "execute":
        stage.run(params, paths, backend=args.backend)
    else:
        stage.run(params, paths)


def cmd_sandbox_image(params: Params, args: argparse.Namespace) -> None:
    from complexitynet.sandbox.image import build_for

    build_for(params.execute.image_build)


def cmd_serve(params: Params, args: argparse.Namespace) -> None:
    if args.explain is not None:
        from complexitynet.serve.router import explain

        print(explain(params, args.explain, args.classifier, args.ladder, args.target, args.verified, args.json))
        return
    from complexitynet.serve.workers import serve

    serve(params, args.classifier, args.ladder, args.host, args.port, args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="complexitynet", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug-level log lines")
    sub = parser.add_subparsers(dest="stage", required=True)
    defaults = Paths()
    for name, (help_text, path_names) in STAGES.items():
        p = sub.add_parser(name, help=help_text)
        for path_name in path_names:
            p.add_argument(f"--{path_name.replace('_', '-')}", type=Path, default=getattr(defaults, path_name),
                           help=f"{PATH_HELP[path_name]} (default: %(default)s)")
        p.set_defaults(func=run_stage)
    sub.choices["execute"].add_argument("--backend", choices=["auto", "docker", "bwrap"],
                                        help="override params execute.backend")
    sub.add_parser("sandbox-image", help="build the Docker sandbox image if the engine lacks it").set_defaults(
        func=cmd_sandbox_image)
    q = sub.add_parser("serve", help="serve the OpenAI-compatible router, or --explain one prompt's routing "
                       "(see docs/router.md)")
    q.add_argument("--host", help="override serve.host")
    q.add_argument("--port", type=int, help="override serve.port")
    q.add_argument("--workers", type=int, help="override serve.workers (router processes sharing the port)")
    q.add_argument("--classifier", help="classifier directory, baseline .joblib file or MLflow model URI "
                   "(default: serve.router, else serve.classifier; given, it replaces serve.router)")
    q.add_argument("--ladder", help="ladder to route over (default: serve.ladder)")
    q.add_argument("--explain", metavar="PROMPT", help="print the routing decision for one prompt, and why, "
                   "instead of serving (the prompt: what the classifier reads, the task statement)")
    q.add_argument("--target", type=float, help="with --explain: quality target (default: serve.target, else "
                   "metrics/evaluate.json)")
    q.add_argument("--json", action="store_true", help="with --explain: print the decision as JSON")
    q.add_argument("--verified", action="store_true",
                   help="with --explain: the prompt comes with tests (the router that pays starts its cascade)")
    q.set_defaults(func=cmd_serve)
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
