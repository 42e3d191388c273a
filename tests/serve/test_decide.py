"""The routing decision (pure) and the micro-batcher, without a classifier."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

from complexitynet.config import OpenAIRung
from complexitynet.errors import ConfigError, DataError
from complexitynet.serve.decide import check_levels, decide, default_target, parse_model, prompt_text, serving_ladder
from complexitynet.serve.batcher import MicroBatcher, Overloaded, sorted_predict
from complexitynet.serve.verify import parse_tests

CLASSES = ["a", "b", "c", "none"]


def ladder() -> list[OpenAIRung]:
    return [OpenAIRung(name=n, provider="openai", openai={"model": n}, price={"input": p, "output": 2 * p})
            for n, p in (("a", 0.1), ("b", 1.0), ("c", 10.0))]


def test_decide_is_the_evaluate_rule_and_explains_itself():
    probs = np.array([0.5, 0.3, 0.1, 0.1])  # P(success) = 0.5, 0.8, 0.9
    d = decide(probs, ladder(), CLASSES, 0.75)
    assert (d.model, d.index, d.met, d.level) == ("b", 1, True, "a")
    assert d.success == {"a": 0.5, "b": 0.8, "c": 0.9}
    assert "b is predicted to succeed with 0.800 >= target 0.75" in d.explain(ladder())
    assert "cheaper rungs fall short (a 0.500)" in d.explain(ladder()) and "$1/$2 per 1M" in d.explain(ladder())
    assert decide(probs, ladder(), CLASSES, 0.0).model == "a"
    top = decide(probs, ladder(), CLASSES, 0.95)
    assert (top.model, top.met) == ("c", False) and "no rung reaches" in top.explain(ladder())
    assert json.loads(json.dumps(top.as_dict()))["probs"]["none"] == 0.1


def test_model_names_and_targets():
    assert parse_model("complexitynet") == (True, None)
    assert parse_model("complexitynet:0.9") == (True, 0.9)
    assert parse_model("gpt-4o") == (False, None)
    for bad in ("complexitynet:1.5", "complexitynet:high", "complexitynet:"):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            parse_model(bad)


def test_prompt_text_reads_the_last_user_turn():
    msgs = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]}]
    assert prompt_text(msgs) == "second"
    for bad, why in (([], "non-empty"), (None, "non-empty"), (["hi"], "object"),
                     ([{"role": "system", "content": "s"}], "role 'user'"), ([{"role": "user"}], "no text")):
        with pytest.raises((TypeError, ValueError), match=why):
            prompt_text(bad)


def test_default_target_prefers_config_then_eval_metrics_then_fallback(tmp_path):
    path = tmp_path / "eval.json"
    assert default_target(0.7, path, 0.9) == (0.7, "serve.target")
    assert default_target(None, path, 0.9)[0] == 0.9
    path.write_text(json.dumps({"target": 0.52}))
    assert default_target(None, path, 0.9) == (0.52, f"calibrated ({path})")
    path.write_text("{}")
    with pytest.raises(DataError, match="no numeric 'target'"):
        default_target(None, path, 0.9)


def test_serving_ladder_must_be_live_and_fit_the_classifier(params):
    with pytest.raises(ConfigError, match="rung 'codellama-7b-python' is provider 'recorded'"):
        serving_ladder(params, "mbpp")
    assert serving_ladder(params, "mbpp", live=False)[0] == "mbpp"
    name, rungs = serving_ladder(params)
    assert name == "openai-router" and len(rungs) == 3
    with pytest.raises(ConfigError, match="ladder 'openai' has 2 rungs; serve a ladder with 3 rungs"):
        check_levels(CLASSES, "openai", params.ladders["openai"], "models/classifier")


def test_request_tests_are_validated():
    assert parse_tests(None) is None
    spec = parse_tests({"tests": ["assert f(1) == 2"], "entry_point": "f"})
    assert spec.asserts == ["assert f(1) == 2"] and spec.entry_point == "f" and spec.setup == ""
    for bad, why in (({"tests": []}, "non-empty"), ({"tests": ["a"], "x": 1}, "unknown"), ("t", "object"),
                     ({"tests": ["a"], "entry_point": 3}, "entry_point")):
        with pytest.raises((TypeError, ValueError), match=why):
            parse_tests(bad)


def test_sorted_predict_keeps_the_input_order():
    texts = ["ccc", "a", "bbbbbbbbbb", "dd"] * 5
    calls: list[int] = []

    def predict(ts: list[str]) -> np.ndarray:
        calls.append(len(ts))
        return np.array([[len(t), 0.0] for t in ts])

    out = sorted_predict(predict, texts)
    assert out[:, 0].tolist() == [len(t) for t in texts] and calls == [8, 8, 4]
    calls.clear()
    out = sorted_predict(predict, texts, sub_batch=0)  # a classifier that does not pad: one call
    assert out[:, 0].tolist() == [len(t) for t in texts] and calls == [20]


def test_micro_batcher_batches_and_refuses_beyond_its_queue():
    calls: list[int] = []

    def predict(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        time.sleep(0.05)
        return np.ones((len(texts), 4)) / 4

    async def scenario() -> None:
        batcher = MicroBatcher(predict, batch_size=32, wait_s=0.01, queue_bound=64)
        batcher.start()
        rows = await asyncio.gather(*(batcher.submit(f"p{i}") for i in range(20)))
        assert len(rows) == 20 and batcher.batches < 20
        full = MicroBatcher(predict, batch_size=1, wait_s=0.0, queue_bound=2)
        full.start()
        results = await asyncio.gather(*(full.submit(f"q{i}") for i in range(6)), return_exceptions=True)
        assert any(isinstance(r, Overloaded) for r in results) and any(isinstance(r, np.ndarray) for r in results)
        await batcher.stop()
        await full.stop()

    asyncio.run(scenario())


def test_a_fast_classifier_is_not_held_back_by_the_batch_wait():
    async def scenario() -> None:
        batcher = MicroBatcher(lambda ts: np.ones((len(ts), 4)) / 4, batch_size=32, wait_s=0.3, queue_bound=8)
        batcher.start()
        t0 = time.perf_counter()
        await batcher.submit("first")  # no pass measured yet: waits the configured 0.3 s for company
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(5):
            await batcher.submit(f"p{i}")  # a pass takes well under a millisecond: no waiting
        assert first >= 0.25 and time.perf_counter() - t0 < 0.15
        await batcher.stop()

    asyncio.run(scenario())


def test_an_inline_classifier_runs_in_the_event_loop_one_prompt_a_call():
    calls: list[tuple[str, str]] = []

    def predict_one(text: str) -> list[float]:
        calls.append((text, threading.current_thread().name))
        return [0.1, 0.2, 0.3, 0.4]

    def predict(texts: list[str]) -> np.ndarray:
        raise AssertionError("an inline classifier is never batched")

    async def scenario() -> None:
        batcher = MicroBatcher(predict, batch_size=32, wait_s=0.3, queue_bound=1, inline=predict_one)
        batcher.start()
        rows = await asyncio.gather(*(batcher.submit(f"p{i}") for i in range(5)))  # beyond the queue: no queue
        assert rows == [[0.1, 0.2, 0.3, 0.4]] * 5 and batcher.batches == 5
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [(f"p{i}", threading.main_thread().name) for i in range(5)]


def test_decide_picks_what_routing_choose_picks():
    """decide() evaluates scores.choose's rule in plain Python for one row: the same rung, always."""
    from complexitynet.scores import choose, success_probs

    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.ones(4), size=400)
    rows[:50] = np.round(rows[:50], 1)  # ties with round targets
    for target in (0.0, 0.3, 0.5, 0.7, 0.9, 1.0):
        for row in rows:
            d = decide(row, ladder(), CLASSES, target)
            assert d.index == int(choose(row[None, :], target)[0])
            assert decide(row.tolist(), ladder(), CLASSES, target) == d  # the router passes a list
            assert np.allclose(list(d.success.values()), success_probs(row[None, :])[0], atol=1e-6)


