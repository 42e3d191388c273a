"""The pipeline's stages as plain functions: params and paths in, files out.

Two doors call them: the CLI (`complexitynet <stage>`, what dvc.yaml runs) and the Prefect flow
(flows/pipeline.py). Stages that fan out under Prefect (sample, execute) are split into a part that
plans the work, a per-unit part (one model's samples, one batch of sandbox jobs) and a part that
writes the stage's files, so both doors write the same bytes through the same code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from complexitynet.config import ModelSpec, Params
from complexitynet.errors import ConfigError, DataError

log = logging.getLogger("complexitynet")


@dataclass(frozen=True)
class Paths:
    """Every file a stage reads or writes; the defaults are the DVC layout of dvc.yaml."""

    sources: Path = Path("data/sources")
    problems: Path = Path("data/problems.jsonl")
    samples: Path = Path("data/samples")
    sample_cache: Path = Path("data/cache/samples")
    sample_metrics: Path = Path("metrics/sample.json")
    verdicts: Path = Path("data/verdicts")
    verdict_cache: Path = Path("data/cache/verdicts")
    execute_metrics: Path = Path("metrics/execute.json")
    labels: Path = Path("data/labels.jsonl")
    label_metrics: Path = Path("metrics/label.json")
    classifier: Path = Path("models/classifier")
    baselines: Path = Path("models/baselines")
    router: Path = Path("models/router")
    train_metrics: Path = Path("metrics/train.json")
    eval_metrics: Path = Path("metrics/eval.json")
    plots: Path = Path("plots")
    report: Path = Path("reports/report.md")

    def under(self, root: Path) -> Paths:
        """The same layout below `root` (absolute paths stay as they are)."""
        return Paths(**{f.name: root / getattr(self, f.name) for f in dataclasses.fields(self)})


def progress_bars() -> bool:
    """Progress bars on an interactive terminal, never in CI logs."""
    return sys.stderr.isatty() and not os.environ.get("CI")


# --- fetch, prepare ---------------------------------------------------------------------------

def fetch(params: Params, paths: Paths) -> None:
    from complexitynet.fetch import fetch as fetch_sources
    from complexitynet.fetch import mirror_dirs

    results = fetch_sources(paths.sources, mirror_dirs(params.fetch.mirrors), params.fetch.timeout_s)
    for item in results:
        log.info("%-34s %s", item.name, item.origin)
    log.info("fetch: %d files verified in %s", len(results), paths.sources)


def prepare(params: Params, paths: Paths) -> None:
    from complexitynet.io import write_jsonl
    from complexitynet.prepare import read_problems, split_assignment
    from complexitynet.prepare import prepare as prepare_problems
    from complexitynet.schemas import task_key

    dataset = params.base.dataset
    split = params.prepare.split
    covered, split_file = None, None
    if split.method == "outputs":
        covered = recorded_coverage(params, paths)
    if split.method == "file":
        from complexitynet.providers.recorded import warn_outside_imports

        split_file = Path(split.file or "")
        warn_outside_imports(split_file, "prepare")
    ids = [p.task_id for p in read_problems(dataset, paths.sources, params.prepare.templates[dataset],
                                            split.fractions, params.base.seed)]
    assigned = split_assignment(ids, split, params.base.seed, covered, split_file)  # before the sandbox runs
    pool = SandboxConfig.from_params(params).open_pool()  # reference solutions run in the sandbox too
    try:
        problems = prepare_problems(dataset, paths.sources, params.prepare.templates[dataset],
                                    split.fractions, params.base.seed, pool, params.prepare.mbppplus, progress_bars())
    finally:
        pool.close()
    if assigned is not None:
        problems = [p.model_copy(update={"split": assigned[p.task_id]}) for p in problems]
    n = write_jsonl(paths.problems, problems, key=lambda p: task_key(p.task_id))
    counts = {s: sum(p.split == s for p in problems) for s in ("fewshot", "train", "validation", "test", "unused")}
    log.info("prepare: %d %s problems -> %s %s", n, dataset, paths.problems, counts)
    hidden = Counter(p.hidden_source for p in problems)
    log.info("prepare: hidden tests from %s; %d problems with visible tests, %d hidden tests in all, %d notes",
             dict(sorted(hidden.items())), sum(p.visible.total > 0 for p in problems),
             sum(p.hidden.total for p in problems), sum(len(p.notes) for p in problems))


def recorded_coverage(params: Params, paths: Paths) -> set[str]:
    """The prompts every recorded rung of the ladder has an output for (`prepare.split: outputs`)."""
    from complexitynet.providers.recorded import RecordedProvider

    recorded = [m for m in params.ladder if not m.live]
    if not recorded:
        raise ConfigError(f"prepare.split.method 'outputs': ladder '{params.ladder_name}' has no recorded rung, so "
                          "no prompt 'has outputs' before sampling; use method seeded or file")
    covered = set.intersection(*(RecordedProvider(m, paths.sources).task_ids() for m in recorded))
    log.info("prepare: %d prompts have outputs of every recorded rung (%s)", len(covered),
             ", ".join(m.name for m in recorded))
    return covered


# --- sample -----------------------------------------------------------------------------------

def load_problems(paths: Paths) -> dict:
    from complexitynet.io import read_jsonl
    from complexitynet.schemas import Problem

    return {p.task_id: p for p in read_jsonl(paths.problems, Problem)}


def check_providers(params: Params, paths: Paths) -> None:
    """Every model of the ladder can be sampled (e.g. its API-key variable is set), before any request."""
    from complexitynet.providers import make_provider

    for model in params.ladder:
        make_provider(model, paths.sources).check()


def sample_models(params: Params, paths: Paths, models: list[ModelSpec], problems: dict,
                  budget_usd: float | None = None):
    """Samples of `models` (a LadderRun); live ones go through the engine with `budget_usd` as their cap."""
    from complexitynet.sample import sample_ladder

    cfg = params.sample if budget_usd is None else params.sample.model_copy(update={"budget_usd": budget_usd})
    return sample_ladder(models, problems, paths.sources, paths.sample_cache, cfg, progress=progress_bars(),
                         seed=params.base.seed)


def write_sample_outputs(params: Params, paths: Paths, problems: dict, runs: list) -> None:
    """data/samples/<model>.jsonl and metrics/sample.json from one or more LadderRuns."""
    from complexitynet.io import write_json
    from complexitynet.sample import summarize, write_samples

    from complexitynet.label import check_outputs

    samples = {name: rows for run in runs for name, rows in run.samples.items()}
    samples = {m.name: samples[m.name] for m in params.ladder}  # ladder order, whoever sampled what
    check_outputs(samples, problems, params.label.max_missing if params.label.allow_missing else 0)
    write_samples(paths.samples, samples)
    metrics = {name: summarize(rows, problems) for name, rows in samples.items()}
    for run in runs:
        for name, stats in run.live.items():
            metrics[name].update(run.live_metrics[name], run={
                "requests_sent": stats.sent, "cache_hits": stats.cached, "retries": stats.retries,
                "cost_usd": round(stats.spent_usd, 6)})
    write_json(paths.sample_metrics, {"ladder": params.ladder_name, "models": metrics})
    for name, m in metrics.items():
        log.info("sample: %-28s %5d samples over %d tasks (%d missing), %d+%d tokens, $%.4f%s", name,
                 m["samples"], m["tasks"], m["missing_tasks"], m["prompt_tokens"], m["completion_tokens"],
                 m["cost_usd"], " (tokens estimated)" if m["tokens_estimated_share"] else "")


def sample(params: Params, paths: Paths) -> None:
    problems = load_problems(paths)
    write_sample_outputs(params, paths, problems, [sample_models(params, paths, params.ladder, problems)])


# --- execute ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SandboxConfig:
    """What a worker needs to open sandboxes: picklable, so it travels to Prefect/Dask workers."""

    backend: str
    workers: int
    image_build: str
    limits: dict[str, int]
    timeouts: dict[str, float]

    @classmethod
    def from_params(cls, params: Params, backend: str | None = None) -> SandboxConfig:
        cfg = params.execute
        return cls(backend or cfg.backend, cfg.workers or os.cpu_count() or 1, cfg.image_build,
                   cfg.limits.model_dump(), cfg.timeouts.model_dump())

    def resolved(self) -> SandboxConfig:
        """The same with `auto` decided here, so every worker uses (and metrics name) one backend."""
        from complexitynet.sandbox.backends import resolve_backend

        return dataclasses.replace(self, backend=resolve_backend(self.backend))

    def fingerprint(self) -> str:
        """What a verdict depends on besides code and tests: the image (runner and Dockerfile), the
        trusted harness and protocol that judge, limits and timeouts."""
        import hashlib

        from complexitynet.sandbox import harness, protocol
        from complexitynet.sandbox.backends import Limits
        from complexitynet.sandbox.harness import Timeouts
        from complexitynet.sandbox.image import image_name

        judge = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (harness, protocol))).hexdigest()[:12]
        return json.dumps([image_name(), judge, dataclasses.asdict(Limits(**self.limits)),
                           dataclasses.asdict(Timeouts(**self.timeouts))])

    def open_pool(self, workers: int | None = None):
        from complexitynet.sandbox.backends import Limits, make_backend
        from complexitynet.sandbox.harness import Timeouts
        from complexitynet.sandbox.pool import SandboxPool

        limits = Limits(**self.limits)
        backend = make_backend(self.backend, limits, self.image_build)
        return SandboxPool(backend, workers or self.workers, limits, Timeouts(**self.timeouts))


def load_samples(params: Params, paths: Paths) -> dict:
    from complexitynet.io import read_jsonl
    from complexitynet.schemas import Sample

    return {m.name: read_jsonl(paths.samples / f"{m.name}.jsonl", Sample) for m in params.ladder}


def write_execute_outputs(params: Params, paths: Paths, samples: dict, verdicts: dict, backend: str) -> None:
    from complexitynet.execute import summarize
    from complexitynet.io import write_json, write_jsonl
    from complexitynet.schemas import verdict_key

    paths.verdicts.mkdir(parents=True, exist_ok=True)
    for name, rows in verdicts.items():
        write_jsonl(paths.verdicts / f"{name}.jsonl", rows, key=verdict_key)
    for stale in paths.verdicts.glob("*.jsonl"):
        if stale.stem not in verdicts:
            stale.unlink()
    metrics = {name: summarize(samples[name], verdicts[name]) for name in verdicts}
    write_json(paths.execute_metrics, {"ladder": params.ladder_name, "backend": backend, "models": metrics})
    for name, m in metrics.items():
        flags = m["source_flags"]
        log.info("execute: %-28s pass rate hidden %.3f, visible %s %s; %d pass visible but fail hidden; "
                 "agrees with the source's flags on %s/%s", name, m["hidden"]["pass_rate"] or 0,
                 m["visible"]["pass_rate"], m["hidden"]["status"], m["pass_visible_fail_hidden"], flags["agree"],
                 flags["compared"])


def execute(params: Params, paths: Paths, backend: str | None = None) -> None:
    from complexitynet import execute as ex

    sandbox = SandboxConfig.from_params(params, backend)
    samples = load_samples(params, paths)
    pool = sandbox.open_pool()
    log.info("execute: %s backend, %d workers", pool.backend.name, pool.workers)
    try:
        verdicts = ex.execute(samples, load_problems(paths), pool, sandbox.fingerprint(),
                              paths.verdict_cache if params.execute.cache else None, progress=progress_bars())
    finally:
        pool.close()
    write_execute_outputs(params, paths, samples, verdicts, pool.backend.name)


# --- label, train, evaluate -------------------------------------------------------------------

def label(params: Params, paths: Paths) -> None:
    from complexitynet.io import read_jsonl, write_json, write_jsonl
    from complexitynet.label import check_trainable, distribution, label_problems
    from complexitynet.schemas import Problem, Verdict, label_key

    ladder = [m.name for m in params.ladder]
    cfg = params.label
    problems = read_jsonl(paths.problems, Problem)
    verdicts = {m: read_jsonl(paths.verdicts / f"{m}.jsonl", Verdict) for m in ladder}
    k = cfg.k[params.base.dataset]
    labels = label_problems(problems, verdicts, ladder, k, cfg.rule, cfg.threshold, cfg.allow_missing, cfg.truth)
    check_trainable(labels, ladder, cfg.max_missing, params.train.router.folds)  # before any long work
    write_jsonl(paths.labels, labels, key=label_key)
    dist = distribution(labels, ladder)
    write_json(paths.label_metrics, {"ladder": params.ladder_name, "k": k, "rule": cfg.rule, "truth": cfg.truth,
                                     "threshold": cfg.threshold, **dist})
    for split, d in dist["splits"].items():
        log.info("label: %-10s n=%-4d %s (1-trial agrees %.2f, flagged %d)", split, d["n"], d["label"],
                 d["first_trial_agrees"], d["flagged"])


def quiet_libraries() -> None:
    """No download/progress bars from transformers and MLflow in logs."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def train(params: Params, paths: Paths) -> dict[str, Any]:
    quiet_libraries()
    from complexitynet.io import read_jsonl, write_json
    from complexitynet.label import check_trainable
    from complexitynet.schemas import Label, Problem, Verdict
    from complexitynet.tracking import provenance_tags
    from complexitynet.train import train as train_models
    from complexitynet.train import train_router

    classes = params.classes
    tags = {**provenance_tags(), "ladder": params.ladder_name, "dataset": params.base.dataset}
    problems, labels = read_jsonl(paths.problems, Problem), read_jsonl(paths.labels, Label)
    check_trainable(labels, [m.name for m in params.ladder], params.label.max_missing, params.train.router.folds)
    metrics = train_models(problems, labels, classes, params.train, params.base.seed, paths.classifier,
                           paths.baselines, tags)
    models = [m.name for m in params.ladder]
    verdicts = {m: read_jsonl(paths.verdicts / f"{m}.jsonl", Verdict) for m in models}
    metrics["router"] = train_router(problems, labels, load_samples(params, paths), verdicts, models, params.train,
                                     params.label.k[params.base.dataset], params.label.truth, params.base.seed,
                                     paths.router, tags)
    # run ids and timings differ on every run; the DVC metric keeps only what the inputs determine
    run_id = metrics["models"]["lora"].pop("run_id")
    for row in metrics["history"]:
        row.pop("train_seconds")
    write_json(paths.train_metrics, metrics)
    for name, m in metrics["models"].items():
        log.info("train: %-12s validation accuracy %.3f  macro-F1 %.3f  within-one %.3f", name, m["accuracy"],
                 m["macro_f1"], m["within_one"])
    for name, m in metrics["router"]["candidates"].items():
        log.info("train: router %-9s cross-validated margin over the hull %+.3f at %.1f%% of the largest's cost "
                 "(lambda %.3g)", name, m["routing_margin"], 100 * m["cost_vs_largest"], m["lam"])
    log.info("train: router -> %s; cascade lambda %.3g", metrics["router"]["candidate"], metrics["router"]["cascade_lam"])
    return {"run_id": run_id, **metrics}


