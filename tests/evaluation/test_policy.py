"""The cost-aware rule, the verified cascade and the margins that judge them (policy.py)."""

from __future__ import annotations

import numpy as np
import pytest

from complexitynet import policy as P

UNIT = [0.01, 0.1, 1.0]  # cheapest first, largest = 1


def test_choose_trades_success_for_cost():
    success = np.array([[0.2, 0.6, 0.9], [0.5, 0.5, 0.5], [0.9, 0.9, 0.95]])
    assert P.choose(success, UNIT, P.Rule(0.0)).tolist() == [2, 0, 2]  # ties go to the cheaper rung
    assert P.choose(success, UNIT, P.Rule(0.5)).tolist() == [1, 0, 0]
    assert P.choose(success, UNIT, P.Rule(100.0)).tolist() == [0, 0, 0]


@pytest.mark.parametrize("fallback, expected", [("cheapest", 0), ("largest", 2), ("refuse", P.REFUSE)])
def test_prompts_no_rung_solves_go_to_the_fallback(fallback, expected):
    success = np.array([[0.05, 0.08, 0.09], [0.1, 0.7, 0.8]])
    choices = P.choose(success, UNIT, P.Rule(0.0, fallback, hopeless_below=0.1))
    assert choices.tolist() == [expected, 2]


def test_refused_prompts_cost_and_pass_nothing():
    quality, cost = np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([[1.0, 5.0], [1.0, 5.0]])
    q, c = P.per_prompt(np.array([P.REFUSE, 1]), quality, cost)
    assert q.tolist() == [0.0, 1.0] and c.tolist() == [0.0, 5.0]


def test_gate_without_coefficients_is_the_next_rungs_success():
    row = [0.3, 0.6, 0.8]
    assert P.Gate().prob(row, 0, 0.5) == 0.6
    gate = P.Gate((1.0, 0.0, 2.0), -1.0)
    z = -1.0 + P.gate_features(row, 1, 0.5)[0] + 2.0 * 0.5
    assert gate.prob(row, 1, 0.5) == pytest.approx(1 / (1 + np.exp(-z)))
    assert not P.escalate(gate, row, 2, 0.0, UNIT, 0.0)  # nothing above the largest
    assert P.escalate(P.Gate(), row, 1, 0.0, UNIT, 0.7) and not P.escalate(P.Gate(), row, 1, 0.0, UNIT, 0.9)


def test_the_best_failing_answer_passed_most_visible_tests_larger_on_a_tie():
    assert P.pick_answer([(0, 0.5), (1, 0.0)]) == 0
    assert P.pick_answer([(0, 0.5), (1, 0.5)]) == 1


def recorded() -> P.Recorded:
    """Four prompts, three rungs, one trial each."""
    visible = np.array([[1, 1, 1], [0, 1, 1], [-1, 0, 1], [0, 0, 0]], np.int8)[:, :, None]
    frac = np.array([[1, 1, 1], [0.5, 1, 1], [0, 0, 1], [0.67, 0.0, 0.33]])[:, :, None]
    truth = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 1], [1, 0, 0]], bool)[:, :, None]
    return P.Recorded(["a", "b", "c", "d"], visible, frac, truth, np.ones_like(truth),
                      np.tile([1.0, 10.0, 100.0], (4, 1)), np.full((4, 3), 0.5))


def test_cascade_escalates_on_visible_failure_and_pays_every_call():
    rec = recorded()
    run = P.cascade(np.ones((4, 3)), rec, P.Rule(0.0), P.Gate(), UNIT)  # cheapest first, escalate always
    # a: the cheapest passes; b: escalates once; c: nothing to verify with, so the first answer stands;
    # d: nothing passes, the cheapest's answer passed most visible tests (and is right)
    assert run.quality.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert run.cost.tolist() == [1.0, 11.0, 1.0, 111.0]
    assert run.calls.tolist() == [1, 2, 1, 3]
    assert run.seconds.tolist() == [0.5, 1.0, 0.0, 1.5]  # no sandbox run where there is nothing to check
    assert run.answered_by.argmax(axis=1).tolist() == [0, 1, 0, 0]


def test_cascade_stops_where_the_gate_says_the_next_rung_is_not_worth_its_price():
    rec = recorded()
    success = np.tile([1.0, 0.5, 0.2], (4, 1))
    run = P.cascade(success, rec, P.Rule(0.3), P.Gate(), UNIT)  # 0.5 - 0.03 > 0 escalates; 0.2 - 0.3 does not
    assert run.calls.tolist() == [1, 2, 1, 2]
    assert run.quality.tolist() == [1.0, 1.0, 0.0, 1.0]


def test_cascade_averages_trials():
    rec = recorded()
    two = P.Recorded(rec.task_ids, np.concatenate([rec.visible, rec.visible], 2),
                     np.concatenate([rec.visible_frac, rec.visible_frac], 2),
                     np.concatenate([rec.truth, np.zeros_like(rec.truth)], 2),
                     np.concatenate([rec.present, rec.present], 2), rec.cost, rec.seconds)
    run = P.cascade(np.ones((4, 3)), two, P.Rule(0.0), P.Gate(), UNIT)
    assert run.quality.tolist() == [0.5, 0.5, 0.0, 0.5]
    assert run.cost.tolist() == [1.0, 11.0, 1.0, 111.0]


