"""Training tracked in MLflow: a 1-epoch run on a tiny subset, reloaded from MLflow with one call,
found through the MLflow client, and read over HTTP from a real MLflow server on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from complexitynet.config import TrainParams
from complexitynet.errors import ConfigError, DataError
from complexitynet.schemas import Label, Problem
from complexitynet.schemas import Tests as ProblemTests

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLASSES = ["small", "medium", "large", "none"]


def tiny_dataset(n_train: int = 24, n_val: int = 12) -> tuple[list[Problem], list[Label]]:
    """Prompts whose level is written in them, so even one epoch learns something."""
    words = ["add two numbers", "reverse a linked list in place", "solve sudoku with backtracking", "prove P=NP"]
    problems, labels = [], []
    for i in range(n_train + n_val):
        level = i % 4
        task = f"T/{i}"
        split = "train" if i < n_train else "validation"
        problems.append(Problem(task_id=task, dataset="mbpp", split=split, text=words[level],
                                prompt=f"Write a function to {words[level]} (variant {i}).", entry_point="f",
                                visible=(t := ProblemTests(asserts=["assert f()"])),
                                hidden=t, hidden_source="visible", reference="def f(): return True"))
        labels.append(Label(task_id=task, split=split, label=level, label_name=CLASSES[level], label_first_trial=level,
                            passes={}, trials={}, pass_rate={}))
    return problems, labels


@pytest.fixture()
def mlflow_env(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return tmp_path, uri


def test_train_one_epoch_reload_from_mlflow_and_find_run(mlflow_env, capfd, caplog):
    import logging
    import warnings

    import mlflow
    import pandas as pd

    from complexitynet import tracking
    from complexitynet.classifier import load_classifier
    from complexitynet.train import train

    tmp, uri = mlflow_env
    caplog.set_level(logging.INFO, logger="complexitynet")
    problems, labels = tiny_dataset()
    cfg = TrainParams(epochs=1, batch_size=8, max_length=32, experiment="test-exp", registered_model="test-clf", knn_k=3)
    tags = {"ladder": "test", "dataset": "mbpp", "git_commit": "abc"}
    (tmp / "labels.jsonl").write_text("")  # the splits' source, as MLflow records it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(problems, labels, CLASSES, cfg, 7, tmp / "models/classifier", tmp / "models/baselines", tags,
                        tmp / "labels.jsonl")
    assert set(metrics["models"]) == {"lora", "majority", "prior", "tfidf_lr", "knn_minilm"}
    assert metrics["n_train"] == 24 and metrics["n_validation"] == 12
    # quiet: no pickled pyfunc, no missing type hints or input example, no load report of the fresh head
    noise = [str(w.message) for w in caught if "mlflow" in w.filename or "transformers" in w.filename]
    assert not [m for m in noise if "type hints" in m or "input_example" in m or "is_gradient_checkpointing" in m], noise
    out = capfd.readouterr()
    assert "CloudPickle" not in out.err and "LOAD REPORT" not in out.err
    assert "train: lora epoch 1/1  loss" in caplog.text and "left at most" in caplog.text

    # one call to load it back from the registry (the router's path) and from the run
    texts = pd.DataFrame({"text": ["Write a function to add two numbers (variant 99)."]})
    champion = mlflow.pyfunc.load_model("models:/test-clf@champion").predict(texts)
    assert list(champion.columns) == CLASSES and np.isclose(champion.to_numpy().sum(), 1.0)
    run_id = metrics["models"]["lora"]["run_id"]
    from_run = mlflow.pyfunc.load_model(f"runs:/{run_id}/classifier").predict(texts)
    local = load_classifier(tmp / "models/classifier").predict_proba(list(texts["text"]))
    assert np.allclose(from_run.to_numpy(), local, atol=1e-5) and np.allclose(champion.to_numpy(), local, atol=1e-5)
    assert "LOAD REPORT" not in capfd.readouterr().err  # the head's weights come from the adapter

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.tags["kind"] == "classifier" and run.data.tags["classifier"] == "lora"
    assert run.data.tags["git_commit"] == "abc" and run.data.tags["ladder"] == "test"
    assert run.data.tags["content_hash"] == tracking.content_hash(tmp / "models/classifier")
    assert run.data.params["train.lora.r"] == "8"
    history = client.get_metric_history(run_id, "epoch/val_macro_f1")
    assert [m.step for m in history] == [1]
    experiment = client.get_experiment_by_name("test-exp")
    # artifacts beside the store, not in ./mlruns; the UI opens the runs table with the shared columns
    assert experiment.artifact_location == (tmp / "artifacts").as_uri() and not (tmp / "mlruns").exists()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags[f"mlflow.sharedViewState.{tracking.VIEW}"])
    assert "metrics.`test_macro_f1`" in view["selectedColumns"] and "attributes.`Dataset`" in view["selectedColumns"]
    assert tracking.ui_url(experiment.experiment_id).endswith(
        f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={tracking.VIEW}")

    # every classifier a run with the same validation metrics, confusion matrix, report and inputs
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_name for r in runs} == {f"{name} [mbpp/test]" for name in metrics["models"]}
    for r in runs:
        name = r.data.tags["classifier"]
        assert r.data.tags["kind"] == "classifier" and r.data.tags["dataset"] == "mbpp", name
        assert {"val_accuracy", "val_macro_f1", "val_within_one"} <= set(r.data.metrics), name
        assert r.data.metrics["val_macro_f1"] == pytest.approx(metrics["models"][name]["macro_f1"])
        inputs = {(i.dataset.name, i.tags[0].value) for i in r.inputs.dataset_inputs}
        assert inputs == {("mbpp-train", "training"), ("mbpp-validation", "validation")}, name
        assert all(i.dataset.digest for i in r.inputs.dataset_inputs)
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id, "validation")}
        assert artifacts == {"validation/confusion_matrix.png", "validation/classification_report.txt"}, name
        png = client.download_artifacts(r.info.run_id, "validation/confusion_matrix.png", str(tmp / name))
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if name != "lora":
            assert r.data.tags["content_hash"] == tracking.content_hash(tmp / f"models/baselines/{name}.joblib")
    report = client.download_artifacts(run_id, "validation/classification_report.txt", str(tmp))
    assert "macro avg" in Path(report).read_text()

    # retraining the same files registers no new version; champions are chosen per dataset and ladder
    def alias(name: str, which: str) -> str:
        return str(client.get_model_version_by_alias(name, which).version)

    before = {str(v.version) for v in client.search_model_versions("name = 'test-clf'")}
    again = train(problems, labels, CLASSES, cfg, 7, tmp / "models/classifier", tmp / "models/baselines", tags,
                  tmp / "labels.jsonl")
    assert again["models"]["lora"]["run_id"] != run_id
    assert {str(v.version) for v in client.search_model_versions("name = 'test-clf'")} == before == {"1"}
    assert "unchanged files, no new version" in caplog.text
    assert alias("test-clf", "champion-mbpp-test") == "1"
    assert client.get_model_version("test-clf", "1").tags["content_hash"] == run.data.tags["content_hash"]
    from complexitynet.train import _promote_champion

    other, new = tracking.register_once("test-clf", f"runs:/{run_id}/classifier", "f" * 64,
                                        {"dataset": "humaneval", "ladder": "test", "val_macro_f1": "0.01"})
    assert new and other == "2"
    assert _promote_champion("test-clf", other, "humaneval", "test", 0.01) == "2"  # no MBPP version competes
    assert alias("test-clf", "champion") == "2"
    assert alias("test-clf", "champion-mbpp-test") == "1"
    assert _promote_champion("test-clf", "1", "mbpp", "test", metrics["models"]["lora"]["macro_f1"]) == "1"
    assert alias("test-clf", "champion") == "1"

    # the saved classifier refuses a label count it was not trained for
    meta_path = tmp / "models/classifier/complexitynet.json"
    meta = json.loads(meta_path.read_text())
    meta["classes"] = CLASSES[:3]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="does not fit 3 labels"):
        load_classifier(tmp / "models/classifier")


def test_unknown_base_model_path_is_a_clear_error():
    from complexitynet.classifier import build_model

    with pytest.raises(ConfigError, match="train.base_model './no/such/encoder': no such directory"):
        build_model("./no/such/encoder", 4, {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query"]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_serves_the_runs_over_http(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment("http-exp", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment_id, run_name="lora-demo"):
        mlflow.log_metric("best_val_macro_f1", 0.5)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "MLflow server did not start"
                time.sleep(0.5)
        body = json.dumps({"experiment_ids": [experiment_id]}).encode()
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                         headers={"Content-Type": "application/json"})
        runs = json.loads(urllib.request.urlopen(request, timeout=10).read())["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["lora-demo"]
        assert runs[0]["data"]["metrics"][0]["value"] == 0.5
        assert b"MLflow" in urllib.request.urlopen(base, timeout=10).read()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_cross_validation_over_non_test_prompts():
    from complexitynet.train import cross_validate

    problems, labels = tiny_dataset(16, 8)
    cv = cross_validate(problems, labels, 4, TrainParams(epochs=1, batch_size=8, max_length=32), 3, folds=2)
    assert cv["folds"] == 2 and cv["n"] == 24
    assert len(cv["per_fold"]["lora"]) == 2 and len(cv["per_fold"]["tfidf_lr"]) == 2
    for name in ("lora", "tfidf_lr"):
        assert 0 <= cv[name]["accuracy"]["mean"] <= 1 and cv[name]["macro_f1"]["std"] >= 0


def test_a_killed_run_is_marked_failed_at_the_next_start(mlflow_env):
    """A SIGKILLed train cannot end its MLflow run; the next start of train or evaluate does, and
    leaves the runs of live processes alone."""
    import mlflow

    from complexitynet import tracking

    child = subprocess.Popen([sys.executable, "-c", (
        "import time, mlflow\n"
        "from complexitynet import tracking\n"
        "tracking.setup('test-exp')\n"
        "run = mlflow.start_run(run_name='doomed', tags=tracking.owner_tags())\n"
        "print(run.info.run_id, flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    doomed = child.stdout.readline().strip()
    child.kill()
    child.wait()
    tracking.setup("test-exp")  # the experiment exists now: this start looks for orphans
    with mlflow.start_run(run_name="alive", tags=tracking.owner_tags()) as alive:
        tracking.setup("test-exp")
        client = mlflow.MlflowClient()
        assert client.get_run(doomed).info.status == "FAILED"
        assert client.get_run(alive.info.run_id).info.status == "RUNNING"


def test_retraining_writes_the_same_bytes(tmp_path):
    """Baselines fitted in two processes (ids and hash seeds differ) are saved byte-identically, and the
    adapter config peft writes from sets comes out in one order: `dvc status` stays clean on retrain."""
    from complexitynet.classifier import stable_json

    code = ("import sys\nimport numpy as np\nfrom complexitynet.config import TrainParams\nfrom complexitynet.io import dump_joblib\n"
            "from complexitynet.train import Split, fit_baselines\n"
            "texts = [f'Write a function to {w} (variant {i}).' for i, w in enumerate(['add', 'sort', 'parse', 'prove'] * 4)]\n"
            "data = {'train': Split([f'T/{i}' for i in range(16)], texts, np.arange(16) % 4)}\n"
            "model = fit_baselines(data, 4, TrainParams(), 0, only=('tfidf_lr',))['tfidf_lr']\n"
            "dump_joblib(model, __import__('pathlib').Path(sys.argv[1]))\n")
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{name}.joblib")], check=True)
    assert (tmp_path / "a.joblib").read_bytes() == (tmp_path / "b.joblib").read_bytes()
    for order in (["value", "query"], ["query", "value"]):
        path = tmp_path / f"adapter_config_{order[0]}.json"
        path.write_text(json.dumps({"target_modules": order, "r": 8}))
        stable_json(path)
    assert (tmp_path / "adapter_config_value.json").read_bytes() == (tmp_path / "adapter_config_query.json").read_bytes()
