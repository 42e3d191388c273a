"""MBPP+ inputs coerced to the example calls' types, and the harness's output comparison."""

from __future__ import annotations

import json

import pytest

from complexitynet import mbppplus
from complexitynet.sandbox import protocol as P
from complexitynet.sandbox.harness import Timeouts, case_limits, outputs_match
from complexitynet.schemas import Cases
from complexitynet.schemas import Tests as ProblemTests
from complexitynet.sources import FILES

# Where MBPP+'s base input is not the original assert's argument list, and why (the data, not us).
BASE_DIFFERS = {
    87: "MBPP+ changed the dicts of the original asserts",
    115: "the asserts pass {} (an empty dict) where MBPP+'s JSON has [] for an empty set",
    301: "JSON object keys are strings; the assert uses int keys",
    803: "MBPP+ replaced an assert's input (196 vs 125)",
}


@pytest.fixture(scope="module")
def plus(sources_dir):
    return mbppplus.load(sources_dir / FILES["mbppplus"].relpath)


def test_base_inputs_equal_the_original_asserts_arguments(plus, sources_dir):
    rows = {int(r["task_id"].split("/")[1]): r
            for r in map(json.loads, (sources_dir / FILES["mbppplus"].relpath).read_text().splitlines())}
    assert len(plus) == 399 and sum(len(p.inputs) for p in plus.values()) == 43318
    differ = set()
    for task, p in plus.items():
        calls = mbppplus.example_calls(rows[task]["assertion"], p.entry_point)
        for coerced, call in zip(p.inputs, calls):
            if repr(coerced) != repr(call):  # repr: a tuple must not stand where the assert has a list
                differ.add(task)
    assert differ == set(BASE_DIFFERS)


def test_coercion_shapes(plus):
    assert plus[124].inputs[:2] == [[0, 1j], [2, 1j]]  # complex numbers written as strings
    assert plus[252].inputs[3] == [1 + 2j]
    assert plus[722].inputs[0][0]["Cierra Vega"] == (6.2, 70)  # dict values that are tuples
    deep = plus[580].inputs[3][0]  # recursive tuples deeper than any example
    while len(deep) > 1 and isinstance(deep[-1], tuple):
        deep = deep[-1]
    assert deep == (20,)
    assert mbppplus.coerce([[1, 2]], [[(0, 0)]]) == [(1, 2)]
    assert mbppplus.coerce("x", [1]) == "x"  # not a number: left alone
    assert (plus[2].compare, plus[737].compare, plus[11].compare) == ("set", "not_none", "exact")
    assert {p.atol for p in plus.values()} == {0.0, 0.0001}


@pytest.mark.parametrize("out, expected, atol, compare, same", [
    ((4, 5), (4, 5), 0, "exact", True),
    ([4, 5], (4, 5), 0, "exact", False),  # a list is not the tuple asked for
    (0.1 + 0.2, 0.3, 0, "exact", True),  # floats: 1e-6 when the problem sets no atol
    (0.3001, 0.3, 0, "exact", False),
    (0.30009, 0.3, 1e-4, "exact", True),
    ([0.1 + 0.2, 1.0], [0.3, 1.0], 0, "exact", True),
    ([0.3, 1.0], [0.3, 1.0, 2.0], 1e-4, "exact", False),
    (float("nan"), float("nan"), 0, "exact", True),
    (1, 1.0000001, 0, "exact", False),  # types differ under tolerance
    ((5, 4), (4, 5), 0, "set", True),
    ([5, 4, 4], (4, 5), 0, "set", True),
    ("match", True, 0, "not_none", True),
    (None, True, 0, "not_none", False),
    (False, False, 0, "not_none", True),
])
def test_outputs_match(out, expected, atol, compare, same):
    assert outputs_match(out, expected, atol, compare) is same


def test_cases_pair_inputs_with_outputs_and_tests_hold_one_kind():
    with pytest.raises(ValueError, match="1 inputs but 0 expected"):
        Cases(inputs=[P.encode([1])], expected=[])
    with pytest.raises(ValueError, match="more than one kind"):
        ProblemTests(asserts=["assert f()"], check="def check(c): pass")
    assert ProblemTests(cases=Cases(inputs=[P.encode([1])] * 4, expected=[P.encode(1)] * 4)).total == 4
    assert ProblemTests().total == 0 and ProblemTests(check="def check(c): pass").total == 1


def test_sets_encode_the_same_whatever_the_hash_seed():
    words = {"pear", "apple", "fig", "kiwi", "plum"}
    assert P.encode(words) == P.encode(set(sorted(words, reverse=True)))
    assert [item[1] for item in P.encode(frozenset(words))[1]] == sorted(words)


def test_case_limits_double_from_the_floor_to_cover_the_reference():
    timeouts = Timeouts(case_s=2.0, case_factor=4.0)
    limits, budget = case_limits([0.0, 0.4, 0.5, 0.51, 1.0, 3.0], timeouts)
    assert limits == [2.0, 2.0, 2.0, 4.0, 4.0, 16.0]  # 4 x 0.51 = 2.04 > 2; 4 x 3 = 12 -> 16
    assert budget == 32.0  # the suite's: 4 x 5.41 s = 21.6 s, doubled up from 2 s
    assert case_limits([], timeouts) == ([], 2.0)
