"""`complexitynet <stage>`: the command dvc.yaml and people call.

Each subcommand reads params.yaml (its own sections), resolves paths, and calls the stage's
plain function; all logic lives in the stage modules.
"""

from __future__ import annotations

import argparse
import json
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


def cmd_label(params: Params, args: argparse.Namespace) -> None:
    from complexitynet.io import read_jsonl, write_json, write_jsonl
    from complexitynet.label import distribution, label_problems
    from complexitynet.schemas import Problem, Verdict, label_key

    ladder = [m.name for m in params.ladder]
    cfg = params.label
    problems = read_jsonl(args.problems, Problem)
    verdicts = {m: read_jsonl(args.verdicts / f"{m}.jsonl", Verdict) for m in ladder}
    k = cfg.k[params.base.dataset]
    labels = label_problems(problems, verdicts, ladder, k, cfg.rule, cfg.threshold, cfg.allow_missing)
    write_jsonl(args.out, labels, key=label_key)
    dist = distribution(labels, ladder)
    write_json(args.metrics, {"ladder": params.ladder_name, "k": k, "rule": cfg.rule,
                              "threshold": cfg.threshold, **dist})
    for split, d in dist["splits"].items():
        log.info("label: %-10s n=%-4d %s (1-trial agrees %.2f, flagged %d)", split, d["n"], d["label"],
                 d["first_trial_agrees"], d["flagged"])


def cmd_train(params: Params, args: argparse.Namespace) -> None:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    from complexitynet.io import read_jsonl, write_json
    from complexitynet.schemas import Label, Problem
    from complexitynet.tracking import provenance_tags
    from complexitynet.train import train

    classes = [m.name for m in params.ladder] + ["none"]
    tags = {**provenance_tags(), "ladder": params.ladder_name, "dataset": params.base.dataset}
    metrics = train(read_jsonl(args.problems, Problem), read_jsonl(args.labels, Label), classes, params.train,
                    params.base.seed, args.out, args.baselines, tags)
    # run ids and timings differ on every run; the DVC metric keeps only what the inputs determine
    metrics["models"]["lora"].pop("run_id")
    for row in metrics["history"]:
        row.pop("train_seconds")
    write_json(args.metrics, metrics)
    for name, m in metrics["models"].items():
        log.info("train: %-12s validation accuracy %.3f  macro-F1 %.3f  within-one %.3f", name, m["accuracy"],
                 m["macro_f1"], m["within_one"])


def cmd_evaluate(params: Params, args: argparse.Namespace) -> None:
    import joblib
    import numpy as np

    from complexitynet.classifier import load_classifier
    from complexitynet.evaluate import evaluate, test_set, write_plots
    from complexitynet.io import atomic_write, read_jsonl, write_json
    from complexitynet.report import render
    from complexitynet.schemas import Label, Problem, Sample

    cfg = params.evaluate
    models = [m.name for m in params.ladder]
    samples = {m: read_jsonl(args.samples / f"{m}.jsonl", Sample) for m in models}
    problems, labels = read_jsonl(args.problems, Problem), read_jsonl(args.labels, Label)
    ts = test_set(problems, labels, samples, models, params.train.input)
    clf = load_classifier(args.classifier)
    probs = {"router": clf.predict_proba(ts.texts)}
    for path in sorted(args.baselines.glob("*.joblib")):
        probs[path.stem] = joblib.load(path).predict_proba(ts.texts)
    flags = {}
    if args.execute_metrics.exists():
        flags = {m: {k: v for k, v in m_metrics["source_flags"].items() if k != "examples"}
                 for m, m_metrics in json.loads(args.execute_metrics.read_text())["models"].items()}
    targets = np.round(np.arange(0.0, 1.0 + 1e-9, cfg.sweep_step), 6)
    target = cfg.target
    if target is None:  # choose the operating point on validation prompts, never on test
        from complexitynet.routing import calibrate_target

        val = test_set(problems, labels, samples, models, params.train.input, split="validation")
        target = calibrate_target(clf.predict_proba(val.texts), val.quality, val.cost, targets, cfg.quality_goal)
        log.info("evaluate: target %.2f calibrated on %d validation prompts (keep %.0f%% of the largest's pass rate)",
                 target, len(val.task_ids), 100 * cfg.quality_goal)
    result = evaluate(ts, probs, target, targets, cfg.router_cost_usd, cfg.bootstrap, params.base.seed, flags)
    if cfg.cv_folds:
        from complexitynet.train import cross_validate

        result["cross_validation"] = cross_validate(problems, labels, len(models) + 1, params.train,
                                                    params.base.seed, cfg.cv_folds)
    write_json(args.metrics, result)
    title = f"{params.base.dataset} / ladder {params.ladder_name}"
    write_plots(result, ts, probs["router"], clf.classes, args.plots, title)
    rule = f"{params.label.rule}, k={params.label.k[params.base.dataset]}, threshold {params.label.threshold:g}"
    with atomic_write(args.report) as fh:
        fh.write(render(result, params.base.dataset, params.ladder_name, rule))
    _log_evaluation(params, result, args)
    router = result["policies"]["router"]
    log.info("evaluate: router pass rate %.3f at %.1f%% of always-largest's cost (largest: %.3f); APGR %.3f, AIQ %.3f",
             router["pass_rate"], 100 * router["cost_vs_largest"], result["largest"]["pass_rate"],
             result["curves"]["router"]["apgr"], result["curves"]["router"]["aiq"])


