"""evaluate: routing quality against cost on the test split, with our sandbox verdicts as truth.

Produces metrics/evaluate.json, plots/frontier.png, plots/confusion.png and reports/report.md, and logs
the same numbers to MLflow. Everything is computed on the test split only; see scores.py for the
decision rule and the metric definitions.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from complexitynet import policy as P
from complexitynet import scores as R
from complexitynet.classifier import load_baseline, quiet_libraries
from complexitynet.config import RouterCostParams
from complexitynet.errors import DataError
from complexitynet.paths import load_samples
from complexitynet.paying import RouterSpec
from complexitynet.schemas import Label, Problem, Sample, Verdict

if TYPE_CHECKING:
    from complexitynet.config import Params
    from complexitynet.paths import Paths

log = logging.getLogger("complexitynet")

PAPER = {"label_accuracy_3class": 0.79, "compute_saving": 0.90, "code_accuracy": 0.867}


@dataclass
class TestSet:
    task_ids: list[str]
    texts: list[str]
    labels: np.ndarray  # k-trial label per prompt
    labels_first: np.ndarray  # 1-trial label
    quality: np.ndarray  # [prompt, model] pass rate
    cost: np.ndarray  # [prompt, model] USD per call
    models: list[str]


def test_set(problems: list[Problem], labels: list[Label], samples: dict[str, list[Sample]], models: list[str],
             input_field: str, split: str = "test") -> TestSet:
    """A split with its quality and cost matrices (a missing sample costs the model's median)."""
    by_id = {p.task_id: p for p in problems}
    rows = [lab for lab in labels if lab.split == split]
    if not rows:
        raise DataError(f"data/labels.jsonl has no {split} prompts; nothing to evaluate")
    cost = np.zeros((len(rows), len(models)))
    for j, model in enumerate(models):
        per_task: dict[str, list[float]] = {}
        for s in samples[model]:
            per_task.setdefault(s.task_id, []).append(s.cost_usd)
        median = statistics.median(c for costs in per_task.values() for c in costs)
        for i, lab in enumerate(rows):
            costs = per_task.get(lab.task_id)
            cost[i, j] = sum(costs) / len(costs) if costs else median
    quality = np.array([[lab.pass_rate.get(m) or 0.0 for m in models] for lab in rows])
    return TestSet([lab.task_id for lab in rows], [getattr(by_id[lab.task_id], input_field) for lab in rows],
                   np.array([lab.label for lab in rows]), np.array([lab.label_first_trial for lab in rows]),
                   quality, cost, models)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over all classes (a class absent from both counts 0, as sklearn does)."""
    matrix = np.zeros((n_classes, n_classes))
    np.add.at(matrix, (y, pred), 1)
    tp = np.diag(matrix)
    denom = matrix.sum(axis=0) + matrix.sum(axis=1)
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def classifier_scores(y: np.ndarray, probs: np.ndarray, rounds: int, seed: int) -> dict[str, Any]:
    """Exact, within-one and macro-F1 with 95% bootstrap intervals."""
    pred = probs.argmax(axis=1)
    fns = {
        "accuracy": lambda idx: float((pred[idx] == y[idx]).mean()),
        "within_one": lambda idx: float((np.abs(pred[idx] - y[idx]) <= 1).mean()),
        "macro_f1": lambda idx: macro_f1(y[idx], pred[idx], probs.shape[1]),
    }
    everyone = np.arange(len(y))
    return {name: {"value": fn(everyone), "ci95": list(R.bootstrap_ci(fn, len(y), rounds, seed))}
            for name, fn in fns.items()}


def routing_errors(choices: np.ndarray, ts: TestSet) -> dict[str, float]:
    """Under-routing: sent below the cheapest model that solves it (quality lost). Over-routing: sent
    above the oracle's choice (money wasted; for unsolvable prompts, anything above the cheapest)."""
    oracle = R.oracle_choices(ts.quality)
    solvable = ts.quality.max(axis=1) > 0
    under = solvable & (ts.quality[np.arange(len(choices)), choices] < ts.quality.max(axis=1))
    return {"under_routing": float(under.mean()), "over_routing": float((choices > oracle).mean())}


def policies(ts: TestSet, probs: dict[str, np.ndarray], target: float, overhead: float,
             reference: int) -> dict[str, dict[str, Any]]:
    """Pass rate and cost of every policy; cost and saving relative to always-largest, PGR between
    always-cheapest and the `reference` rung (the best single model on train + validation)."""
    n, top = len(ts.task_ids), len(ts.models) - 1
    points: dict[str, R.Point] = {f"always:{m}": R.outcome(R.fixed(i, n), ts.quality, ts.cost)
                                  for i, m in enumerate(ts.models)}
    points["oracle"] = R.outcome(R.oracle_choices(ts.quality), ts.quality, ts.cost)
    router_choices = R.choose(probs["router"], target)
    points["random_mix"] = R.random_mix(router_choices, ts.quality, ts.cost)
    for name, p in probs.items():
        points[name] = R.outcome(R.choose(p, target), ts.quality, ts.cost, overhead if name == "router" else 0.0)
    weak, strong = points[f"always:{ts.models[0]}"], points[f"always:{ts.models[reference]}"]
    largest = points[f"always:{ts.models[top]}"].cost
    return {name: {"pass_rate": p.quality, "cost_usd": p.cost, "cost_vs_largest": p.cost / largest,
                   "saving_vs_largest": 1 - p.cost / largest, "pgr": R.pgr(p.quality, weak.quality, strong.quality)}
            for name, p in points.items()}


def curves(ts: TestSet, probs: dict[str, np.ndarray], targets: np.ndarray, overhead: float,
           reference: int) -> dict[str, Any]:
    """Target sweeps, with APGR, CPT(50%), CPT(80%) (PGR up to the `reference` rung) and AIQ (over the
    ladder's cost range) per classifier, and the ladder's own AIQ."""
    n, top = len(ts.task_ids), len(ts.models) - 1
    ladder = [R.outcome(R.fixed(i, n), ts.quality, ts.cost) for i in range(top + 1)]
    weak, strong, largest = ladder[0], ladder[reference], ladder[top]
    out: dict[str, Any] = {"ladder_aiq": R.aiq(ladder, weak.cost, largest.cost)}
    for name, p in probs.items():
        swept = R.sweep(p, ts.quality, ts.cost, targets, overhead if name == "router" else 0.0)
        pts = [pt for _, pt in swept]
        out[name] = {
            "apgr": R.apgr(pts, weak, strong),
            "cpt50": R.cpt(pts, weak, strong, 0.5),
            "cpt80": R.cpt(pts, weak, strong, 0.8),
            "aiq": R.aiq(pts + ladder, weak.cost, largest.cost),
            "curve": [{"target": t, "pass_rate": pt.quality, "cost_usd": pt.cost} for t, pt in swept],
        }
    return out


def paper_way(ts: TestSet, probs: np.ndarray) -> dict[str, Any]:
    """The paper's headline computed its way: the two top levels (largest model, none) merged into
    one class, routing by the argmax level (none -> the largest), compute as our measured cost."""
    top = len(ts.models) - 1
    merge = lambda a: np.minimum(a, top)  # noqa: E731
    pred = probs.argmax(axis=1)
    routed = R.outcome(merge(pred), ts.quality, ts.cost)
    largest = R.outcome(R.fixed(top, len(pred)), ts.quality, ts.cost)
    return {"label_accuracy_3class": float((merge(pred) == merge(ts.labels)).mean()),
            "code_accuracy": routed.quality, "compute_saving": 1 - routed.cost / largest.cost,
            "paper": PAPER}


def trials_question(ts: TestSet, probs: np.ndarray) -> dict[str, Any]:
    """1-trial vs k-trial labels: agreement, classifier accuracy against each, and the outcome of
    routing every prompt to the model its label names (judged by the k-trial pass rates)."""
    top = len(ts.models) - 1
    pred = probs.argmax(axis=1)
    follow = {name: R.outcome(np.minimum(lab, top), ts.quality, ts.cost)
              for name, lab in (("k_trial", ts.labels), ("first_trial", ts.labels_first))}
    return {"agreement": float((ts.labels == ts.labels_first).mean()),
            "classifier_accuracy_vs_k_trial": float((pred == ts.labels).mean()),
            "classifier_accuracy_vs_first_trial": float((pred == ts.labels_first).mean()),
            "route_by_label": {k: {"pass_rate": v.quality, "cost_usd": v.cost} for k, v in follow.items()}}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The few numbers of metrics/evaluate.json (DVC compares them across commits and experiments;
    `complexitynet serve` reads `target`): the chosen router that pays, the verified cascade, each
    level classifier's accuracy; the detail is reports/evaluate.json and the report."""
    pay = result["paying"]["policies"]
    chosen = result["paying"]["chosen"]

    def policy(p: dict[str, Any]) -> dict[str, float]:
        return {k: p[k]["value"] for k in ("pass_rate", "cost_vs_largest", "margin_over_hull")}

    return {"n_test": result["n_test"], "target": result["target"], "reference": result["reference"]["model"],
            "router": {"candidate": chosen, **policy(pay[f"router:{chosen}"])}, "cascade": policy(pay["cascade"]),
            "classifiers": {name: s["accuracy"]["value"] for name, s in result["classifier"].items()}}


def router_costs(cfg: RouterCostParams, table: Path, names: list[str]) -> dict[str, Any]:
    """What routing one prompt costs with each classifier in `names` (success-model candidates, and
    `classifier` for the LoRA level classifier): CPU seconds per prompt x `cfg.usd_per_cpu_hour`.
    The seconds come from `cfg.cpu_s` (one number, or per classifier) or, when it is None, from the
    pinned measurement `table` (benchmarks/router_cpu.py); `lora` success heads share the level
    classifier's encoder and adapter, so they take its measurement when they have none of their own."""
    if cfg.cpu_s is None:
        try:
            raw = json.loads(table.read_text())
            cpu, source = {k: float(v) for k, v in raw["cpu_s"].items()}, f"{table} ({raw['machine']}, {raw['measured']})"
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{table}: not a router CPU measurement ({exc!r}); restore it from git, re-measure it "
                            "with `make router-cpu`, or set evaluate.router_cost.cpu_s") from None
    elif isinstance(cfg.cpu_s, dict):
        cpu, source = dict(cfg.cpu_s), "params (evaluate.router_cost.cpu_s)"
    else:
        cpu, source = {n: cfg.cpu_s for n in names}, "params (evaluate.router_cost.cpu_s)"
    if "lora" not in cpu and "classifier" in cpu:
        cpu["lora"] = cpu["classifier"]
    missing = [n for n in names if n not in cpu]
    if missing:
        raise DataError(f"{source}: no CPU seconds per prompt for {missing}; re-measure with `make router-cpu` "
                        "(after `make run`) or give them in evaluate.router_cost.cpu_s")
    return {"source": source, "usd_per_cpu_hour": cfg.usd_per_cpu_hour, "cpu_s": {n: cpu[n] for n in names},
            "usd_per_prompt": {n: cpu[n] * cfg.usd_per_cpu_hour / 3600 for n in names}}