def evaluate(params: Params, paths: Paths) -> dict[str, Any]:
    quiet_libraries()
    import joblib
    import numpy as np

    from complexitynet.classifier import load_classifier
    from complexitynet.evaluate import evaluate as evaluate_policies
    from complexitynet.evaluate import suites, test_set, write_plots
    from complexitynet.io import atomic_write, read_jsonl, write_json
    from complexitynet.report import render
    from complexitynet.schemas import Label, Problem, Verdict

    from complexitynet.config import ROUTER_CPU_FILE
    from complexitynet.evaluate import router_costs
    from complexitynet.routers import load_router

    cfg = params.evaluate
    models = [m.name for m in params.ladder]
    spec, _ = load_router(paths.router)
    router_cost = router_costs(cfg.router_cost, Path(ROUTER_CPU_FILE), [*spec.candidates, "classifier"])
    samples = load_samples(params, paths)
    problems, labels = read_jsonl(paths.problems, Problem), read_jsonl(paths.labels, Label)
    ts = test_set(problems, labels, samples, models, params.train.input)
    clf = load_classifier(paths.classifier)
    probs = {"router": clf.predict_proba(ts.texts)}
    for path in sorted(paths.baselines.glob("*.joblib")):
        probs[path.stem] = joblib.load(path).predict_proba(ts.texts)
    flags = {}
    if paths.execute_metrics.exists():
        flags = {m: {k: v for k, v in m_metrics["source_flags"].items() if k != "examples"}
                 for m, m_metrics in json.loads(paths.execute_metrics.read_text())["models"].items()}
    targets = np.round(np.arange(0.0, 1.0 + 1e-9, cfg.sweep_step), 6)
    target = cfg.target
    if target is None:  # choose the operating point on validation prompts, never on test
        from complexitynet.routing import calibrate_target

        val = test_set(problems, labels, samples, models, params.train.input, split="validation")
        target = calibrate_target(clf.predict_proba(val.texts), val.quality, val.cost, targets, cfg.quality_goal)
        log.info("evaluate: target %.2f calibrated on %d validation prompts (keep %.0f%% of the best model's pass rate)",
                 target, len(val.task_ids), 100 * cfg.quality_goal)
    from complexitynet.evaluate import reference_info
    from complexitynet.routers import targets_of

    by_id = {lab.task_id: lab for lab in labels}
    fit_ids = [lab.task_id for lab in labels if lab.split in ("train", "validation")]
    reference = reference_info(targets_of(fit_ids, by_id, models), models)
    if not reference["monotone"]:
        log.warning("evaluate: the ladder is not monotone on train + validation (%s); pass-rate goals and PGR are "
                    "relative to its best single model, %s", "; ".join(f"{a} passes more than {b}" for a, b in
                                                                     reference["inversions"]), reference["model"])
    result = evaluate_policies(ts, probs, target, targets, router_cost["usd_per_prompt"]["classifier"], cfg.bootstrap,
                               params.base.seed, reference, flags)
    result["router_cost"] = router_cost
    result["truth"] = params.label.truth
    verdicts = {m: read_jsonl(paths.verdicts / f"{m}.jsonl", Verdict) for m in models}
    result["suites"] = suites(problems, verdicts, "test", cfg.bootstrap, params.base.seed)
    result["paying"] = _paying(params, paths, problems, labels, samples, verdicts, ts.task_ids, reference["index"],
                               router_cost["usd_per_prompt"])
    if cfg.cv_folds:
        from complexitynet.train import cross_validate

        result["cross_validation"] = cross_validate(problems, labels, len(models) + 1, params.train,
                                                    params.base.seed, cfg.cv_folds)
    write_json(paths.eval_metrics, result)
    title = f"{params.base.dataset} / ladder {params.ladder_name}"
    write_plots(result, ts, probs["router"], clf.classes, paths.plots, title)
    rule = f"{params.label.rule}, k={params.label.k[params.base.dataset]}, threshold {params.label.threshold:g}"
    with atomic_write(paths.report) as fh:
        fh.write(render(result, params.base.dataset, params.ladder_name, rule))
    _log_evaluation(params, result, paths)
    router = result["policies"]["router"]
    log.info("evaluate: router pass rate %.3f at %.1f%% of always-largest's cost (largest: %.3f); APGR %.3f, AIQ %.3f",
             router["pass_rate"], 100 * router["cost_vs_largest"], result["largest"]["pass_rate"],
             result["curves"]["router"]["apgr"], result["curves"]["router"]["aiq"])
    return result


