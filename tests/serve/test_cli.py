"""`complexitynet route` and `complexitynet serve` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from complexitynet.cli import main
from tests.conftest import REPO
from tests.integration.test_train_mlflow import free_port

pytestmark = pytest.mark.slow


def test_route_prints_the_decision_and_why(tiny_classifier, capsys):
    argv = ["--params", str(REPO / "params.yaml"), "route", "Write a function to add two numbers.",
            "--classifier", str(tiny_classifier), "--ladder", "mbpp"]
    assert main([*argv, "--target", "0"]) == 0
    out = capsys.readouterr().out
    assert "chosen model:    codellama-7b-python (ladder mbpp)" in out
    assert "target:          0 (--target)" in out and "predicted level:" in out and "P(success):" in out
    assert "why:             codellama-7b-python is predicted to succeed" in out
    assert main([*argv, "--target", "1", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["model"] == "gpt-4-1106-preview" and decision["met"] is False


def test_serve_refuses_a_ladder_that_cannot_serve(tiny_classifier, caplog):
    base = ["--params", str(REPO / "params.yaml"), "serve", "--classifier", str(tiny_classifier)]
    assert main([*base, "--ladder", "mbpp"]) == 2
    assert "rung 'codellama-7b-python' is provider 'recorded', which cannot answer live requests" in caplog.text
    assert main([*base, "--ladder", "openai"]) == 2
    assert "ladder 'openai' has 2 rungs; serve a ladder with 3 rungs" in caplog.text
    assert main([*base, "--classifier", "no/such/dir"]) == 2
    assert "serve.classifier 'no/such/dir': no such file or directory" in caplog.text


def test_serve_subcommand_answers_on_its_port(tiny_classifier, fake, tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ladders"]["test"] = [{"name": f"r{i}", "provider": "openai", "price": {"input": i, "output": i},
                               "openai": {"base_url": fake.base_url, "model": f"m{i}", "api_key_env": None}}
                              for i in range(3)]
    raw["serve"].update(ladder="test", classifier=str(tiny_classifier), target=0.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "complexitynet.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
                time.sleep(0.3)
        assert health["ladder"] == "test" and health["target"] == 0.0
    finally:
        proc.terminate()
        proc.wait(10)