def test_the_paying_rule_serves_the_decisions_evaluate_replays():
    """serve (route.PayingRule) and evaluate (policy.choose / policy.cascade) share one decision."""
    from complexitynet import policy as P
    from complexitynet.serve.decide import PayingRule
    from complexitynet.paying import RouterSpec

    spec = RouterSpec(["a", "b", "c"], "tfidf", [0.01, 0.1, 1.0], P.Rule(0.4, "largest", 0.1), 2.0,
                      P.Gate((1.0, -0.5, 2.0), -0.3), "text", {})
    rule = PayingRule(spec, model=None)
    rng = np.random.default_rng(3)
    rows = rng.random((200, 3))
    for verified, lam in ((False, 0.4), (True, 2.0)):
        expected = P.choose(rows, spec.unit_cost, P.Rule(lam, "largest", 0.1))
        decisions = [rule.decide(row, ladder(), verified) for row in rows]
        assert [d.index for d in decisions] == expected.tolist()
        assert all(d.lam == lam for d in decisions)
    d = rule.decide(rows[0], ladder(), verified=True)
    for rung, share in ((0, 0.0), (0, 0.5), (1, 1 / 3), (2, 0.0)):
        assert rule.escalate(d, rung, share) == P.escalate(spec.gate, rows[0].tolist(), rung, share, spec.unit_cost, 2.0)
    hopeless = rule.decide(np.array([0.05, 0.02, 0.09]), ladder(), verified=False)
    assert (hopeless.model, hopeless.met) == ("c", False)
    assert "every rung is predicted to fail" in hopeless.explain(ladder())