def _paying(params: Params, paths: Paths, problems: list, labels: list, samples: dict, verdicts: dict,
            task_ids: list[str], reference: int, router_usd: dict[str, float]) -> dict[str, Any]:
    """The router that pays (models/router/) on the test prompts: evaluate.paying's numbers."""
    from complexitynet.evaluate import paying
    from complexitynet.routers import load_router, recorded

    spec, _ = load_router(paths.router)
    models = [m.name for m in params.ladder]
    if spec.models != models:
        raise DataError(f"{paths.router}: fitted for ladder {spec.models}, but the ladder is {models}; "
                        "rerun `complexitynet train`")
    text = {p.task_id: getattr(p, spec.input) for p in problems}
    texts = [text[t] for t in task_ids]
    success = {name: load_router(paths.router, name)[1].predict(texts) for name in spec.candidates}
    by_id, k = {lab.task_id: lab for lab in labels}, params.label.k[params.base.dataset]
    rec = recorded(task_ids, by_id, samples, verdicts, models, k, params.label.truth)
    out = paying(spec, success, rec, params.evaluate.bootstrap, params.base.seed, reference, router_usd)
    if k > 1:  # the paper's "several trials" question, measured
        from complexitynet.evaluate import trials_study
        from complexitynet.train import training_data

        data = training_data(problems, labels, spec.input, params.train.max_train)
        ids = data["train"].task_ids + data["validation"].task_ids
        rec_tv = recorded(ids, by_id, samples, verdicts, models, k, params.label.truth)
        out["trials_study"] = trials_study(spec, data["train"].texts + data["validation"].texts, rec_tv, texts, rec,
                                           params.train.router, params.train, params.evaluate.bootstrap,
                                           params.base.seed)
    return out


