"""prepare: turn the benchmark sources into data/problems.jsonl.

MBPP keeps the original paper's split (task_ids 1-10 few-shot, 11-510 test, 511-600 validation,
601-974 train) and HumanEval, which has none, gets a seeded split, unless `prepare.split` asks for a
seeded split of every prompt, of the prompts the ladder's recorded rungs cover, or a user's file. Every problem carries two suites:
visible tests (what the prompt shows: MBPP's three asserts, HumanEval's docstring examples) and
hidden tests (what judges: MBPP+'s inputs, HumanEval's `check`). Tests stay structured (setup,
asserts, check function, input/output cases) so the sandbox can run them one by one.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from complexitynet import mbppplus
from complexitynet.config import SplitFractions, SplitParams
from complexitynet.docstring_tests import docstring_asserts
from complexitynet.errors import ConfigError, DataError
from complexitynet.extract import parse_quietly
from complexitynet.io import iter_json_lines, progress
from complexitynet.mbppplus import BESPOKE, PlusProblem
from complexitynet.sandbox import protocol as P
from complexitynet.sandbox.harness import case_limits, opaque
from complexitynet.sandbox.pool import Job, SandboxConfig, SandboxPool
from complexitynet.schemas import Cases, Dataset, Problem, Split, Tests
from complexitynet.sources import source_path

if TYPE_CHECKING:
    from complexitynet.config import Params
    from complexitynet.paths import Paths

log = logging.getLogger("complexitynet")


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
            visible=(visible := Tests(
                setup=_field(obj, "test_setup_code", str, path, lineno).replace("\r\n", "\n"),
                asserts=asserts,
                challenge=_str_list(obj, "challenge_test_list", path, lineno),
            )),
            hidden=visible,  # until MBPP+ adds hidden tests (add_mbppplus)
            hidden_source="visible",
            reference=reference,
        ))
    return problems


def seeded_splits(task_ids: list[str], fractions: SplitFractions, seed: int) -> dict[str, Split]:
    """A seeded split: the same ids, fractions and seed always give the same assignment."""
    ids = sorted(task_ids)
    random.Random(seed).shuffle(ids)
    n_train = round(len(ids) * fractions.train)
    n_val = round(len(ids) * fractions.validation)
    cuts: list[tuple[Split, list[str]]] = [
        ("train", ids[:n_train]), ("validation", ids[n_train:n_train + n_val]), ("test", ids[n_train + n_val:])
    ]
    return {tid: split for split, part in cuts for tid in part}


def load_humaneval(path: Path, template: str, fractions: SplitFractions, seed: int) -> list[Problem]:
    rows = []
    for lineno, obj in iter_json_lines(path, opener=gzip.open):
        rows.append((
            _field(obj, "task_id", str, path, lineno),
            _field(obj, "prompt", str, path, lineno),
            _field(obj, "canonical_solution", str, path, lineno),
            _field(obj, "test", str, path, lineno),
            _field(obj, "entry_point", str, path, lineno),
        ))
    splits = seeded_splits([r[0] for r in rows], fractions, seed)
    return [
        Problem(
            task_id=task_id,
            dataset="humaneval",
            split=splits[task_id],
            text=stub,
            prompt=render_prompt(template, stub, [], entry_point),
            entry_point=entry_point,
            visible=Tests(asserts=docstring_asserts(stub, entry_point)),
            hidden=Tests(check=test),
            hidden_source="check",
            reference=stub + solution,
        )
        for task_id, stub, solution, test, entry_point in rows
    ]


COSTS_FILE = "mbppplus_cpu.json"  # in sandbox/: the canonical solutions' pinned CPU cost per MBPP+ input


def load_costs(path: Path) -> dict[int, tuple[float, dict[int, float]]]:
    """The pinned costs (sandbox/measure_costs.py writes them): task -> (total CPU seconds of its
    canonical solution over all inputs, {input index: CPU seconds} for the costly inputs)."""
    try:
        raw = json.loads(path.read_text())
        return {int(task): (float(t["total"]), {int(i): float(c) for i, c in t["inputs"].items()})
                for task, t in raw["tasks"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a table of MBPP+ reference costs ({exc!r}); restore it from git, or "
                        "regenerate it with `.venv/bin/python sandbox/measure_costs.py`") from None


def add_mbppplus(problems: list[Problem], plus: dict[int, PlusProblem], pool: SandboxPool,
                 show_progress: bool = False, costs: dict[int, tuple[float, dict[int, float]]] | None = None
                 ) -> list[Problem]:
    """MBPP problems with MBPP+'s inputs as hidden tests, expected outputs from running MBPP+'s
    canonical solution in the sandbox, and each input's CPU limit sized from the canonical solution's
    cost on it (`harness.case_limits`): the pinned `costs` (a measurement taken once, so limits do not
    move with the machine), else the cost measured in this run. An input the canonical solution fails
    on (raises, runs out of time, returns something that is not plain data) is dropped and noted on
    the problem; so is MBPP+ for a problem whose function it calls with other arguments than MBPP's
    prompt shows."""
    by_task = {int(p.task_id.split("/")[1]): p for p in problems if p.dataset == "mbpp"}
    updated: dict[int, Problem] = {}
    usable = []
    for task in sorted(set(plus) & set(by_task)):
        shown = {len(c) for c in mbppplus.example_calls("\n".join(by_task[task].visible.asserts),
                                                        by_task[task].entry_point)}
        taken = {len(args) for args in plus[task].inputs}
        if shown and shown != taken:  # MBPP+ dropped arguments (often a length) that MBPP's prompt asks for
            updated[task] = by_task[task].model_copy(update={"notes": [
                f"MBPP+ not used: it calls with {sorted(taken)} argument(s), MBPP's asserts with {sorted(shown)}"]})
        else:
            usable.append(task)
    jobs = [Job(task, plus[task].canonical, by_task[task].visible, plus[task].entry_point,
                inputs=[P.encode(args) for args in plus[task].inputs]) for task in usable]
    results = pool.map(jobs)
    if show_progress:
        results = progress(results, len(jobs), "prepare: MBPP+ expected outputs", "problem")
    for task, outcome, _ in results:
        problem, extra = by_task[task], plus[task]  # type: ignore[index]
        if outcome.status != "pass":
            updated[task] = problem.model_copy(update={"notes": [
                f"MBPP+ not used: its canonical solution does not run ({outcome.status}: {outcome.detail})"]})
            continue
        kept, why = [], Counter()
        total, pinned = costs.get(task, (0.0, {})) if costs is not None else (None, None)
        for i, (args, (kind, value), cpu) in enumerate(zip(extra.inputs, outcome.outputs, outcome.cpu_s)):
            cpu = pinned.get(i, 0.0) if pinned is not None else cpu
            if kind == "v" and extra.compare == "not_none":  # EvalPlus keeps only "returned something"
                kind, value = "v", value if isinstance(value, bool) else value is not None
            if kind == "v" and opaque(value):
                kind, value = "e", "returned an object that is not plain data"
            if kind == "v":
                kept.append((args, value, cpu))
            else:
                why[value] += 1
        notes = [f"{n} MBPP+ input(s) dropped: the canonical solution gives no plain answer ({reason})"
                 for reason, n in sorted(why.items())]
        if task in BESPOKE:
            notes.append(f"EvalPlus judges {BESPOKE[task]} with a bespoke oracle; compared exactly here")
        if problem.entry_point != extra.entry_point:
            notes.append(f"MBPP+ calls '{extra.entry_point}', MBPP's asserts call '{problem.entry_point}'")
        limits, budget = case_limits([cpu for _, _, cpu in kept], pool.timeouts, total)
        hidden = Tests(setup=problem.visible.setup, cases=Cases(
            inputs=[P.encode(args) for args, _, _ in kept], expected=[P.encode(value) for _, value, _ in kept],
            atol=extra.atol, compare=extra.compare,  # type: ignore[arg-type]
            cpu_s=limits if kept else None, budget_cpu_s=budget if kept else None))
        updated[task] = problem.model_copy(update={"hidden": hidden, "hidden_source": "mbpp+", "notes": notes})
    return [updated.get(int(p.task_id.split("/")[1]), p) if p.dataset == "mbpp" else p for p in problems]


def check_visible(problems: list[Problem], pool: SandboxPool) -> list[Problem]:
    """Drop the visible tests a problem's own reference solution fails (a docstring example that is
    wrong), noting each on the problem; run in the sandbox like every other program."""
    jobs = [Job(p.task_id, p.reference, p.visible, p.entry_point) for p in problems if p.visible.asserts]
    failed = {key: outcome for key, outcome, _ in pool.map(jobs) if outcome.failed}
    out = []
    for p in problems:
        outcome = failed.get(p.task_id)
        if outcome is None:
            out.append(p)
            continue
        keep = [a for i, a in enumerate(p.visible.asserts) if i not in outcome.failed]
        notes = [f"visible test dropped, the reference fails it: {p.visible.asserts[i]}" for i in outcome.failed]
        out.append(p.model_copy(update={"visible": p.visible.model_copy(update={"asserts": keep}),
                                        "notes": p.notes + notes}))
    return out


def read_problems(dataset: Dataset, sources_dir: Path, template: str, fractions: SplitFractions, seed: int) -> list[Problem]:
    """The problems as their source states them, without running anything: visible tests, and hidden
    tests where the source has its own (HumanEval's check; MBPP's come from MBPP+ in `prepare`)."""
    path = source_path(sources_dir, dataset)
    if dataset == "humaneval":
        return load_humaneval(path, template, fractions, seed)
    return load_mbpp(path, template)


SPLIT_FILE_VALUES = ("train", "validation", "test", "unused")


def read_split_file(path: Path) -> dict[str, Split]:
    """A user's split column: JSONL rows {"task_id": ..., "split": train|validation|test|unused}."""
    if not path.exists():
        raise DataError(f"{path}: split file not found (prepare.split.file)")
    out: dict[str, Split] = {}
    for lineno, obj in iter_json_lines(path):
        task_id, split = obj.get("task_id"), obj.get("split")
        if not isinstance(task_id, str) or split not in SPLIT_FILE_VALUES:
            raise DataError(f"{path}:{lineno}: each row needs a string 'task_id' and a 'split' among "
                            f"{', '.join(SPLIT_FILE_VALUES)}; got {obj!r}")
        if task_id in out:
            raise DataError(f"{path}:{lineno}: task_id {task_id!r} appears twice; keep one row per prompt")
        out[task_id] = split
    return out


