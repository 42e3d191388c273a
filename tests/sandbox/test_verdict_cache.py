"""The verdict cache refuses records that no run of this code could have written."""

from __future__ import annotations

import pytest

from complexitynet.execute import check_outcome

GOOD = {"status": "fail", "tests_passed": 1, "tests_total": 3, "failed": [1, 2], "detail": "test 1: AssertionError",
        "duration_s": 0.01, "produced_by": {"sandbox": "docker x", "python": "3.11.2", "hash_seed": 0}}


@pytest.mark.parametrize("change, why", [
    ({}, None),
    ({"status": "pass", "tests_passed": 3, "failed": []}, None),
    ({"status": "pass"}, "a status that disagrees with its tests"),  # "pass" edited in, 1/3 passed
    ({"status": "pass", "tests_passed": 0, "failed": []}, "test counts that disagree"),
    ({"status": "fail", "tests_passed": 3, "failed": []}, "a status that disagrees with its tests"),
    ({"status": "maybe"}, "unknown status"),
    ({"failed": [2, 1]}, "test counts that disagree"),
    ({"failed": [1, 5], "tests_passed": 1}, "test counts that disagree"),
    ({"tests_passed": -1}, "malformed test counts"),
    ({"tests_total": "3"}, "malformed test counts"),
    ({"produced_by": None}, "missing fields"),
])
def test_check_outcome(change, why):
    assert check_outcome({"key": "k", "outcome": GOOD | change}) == why


def test_a_timeout_of_an_empty_suite_is_consistent():
    assert check_outcome({"key": "k", "outcome": GOOD | {"status": "timeout", "tests_passed": 0, "tests_total": 0,
                                                         "failed": []}}) is None