def _log_evaluation(params: Params, result: dict, paths: Paths) -> None:
    """The evaluation as an MLflow run beside the training runs (same numbers as metrics/eval.json)."""
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
        for model, groups in result["suites"]["models"].items():  # visible vs hidden, own hidden tests only
            own = groups["own hidden tests"]
            numbers.update({f"{model}_{suite}_pass_rate": own[suite]["pass_rate"] for suite in ("visible", "hidden")
                            if own[suite]["pass_rate"] is not None})
        mlflow.log_metrics(numbers)
        for path in (paths.plots / "frontier.png", paths.plots / "confusion.png", paths.report, paths.eval_metrics):
            mlflow.log_artifact(str(path))
    for name, policy in result["paying"]["policies"].items():  # one run per policy: the compare view's rows
        with mlflow.start_run(run_name=f"policy-{name}", tags={**tags, "kind": "policy", "policy_kind": policy["kind"]}):
            mlflow.log_params({"policy": name, "lam": policy["lam"], "n_test": policy["n"]})
            mlflow.log_metrics({f"test_{k}{suffix}": v for k in ("pass_rate", "cost_vs_largest", "margin_over_hull",
                                                                 "margin_over_random")
                                for suffix, v in (("", policy[k]["value"]), ("_lo", policy[k]["ci95"][0]),
                                                  ("_hi", policy[k]["ci95"][1])) if v == v})


def sandbox_image(params: Params, paths: Paths) -> None:
    from complexitynet.sandbox.backends import DockerBackend, Limits

    backend = DockerBackend(Limits(), params.execute.image_build)
    log.info("sandbox image: %s", backend.image)
    backend.close()
