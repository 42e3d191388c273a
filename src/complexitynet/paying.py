"""The router that pays, fitted by the train stage from train + validation prompts (never test).

1. Every success-model candidate (heads.py) predicts each prompt out of fold (k-fold over train +
   validation pooled); Platt calibrators are fitted on those predictions.
2. For each candidate, the price of quality `lam` is chosen on its calibrated out-of-fold
   predictions for `router.objective` (default: the largest margin over the ladder's hull), unless
   the user fixes `router.lam`. The candidate with the largest out-of-fold routing margin wins.
3. The cascade's gate (policy.Gate) is fitted on the winner's out-of-fold predictions and the
   recorded answers' visible-test results; the cascade's own `lam` is chosen for
   `router.cascade_objective` (default: at least always-largest's pass rate, at the lowest cost).
Saved to models/router/: router.json (the decision's parameters and the cross-validation scores)
and one joblib per candidate (the final model, fitted on all train + validation prompts).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from complexitynet import heads as H
from complexitynet import policy as P
from complexitynet import scores as R
from complexitynet.errors import DataError
from complexitynet.schemas import Label, Sample, Truth, Verdict


def recorded(task_ids: list[str], labels: dict[str, Label], samples: dict[str, list[Sample]],
             verdicts: dict[str, list[Verdict]], models: list[str], trials: int, truth: Truth) -> P.Recorded:
    """The recorded answers of every model on these prompts, judged on `truth` (first `trials`)."""
    n, index = len(task_ids), {t: i for i, t in enumerate(task_ids)}
    shape = (n, len(models), trials)
    rec = P.Recorded(task_ids, np.zeros(shape, np.int8), np.zeros(shape), np.zeros(shape, bool), np.zeros(shape, bool),
                     np.zeros((n, len(models))), np.zeros((n, len(models))))
    for j, model in enumerate(models):
        costs: dict[int, list[float]] = {}
        for s in samples[model]:
            if s.task_id in index and s.trial < trials:
                costs.setdefault(index[s.task_id], []).append(s.cost_usd)
        if not costs:
            raise DataError(f"data/samples/{model}.jsonl has no sample of these prompts; rerun `complexitynet sample`")
        median = statistics.median(c for cs in costs.values() for c in cs)
        rec.cost[:, j] = [sum(costs[i]) / len(costs[i]) if i in costs else median for i in range(n)]
        seconds: dict[int, list[float]] = {}
        for v in verdicts[model]:
            i = index.get(v.task_id)
            if i is None or v.trial >= trials:
                continue
            judged = v.result(truth)
            rec.present[i, j, v.trial] = judged is not None
            rec.truth[i, j, v.trial] = judged is not None and judged.status == "pass"
            if v.visible is None:
                rec.visible[i, j, v.trial] = -1
            else:
                rec.visible[i, j, v.trial] = v.visible.status == "pass"
                rec.visible_frac[i, j, v.trial] = v.visible.tests_passed / max(v.visible.tests_total, 1)
                seconds.setdefault(i, []).append(v.visible.duration_s)
        rec.seconds[:, j] = [sum(seconds[i]) / len(seconds[i]) if i in seconds else 0.0 for i in range(n)]
    return rec


def targets_of(task_ids: list[str], labels: dict[str, Label], models: list[str]) -> np.ndarray:
    """[prompt, model] pass rates (the labels' truth) that the success models learn."""
    return np.array([[labels[t].pass_rate.get(m) or 0.0 for m in models] for t in task_ids])


@dataclass
class RouterSpec:
    """What `evaluate` and `complexitynet serve` need to decide (saved as models/router/router.json)."""

    models: list[str]
    candidate: str  # the success model chosen by cross-validation (models/router/<candidate>.joblib)
    unit_cost: list[float]  # each rung's mean cost per call on train + validation, largest = 1
    rule: P.Rule
    cascade_lam: float
    gate: P.Gate
    input: str  # the prompt field the success models read (train.input)
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # cross-validation scores, lam

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RouterSpec:
        gate = data["gate"]
        return cls(**{**data, "rule": P.Rule(**data["rule"]),
                      "gate": P.Gate(tuple(gate["coef"]) if gate["coef"] is not None else None, gate["intercept"])})


def cv_scores(oof: np.ndarray, targets: np.ndarray, q_pp: np.ndarray, c_pp: np.ndarray, quality: np.ndarray,
              cost: np.ndarray, sweep: list[R.Point], models: list[str]) -> dict[str, float | None]:
    """The metrics every candidate is compared on (out of fold): routing margin, AIQ, CPT(50%),
    CPT(80%), and per model AUC and Brier score against pass (pass rate >= 0.5); None where undefined."""
    from sklearn.metrics import roc_auc_score

    ladder = [R.Point(float(quality[:, j].mean()), float(cost[:, j].sum())) for j in range(len(models))]
    weak, strong = ladder[0], ladder[P.reference_rung(quality)]
    out = {"routing_margin": P.margin(float(q_pp.mean()), float(c_pp.sum()), quality, cost),
           "pass_rate": float(q_pp.mean()), "cost_vs_largest": float(c_pp.sum() / ladder[-1].cost),
           "aiq": R.aiq(sweep + ladder, weak.cost, ladder[-1].cost),
           "cpt50": R.cpt(sweep, weak, strong, 0.5), "cpt80": R.cpt(sweep, weak, strong, 0.8)}
    for j, model in enumerate(models):
        passed = targets[:, j] >= 0.5
        out[f"auc_{model}"] = float(roc_auc_score(passed, oof[:, j])) if 0 < passed.sum() < len(passed) else None
        out[f"brier_{model}"] = float(np.mean((oof[:, j] - targets[:, j]) ** 2))
    return {k: (None if v is None or v != v else v) for k, v in out.items()}  # undefined (nan) -> null in JSON


def fit_gate(oof: np.ndarray, rec: P.Recorded, seed: int) -> P.Gate:
    """The gate's logistic model: after rung r's answer failed its visible tests, did rung r+1's
    answer (same trial) pass the judging tests? Without both outcomes to learn from: no coefficients."""
    from sklearn.linear_model import LogisticRegression

    x, y = [], []
    n, models, trials = rec.truth.shape
    for p in range(n):
        for r in range(models - 1):
            for t in range(trials):
                if rec.present[p, r, t] and rec.visible[p, r, t] == 0:
                    x.append(P.gate_features(oof[p].tolist(), r, float(rec.visible_frac[p, r, t])))
                    y.append(bool(rec.truth[p, r + 1, t]))
    if len(set(y)) < 2 or min(sum(y), len(y) - sum(y)) < 5:
        return P.Gate()
    lr = LogisticRegression(max_iter=1000, random_state=seed).fit(np.array(x), np.array(y, int))
    return P.Gate(tuple(float(w) for w in lr.coef_[0]), float(lr.intercept_[0]))


def select_router(texts: list[str], targets: np.ndarray, rec: P.Recorded, models: list[str], cfg, train_cfg,
                  seed: int, on_candidate=None, on_fold=None) -> tuple[RouterSpec, dict[str, H.SuccessModel]]:
    """Cross-validate every candidate, choose lam and the winner, fit the gate; returns the spec and
    each candidate's final (calibrated) model. `cfg` is params.train.router. Progress: `on_fold(name,
    fold, folds)` as each fit starts (fold `folds + 1`: the final fit on all prompts),
    `on_candidate(name, scores)` as each candidate is done."""
    folds = min(cfg.folds, len(texts))
    if folds < 2:
        raise DataError(f"train.router.folds: {len(texts)} train + validation prompts cannot make 2 folds")
    quality, cost = rec.quality, rec.cost
    unit_cost = (cost.mean(axis=0) / cost[:, -1].mean()).tolist()
    embedder = H.Embedder(train_cfg.base_model, train_cfg.max_length)
    makers = H.makers(embedder, cfg.c, train_cfg.knn_k, seed, lora=lambda: H.LoraHeads(
        train_cfg.base_model, train_cfg.max_length, train_cfg.lora.model_dump(), cfg.lora_epochs,
        train_cfg.batch_size, train_cfg.lr, seed))
    objective = P.Objective(cfg.objective, cfg.objective_value)
    lams = P.lambda_grid()
    scores: dict[str, dict[str, Any]] = {}
    oofs: dict[str, np.ndarray] = {}
    final: dict[str, H.SuccessModel] = {}
    for name in cfg.candidates:
        make = makers[name] if on_fold is None else _announced(makers[name], name, folds, on_fold)
        raw = H.out_of_fold(make, texts, targets, folds, seed)
        platt = H.Calibrated.fit_platt(raw, targets, seed)
        oof = H.Calibrated.apply(platt, raw)

        def route(lam: float, oof=oof) -> tuple[np.ndarray, np.ndarray]:
            return P.per_prompt(P.choose(oof, unit_cost, P.Rule(lam, cfg.fallback, cfg.hopeless_below)), quality, cost)

        lam = cfg.lam if cfg.lam is not None else P.best_lambda(route, lams, objective, quality, cost)
        sweep = [R.Point(float(q.mean()), float(c.sum())) for q, c in map(route, lams)]
        scores[name] = {"lam": lam, "folds": folds, "n": len(texts),
                        **cv_scores(oof, targets, *route(lam), quality, cost, sweep, models)}
        oofs[name] = oof
        final[name] = H.Calibrated(make().fit(texts, targets), platt)
        if on_candidate:
            on_candidate(name, scores[name])
    winner = max(cfg.candidates, key=lambda name: (scores[name]["routing_margin"], -cfg.candidates.index(name)))
    rule = P.Rule(scores[winner]["lam"], cfg.fallback, cfg.hopeless_below)
    gate = fit_gate(oofs[winner], rec, seed)

    def cascade(lam: float) -> tuple[np.ndarray, np.ndarray]:
        run = P.cascade(oofs[winner], rec, P.Rule(lam, cfg.fallback, cfg.hopeless_below), gate, unit_cost)
        return run.quality, run.cost

    cascade_lam = P.best_lambda(cascade, lams, P.Objective(cfg.cascade_objective, cfg.cascade_objective_value),
                                quality, cost)
    spec = RouterSpec(models, winner, unit_cost, rule, cascade_lam, gate, train_cfg.input, scores)
    return spec, final


def _announced(make, name: str, folds: int, on_fold):
    """`make`, calling `on_fold(name, k, folds)` before its k-th model (progress lines only)."""
    made = 0

    def announced():
        nonlocal made
        made += 1
        on_fold(name, made, folds)
        return make()

    return announced


SPEC_FILE = "router.json"


def save_router(spec: RouterSpec, fitted: dict[str, H.SuccessModel], out_dir) -> None:
    """router.json and a joblib per candidate into `out_dir` (written beside it, then renamed)."""
    import json
    from pathlib import Path

    from complexitynet.io import atomic_dir, dump_joblib

    with atomic_dir(Path(out_dir)) as tmp:
        for name, model in fitted.items():
            dump_joblib(model, tmp / f"{name}.joblib")
        (tmp / SPEC_FILE).write_text(json.dumps(spec.as_json(), indent=2, sort_keys=True) + "\n")


def load_router(path, which: str | None = None) -> tuple[RouterSpec, H.SuccessModel]:
    """The saved spec and one candidate's success model (default: the chosen one)."""
    import json
    from pathlib import Path

    import joblib

    path = Path(path)
    if not (path / SPEC_FILE).exists():
        raise DataError(f"{path}/{SPEC_FILE} does not exist; run `complexitynet train` (or `dvc repro train`)")
    spec = RouterSpec.from_json(json.loads((path / SPEC_FILE).read_text()))
    name = which or spec.candidate
    if not (path / f"{name}.joblib").exists():
        raise DataError(f"{path}/{name}.joblib does not exist; known: {sorted(spec.candidates)}")
    return spec, joblib.load(path / f"{name}.joblib")
