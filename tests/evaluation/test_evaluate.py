from pathlib import Path

import numpy as np
import pytest

from complexitynet.evaluate import TestSet as EvalSet
from complexitynet.evaluate import evaluate, reference_info, routing_errors
from complexitynet.report import render

QUALITY = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
COST = np.array([[1.0, 2.0, 10.0]] * 4)
MODELS = ["small", "medium", "large"]
REF = reference_info(QUALITY, MODELS)


def make_set() -> EvalSet:
    return EvalSet(["T/1", "T/2", "T/3", "T/4"], ["a", "b", "c", "d"], np.array([0, 1, 2, 3]),
                   np.array([0, 0, 2, 3]), QUALITY, COST, MODELS)


def test_routing_errors():
    ts = make_set()
    # too weak for T/2 (small), right for T/1, too strong for T/1's twin and the unsolvable T/4
    errors = routing_errors(np.array([2, 0, 2, 1]), ts)
    assert errors == {"under_routing": 0.25, "over_routing": 0.5}


def test_perfect_classifier_is_the_oracle():
    ts = make_set()
    perfect = np.eye(4)[[0, 1, 2, 3]]
    result = evaluate(ts, {"router": perfect}, 0.5, np.linspace(0, 1, 11), 0.0, 200, 0, REF)
    router, oracle = result["policies"]["router"], result["policies"]["oracle"]
    assert router["pass_rate"] == oracle["pass_rate"] == 0.75
    # the unsolvable prompt goes to the largest model under the rule, to the cheapest for the oracle
    assert router["cost_usd"] == 1 + 2 + 10 + 10 and oracle["cost_usd"] == 1 + 2 + 10 + 1
    assert result["classifier"]["router"]["accuracy"]["value"] == 1.0
    assert result["policies"]["always:large"]["pgr"] == 1.0 and result["policies"]["always:small"]["pgr"] == 0.0
    assert result["paper_way"]["label_accuracy_3class"] == 1.0
    assert result["trials"]["agreement"] == 0.75
    assert result["router_mix"] == {"small": 1, "medium": 1, "large": 2}
    text = render(result, "mbpp", "test", "threshold")
    assert "| router | 75.0%" in text and "we miss it" in text


def test_uninformed_classifier_costs_as_much_as_the_largest():
    ts = make_set()
    flat = np.full((4, 4), 0.25)
    result = evaluate(ts, {"router": flat}, 0.9, np.linspace(0, 1, 11), 0.0, 200, 0, REF)
    assert result["policies"]["router"]["cost_vs_largest"] == pytest.approx(1.0)


def test_report_shows_cross_validation():
    ts = make_set()
    result = evaluate(ts, {"router": np.eye(4)[[0, 1, 2, 3]]}, 0.5, np.linspace(0, 1, 11), 0.0, 100, 0, REF)
    score = {m: {"mean": 0.5, "std": 0.1} for m in ("accuracy", "macro_f1", "within_one")}
    result["cross_validation"] = {"folds": 5, "n": 464, "lora": score, "tfidf_lr": score}
    text = render(result, "mbpp", "test", "threshold")
    assert "## Cross-validation (5 folds over 464 non-test prompts)" in text and "| lora | 0.500 ± 0.100" in text


def test_a_sweeps_own_scores_can_fall_below_the_ladders():
    from complexitynet.evaluate import _curve_scores

    quality = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])  # cheap 25%, large 75%
    cost = np.tile([1.0, 10.0], (4, 1))
    ladder = _curve_scores([(0.1, 0.25), (1.0, 0.75)], quality, cost, 1)
    worse = _curve_scores([(0.1, 0.25), (0.9, 0.3), (1.0, 0.5)], quality, cost, 1)  # under the ladder's chord
    better = _curve_scores([(0.1, 0.25), (0.3, 0.75)], quality, cost, 1)  # the large model's quality for 30%
    assert worse["aiq"] < ladder["aiq"] < better["aiq"]
    assert worse["apgr"] < ladder["apgr"] < better["apgr"]
    assert ladder["apgr"] == pytest.approx(0.5, abs=1e-3)  # PGR rises linearly from 0 to 1 with cost


def test_a_ladder_whose_middle_model_is_best_is_judged_against_it():
    """PGR, the cascade's target and the report use the best single model on train + validation,
    not the last rung; the report says the ladder is not monotone."""
    quality = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    ref = reference_info(quality, MODELS)
    assert ref["model"] == "medium" and not ref["monotone"] and ref["inversions"] == [["medium", "large"]]
    assert reference_info(QUALITY, MODELS)["monotone"]
    ts = EvalSet(["T/1", "T/2", "T/3", "T/4"], ["a", "b", "c", "d"], np.array([0, 1, 1, 3]),
                 np.array([0, 1, 1, 3]), quality, COST, MODELS)
    result = evaluate(ts, {"router": np.eye(4)[[0, 1, 1, 3]]}, 0.5, np.linspace(0, 1, 11), 0.0, 100, 0, ref)
    assert result["policies"]["always:medium"]["pgr"] == 1.0
    assert result["policies"]["always:large"]["pgr"] == 0.0  # no better than the cheapest
    assert result["policies"]["always:large"]["cost_vs_largest"] == 1.0  # cost stays relative to the last rung
    text = render(result, "mbpp", "test", "threshold")
    assert "not monotone" in text and "`medium` passes 75.0%" in text


def test_router_cost_comes_from_the_pinned_measurement_or_params(tmp_path):
    import json

    from complexitynet.config import ROUTER_CPU_FILE, RouterCostParams
    from complexitynet.errors import DataError
    from complexitynet.evaluate import router_costs

    table = Path(__file__).resolve().parents[2] / ROUTER_CPU_FILE
    pinned = router_costs(RouterCostParams(), table, ["tfidf", "ensemble", "lora", "classifier"])
    assert pinned["source"].startswith(str(table)) and pinned["cpu_s"]["lora"] == pinned["cpu_s"]["classifier"]
    assert pinned["usd_per_prompt"]["tfidf"] == pytest.approx(pinned["cpu_s"]["tfidf"] * 0.05 / 3600)
    flat = router_costs(RouterCostParams(cpu_s=0.036, usd_per_cpu_hour=1.0), tmp_path / "none.json", ["tfidf"])
    assert flat["usd_per_prompt"] == {"tfidf": pytest.approx(1e-5)}
    with pytest.raises(DataError, match=r"no CPU seconds per prompt for \['knn'\]; re-measure with `make router-cpu`"):
        router_costs(RouterCostParams(cpu_s={"tfidf": 0.001}), tmp_path / "none.json", ["tfidf", "knn"])
    (bad := tmp_path / "router_cpu.json").write_text(json.dumps({"cpu_s": {}}))
    with pytest.raises(DataError, match=r"router_cpu.json: not a router CPU measurement.*make router-cpu"):
        router_costs(RouterCostParams(), bad, ["tfidf"])