def reference_info(fit_quality: np.ndarray, models: list[str]) -> dict[str, Any]:
    """The ladder's best single model on train + validation (`policy.reference_rung`), each rung's pass
    rate there, and whether the ladder is monotone (no rung passes less than a cheaper one)."""
    means = fit_quality.mean(axis=0)
    ref = P.reference_rung(fit_quality)
    inversions = [[models[i], models[j]] for i in range(len(models)) for j in range(i + 1, len(models))
                  if means[j] < means[i] - 1e-12]
    return {"model": models[ref], "index": ref, "n": len(fit_quality), "monotone": not inversions,
            "inversions": inversions, "pass_rate": {m: float(q) for m, q in zip(models, means)}}


def evaluate(ts: TestSet, probs: dict[str, np.ndarray], target: float, targets: np.ndarray, overhead: float,
             rounds: int, seed: int, reference: dict[str, Any], source_flags: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Every number of the evaluation (see the module docstring and docs/evaluation.md);
    `reference` is `reference_info` of the train + validation prompts."""
    router = probs["router"]
    choices = R.choose(router, target)
    top = len(ts.models) - 1
    strong = R.outcome(R.fixed(top, len(choices)), ts.quality, ts.cost)
    rows = np.arange(len(choices))

    def router_pass(idx):
        return float(ts.quality[idx, choices[idx]].mean())

    def router_saving(idx):
        return 1 - (ts.cost[idx, choices[idx]].sum() + overhead * len(idx)) / ts.cost[idx, top].sum()

    return {
        "n_test": len(ts.task_ids),
        "models": ts.models,
        "target": target,
        "classifier": {name: classifier_scores(ts.labels, p, rounds, seed) for name, p in probs.items()},
        "routing_errors": routing_errors(choices, ts),
        "reference": reference,
        "policies": policies(ts, probs, target, overhead, reference["index"]),
        "router_ci95": {"pass_rate": list(R.bootstrap_ci(router_pass, len(rows), rounds, seed)),
                        "saving_vs_largest": list(R.bootstrap_ci(router_saving, len(rows), rounds, seed))},
        "router_mix": {m: int((choices == i).sum()) for i, m in enumerate(ts.models)},
        "largest": {"pass_rate": strong.quality, "cost_usd": strong.cost},
        "curves": curves(ts, probs, targets, overhead, reference["index"]),
        "paper_way": paper_way(ts, router),
        "trials": trials_question(ts, router),
        "source_flags": source_flags or {},
    }


def paying(spec: RouterSpec, success: dict[str, np.ndarray], rec: P.Recorded, rounds: int, seed: int,
           reference: int, router_usd: dict[str, float]) -> dict[str, Any]:
    """The router that pays, on the test split: every success-model candidate at its cross-validated
    lambda (prompt-only routing), the verified cascade (the chosen candidate, its lambda and gate)
    and the plain cascade (cheapest first, escalate on every visible failure), each with 95% paired
    bootstrap intervals of its margin over the ladder's hull and over random routing with its mix;
    and each one's curve as lambda sweeps (descriptive: nothing is chosen on it). Every policy that
    runs a success model pays `router_usd[candidate]` per prompt (`router_costs`)."""
    quality, cost = rec.quality, rec.cost
    largest = cost[:, -1].sum()
    models = quality.shape[1]
    out: dict[str, Any] = {"chosen": spec.candidate, "unit_cost": spec.unit_cost, "policies": {}, "curves": {}}
    for name, probs in success.items():
        def routed(lam: float, probs=probs) -> np.ndarray:
            return P.choose(probs, spec.unit_cost, replace(spec.rule, lam=lam))

        lam = spec.candidates[name]["lam"]
        choices = routed(lam)
        shares = P.shares(choices, models)
        q_pp, c_pp = P.per_prompt(choices, quality, cost)
        out["policies"][f"router:{name}"] = {"kind": "prompt-only", "lam": lam, "mix": shares.tolist(),
                                             "refused": int((choices < 0).sum()),
                                             **P.judge(q_pp, c_pp + router_usd[name], shares, quality, cost, rounds,
                                                       seed)}
        out["curves"][f"router:{name}"] = [_point(q, c + router_usd[name], largest)
                                           for q, c in (P.per_prompt(routed(x), quality, cost) for x in P.lambda_grid())]
    chosen = success[spec.candidate]
    overhead = router_usd[spec.candidate]
    cascades = {"cascade": (chosen, replace(spec.rule, lam=spec.cascade_lam), spec.gate, overhead),
                "cascade:every_rung": (np.ones_like(chosen), P.Rule(0.0), P.Gate(), 0.0)}  # no classifier
    for name, (probs, rule, gate, usd) in cascades.items():
        run = P.cascade(probs, rec, rule, gate, spec.unit_cost)
        shares = run.answered_by.mean(axis=0)
        out["policies"][name] = {"kind": "verified cascade", "lam": rule.lam, "mix": shares.tolist(),
                                 "calls_per_prompt": float(run.calls.mean()),
                                 "sandbox_seconds": float(run.seconds.sum()),
                                 **P.judge(run.quality, run.cost + usd, shares, quality, cost, rounds, seed)}
    out["curves"]["cascade"] = [
        _point((r := P.cascade(chosen, rec, replace(spec.rule, lam=x), spec.gate, spec.unit_cost)).quality,
               r.cost + overhead, largest) for x in P.lambda_grid()]
    out["curve_scores"] = {name: _curve_scores(curve, quality, cost, reference) for name, curve in out["curves"].items()}
    out["curve_scores"]["ladder"] = _curve_scores([_point(quality[:, j], cost[:, j], largest) for j in range(models)],
                                                  quality, cost, reference)
    return out


def _curve_scores(curve: list[tuple[float, float]], quality: np.ndarray, cost: np.ndarray,
                  reference: int) -> dict[str, float]:
    """AIQ and APGR of a lambda sweep's own hull: unlike `curves`, the ladder's points are not added,
    so a router can score below the ladder (the ladder's own values are the reference)."""
    largest = cost[:, -1].sum()
    points = [R.Point(q, c * largest) for c, q in curve]
    ladder = [R.Point(float(quality[:, j].mean()), float(cost[:, j].sum())) for j in range(quality.shape[1])]
    weak, strong = ladder[0], ladder[reference]
    xs, ys = R.pgr_curve(points, weak, strong)
    grid = np.linspace(0.0, 1.0, 2001)
    return {"aiq": R.aiq(points, weak.cost, ladder[-1].cost),
            "apgr": float(np.trapezoid(np.nan_to_num(R.hull(xs, ys)(grid), nan=0.0), grid))}


def trials_study(spec: RouterSpec, tv_texts: list[str], rec_tv: P.Recorded, te_texts: list[str], rec_te: P.Recorded,
                 router_cfg: Any, train_cfg: Any, rounds: int, seed: int) -> dict[str, Any]:
    """With K > 1 recorded trials per (prompt, model): labels and success models from the first k
    trials, k = 1..K. Per k: how often the k-trial label equals the K-trial label (all prompts), and
    the chosen candidate refitted on k-trial pass rates (k-fold CV on train + validation, lambda
    chosen out of fold), routing the test prompts judged against all K trials."""
    from complexitynet.paying import select_router

    trials = rec_tv.truth.shape[2]
    cfg = router_cfg.model_copy(update={"candidates": [spec.candidate]})
    final = np.concatenate([rec_tv.labels(), rec_te.labels()])
    rows = []
    for k in range(1, trials + 1):
        log.info("evaluate: trials study, k = %d of %d (refit `%s` by cross-validation)", k, trials, spec.candidate)
        sub = rec_tv.first(k)
        labels = np.concatenate([sub.labels(), rec_te.first(k).labels()])
        spec_k, fitted = select_router(tv_texts, sub.quality, sub, spec.models, cfg, train_cfg, seed)
        choices = P.choose(fitted[spec.candidate].predict(te_texts), spec_k.unit_cost, spec_k.rule)
        shares = P.shares(choices, len(spec.models))
        q_pp, c_pp = P.per_prompt(choices, rec_te.quality, rec_te.cost)
        rows.append({"k": k, "label_agreement": float((labels == final).mean()), "lam": spec_k.rule.lam,
                     "cv_margin": spec_k.candidates[spec.candidate]["routing_margin"],
                     **P.judge(q_pp, c_pp, shares, rec_te.quality, rec_te.cost, rounds, seed)})
    return {"trials": trials, "candidate": spec.candidate, "prompts": len(final), "rows": rows}


def _point(q_pp: np.ndarray, c_pp: np.ndarray, largest: float) -> tuple[float, float]:
    """(cost relative to always-largest, pass rate)."""
    return float(c_pp.sum() / largest), float(q_pp.mean())


def suites(problems: list[Problem], verdicts: dict[str, list[Verdict]], split: str, rounds: int, seed: int,
           examples: int = 5) -> dict[str, Any]:
    """Each model's pass rate on visible and on hidden tests over one split's samples, with 95%
    bootstrap intervals (resampling prompts), for the problems whose hidden tests are their own
    (MBPP+, HumanEval's check) and for those judged on the visible tests alone; and the samples
    that pass the visible tests but fail the hidden ones."""
    by_id = {p.task_id: p for p in problems if p.split == split}
    groups = {"own hidden tests": lambda p: p.hidden_source != "visible",
              "hidden = visible": lambda p: p.hidden_source == "visible"}
    out: dict[str, Any] = {"split": split, "models": {}}
    for model, rows in verdicts.items():
        mine = [v for v in rows if v.task_id in by_id]
        out["models"][model] = {name: _suite_rates([v for v in mine if keep(by_id[v.task_id])], rounds, seed)
                                for name, keep in groups.items()}
        fooled = [v for v in mine if v.visible is not None and v.visible.status == "pass" and v.hidden.status != "pass"]
        out["models"][model]["pass_visible_fail_hidden"] = {
            "n": len(fooled), "of": sum(v.visible is not None and v.visible.status == "pass" for v in mine),
            "examples": [f"{v.task_id}#{v.trial}: {v.hidden.detail}" for v in fooled[:examples]]}
    return out


def _suite_rates(rows: list[Verdict], rounds: int, seed: int) -> dict[str, Any]:
    """Visible and hidden pass rates of some samples, with intervals over their prompts."""
    tasks = sorted({v.task_id for v in rows})
    index = {t: i for i, t in enumerate(tasks)}
    out: dict[str, Any] = {"prompts": len(tasks), "samples": len(rows)}
    for suite in ("visible", "hidden"):
        judged = [(index[v.task_id], r.status == "pass") for v in rows if (r := v.result(suite)) is not None]
        if not judged:
            out[suite] = {"n": 0, "pass_rate": None, "ci95": [None, None]}
            continue
        passes, counts = np.zeros(len(tasks)), np.zeros(len(tasks))
        for i, ok in judged:
            passes[i] += ok
            counts[i] += 1

        def rate(idx: np.ndarray) -> float:
            return float(passes[idx].sum() / counts[idx].sum()) if counts[idx].sum() else float("nan")

        out[suite] = {"n": len(judged), "pass_rate": rate(np.arange(len(tasks))),
                      "ci95": list(R.bootstrap_ci(rate, len(tasks), rounds, seed))}
    return out


# --- the stage's edge: params and paths in, files out (dvc.yaml and the Prefect flow call it) ---

def run(params: Params, paths: Paths) -> dict[str, Any]:
    quiet_libraries()
    import numpy as np

    from complexitynet.classifier import load_classifier
    from complexitynet.config import ROUTER_CPU_FILE
    from complexitynet.io import atomic_write, read_jsonl, write_metrics
    from complexitynet.paying import load_router
    from complexitynet.plots import write_evaluation_plots
    from complexitynet.report import render
    from complexitynet.schemas import Label, Problem, Verdict

    cfg = params.evaluate
    models = [m.name for m in params.ladder]
    spec, _ = load_router(paths.router)
    router_cost = router_costs(cfg.router_cost, Path(ROUTER_CPU_FILE), [*spec.candidates, "classifier"])
    samples = load_samples(params, paths)
    problems, labels = read_jsonl(paths.problems, Problem), read_jsonl(paths.labels, Label)
    ts = test_set(problems, labels, samples, models, params.train.input)
    log.info("evaluate: %d test prompts; classifying them with the LoRA classifier and the baselines",
             len(ts.task_ids))
    clf = load_classifier(paths.classifier)
    probs = {"router": clf.predict_proba(ts.texts)}
    for path in sorted(paths.baselines.glob("*.joblib")):
        probs[path.stem] = load_baseline(path, params.classes).predict_proba(ts.texts)
    flags = {}
    if paths.execute_report.exists():
        flags = {m: {k: v for k, v in m_metrics["source_flags"].items() if k != "examples"}
                 for m, m_metrics in json.loads(paths.execute_report.read_text())["models"].items()}
    targets = np.round(np.arange(0.0, 1.0 + 1e-9, cfg.sweep_step), 6)
    target = cfg.target
    if target is None:  # choose the operating point on validation prompts, never on test
        from complexitynet.scores import calibrate_target

        val = test_set(problems, labels, samples, models, params.train.input, split="validation")
        target = calibrate_target(clf.predict_proba(val.texts), val.quality, val.cost, targets, cfg.quality_goal)
        log.info("evaluate: target %.2f calibrated on %d validation prompts (keep %.0f%% of the best model's pass rate)",
                 target, len(val.task_ids), 100 * cfg.quality_goal)
    from complexitynet.paying import targets_of

    by_id = {lab.task_id: lab for lab in labels}
    fit_ids = [lab.task_id for lab in labels if lab.split in ("train", "validation")]
    reference = reference_info(targets_of(fit_ids, by_id, models), models)
    if not reference["monotone"]:
        log.warning("evaluate: the ladder is not monotone on train + validation (%s); pass-rate goals and PGR are "
                    "relative to its best single model, %s", "; ".join(f"{a} passes more than {b}" for a, b in
                                                                     reference["inversions"]), reference["model"])
    log.info("evaluate: policies, target sweeps and %d bootstrap resamples", cfg.bootstrap)
    result = evaluate(ts, probs, target, targets, router_cost["usd_per_prompt"]["classifier"], cfg.bootstrap,
                      params.base.seed, reference, flags)
    result["router_cost"] = router_cost
    result["truth"] = params.label.truth
    verdicts = {m: read_jsonl(paths.verdicts / f"{m}.jsonl", Verdict) for m in models}
    result["suites"] = suites(problems, verdicts, "test", cfg.bootstrap, params.base.seed)
    log.info("evaluate: the router that pays: %d success models, the cascades, their lambda sweeps",
             len(spec.candidates))
    result["paying"] = _paying(params, paths, problems, labels, samples, verdicts, ts.task_ids, reference["index"],
                               router_cost["usd_per_prompt"])
    if cfg.cv_folds:
        from complexitynet.train import cross_validate

        result["cross_validation"] = cross_validate(problems, labels, len(models) + 1, params.train,
                                                    params.base.seed, cfg.cv_folds)
    write_metrics(paths.evaluate_report, paths.evaluate_metrics, result, headline(result))
    title = f"{params.base.dataset} / ladder {params.ladder_name}"
    write_evaluation_plots(result, ts.labels, probs["router"], clf.classes, paths.plots, title)
    rule = f"{params.label.rule}, k={params.label.k[params.base.dataset]}, threshold {params.label.threshold:g}"
    with atomic_write(paths.report) as fh:
        fh.write(render(result, params.base.dataset, params.ladder_name, rule))
    _log_evaluation(params, result, paths, ts, probs)
    router = result["policies"]["router"]
    log.info("evaluate: router pass rate %.3f at %.1f%% of always-largest's cost (largest: %.3f); APGR %.3f, AIQ %.3f",
             router["pass_rate"], 100 * router["cost_vs_largest"], result["largest"]["pass_rate"],
             result["curves"]["router"]["apgr"], result["curves"]["router"]["aiq"])
    return result


def _paying(params: Params, paths: Paths, problems: list, labels: list, samples: dict, verdicts: dict,
            task_ids: list[str], reference: int, router_usd: dict[str, float]) -> dict[str, Any]:
    """The router that pays (models/router/) on the test prompts: evaluate.paying's numbers."""
    from complexitynet.paying import load_router, recorded

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
        from complexitynet.train import training_data

        data = training_data(problems, labels, spec.input, params.train.max_train)
        ids = data["train"].task_ids + data["validation"].task_ids
        rec_tv = recorded(ids, by_id, samples, verdicts, models, k, params.label.truth)
        out["trials_study"] = trials_study(spec, data["train"].texts + data["validation"].texts, rec_tv, texts, rec,
                                           params.train.router, params.train, params.evaluate.bootstrap,
                                           params.base.seed)
    return out


def _log_evaluation(params: Params, result: dict, paths: Paths, ts: TestSet, probs: dict[str, np.ndarray]) -> None:
    """The test numbers in MLflow, named as `train` names the validation ones (val_ -> test_): each level
    classifier's (test_accuracy, test_macro_f1, test_within_one with 95% intervals `_lo`/`_hi`, and its
    routing at the target: test_pass_rate, test_cost_vs_largest, ...) with its test confusion matrix and
    classification report, and each success-model candidate's (test_pass_rate, test_margin_over_hull,
    ...), logged into the run `train` started for the same files (its tags: kind, classifier, dataset,
    ladder, content_hash); each verified cascade in a run of its own (kind policy, one per trained
    router); the report, the plots and the ladder's own numbers in an `evaluate` run."""
    import mlflow

    from complexitynet import tracking
    from complexitynet.train import log_classification

    experiment_id = tracking.setup(params.train.experiment)
    base = {"dataset": params.base.dataset, "ladder": params.ladder_name}
    provenance = tracking.provenance_tags(stages=("prepare", "label", "train"))
    classes = params.classes

    def resume(kind: str, name: str, files: Path, **new_run_tags: str):
        """The run `train` (or an earlier evaluate) started for these files; a new one if there is none."""
        tags = {**base, "kind": kind, "policy" if kind == "policy" else "classifier": name,
                tracking.CONTENT: tracking.content_hash(files)}
        run_id = tracking.find_run(experiment_id, tags)
        if run_id is None:
            if kind != "policy":
                log.warning("evaluate: no MLflow run of train for %s %s (%s); its test numbers go to a new run",
                            kind, name, files)
            run = mlflow.start_run(run_name=tracking.run_name(name if kind == "classifier" else f"{kind}-{name}", base),
                                   tags={**provenance, **tags, **new_run_tags})
        else:
            run = mlflow.start_run(run_id=run_id)
            mlflow.set_tags(tracking.owner_tags())  # this process holds the run now
        tracking.log_dataset(params.base.dataset, "test", ts.task_ids, ts.texts, [classes[y] for y in ts.labels],
                             "test", paths.labels)
        return run

    def with_ci(stats: dict[str, Any], names: tuple[str, ...]) -> dict[str, float]:
        out = {}
        for k in names:
            lo, hi = stats[k]["ci95"]
            out.update({f"test_{k}": stats[k]["value"], f"test_{k}_lo": lo, f"test_{k}_hi": hi})
        return out

    def finite(numbers: dict[str, Any]) -> dict[str, float]:
        return {k: v for k, v in numbers.items() if v is not None and v == v}

    level_files = {"router": ("lora", paths.classifier),
                   **{name: (name, paths.baselines / f"{name}.joblib") for name in probs if name != "router"}}
    for key, (name, files) in level_files.items():  # `router` in result: the LoRA level classifier
        policy, curve = result["policies"][key], result["curves"][key]
        with resume("classifier", name, files):
            mlflow.log_metrics(finite({
                **with_ci(result["classifier"][key], ("accuracy", "macro_f1", "within_one")),
                **{f"test_{k}": policy[k] for k in ("pass_rate", "cost_vs_largest", "saving_vs_largest", "pgr")},
                **{f"test_{k}": curve[k] for k in ("apgr", "cpt50", "cpt80", "aiq")},
                "test_n": result["n_test"], "test_target": result["target"],
                **({f"test_{k}": v for k, v in result["routing_errors"].items()} if key == "router" else {})}))
            log_classification(ts.labels, probs[key], classes, "test", f"{name}: test (n={len(ts.task_ids)})")

    paying = result["paying"]
    judged = ("pass_rate", "cost_vs_largest", "margin_over_hull", "margin_over_random")
    for policy_name, policy in paying["policies"].items():
        sweep = paying["curve_scores"].get(policy_name, {})
        numbers = finite({**with_ci(policy, judged), "test_n": policy["n"],
                          **{f"test_sweep_{k}": v for k, v in sweep.items()}})  # AIQ, APGR of its lambda sweep's hull
        if policy_name.startswith("router:"):  # a success-model candidate, routing on the prompt alone
            name = policy_name.removeprefix("router:")
            with resume("router", name, paths.router / f"{name}.joblib"):
                mlflow.log_metrics(numbers)
        else:  # a verified cascade: no train run of its own; one run per trained router
            with resume("policy", policy_name, paths.router, policy_kind=policy["kind"]) as run:
                if "lam" not in run.data.params:
                    mlflow.log_params({"policy": policy_name, "lam": policy["lam"]})
                mlflow.log_metrics(numbers)

    with mlflow.start_run(run_name=tracking.run_name("evaluate", base), tags={**provenance, **base, "kind": "evaluate"}):
        tracking.log_dataset(params.base.dataset, "test", ts.task_ids, ts.texts, [classes[y] for y in ts.labels],
                             "test", paths.labels)
        mlflow.log_params({"target": result["target"], "n_test": result["n_test"]})
        numbers = {f"{name}_{k}".replace(":", "_"): v for name, p in result["policies"].items()
                   if name not in level_files for k, v in p.items()}  # the ladder's rungs, oracle, random mix
        numbers["ladder_aiq"] = result["curves"]["ladder_aiq"]
        numbers.update({f"paper_way_{k}": v for k, v in result["paper_way"].items() if k != "paper"})
        for model, groups in result["suites"]["models"].items():  # visible vs hidden, own hidden tests only
            own = groups["own hidden tests"]
            numbers.update({f"{model}_{suite}_pass_rate": own[suite]["pass_rate"] for suite in ("visible", "hidden")})
        mlflow.log_metrics(finite(numbers))
        for path in (paths.plots / "frontier.png", paths.plots / "confusion.png", paths.report, paths.evaluate_report):
            mlflow.log_artifact(str(path))
    log.info("evaluate: MLflow runs (`make mlflow-ui`): %s", tracking.ui_url(experiment_id))
