"""prepare: turn the benchmark sources into data/problems.jsonl.

MBPP keeps the original paper's split (task_ids 1-10 few-shot, 11-510 test, 511-600 validation,
601-974 train); HumanEval, which has none, gets a seeded split. Tests stay structured (setup,
asserts / check function) so the sandbox can run them one by one.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import random
from collections.abc import Iterable
from pathlib import Path

from complexitynet.config import Splits
from complexitynet.errors import DataError
from complexitynet.extract import parse_quietly
from complexitynet.io import iter_json_lines
from complexitynet.schemas import Dataset, Problem, Split, Tests
from complexitynet.sources import FILES


def mbpp_split(task: int) -> Split:
    """The split of an MBPP task_id in the original paper (Austin et al. 2021)."""
    if 1 <= task <= 10:
        return "fewshot"
    if task <= 510:
        return "test"
    if task <= 600:
        return "validation"
    if task <= 974:
        return "train"
    raise ValueError(f"MBPP task_id {task} is outside 1..974")


def render_prompt(template: str, text: str, tests: Iterable[str], entry_point: str) -> str:
    return template.format(text=text, tests="\n".join(tests), entry_point=entry_point)


def mbpp_entry_point(reference: str, asserts: list[str]) -> str:
    """The function the tests call: the first name called in the asserts that the reference defines."""
    tree = parse_quietly(reference)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)} if tree else set()
    tests = parse_quietly("\n".join(asserts))
    if tests is None:
        bad = next((a for a in asserts if parse_quietly(a) is None), asserts)
        raise ValueError(f"test assert does not parse: {bad!r}")
    called: list[str] = []
    for node in ast.walk(tests):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in called:
            called.append(node.func.id)
    for name in called:
        if name in defined:
            return name
    for name in called:  # reference did not parse: the first non-builtin call
        if not hasattr(builtins, name):
            return name
    raise ValueError("no function call found in the test asserts")


def _field(obj: dict, key: str, kind: type, path: Path, lineno: int):
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(
            f"{path}:{lineno}: field '{key}' is missing or not {kind.__name__}; "
            "the file is not the published MBPP/HumanEval format (run `complexitynet fetch` again)"
        )
    return value


def _str_list(obj: dict, key: str, path: Path, lineno: int) -> list[str]:
    value = _field(obj, key, list, path, lineno)
    if not all(isinstance(v, str) for v in value):
        raise DataError(f"{path}:{lineno}: field '{key}' must be a list of strings")
    return value


def load_mbpp(path: Path, template: str) -> list[Problem]:
    problems = []
    for lineno, obj in iter_json_lines(path):
        task = _field(obj, "task_id", int, path, lineno)
        asserts = _str_list(obj, "test_list", path, lineno)
        reference = _field(obj, "code", str, path, lineno).replace("\r\n", "\n")
        text = _field(obj, "text", str, path, lineno)
        try:
            entry_point = mbpp_entry_point(reference, asserts)
            split = mbpp_split(task)
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: MBPP task {task}: {exc}") from None
        problems.append(Problem(
            task_id=f"MBPP/{task}",
            dataset="mbpp",
            split=split,
            text=text,
            prompt=render_prompt(template, text.strip(), asserts, entry_point),
            entry_point=entry_point,
            tests=Tests(
                setup=_field(obj, "test_setup_code", str, path, lineno).replace("\r\n", "\n"),
                asserts=asserts,
                challenge=_str_list(obj, "challenge_test_list", path, lineno),
            ),
            reference=reference,
        ))
    return problems


def humaneval_splits(task_ids: list[str], fractions: Splits, seed: int) -> dict[str, Split]:
    """A seeded split: the same ids, fractions and seed always give the same assignment."""
    ids = sorted(task_ids)
    random.Random(seed).shuffle(ids)
    n_train = round(len(ids) * fractions.train)
    n_val = round(len(ids) * fractions.validation)
    cuts: list[tuple[Split, list[str]]] = [
        ("train", ids[:n_train]), ("validation", ids[n_train:n_train + n_val]), ("test", ids[n_train + n_val:])
    ]
    return {tid: split for split, part in cuts for tid in part}


def load_humaneval(path: Path, template: str, fractions: Splits, seed: int) -> list[Problem]:
    rows = []
    for lineno, obj in iter_json_lines(path, opener=gzip.open):
        rows.append((
            _field(obj, "task_id", str, path, lineno),
            _field(obj, "prompt", str, path, lineno),
            _field(obj, "canonical_solution", str, path, lineno),
            _field(obj, "test", str, path, lineno),
            _field(obj, "entry_point", str, path, lineno),
        ))
    splits = humaneval_splits([r[0] for r in rows], fractions, seed)
    return [
        Problem(
            task_id=task_id,
            dataset="humaneval",
            split=splits[task_id],
            text=stub,
            prompt=render_prompt(template, stub, [], entry_point),
            entry_point=entry_point,
            tests=Tests(check=test),
            reference=stub + solution,
        )
        for task_id, stub, solution, test, entry_point in rows
    ]


def prepare(dataset: Dataset, sources_dir: Path, template: str, fractions: Splits, seed: int) -> list[Problem]:
    """All problems of `dataset`, read from the fetched sources (sorting happens on write)."""
    path = sources_dir / FILES[dataset].relpath
    if not path.exists():
        raise DataError(f"{path}: source not found; run `complexitynet fetch` first")
    if dataset == "mbpp":
        return load_mbpp(path, template)
    return load_humaneval(path, template, fractions, seed)
