import numpy as np
import pytest

from complexitynet import scores as R

# 4 prompts, ladder of 3 models; quality = pass rate, cost in USD.
QUALITY = np.array([[1.0, 1.0, 1.0],
                    [0.0, 1.0, 1.0],
                    [0.0, 0.0, 1.0],
                    [0.0, 0.0, 0.0]])
COST = np.array([[1.0, 2.0, 10.0]] * 4)


def test_success_probs_and_choice():
    probs = np.array([[0.7, 0.2, 0.05, 0.05],   # P(small ok)=.7, P(medium ok)=.9, P(large ok)=.95
                      [0.1, 0.1, 0.1, 0.7]])
    assert np.allclose(R.success_probs(probs), [[0.7, 0.9, 0.95], [0.1, 0.2, 0.3]])
    assert R.choose(probs, 0.5).tolist() == [0, 2]   # nothing meets 0.5 for prompt 2: the largest
    assert R.choose(probs, 0.8).tolist() == [1, 2]
    assert R.choose(probs, 0.0).tolist() == [0, 0]


def test_pgr_of_the_ladder_ends_and_the_oracle():
    weak = R.outcome(R.fixed(0, 4), QUALITY, COST)
    strong = R.outcome(R.fixed(2, 4), QUALITY, COST)
    assert (weak.quality, weak.cost) == (0.25, 4.0) and (strong.quality, strong.cost) == (0.75, 40.0)
    assert R.pgr(strong.quality, weak.quality, strong.quality) == 1.0
    assert R.pgr(weak.quality, weak.quality, strong.quality) == 0.0
    oracle = R.outcome(R.oracle_choices(QUALITY), QUALITY, COST)
    assert R.oracle_choices(QUALITY).tolist() == [0, 1, 2, 0]  # nothing passes: the cheapest
    assert oracle.quality == 0.75 and oracle.cost == 1 + 2 + 10 + 1
    better = np.array([[1.0, 1.0, 0.0]] * 4)  # a prompt set where a smaller model beats the largest
    assert R.pgr(R.outcome(R.oracle_choices(better), better, COST).quality, 0.5, 0.6) > 1


def test_random_mix_is_the_expected_value():
    mix = R.random_mix(np.array([0, 0, 2, 2]), QUALITY, COST)
    assert mix.quality == pytest.approx(0.5 * 0.25 + 0.5 * 0.75)
    assert mix.cost == pytest.approx(0.5 * 4 + 0.5 * 40)


def test_aiq_single_point_and_mixture():
    assert R.aiq([R.Point(0.6, 2.0)], 2.0, 10.0) == pytest.approx(0.6)
    # two points: the hull interpolates (mixing), then stays flat
    val = R.aiq([R.Point(0.2, 0.0), R.Point(0.6, 1.0)], 0.0, 2.0)
    assert val == pytest.approx((0.5 * (0.2 + 0.6) * 1.0 + 0.6 * 1.0) / 2.0, rel=1e-3)
    # a dominated point (more cost, less quality) changes nothing
    assert R.aiq([R.Point(0.2, 0.0), R.Point(0.6, 1.0), R.Point(0.3, 1.5)], 0.0, 2.0) == pytest.approx(val)


def test_hull_is_concave_and_non_decreasing():
    env = R.hull(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 0.1, 0.9, 0.8]))
    xs = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert np.allclose(env(xs), [0.0, 0.45, 0.9, 0.9, 0.9])  # (1, .1) lies under the chord; flat after the best
    assert np.isnan(env(np.array([-1.0]))[0])


def test_apgr_and_cpt():
    weak, strong = R.Point(0.2, 0.0), R.Point(0.8, 10.0)
    assert R.apgr([], weak, strong) == pytest.approx(0.5, abs=1e-3)  # just mixing the two ends
    router = [R.Point(0.7, 2.0), R.Point(0.8, 5.0)]  # most of the gap for little cost
    assert R.apgr(router, weak, strong) > 0.8
    assert R.cpt(router, weak, strong, 0.5) == pytest.approx(0.2)
    assert R.cpt(router, weak, strong, 0.8) == pytest.approx(0.2)
    assert R.cpt(router, weak, strong, 1.0) == pytest.approx(0.5)
    assert np.isnan(R.cpt(router, weak, strong, 1.5))


def test_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(3)
    correct = rng.random(200) < 0.7
    estimate = correct.mean()
    lo, hi = R.bootstrap_ci(lambda idx: correct[idx].mean(), len(correct), rounds=500, seed=1)
    assert lo < estimate < hi and hi - lo < 0.2
    assert R.bootstrap_ci(lambda idx: correct[idx].mean(), 200, rounds=200, seed=1) == \
        R.bootstrap_ci(lambda idx: correct[idx].mean(), 200, rounds=200, seed=1)  # seeded


def test_calibrated_target_is_the_cheapest_that_keeps_the_goal():
    probs = np.array([[0.9, 0.05, 0.03, 0.02], [0.1, 0.8, 0.05, 0.05], [0.05, 0.05, 0.8, 0.1], [0.3, 0.3, 0.2, 0.2]])
    targets = np.round(np.arange(0, 1.0001, 0.1), 6)
    t = R.calibrate_target(probs, QUALITY, COST, targets, goal=1.0)
    point = R.outcome(R.choose(probs, t), QUALITY, COST)
    assert point.quality == 0.75 and point.cost < 40.0
    assert R.calibrate_target(probs, QUALITY, COST, targets, goal=0.3) <= t


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    from complexitynet.evaluate import macro_f1

    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 4, 300), rng.integers(0, 3, 300)
    assert macro_f1(y, pred, 4) == pytest.approx(f1_score(y, pred, average="macro", labels=range(4), zero_division=0))
