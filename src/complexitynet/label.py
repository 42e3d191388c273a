"""label: the cheapest model in the ladder that reliably solves each prompt -> data/labels.jsonl.

From our own sandbox verdicts, per prompt and model: passes among the first k trials, judged on the
hidden tests (`label.truth: hidden`, the default) or on the visible ones the prompt showed. Rules:
- `threshold` (default): the first model whose pass rate reaches the threshold (1.0 = passes every
  trial, the paper's "reliably solves"); `len(ladder)` ("none") when no model does.
- `first_pass`: the first model that passes at least once (the labelling in the ComplexityNet
  authors' released notebooks; with k=1 it equals `threshold`).
The 1-trial label (trial 0 only, same rule) is always written beside it, for the paper's 1-trial vs
k-trial comparison. A prompt with fewer than k judged trials for some model is an error naming it,
unless `label.allow_missing` is set; then its label uses the trials it has (a model with none
counts as not solving it) and the row is flagged. `check_trainable` stops the pipeline here (and
again at the start of `train`) when the labels cannot train a router: a split with too many
flagged rows (a model without outputs for it), or a training set with a single class.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any, Literal

from complexitynet.errors import DataError
from complexitynet.schemas import Label, Problem, Sample, Truth, Verdict, task_key

if TYPE_CHECKING:
    from complexitynet.config import Params
    from complexitynet.paths import Paths

log = logging.getLogger("complexitynet")

Rule = Literal["threshold", "first_pass"]


def solves(passes: int, trials: int, rule: Rule, threshold: float) -> bool:
    if trials == 0:
        return False
    if rule == "first_pass":
        return passes > 0
    return passes / trials >= threshold - 1e-12


def first_solver(counts: list[tuple[int, int]], rule: Rule, threshold: float) -> int:
    """Index of the first (cheapest) rung that solves the prompt; len(counts) if none does."""
    return next((i for i, (p, t) in enumerate(counts) if solves(p, t, rule, threshold)), len(counts))


def label_problems(problems: list[Problem], verdicts: dict[str, list[Verdict]], ladder: list[str], k: int,
                   rule: Rule = "threshold", threshold: float = 1.0, allow_missing: bool = False,
                   truth: Truth = "hidden") -> list[Label]:
    """One label per problem from the verdicts of every ladder model (models in ladder order), judged
    on the `truth` suite (a sample with no visible tests has no visible verdict: a missing trial)."""
    status: dict[str, dict[str, dict[int, bool]]] = {m: defaultdict(dict) for m in ladder}
    for model in ladder:
        for v in verdicts.get(model, []):
            result = v.result(truth)
            if result is not None:
                status[model][v.task_id][v.trial] = result.status == "pass"
    labels = []
    for problem in problems:
        if problem.split == "unused":
            continue
        counts, first = [], []
        flagged = False
        for model in ladder:
            judged = status[model].get(problem.task_id, {})
            trials = [judged[t] for t in sorted(judged) if t < k]
            if len(trials) < k:
                if not allow_missing:
                    raise DataError(
                        f"{problem.task_id}: model '{model}' has {len(trials)} judged trial(s), label.k is {k}; "
                        "sample/execute more trials, lower label.k, or set label.allow_missing: true")
                flagged = True
            counts.append((sum(trials), len(trials)))
            first.append((int(judged.get(0, False)), int(0 in judged)))
        label = first_solver(counts, rule, threshold)
        labels.append(Label(
            task_id=problem.task_id,
            split=problem.split,
            label=label,
            label_name=ladder[label] if label < len(ladder) else "none",
            label_first_trial=first_solver(first, rule, threshold),
            passes={m: c[0] for m, c in zip(ladder, counts)},
            trials={m: c[1] for m, c in zip(ladder, counts)},
            pass_rate={m: (round(c[0] / c[1], 6) if c[1] else None) for m, c in zip(ladder, counts)},
            flagged=flagged,
        ))
    return labels


def distribution(labels: list[Label], ladder: list[str]) -> dict[str, Any]:
    """Label counts per split (k-trial and 1-trial rules) and how often the two agree."""
    names = ladder + ["none"]
    out: dict[str, Any] = {"classes": names, "splits": {}}
    for split in sorted({lab.split for lab in labels}):
        rows = [lab for lab in labels if lab.split == split]
        k_counts, one_counts = Counter(lab.label for lab in rows), Counter(lab.label_first_trial for lab in rows)
        out["splits"][split] = {
            "n": len(rows),
            "label": {names[i]: k_counts.get(i, 0) for i in range(len(names))},
            "label_first_trial": {names[i]: one_counts.get(i, 0) for i in range(len(names))},
            "first_trial_agrees": round(sum(lab.label == lab.label_first_trial for lab in rows) / len(rows), 4),
            "flagged": sum(lab.flagged for lab in rows),
        }
    return out


def check_outputs(samples: dict[str, list[Sample]], problems: dict[str, Problem], max_missing: int) -> None:
    """Stop at `sample`, before the sandbox runs, when a rung has no output for more than
    `max_missing` prompts of the train or validation split: `label` would flag them all and
    `check_trainable` would stop only after every sample had been executed."""
    for split in ("train", "validation"):
        ids = {t for t, p in problems.items() if p.split == split}
        for model, rows in samples.items():
            missing = sorted(ids - {s.task_id for s in rows}, key=task_key)
            if len(missing) > max_missing:
                raise DataError(
                    f"sample: '{model}' has no output for {len(missing)} of {len(ids)} {split} prompts (e.g. "
                    f"{', '.join(missing[:3])}); label.max_missing allows {max_missing} (with label.allow_missing). "
                    "Import or sample outputs for them, or train on the prompts that have outputs: "
                    "prepare.split.method: outputs")


def check_trainable(labels: list[Label], ladder: list[str], max_missing: int, folds: int = 5) -> None:
    """Raise a DataError naming the split, the counts and the fix when the labels cannot train a
    router: the train or validation split is empty or too small for `folds`-fold cross-validation,
    has more than `max_missing` flagged rows (prompts some model has no output for), has one class
    only, or some model passes all or none of its prompts (its success head has one outcome)."""
    names = ladder + ["none"]
    fit = [lab for lab in labels if lab.split in ("train", "validation")]
    for split in ("train", "validation"):
        rows = [lab for lab in fit if lab.split == split]
        flagged = sum(lab.flagged for lab in rows)
        if not rows:
            raise DataError(f"labels: the {split} split has no prompts; choose the split in prepare.split "
                            "(seeded fractions, the prompts that have outputs, or a file)")
        if flagged > max_missing:
            short = sorted({m for lab in rows if lab.flagged for m in ladder if lab.trials.get(m, 0) == 0})
            raise DataError(
                f"labels: {flagged} of {len(rows)} {split} prompts lack outputs of some model "
                f"({', '.join(short) or 'too few trials'}); label.allow_missing excuses at most "
                f"label.max_missing = {max_missing} per split. Sample or import outputs of every rung for the "
                f"{split} prompts (or lower label.k if rungs have fewer trials)")
    train = [lab for lab in fit if lab.split == "train"]
    if len(fit) < 2 * folds:
        raise DataError(f"labels: {len(fit)} train + validation prompts; the router's {folds}-fold "
                        f"cross-validation needs at least {2 * folds}")
    classes = Counter(names[lab.label] for lab in train)
    if len(classes) < 2:
        only = next(iter(classes), "none")
        raise DataError(f"labels: all {len(train)} train prompts are labelled '{only}': a classifier needs at "
                        "least two classes. Check that every rung has outputs for the train split and that "
                        "the tests can pass (metrics/execute.json), or choose a ladder whose models differ")
    for model in ladder:
        passed = sum(lab.passes.get(model, 0) > 0 for lab in fit)
        if passed in (0, len(fit)):
            raise DataError(f"labels: '{model}' {'passes none' if passed == 0 else 'passes every one'} of the "
                            f"{len(fit)} train + validation prompts, so its success head has one outcome to "
                            "learn; check its outputs and verdicts, or leave it out of the ladder")


# --- the stage's edge: params and paths in, files out (dvc.yaml and the Prefect flow call it) ---

def run(params: Params, paths: Paths) -> None:
    from complexitynet.io import read_jsonl, write_jsonl, write_metrics
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
    write_metrics(paths.label_report, paths.label_metrics,
                  {"ladder": params.ladder_name, "k": k, "rule": cfg.rule, "truth": cfg.truth, "threshold": cfg.threshold,
                   **dist},
                  {"splits": {split: {"n": d["n"], "flagged": d["flagged"]}
                              for split, d in dist["splits"].items() if split != "unused"}})
    for split, d in dist["splits"].items():
        log.info("label: %-10s n=%-4d %s (1-trial agrees %.2f, flagged %d)", split, d["n"], d["label"],
                 d["first_trial_agrees"], d["flagged"])
