from collections import Counter

import pytest

from complexitynet.config import SplitFractions
from complexitynet.config import SplitParams
from complexitynet.errors import DataError
from complexitynet.prepare import mbpp_entry_point, mbpp_split, read_problems, seeded_splits, split_assignment


@pytest.fixture(scope="module")
def mbpp(sources_dir, params):
    return read_problems("mbpp", sources_dir, params.prepare.templates["mbpp"], params.prepare.split.fractions, 1)


def test_mbpp_has_974_rows_with_the_original_split(mbpp):
    assert len(mbpp) == 974
    assert Counter(p.split for p in mbpp) == {"fewshot": 10, "test": 500, "validation": 90, "train": 374}
    by_id = {p.task_id: p for p in mbpp}
    assert by_id["MBPP/10"].split == "fewshot" and by_id["MBPP/11"].split == "test"
    assert by_id["MBPP/510"].split == "test" and by_id["MBPP/511"].split == "validation"
    assert by_id["MBPP/600"].split == "validation" and by_id["MBPP/601"].split == "train"


def test_mbpp_tests_stay_structured(mbpp):
    p = {p.task_id: p for p in mbpp}["MBPP/2"]
    assert p.entry_point == "similar_elements"
    assert len(p.visible.asserts) == 3 and all(a.startswith("assert similar_elements(") for a in p.visible.asserts)
    assert p.visible.check is None and "\r" not in p.reference
    assert p.prompt.startswith("You are an expert Python programmer, and here is your task: Write a function")
    assert p.prompt.endswith(p.visible.asserts[-1])
    assert sum(bool(q.visible.setup) for q in mbpp) > 0 and sum(bool(q.visible.challenge) for q in mbpp) > 0
    assert p.hidden == p.visible and p.hidden_source == "visible"  # until prepare adds MBPP+ (sandbox tests)


def test_mbpp_entry_point_when_builtin_is_shadowed():
    # MBPP/126 defines its own `sum`; the asserts call it.
    ref = "def sum(a, b):\n    return a + b\n"
    assert mbpp_entry_point(ref, ["assert sum(10, 15) == 6"]) == "sum"
    assert mbpp_entry_point("print 'py2'", ["assert len(f(2)) == 1"]) == "f"


def test_mbpp_split_bounds():
    assert [mbpp_split(i) for i in (1, 10, 11, 510, 511, 600, 601, 974)] == [
        "fewshot", "fewshot", "test", "test", "validation", "validation", "train", "train"]
    with pytest.raises(ValueError):
        mbpp_split(975)


def test_humaneval_is_seeded_and_complete(sources_dir, params):
    probs = read_problems("humaneval", sources_dir, params.prepare.templates["humaneval"],
                    params.prepare.split.fractions, params.base.seed)
    assert len(probs) == 164
    assert Counter(p.split for p in probs) == {"train": 98, "validation": 33, "test": 33}
    p = probs[0]
    assert p.task_id == "HumanEval/0" and p.hidden.check and "def check(candidate)" in p.hidden.check
    assert p.hidden_source == "check" and p.visible.asserts == [
        "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False",
        "assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True"]
    assert sum(q.visible.total > 0 for q in probs) == 155  # prompts whose docstring yields an example
    assert p.reference.startswith(p.text) and "```python\nfrom typing import List" in p.prompt
    ids = [q.task_id for q in probs]
    fr = SplitFractions()
    assert seeded_splits(ids, fr, 7) == seeded_splits(list(reversed(ids)), fr, 7)
    assert seeded_splits(ids, fr, 7) != seeded_splits(ids, fr, 8)


IDS = [f"MBPP/{i}" for i in range(1, 101)]


def test_split_dataset_keeps_the_loaders_split():
    assert split_assignment(IDS, SplitParams(), 1) is None


def test_split_seeded_covers_every_prompt_by_fraction():
    got = split_assignment(IDS, SplitParams(method="seeded"), 1)
    assert Counter(got.values()) == {"train": 60, "validation": 20, "test": 20}
    assert got == split_assignment(list(reversed(IDS)), SplitParams(method="seeded"), 1)


def test_split_outputs_uses_only_the_covered_prompts():
    covered = set(IDS[50:])
    got = split_assignment(IDS, SplitParams(method="outputs"), 1, covered=covered)
    assert {t for t, s in got.items() if s == "unused"} == set(IDS[:50])
    assert Counter(s for t, s in got.items() if t in covered) == {"train": 30, "validation": 10, "test": 10}


def test_split_file_assigns_its_rows_and_leaves_the_rest_unused(tmp_path):
    path = tmp_path / "splits.jsonl"
    path.write_text('{"task_id": "MBPP/1", "split": "train"}\n{"task_id": "MBPP/2", "split": "validation"}\n'
                    '{"task_id": "MBPP/3", "split": "test"}\n{"task_id": "MBPP/4", "split": "unused"}\n')
    got = split_assignment(IDS, SplitParams(method="file", file=str(path)), 1, split_file=path)
    assert [got[f"MBPP/{i}"] for i in range(1, 6)] == ["train", "validation", "test", "unused", "unused"]


@pytest.mark.parametrize("rows, message", [
    ('{"task_id": "MBPP/1", "split": "dev"}\n', r"splits.jsonl:1: .*'split' among train, validation, test, unused"),
    ('{"task_id": "MBPP/1", "split": "train"}\n{"task_id": "MBPP/1", "split": "test"}\n',
     r"splits.jsonl:2: task_id 'MBPP/1' appears twice"),
    ('{"task_id": "HumanEval/1", "split": "train"}\n', r"1 task_id\(s\) are not prompts of this dataset"),
    ('{"task_id": "MBPP/1", "split": "train"}\n{"task_id": "MBPP/2", "split": "test"}\n',
     r"no prompt is in the validation split"),
])
def test_split_file_errors_name_the_file_row_and_fix(tmp_path, rows, message):
    path = tmp_path / "splits.jsonl"
    path.write_text(rows)
    with pytest.raises(DataError, match=message):
        split_assignment(IDS, SplitParams(method="file", file=str(path)), 1, split_file=path)


def test_split_outputs_with_too_few_covered_prompts_names_the_split():
    with pytest.raises(DataError, match=r"prepare.split \(outputs: 1 prompts\): no prompt is in the validation"):
        split_assignment(IDS, SplitParams(method="outputs"), 1, covered={"MBPP/7"})