def split_assignment(task_ids: list[str], split: SplitParams, seed: int, covered: set[str] | None = None,
                     split_file: Path | None = None) -> dict[str, Split] | None:
    """Each prompt's split under `prepare.split`; None for `dataset` (the loader's split stands). For
    `outputs`, `covered` holds the prompts every recorded rung has an output for; for `file`, the rows
    of `split_file` decide. Prompts left out are `unused`: never sampled live, labelled, trained on or
    evaluated. Cheap (ids only), so it runs before the sandbox; an empty split is an error naming the fix."""
    if split.method == "dataset":
        return None
    if split.method == "file":
        assert split_file is not None
        table = read_split_file(split_file)
        unknown = sorted(set(table) - set(task_ids))
        if unknown:
            raise DataError(f"{split_file}: {len(unknown)} task_id(s) are not prompts of this dataset "
                            f"(e.g. {unknown[:3]}); check base.dataset or the file")
        assigned: dict[str, Split] = {t: table.get(t, "unused") for t in task_ids}
        where = str(split_file)
    else:
        pool = task_ids if split.method == "seeded" else [t for t in task_ids if covered is None or t in covered]
        assigned = {t: "unused" for t in task_ids} | seeded_splits(pool, split.fractions, seed)
        where = f"prepare.split ({split.method}: {len(pool)} prompts)"
    for name in ("train", "validation", "test"):
        if name not in assigned.values():
            raise DataError(f"{where}: no prompt is in the {name} split; give it prompts (fractions, the file, "
                            "or outputs for more prompts)")
    return assigned