def test_margin_is_zero_on_the_hull_and_positive_above_it():
    quality = np.array([[0.0, 1.0], [1.0, 1.0]])
    cost = np.array([[1.0, 3.0], [1.0, 3.0]])
    # always-cheap (0.5 at 2) and always-large (1.0 at 6); answering nothing is (0, 0)
    assert P.margin(0.5, 2.0, quality, cost) == pytest.approx(0.0)
    assert P.margin(0.75, 4.0, quality, cost) == pytest.approx(0.0)  # a 50/50 mix
    assert P.margin(1.0, 4.0, quality, cost) == pytest.approx(0.25)  # the oracle: large only where needed
    assert P.margin(0.0, 0.0, quality, cost) == pytest.approx(0.0)


def test_best_lambda_meets_each_objective():
    quality = np.array([[0.0, 1.0], [1.0, 1.0]])
    cost = np.array([[1.0, 3.0], [1.0, 3.0]])
    outcomes = {0.0: (np.array([1.0, 1.0]), np.array([3.0, 3.0])),  # always large
                1.0: (np.array([1.0, 1.0]), np.array([3.0, 1.0])),  # the oracle
                9.0: (np.array([0.0, 1.0]), np.array([1.0, 1.0]))}  # always cheap
    run = outcomes.__getitem__
    assert P.best_lambda(run, [0.0, 1.0, 9.0], P.Objective("margin"), quality, cost) == 1.0
    assert P.best_lambda(run, [0.0, 9.0], P.Objective("quality_floor", 1.0), quality, cost) == 0.0
    assert P.best_lambda(run, [0.0, 9.0], P.Objective("quality_floor", 0.5), quality, cost) == 9.0
    assert P.best_lambda(run, [0.0, 1.0, 9.0], P.Objective("budget", 0.5), quality, cost) == 9.0
    assert P.best_lambda(run, [0.0, 1.0, 9.0], P.Objective("budget", 0.7), quality, cost) == 1.0


def test_goals_are_relative_to_the_best_single_model_not_the_last():
    quality = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])  # middle 100%, last 33%
    cost = np.tile([1.0, 2.0, 10.0], (3, 1))
    assert P.reference_rung(quality) == 1 and P.reference_rung(np.ones((2, 3))) == 0  # the cheaper on a tie
    outcomes = {0.0: (np.array([1.0, 1.0, 1.0]), np.array([2.0, 2.0, 2.0])),  # always middle
                9.0: (np.array([1.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0]))}  # always cheap
    floor = P.best_lambda(outcomes.__getitem__, [0.0, 9.0], P.Objective("quality_floor", 0.9), quality, cost)
    assert floor == 0.0  # 90% of the middle model's 100%, not of the last rung's 33%


def test_judge_gives_paired_intervals():
    rng = np.random.default_rng(0)
    quality = (rng.random((200, 3)) < [0.3, 0.5, 0.6]).astype(float)
    cost = np.tile([1.0, 10.0, 100.0], (200, 1))
    oracle = (quality >= quality.max(axis=1, keepdims=True)).argmax(axis=1)
    q, c = P.per_prompt(oracle, quality, cost)
    shares = np.bincount(oracle, minlength=3) / 200
    out = P.judge(q, c, shares, quality, cost, 300, 0)
    assert out["margin_over_hull"]["ci95"][0] > 0.05 and out["margin_over_random"]["ci95"][0] > 0.05
    largest = P.judge(quality[:, 2], cost[:, 2], np.array([0.0, 0.0, 1.0]), quality, cost, 300, 0)
    assert largest["margin_over_hull"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert largest["margin_over_random"]["ci95"] == [0.0, 0.0]
    assert largest["cost_vs_largest"]["value"] == pytest.approx(1.0)


def test_first_k_trials_and_the_threshold_labels():
    truth = np.array([[[1, 1, 0], [1, 1, 1]],  # rung 0 passes 2 of 3 trials, rung 1 all
                      [[0, 0, 0], [1, 0, 1]]], bool)  # nobody passes every trial
    present = np.ones_like(truth)
    present[1, 1, 2] = False  # rung 1's third trial on prompt 1 was never recorded
    rec = P.Recorded(["a", "b"], np.zeros(truth.shape, np.int8), np.zeros(truth.shape), truth, present,
                     np.ones((2, 2)), np.zeros((2, 2)))
    assert rec.labels().tolist() == [1, 2]
    assert rec.first(1).labels().tolist() == [0, 1]
    assert rec.first(2).labels().tolist() == [0, 2]
    assert rec.first(2).quality.tolist() == [[1.0, 1.0], [0.0, 0.5]]
    assert rec.quality[1].tolist() == [0.0, 0.5]  # the missing trial counts neither way
