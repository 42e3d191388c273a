"""Hidden input/output tests on both backends: per-input verdicts, one process per sample, expected
values that never enter the sandbox, references whose outputs are not plain data, and the
execute stage judging visible and hidden tests apart (with the verdict cache)."""

from __future__ import annotations

import pytest

from complexitynet.execute import execute
from complexitynet.prepare import add_mbppplus
from complexitynet.mbppplus import PlusProblem
from complexitynet.sandbox import protocol as P
from complexitynet.sandbox.pool import Job
from complexitynet.schemas import Cases, Problem, Sample
from complexitynet.schemas import Tests as ProblemTests

pytestmark = [pytest.mark.integration]

VISIBLE = ProblemTests(asserts=["assert is_prime(2) == True", "assert is_prime(9) == False"])
HIDDEN = ProblemTests(cases=Cases(inputs=[P.encode([n]) for n in (2, 9, 1, 0, 97, 91)],
                                  expected=[P.encode(v) for v in (True, False, False, False, True, False)]))
RIGHT = "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))\n"
WRONG = "def is_prime(n):\n    return n == 2 or n % 2 == 1 and n != 9\n"  # passes what the prompt shows


def problem() -> Problem:
    return Problem(task_id="T/1", dataset="mbpp", split="test", text="t", prompt="p", entry_point="is_prime",
                   visible=VISIBLE, hidden=HIDDEN, hidden_source="user", reference=RIGHT)


def test_a_wrong_solution_passes_visible_and_fails_hidden_with_the_indices(pool):
    (_, visible, _), (_, hidden, _) = pool.map([Job("v", WRONG, VISIBLE, "is_prime"), Job("h", WRONG, HIDDEN, "is_prime")])
    assert visible.status == "pass" and (visible.tests_passed, visible.tests_total) == (2, 2)
    assert hidden.status == "fail" and hidden.failed == (2, 5) and hidden.tests_passed == 4  # 1 and 91
    assert hidden.detail.startswith("test 2: wrong output True")
    _, right, _ = pool.run(Job("r", RIGHT, HIDDEN, "is_prime"))
    assert right.status == "pass" and right.failed == ()


def test_all_inputs_run_in_one_process_and_expected_values_stay_outside(pool):
    spy = ("import os\ncalls = []\n"
           "def is_prime(n):\n    calls.append(os.getpid())\n    assert len(set(calls)) == 1\n"
           "    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))\n")
    _, outcome, _ = pool.run(Job("spy", spy, HIDDEN, "is_prime"))
    assert outcome.status == "pass"
    # a solution that hunts for the expected values in its process finds nothing to forge
    hunt = ("import gc\ndef is_prime(n):\n    seen = [o for o in gc.get_objects() if isinstance(o, list) and "
            "o[:1] == ['b']]\n    return seen[0][1] if seen else None\n")
    _, outcome, _ = pool.run(Job("hunt", hunt, HIDDEN, "is_prime"))
    assert outcome.status == "fail" and outcome.failed == tuple(range(6))


@pytest.mark.parametrize("code, status, failed", [
    # the first input uses up its 2 CPU-s; the rest are not run and count as failed; the suite is a
    # timeout, as a suite of asserts is when one assert runs out of CPU time
    ("def is_prime(n):\n    while True: pass\n", "timeout", (0, 1, 2, 3, 4, 5)),
    ("def is_prime(n):\n    while n > 90: pass\n    return n in (2, 97)\n", "timeout", (4, 5)),
    # wrong on one input only: that input fails, the others pass
    ("def is_prime(n):\n    if n == 9: raise ValueError(n)\n    return n in (2, 97)\n", "fail", (1,)),
    ("def is_prime(n):\n    return object()\n", "fail", (0, 1, 2, 3, 4, 5)),  # not plain data
    ("def is_prime(n):\n    if n == 0: raise ValueError('zero')\n    return n in (2, 97)\n", "fail", (3,)),
    ("def isprime(n):\n    return True\n", "fail", (0, 1, 2, 3, 4, 5)),  # no entry point
    ("def is_prime(n)\n    return True\n", "error", (0, 1, 2, 3, 4, 5)),
])
def test_failures_per_input(pool, code, status, failed):
    _, outcome, _ = pool.run(Job("x", code, HIDDEN, "is_prime"))
    assert (outcome.status, outcome.failed) == (status, failed), outcome


