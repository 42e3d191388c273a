"""MBPP+ (EvalPlus): the extra test inputs that become MBPP's hidden tests.

MBPP+ stores each problem's inputs as JSON, which has no tuples, sets or complex numbers. The
problem's own example asserts (its `assertion` field, MBPP's original three) show the types the
function takes, so every input is coerced to the shapes of the example call's arguments: a JSON
list becomes a tuple where the example passes a tuple, a set where it passes a set, and a string a
complex number where it passes one. A test checks that this turns every `base_input` into exactly
the arguments of the matching original assert.

Expected outputs are not stored by MBPP+; `prepare` computes them by running the canonical
solution on these inputs in the sandbox.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from complexitynet.errors import DataError
from complexitynet.io import iter_json_lines

# EvalPlus's output oracles for the MBPP+ problems whose answer is unordered ("set") or any
# non-None match object ("not_none"); every other problem compares outputs exactly (floats within atol).
SET_EQUAL = frozenset({"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                       "larg_nnum", "intersection_array", "find_dissimilar", "Diff"})
NOT_NONE = frozenset({"check_str", "text_match_three", "text_starta_endb"})
# Problems EvalPlus judges with a bespoke oracle that we do not reproduce (we compare exactly, which can
# only be stricter); listed in each such problem's notes.
BESPOKE = {164: "are_equivalent", 295: "sum_div", 558: "digit_distance_nums", 581: "surface_Area"}


@dataclass(frozen=True)
class PlusProblem:
    task: int  # the MBPP task number
    entry_point: str
    canonical: str  # EvalPlus's canonical solution (some fixed against MBPP's reference)
    inputs: list[list[Any]]  # base inputs, then plus inputs, coerced to the example call's types
    atol: float
    compare: str  # exact | set | not_none


def example_calls(assertion: str, entry_point: str) -> list[list[Any]]:
    """The literal arguments of every call to `entry_point` in the example asserts (non-literal
    calls are skipped)."""
    try:
        tree = ast.parse(assertion)
    except SyntaxError:
        return []
    calls = []
    for stmt in tree.body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point:
                try:
                    calls.append([ast.literal_eval(arg) for arg in node.args])
                except (ValueError, SyntaxError, TypeError):
                    pass
                break
    return calls


def _kind(x: Any) -> str:
    if isinstance(x, (list, tuple, set, frozenset)):
        return "seq"
    if isinstance(x, dict):
        return "map"
    if isinstance(x, (bool, int, float, complex)):
        return "num"
    return type(x).__name__


def coerce(value: Any, examples: list[Any]) -> Any:
    """`value` (decoded JSON) with the container and number types of the example values that stand
    in its place (the same argument of every example call, or elements of those)."""
    if not isinstance(value, (str, list, dict)):
        return value  # (the cheap exit first: most elements of MBPP+ inputs are plain numbers)
    if isinstance(value, str):
        numbers = [e for e in examples if _kind(e) == "num" and not isinstance(e, bool)]
        return _number(value, numbers[0]) if numbers and not any(isinstance(e, str) for e in examples) else value
    seqs = [e for e in examples if _kind(e) == "seq"]
    if isinstance(value, list) and seqs:
        first = seqs[0]
        aligned = [e for e in seqs if isinstance(e, (list, tuple)) and len(e) == len(value)]
        members = [m for e in seqs for m in e]
        kinds = [_kind(m) for m in members]
        # a nested list deeper than any example (recursive data) takes the shape of its parent
        items = [coerce(v, _same_kind(v, [e[i] for e in aligned], members, kinds) or (seqs if _kind(v) == "seq" else []))
                 if isinstance(v, (str, list, dict)) else v for i, v in enumerate(value)]
        return items if isinstance(first, list) else type(first)(items)
    maps = [e for e in examples if _kind(e) == "map"]
    if isinstance(value, dict) and maps:
        keys, values = [k for m in maps for k in m], [v for m in maps for v in m.values()]
        key_kinds, value_kinds = [_kind(k) for k in keys], [_kind(v) for v in values]
        return {coerce(k, _same_kind(k, [], keys, key_kinds)):
                coerce(v, _same_kind(v, [], values, value_kinds)) if isinstance(v, (str, list, dict)) else v
                for k, v in value.items()}
    return value


def _same_kind(value: Any, candidates: list[Any], more: list[Any] = (), more_kinds: list[str] = ()) -> list[Any]:
    """The candidates, then `more` (whose kinds `more_kinds` are known), that can shape `value`: of its
    kind (a string may also stand for a number, "1j")."""
    kinds = {_kind(value)} | ({"num"} if isinstance(value, str) else set())
    return [c for c in candidates if _kind(c) in kinds] + [m for m, k in zip(more, more_kinds) if k in kinds]


def _number(text: str, example: Any) -> Any:
    """A number written as a string (JSON has no complex numbers), typed like `example`."""
    try:
        number = complex(text)
    except ValueError:
        return text
    if isinstance(example, complex):
        return number
    if isinstance(example, int) and number.imag == 0 and number.real == int(number.real):
        return int(number.real)
    return number.real if number.imag == 0 else number


def coerce_inputs(inputs: list[Any], examples: list[list[Any]]) -> list[list[Any]]:
    """Every input (an argument list) shaped like the example calls with the same number of arguments."""
    out = []
    for args in inputs:
        same = [e for e in examples if len(e) == len(args)]
        out.append([coerce(a, [e[i] for e in same]) for i, a in enumerate(args)])
    return out


def load(path: Path) -> dict[int, PlusProblem]:
    """MBPP+ problems by MBPP task number, inputs coerced (see the module docstring)."""
    out: dict[int, PlusProblem] = {}
    for lineno, obj in iter_json_lines(path):
        try:
            task = int(str(obj["task_id"]).split("/")[-1])
            entry = str(obj["entry_point"])
            raw = list(obj["base_input"]) + list(obj["plus_input"])
            if not all(isinstance(args, list) for args in raw):
                raise TypeError("an input is not a list of arguments")
            atol = float(obj.get("atol") or 0)
            canonical = str(obj["canonical_solution"])
            assertion = str(obj["assertion"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}:{lineno}: not the published MBPP+ format ({exc}); run `complexitynet fetch` "
                            "again") from None
        compare = "set" if entry in SET_EQUAL else "not_none" if entry in NOT_NONE else "exact"
        out[task] = PlusProblem(task, entry, canonical, coerce_inputs(raw, example_calls(assertion, entry)),
                                atol, compare)
    return out