def _log_evaluation(params: Params, result: dict, args: argparse.Namespace) -> None:
    """The evaluation as an MLflow run beside the training runs (same numbers as metrics/eval.json)."""
    import os

    import mlflow

    from complexitynet import tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    tracking.setup(params.train.experiment)
    tags = {**tracking.provenance_tags(stages=("prepare", "label", "train")), "kind": "evaluate",
            "ladder": params.ladder_name, "dataset": params.base.dataset}
    with mlflow.start_run(run_name="evaluate", tags=tags):
        mlflow.log_params({"target": result["target"], "n_test": result["n_test"]})
        numbers = {f"test_{name}_{k}": s[k]["value"] for name, s in result["classifier"].items() for k in s}
        numbers.update({f"{name}_{k}".replace(":", "_"): v for name, p in result["policies"].items()
                        for k, v in p.items() if v == v})
        numbers.update({f"{name}_{k}": c[k] for name, c in result["curves"].items() if isinstance(c, dict)
                        for k in ("apgr", "cpt50", "cpt80", "aiq") if c[k] == c[k]})
        mlflow.log_metrics(numbers)
        for path in (args.plots / "frontier.png", args.plots / "confusion.png", args.report, args.metrics):
            mlflow.log_artifact(str(path))


def cmd_sandbox_image(params: Params, args: argparse.Namespace) -> None:
    from complexitynet.sandbox.backends import DockerBackend, Limits

    backend = DockerBackend(Limits(), params.execute.image_build)
    log.info("sandbox image: %s", backend.image)
    backend.close()


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
    clf = load_router_classifier(args.classifier or cfg.classifier, cfg.torch_threads)
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

    serve(params, args.classifier, args.ladder, args.host, args.port)


PROBLEMS, LABELS, BASELINES = "data/problems.jsonl", "data/labels.jsonl", "models/baselines"


def stage(sub, name: str, func, help_text: str, **paths: str) -> argparse.ArgumentParser:
    """A subcommand with `--<path> PATH` options defaulting to the DVC layout (dvc.yaml)."""
    p = sub.add_parser(name, help=help_text)
    for option, default in paths.items():
        p.add_argument(f"--{option.replace('_', '-')}", type=Path, default=Path(default))
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="complexitynet", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="stage", required=True)

    stage(sub, "fetch", cmd_fetch, "fetch and verify every public source", out="data/sources")
    stage(sub, "prepare", cmd_prepare, "write data/problems.jsonl", sources="data/sources",
          out="data/problems.jsonl")
    p = stage(sub, "sample", cmd_sample, "write data/samples/<model>.jsonl for the ladder", problems=PROBLEMS,
              sources="data/sources", out="data/samples", metrics="metrics/sample.json")
    p.add_argument("--cache", type=Path, default=Path("data/cache/samples"),
                   help="live answers, by request key (see README, Live models)")
    p = stage(sub, "execute", cmd_execute, "run every sample in the sandbox -> data/verdicts/<model>.jsonl",
              problems=PROBLEMS, samples="data/samples", out="data/verdicts", cache="data/cache/verdicts",
              metrics="metrics/execute.json")
    p.add_argument("--backend", choices=["auto", "docker", "bwrap"], help="override params execute.backend")
    stage(sub, "label", cmd_label, "write data/labels.jsonl from the verdicts", problems=PROBLEMS,
          verdicts="data/verdicts", out="data/labels.jsonl", metrics="metrics/label.json")
    stage(sub, "train", cmd_train, "train the LoRA classifier and baselines (tracked in MLflow)", problems=PROBLEMS,
          labels=LABELS, out="models/classifier", baselines=BASELINES, metrics="metrics/train.json")
    stage(sub, "evaluate", cmd_evaluate, "routing quality vs cost on the test split; report and plots",
          problems=PROBLEMS, labels=LABELS, samples="data/samples", classifier="models/classifier",
          baselines=BASELINES, execute_metrics="metrics/execute.json", metrics="metrics/eval.json",
          plots="plots", report="reports/report.md")
    p = stage(sub, "route", cmd_route, "print the routing decision for one prompt, and why")
    p.add_argument("prompt", help="the prompt (what the classifier reads: the task statement)")
    p.add_argument("--target", type=float, help="quality target (default: serve.target, else metrics/eval.json)")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p = stage(sub, "serve", cmd_serve, "serve the OpenAI-compatible router (see README, Router service)")
    p.add_argument("--host", help="override serve.host")
    p.add_argument("--port", type=int, help="override serve.port")
    for q in sub.choices["route"], p:
        q.add_argument("--classifier", help="directory or MLflow model URI (default: serve.classifier)")
        q.add_argument("--ladder", help="ladder to route over (default: serve.ladder)")
    stage(sub, "sandbox-image", cmd_sandbox_image, "build the Docker sandbox image if the engine lacks it")
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