def test_reference_outputs_that_are_not_plain_data_are_dropped_and_noted(pool):
    base = Problem(task_id="MBPP/900", dataset="mbpp", split="train", text="t", prompt="p", entry_point="f",
                   visible=(v := ProblemTests(asserts=["assert f(1) == 1"])), hidden=v, hidden_source="visible",
                   reference="def f(x):\n    return x\n")
    canonical = "def f(x):\n    if x == 2:\n        return object()\n    if x == 3:\n        raise KeyError(x)\n    return x * 2\n"
    extra = PlusProblem(900, "f", canonical, [[1], [2], [3], [4]], 0.0, "exact")
    (out,) = add_mbppplus([base], {900: extra}, pool)
    assert out.hidden_source == "mbpp+" and out.hidden.cases is not None
    assert [P.decode(x) for x in out.hidden.cases.inputs] == [[1], [4]]
    assert [P.decode(x) for x in out.hidden.cases.expected] == [2, 8]
    assert sorted(out.notes) == ["1 MBPP+ input(s) dropped: the canonical solution gives no plain answer (KeyError: 3)",
                                 "1 MBPP+ input(s) dropped: the canonical solution gives no plain answer (returned an "
                                 "object that is not plain data)"]


def test_execute_judges_visible_and_hidden_and_caches_each(pool, tmp_path):
    samples = {"m": [Sample(task_id="T/1", trial=t, model="m", completion=c, code=c, prompt_tokens=1,
                            completion_tokens=1, tokens_estimated=False, cost_usd=0.0, latency_s=None,
                            source="recorded") for t, c in enumerate((RIGHT, WRONG))]}
    problems = {"T/1": problem()}
    first = execute(samples, problems, pool, "fp", tmp_path)["m"]
    assert [(v.visible.status, v.hidden.status) for v in first] == [("pass", "pass"), ("pass", "fail")]
    assert first[1].hidden.failed == [2, 5] and first[1].produced_by.hash_seed == 0
    assert first[0].produced_by.sandbox.startswith(pool.backend.name)
    again = execute(samples, problems, pool, "fp", tmp_path)["m"]  # all four runs from the cache
    assert again == first
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 4


def test_mbppplus_is_not_used_where_it_calls_with_other_arguments(pool):
    """MBPP+ dropped a length argument from 26 problems; their prompts still ask for it."""
    base = Problem(task_id="MBPP/57", dataset="mbpp", split="test", text="t", prompt="p", entry_point="f",
                   visible=(v := ProblemTests(asserts=["assert f([1, 2], 2) == 2"])), hidden=v,
                   hidden_source="visible", reference="def f(a, n):\n    return max(a)\n")
    extra = PlusProblem(57, "f", "def f(a):\n    return max(a)\n", [[[1, 2]], [[3]]], 0.0, "exact")
    (out,) = add_mbppplus([base], {57: extra}, pool)
    assert out.hidden == out.visible and out.hidden_source == "visible"
    assert out.notes == ["MBPP+ not used: it calls with [1] argument(s), MBPP's asserts with [2]"]


# Burns about `n` CPU seconds of the interpreter (not wall clock: `time.process_time`).
BURN = "import time\ndef f(n):\n    end = time.process_time() + n\n    while time.process_time() < end: pass\n    return n\n"


def test_input_limits_follow_the_reference_cost(pool):
    """prepare measures the canonical solution's CPU time per input and sizes each input's limit from
    it (x case_factor, doubled up from the floor case_s); execute applies each input's own limit."""
    base = Problem(task_id="MBPP/901", dataset="mbpp", split="train", text="t", prompt="p", entry_point="f",
                   visible=(v := ProblemTests(asserts=["assert f(0) == 0"])), hidden=v, hidden_source="visible",
                   reference="def f(n):\n    return n\n")
    # floor 2 s, factor 4: an input whose reference costs 0.05 s keeps the floor, one costing 0.6 s gets 4 s
    (out,) = add_mbppplus([base], {901: PlusProblem(901, "f", BURN, [[0.05], [0.6]], 0.0, "exact")}, pool)
    cases = out.hidden.cases
    assert cases is not None and cases.cpu_s == [2.0, 4.0] and cases.budget_cpu_s == 4.0
    # a solution 4x slower than the reference passes; on the floor's 2 s the second input would not
    slow = BURN.replace("end = time.process_time() + n", "end = time.process_time() + 4 * n")
    _, outcome, _ = pool.run(Job("slow", slow, out.hidden, "f"))
    assert outcome.status == "pass", outcome
    # the pipeline's prepare uses pinned costs (sandbox/mbppplus_cpu.json), not this run's measurement
    (pinned,) = add_mbppplus([base], {901: PlusProblem(901, "f", BURN, [[0.05], [0.6]], 0.0, "exact")}, pool,
                             costs={901: (3.0, {1: 1.2})})
    assert pinned.hidden.cases.cpu_s == [2.0, 8.0] and pinned.hidden.cases.budget_cpu_s == 16.0
    flat = out.hidden.model_copy(update={"cases": cases.model_copy(update={"cpu_s": None})})
    _, outcome, _ = pool.run(Job("flat", slow, flat, "f"))
    assert (outcome.status, outcome.failed) == ("timeout", (1,)) and "(2s)" in outcome.detail, outcome
