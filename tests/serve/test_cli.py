"""`complexitynet serve --explain` and `complexitynet serve` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from complexitynet.cli import main
from tests.conftest import REPO
from tests.training.test_train_mlflow import free_port

pytestmark = pytest.mark.slow


def test_explain_prints_the_decision_and_why(tiny_classifier, capsys):
    argv = ["--params", str(REPO / "params.yaml"), "serve", "--explain", "Write a function to add two numbers.",
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


def serve_params(tmp_path, classifier, fake) -> None:
    """params.yaml in tmp_path: serve `classifier` over a 3-rung ladder of `fake` upstreams."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ladders"]["test"] = [{"name": f"r{i}", "provider": "openai", "price": {"input": i, "output": i},
                               "openai": {"base_url": fake.base_url, "model": f"m{i}", "api_key_env": None}}
                              for i in range(3)]
    raw["serve"].update(ladder="test", router=None, classifier=str(classifier), target=0.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))


def get_json(url: str, deadline: float, proc: subprocess.Popen) -> dict:
    """GET url (a new connection) until it answers; fails if `proc` exits first."""
    while True:
        try:
            return json.loads(urllib.request.urlopen(url, timeout=2).read())
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.3)


def test_serve_subcommand_answers_on_its_port(tiny_classifier, fake, tmp_path):
    serve_params(tmp_path, tiny_classifier, fake)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "complexitynet.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        health = get_json(f"http://127.0.0.1:{port}/health", time.monotonic() + 60, proc)
        assert health["ladder"] == "test" and health["target"] == 0.0
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_with_several_workers_shares_the_port_and_the_metrics(tiny_baseline, fake, tmp_path):
    """--workers 3: three processes answer on one port (connections spread by the kernel), /metrics
    from any of them counts every worker's requests, and one SIGTERM to the parent stops them all."""
    import openai

    fake.faults, fake.reply = None, None
    serve_params(tmp_path, tiny_baseline, fake)
    proc = subprocess.Popen([sys.executable, "-m", "complexitynet.cli", "serve", "--port", "0", "--workers", "3"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()
    try:
        line = ""
        while " workers on " not in line:  # port 0: the parent says which port the workers share
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "serve exited before its workers started"
        url = line.split(" workers on ")[1].split()[0].removesuffix("/v1")
        deadline = time.monotonic() + 60
        while len(workers) < 3:  # each GET is a new connection: the kernel spreads them over the workers
            workers.add(get_json(f"{url}/health", deadline, proc)["pid"])
            assert time.monotonic() < deadline, f"only workers {workers} answered"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for i in range(12):
            client.close()
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)  # a new connection
            answer = client.chat.completions.with_raw_response.create(
                model="complexitynet", messages=[{"role": "user", "content": f"Write a function {i}."}])
            assert answer.headers["x-complexitynet-model"] == "r0"  # target 0: the cheapest rung
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        assert 'complexitynet_requests_total{model="r0",outcome="ok"} 12.0' in metrics
        assert 'complexitynet_routed_total{model="r0"} 12.0' in metrics
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_worker_that_cannot_start_stops_the_service(tiny_baseline, fake, tmp_path):
    serve_params(tmp_path, tiny_baseline, fake)
    done = subprocess.run([sys.executable, "-m", "complexitynet.cli", "serve", "--port", "0", "--workers", "2",
                           "--classifier", "no/such/dir"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "serve.classifier 'no/such/dir': no such file or directory" in done.stderr
    assert "exited (code 2); stopping the others" in done.stderr


def test_sigterm_answers_requests_stuck_on_a_hanging_upstream_and_exits(tiny_classifier, tmp_path):
    """SIGTERM while a request waits on an upstream that never answers: the request gets a 503
    (`shutting_down`) once serve.drain_s has passed, and the router exits, instead of holding the
    caller for the upstream's whole timeout and then dropping the connection."""
    import signal
    import threading
    import urllib.error

    from tests.fake_openai import FakeOpenAI

    with FakeOpenAI(latency_s=300) as hanging:
        serve_params(tmp_path, tiny_classifier, hanging)
        raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
        raw["serve"].update(drain_s=1, upstream_timeout_s=600, request_timeout_s=600)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "complexitynet.cli", "serve", "--port", str(port)],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        answers: list[tuple[int, dict]] = []

        def ask() -> None:
            body = json.dumps({"model": "r0", "messages": [{"role": "user", "content": "hi"}]}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            try:
                urllib.request.urlopen(request, timeout=120)
            except urllib.error.HTTPError as exc:
                answers.append((exc.code, json.loads(exc.read())))

        try:
            get_json(f"http://127.0.0.1:{port}/health", time.monotonic() + 60, proc)
            caller = threading.Thread(target=ask)
            caller.start()
            deadline = time.monotonic() + 60
            while hanging.requests == 0 and time.monotonic() < deadline:  # the request is at the upstream
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            caller.join(120)
            assert proc.wait(120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert len(answers) == 1 and answers[0][0] == 503, answers
        assert answers[0][1]["error"]["code"] == "shutting_down"


def test_a_client_that_never_finishes_its_headers_is_disconnected(tiny_classifier, fake, tmp_path):
    import socket

    serve_params(tmp_path, tiny_classifier, fake)
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    raw["serve"]["idle_timeout_s"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "complexitynet.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        get_json(f"http://127.0.0.1:{port}/health", time.monotonic() + 60, proc)
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            slow.settimeout(60)
            assert slow.recv(1024) == b""  # closed by the router, long before our 60 s
        assert get_json(f"http://127.0.0.1:{port}/health", time.monotonic() + 60, proc)["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(30)
