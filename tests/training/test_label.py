import re

import pytest

from complexitynet.errors import DataError
from complexitynet.label import check_trainable, distribution, first_solver, label_problems, solves
from complexitynet.schemas import Problem, Producer, Result, Verdict
from complexitynet.schemas import Tests as ProblemTests

LADDER = ["small", "medium", "large"]
PRODUCER = Producer(sandbox="test", python="3.11", hash_seed=0)


def problem(task: str, split: str = "train") -> Problem:
    return Problem(task_id=task, dataset="mbpp", split=split, text="t", prompt="p", entry_point="f",
                   visible=(t := ProblemTests(asserts=["assert f()"])), hidden=t,
                   hidden_source="visible", reference="def f(): return True")


def verdicts(table: dict[str, dict[str, list[bool]]]) -> dict[str, list[Verdict]]:
    out: dict[str, list[Verdict]] = {m: [] for m in LADDER}
    for task, per_model in table.items():
        for model, results in per_model.items():
            for trial, ok in enumerate(results):
                result = Result(status="pass" if ok else "fail", tests_passed=int(ok), tests_total=1,
                                failed=[] if ok else [0], detail="")
                out[model].append(Verdict(task_id=task, trial=trial, model=model, visible=result, hidden=result,
                                          duration_s=0.0, produced_by=PRODUCER))
    return out


def test_rules():
    assert solves(5, 5, "threshold", 1.0) and not solves(4, 5, "threshold", 1.0)
    assert solves(4, 5, "threshold", 0.8) and solves(1, 5, "first_pass", 1.0) and not solves(0, 0, "first_pass", 1.0)
    assert first_solver([(0, 5), (5, 5), (5, 5)], "threshold", 1.0) == 1
    assert first_solver([(0, 5), (4, 5), (3, 5)], "threshold", 1.0) == 3  # none reliably: "none"


def test_k_trial_and_first_trial_labels():
    table = {
        "T/1": {"small": [True] * 5, "medium": [True] * 5, "large": [True] * 5},
        "T/2": {"small": [True, False, True, True, True], "medium": [True] * 5, "large": [True] * 5},
        "T/3": {"small": [False] * 5, "medium": [False, True, True, True, True], "large": [True] * 5},
        "T/4": {"small": [False] * 5, "medium": [False] * 5, "large": [False, True, False, False, False]},
    }
    labels = label_problems([problem(t) for t in table], verdicts(table), LADDER, k=5)
    assert [lab.label for lab in labels] == [0, 1, 2, 3]
    assert [lab.label_name for lab in labels] == ["small", "medium", "large", "none"]
    assert [lab.label_first_trial for lab in labels] == [0, 0, 2, 3]
    assert labels[1].passes == {"small": 4, "medium": 5, "large": 5} and labels[1].pass_rate["small"] == 0.8
    relaxed = label_problems([problem(t) for t in table], verdicts(table), LADDER, k=5, threshold=0.8)
    assert [lab.label for lab in relaxed] == [0, 0, 1, 3]
    anypass = label_problems([problem(t) for t in table], verdicts(table), LADDER, k=5, rule="first_pass")
    assert [lab.label for lab in anypass] == [0, 0, 1, 2]


def test_only_first_k_trials_count():
    table = {"T/1": {"small": [True, False], "medium": [True, True], "large": [True, True]}}
    assert label_problems([problem("T/1")], verdicts(table), LADDER, k=1)[0].label == 0
    assert label_problems([problem("T/1")], verdicts(table), LADDER, k=2)[0].label == 1


def test_missing_trials_error_names_prompt_and_model_unless_allowed():
    table = {"T/9": {"small": [False], "medium": [], "large": [True]}}
    with pytest.raises(DataError, match=r"T/9: model 'medium' has 0 judged trial\(s\), label.k is 1"):
        label_problems([problem("T/9")], verdicts(table), LADDER, k=1)
    [lab] = label_problems([problem("T/9")], verdicts(table), LADDER, k=1, allow_missing=True)
    assert lab.flagged and lab.label == 2 and lab.pass_rate["medium"] is None