def prepare(dataset: Dataset, sources_dir: Path, template: str, fractions: SplitFractions, seed: int,
            pool: SandboxPool, use_mbppplus: bool = True, show_progress: bool = False) -> list[Problem]:
    """All problems of `dataset` with visible and hidden tests (sorting happens on write). The pool
    runs reference solutions: MBPP+'s for expected outputs, HumanEval's against its docstring examples."""
    problems = read_problems(dataset, sources_dir, template, fractions, seed)
    if dataset == "humaneval":
        return check_visible(problems, pool)
    if not use_mbppplus:
        return problems
    from complexitynet.sandbox.image import REPO_SANDBOX

    costs = load_costs(Path(os.environ.get("COMPLEXITYNET_SANDBOX_DIR", REPO_SANDBOX)) / COSTS_FILE)
    return add_mbppplus(problems, mbppplus.load(source_path(sources_dir, "mbppplus")), pool, show_progress, costs)


# --- the stage's edge: params and paths in, files out (dvc.yaml and the Prefect flow call it) ---

def run(params: Params, paths: Paths) -> None:
    from complexitynet.io import write_jsonl
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
        problems = prepare(dataset, paths.sources, params.prepare.templates[dataset],
                                    split.fractions, params.base.seed, pool, params.prepare.mbppplus, show_progress=True)
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
