"""The router with each kind of classifier `train` produces: a baseline joblib file (TF-IDF + LR) and
the LoRA classifier from the MLflow registry; unreadable or unknown files are clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import joblib
import numpy as np
import pytest

from complexitynet.cli import main
from complexitynet.errors import ConfigError
from complexitynet.serve.classifiers import FileClassifier, SparseLinear, load_router_classifier
from tests.conftest import REPO
from tests.serve.conftest import CLASSES, RouterThread, router_params

pytestmark = pytest.mark.slow  # fits a baseline / loads a real (tiny) classifier
PROMPT = [{"role": "user", "content": "Write a function to add two numbers."}]
MBPP_LEVELS = ["codellama-7b-python", "gpt-3.5-turbo-1106", "gpt-4-1106-preview", "none"]  # params.yaml's ladder


def test_route_with_a_baseline_file(tiny_baseline, capsys):
    argv = ["--params", str(REPO / "params.yaml"), "serve", "--explain", "Write a function to add two numbers.",
            "--classifier", str(tiny_baseline), "--ladder", "mbpp"]
    assert main([*argv, "--target", "0"]) == 0
    out = capsys.readouterr().out
    assert "chosen model:    codellama-7b-python (ladder mbpp)" in out and "predicted level:" in out
    assert main([*argv, "--target", "1", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["model"] == "gpt-4-1106-preview" and decision["met"] is False
    assert list(decision["probs"]) == MBPP_LEVELS and np.isclose(sum(decision["probs"].values()), 1.0, atol=1e-5)


def test_server_routes_with_a_baseline_file(tiny_baseline, fake):
    fake.faults, fake.reply = None, None
    with RouterThread(router_params(tiny_baseline, [(fake.base_url, None)] * 3)) as srv:
        assert isinstance(srv.router.batcher.predict.__self__, FileClassifier)
        client = srv.client()
        low = client.chat.completions.with_raw_response.create(model="complexitynet:0", messages=PROMPT)
        assert low.headers["x-complexitynet-model"] == "rung-small"
        assert low.headers["x-complexitynet-level"] in MBPP_LEVELS
        high = client.chat.completions.with_raw_response.create(model="complexitynet:1", messages=PROMPT)
        assert high.headers["x-complexitynet-model"] == "rung-large"
        # the TF-IDF baseline classifies inline (no micro-batcher queue): concurrent requests all get answers
        assert srv.router.batcher.inline
        results: list[str] = []

        def one(i: int) -> None:
            messages = [{"role": "user", "content": f"Write a function to reverse list {i}."}]
            results.append(client.chat.completions.create(model="complexitynet", messages=messages).model)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 16 and srv.router.batcher.batches == 2 + 16


def test_the_fast_tfidf_path_gives_scikit_learns_probabilities(mirror, tmp_path):
    """SparseLinear (what the router serves the TF-IDF baseline with) against the scikit-learn pipeline
    it was compiled from, fitted on every MBPP statement: the same probabilities, every row; other
    models keep scikit-learn."""
    from complexitynet.baselines import Constant
    from complexitynet.config import TrainParams
    from complexitynet.train import Split, fit_baselines

    texts = [json.loads(line)["text"] for line in (mirror / "mbpp" / "mbpp.jsonl").read_text().splitlines()]
    labels = np.random.default_rng(0).choice([0, 1, 3], size=len(texts))  # level 2 never seen: a padded column
    data = {"train": Split([f"T/{i}" for i in range(len(texts))], texts, labels)}
    model = fit_baselines(data, len(CLASSES), TrainParams(), 0, only=("tfidf_lr",))["tfidf_lr"]
    fast = SparseLinear.compile(model)
    assert fast is not None
    probe = texts + ["", "!!!", "Write a FUNCTION to add two numbers. " * 40, "ünïcödé wörds ±"]
    want = model.predict_proba(probe)
    assert want[:, 2].max() == 0 and np.abs(fast.predict_proba(probe) - want).max() < 1e-12
    joblib.dump(model, tmp_path / "tfidf.joblib")
    served = load_router_classifier(str(tmp_path / "tfidf.joblib"), CLASSES)
    assert isinstance(served, FileClassifier) and served.inline
    assert SparseLinear.compile(Constant(np.full(4, 0.25))) is None
    joblib.dump(Constant(np.full(4, 0.25)), tmp_path / "constant.joblib")
    assert not load_router_classifier(str(tmp_path / "constant.joblib"), CLASSES).inline


def test_unreadable_or_unfit_classifier_files_are_clear_errors(tiny_baseline, tmp_path):
    bad = tmp_path / "broken.joblib"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match=f"serve.classifier '{bad}': cannot read it as a joblib model .*"
                                          "models/baselines/tfidf_lr.joblib"):
        load_router_classifier(str(bad), CLASSES)
    with pytest.raises(ConfigError, match=r"unknown classifier file type '\.yaml' \(only \.joblib"):
        load_router_classifier(str(REPO / "params.yaml"), CLASSES)
    with pytest.raises(ConfigError, match="'nope.joblib': no such file or directory; run `complexitynet train`"):
        load_router_classifier("nope.joblib", CLASSES)
    with pytest.raises(ConfigError, match="predicts 4 levels, but the training ladder .* names 3"):
        load_router_classifier(str(tiny_baseline), CLASSES[1:])
    joblib.dump({"not": "a model"}, tmp_path / "dict.joblib")
    with pytest.raises(ConfigError, match="the dict in it has no predict_proba"):
        load_router_classifier(str(tmp_path / "dict.joblib"), CLASSES)


@pytest.mark.integration
def test_classifier_loads_from_the_mlflow_registry(tiny_classifier, tiny_baseline, tmp_path, monkeypatch):
    """The LoRA classifier as `train` registers it (pyfunc, alias champion), and a baseline logged
    as a run artifact, each loaded by URI and routing like the local copy; with no MLFLOW_TRACKING_URI
    the URIs resolve against the project's own store (mlflow/mlflow.db), not a stray ./mlflow.db."""
    import mlflow

    from complexitynet import tracking
    from complexitynet.classifier import load_classifier, pyfunc_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracking.setup("registry-test")  # as train does: the project's store under ./mlflow
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="classifier", python_model=pyfunc_model(),
                                       artifacts={"classifier": str(tiny_classifier)},
                                       registered_model_name="test-router-clf", pip_requirements=["torch"])
        mlflow.log_artifact(str(tiny_baseline))
    mlflow.MlflowClient().set_registered_model_alias("test-router-clf", "champion", info.registered_model_version)

    texts = ["Write a function to add two numbers.", "Solve sudoku with backtracking."]
    champion = load_router_classifier("models:/test-router-clf@champion", MBPP_LEVELS)
    assert champion.classes == CLASSES  # a LoRA classifier carries its own level names
    local = load_classifier(Path(tiny_classifier)).predict_proba(texts)
    assert np.allclose(champion.predict_proba(texts), local, atol=1e-5)
    baseline = load_router_classifier(f"runs:/{run.info.run_id}/tfidf_lr.joblib", CLASSES)
    assert np.allclose(baseline.predict_proba(texts), joblib.load(tiny_baseline).predict_proba(texts))
    with pytest.raises(ConfigError, match="'models:/no-such-model@champion': cannot load it from MLflow"):
        load_router_classifier("models:/no-such-model@champion", CLASSES)
    # a fresh process (as `complexitynet serve --explain --classifier models:/...`) with no MLFLOW_TRACKING_URI
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    code = ("from complexitynet.serve.classifiers import load_router_classifier\n"
            "print(load_router_classifier('models:/test-router-clf@champion', []).classes)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and str(CLASSES) in out.stdout, out.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists() and (tmp_path / "mlflow" / "mlflow.db").exists()