def test_unused_prompts_get_no_label_and_need_no_outputs():
    table = {"T/1": {"small": [True], "medium": [True], "large": [True]}}
    labels = label_problems([problem("T/1"), problem("T/2", split="unused")], verdicts(table), LADDER, k=1)
    assert [lab.task_id for lab in labels] == ["T/1"]


def test_distribution_counts_per_split():
    table = {"T/1": {m: [True] for m in LADDER}, "T/2": {m: [False] for m in LADDER}}
    labels = label_problems([problem("T/1"), problem("T/2", "test")], verdicts(table), LADDER, k=1)
    dist = distribution(labels, LADDER)
    assert dist["classes"] == LADDER + ["none"]
    assert dist["splits"]["train"]["label"] == {"small": 1, "medium": 0, "large": 0, "none": 0}
    assert dist["splits"]["test"]["label"]["none"] == 1 and dist["splits"]["test"]["first_trial_agrees"] == 1.0


def _labelled(n_train: int, n_val: int, pattern, missing: set[str] = frozenset()) -> list:
    """Labels for n_train + n_val prompts; pattern(i) -> (small, medium, large) pass flags; `missing`:
    splits whose prompts have no output of 'large' (labelled with allow_missing, so flagged)."""
    problems = [problem(f"T/{i}", "train" if i < n_train else "validation") for i in range(n_train + n_val)]
    table = {}
    for i, p in enumerate(problems):
        flags = pattern(i)
        table[p.task_id] = {m: [ok] for m, ok in zip(LADDER, flags) if not (m == "large" and p.split in missing)}
    return label_problems(problems, verdicts(table), LADDER, 1, allow_missing=True)


MIXED = lambda i: (i % 3 == 0, i % 3 != 2, True)  # noqa: E731 - three classes, every model both outcomes


def test_labels_that_can_train_a_router_pass_the_check():
    check_trainable(_labelled(20, 10, lambda i: (i % 3 == 0, i % 3 != 2, i % 7 != 0)), LADDER, max_missing=0)


@pytest.mark.parametrize("labels, message", [
    # the user's case: a ladder with outputs for the test and validation prompts only
    (lambda: _labelled(20, 10, MIXED, missing={"train"}), "20 of 20 train prompts lack outputs of some model (large)"),
    (lambda: _labelled(20, 0, MIXED), "the validation split has no prompts"),
    (lambda: _labelled(3, 2, MIXED), "5 train + validation prompts; the router's 5-fold"),
    (lambda: _labelled(20, 10, lambda i: (False, False, False)), "all 20 train prompts are labelled 'none'"),
    (lambda: _labelled(20, 10, lambda i: (i % 2 == 0, True, True)), "'medium' passes every one of the 30"),
])
def test_labels_that_cannot_train_a_router_stop_with_the_split_counts_and_fix(labels, message):
    with pytest.raises(DataError, match=re.escape(message)):
        check_trainable(labels(), LADDER, max_missing=10)


def test_a_rung_without_outputs_for_a_training_split_stops_sample_with_the_fix():
    from complexitynet.label import check_outputs
    from complexitynet.schemas import Sample

    problems = {p.task_id: p for p in [problem("T/1"), problem("T/2"), problem("T/3", "validation"),
                                       problem("T/4", "test"), problem("T/5", "unused")]}

    def samples(task_ids):
        return [Sample(task_id=t, trial=0, model="m", completion="", code="", prompt_tokens=1, completion_tokens=1,
                       cost_usd=0.0, tokens_estimated=False, latency_s=None, source="recorded") for t in task_ids]

    check_outputs({"m": samples(["T/1", "T/2", "T/3"])}, problems, 0)  # test and unused prompts may lack outputs
    check_outputs({"m": samples(["T/1", "T/3"])}, problems, 1)
    with pytest.raises(DataError, match=r"'m' has no output for 2 of 2 train prompts \(e.g. T/1, T/2\); "
                                        r"label.max_missing allows 1 .*prepare.split.method: outputs"):
        check_outputs({"m": samples(["T/3"])}, problems, 1)
