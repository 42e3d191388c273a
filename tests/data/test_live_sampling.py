"""The sample stage against live endpoints: the real `openai` client over real HTTP to a fake
OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py), with injected faults. Assertions are
on what the server saw (request counts per body) and on the files the stage wrote."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from complexitynet.cli import main
from complexitynet.config import load_params
from complexitynet.providers import make_provider
from complexitynet.live import request_key, worst_case_usd
from tests.fake_openai import FakeOpenAI, fraction
from tests.live_helpers import make_problems, metrics, rows, setup_workdir

REPO = Path(__file__).resolve().parents[2]
KEY_VAR = "CNET_TEST_API_KEY"
SECRET = "sk-cnet-SECRET-7f3a9c1e5b2d4f6a8c0e"


def rung(name: str, base_url: str, price: tuple[float, float] = (1.0, 2.0), **openai: object) -> dict:
    block = {"base_url": base_url, "model": f"fake-{name}", "api_key_env": KEY_VAR, "backoff_s": 0.001,
             "timeout_s": 5, "params": {"max_tokens": 64, "temperature": 0.2, "seed": 7}}
    block.update(openai)
    return {"name": name, "provider": "openai", "price": {"input": price[0], "output": price[1]}, "openai": block}


@pytest.fixture()
def server():
    with FakeOpenAI() as srv:
        yield srv


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(KEY_VAR, SECRET)
    monkeypatch.delenv("CI", raising=False)
    return tmp_path


def test_two_live_models_write_samples_metrics_and_rerun_from_cache(work, server, caplog):
    caplog.set_level(logging.INFO)
    setup_workdir(work, [rung("small", server.base_url), rung("big", server.base_url, price=(10, 30))], n=6, k=3)
    assert main(["sample"]) == 0
    assert server.requests == 36 and set(server.successes.values()) == {1}
    big = rows("data/samples/big.jsonl")
    assert [(s["task_id"], s["trial"]) for s in big] == [(f"MBPP/{i}", t) for i in range(1, 7) for t in range(3)]
    first = big[0]
    assert first["source"] == "live" and first["latency_s"] is None and not first["tokens_estimated"]
    assert first["code"].startswith("def solution(*args):")
    body = next(b for b in server.bodies.values() if b["model"] == "fake-big" and "f1 " in b["messages"][0]["content"]
                and b["seed"] == 8)  # trial 1 sends seed + 1
    assert (body["max_tokens"], body["temperature"]) == (64, 0.2)
    assert first["cost_usd"] == pytest.approx((first["prompt_tokens"] * 10 + first["completion_tokens"] * 30) / 1e6)
    m = metrics("big")
    assert m["samples"] == 18 and m["run"] == {"requests_sent": 18, "cache_hits": 0, "retries": 0,
                                                "cost_usd": pytest.approx(m["cost_usd"])}
    assert m["latency_p50_s"] is not None and m["finish_length"] == 0
    assert all(h["Authorization"] == f"Bearer {SECRET}" for h in server.headers_seen)
    assert all(h.get("X-Stainless-Retry-Count", "0") == "0" for h in server.headers_seen)  # client retries are off
    before = {p.name: p.read_bytes() for p in Path("data/samples").iterdir()}
    server.reset_counts()
    caplog.clear()
    assert main(["sample"]) == 0
    assert server.requests == 0
    assert {p.name: p.read_bytes() for p in Path("data/samples").iterdir()} == before
    assert metrics("big")["run"]["cache_hits"] == 18 and "0 requests sent" in caplog.text


def test_limit_samples_only_the_first_problems_of_live_models(work, server):
    setup_workdir(work, [rung("m", server.base_url)], n=12, k=2, limit=3)
    assert main(["sample"]) == 0
    assert [(s["task_id"], s["trial"]) for s in rows("data/samples/m.jsonl")] == [
        (f"MBPP/{i}", t) for i in (1, 2, 3) for t in (0, 1)]
    assert metrics("m")["missing_tasks"] == 9 and server.requests == 6


def test_thirty_percent_429_and_500_complete_with_no_duplicate_success(work):
    def faults(key, attempt, body):
        x = fraction(key, attempt)
        return "429" if x < 0.15 else "500" if x < 0.30 else None

    with FakeOpenAI(faults=faults, retry_after="0.01") as server:
        setup_workdir(work, [rung("m", server.base_url, concurrency=8)], n=30, k=2)
        assert main(["sample"]) == 0
    assert server.statuses["429"] > 5 and server.statuses["500"] > 5
    assert len(server.successes) == 60 and set(server.successes.values()) == {1}
    assert len(rows("data/samples/m.jsonl")) == 60
    assert metrics("m")["run"]["retries"] == server.statuses["429"] + server.statuses["500"]
    assert len(rows("data/cache/samples/m.jsonl")) == 60


def test_dropped_connections_slow_answers_and_missing_usage(work):
    def faults(key, attempt, body):
        task = body["messages"][0]["content"].split()[3]  # "f<i>"
        if attempt == 0:
            return {"f1": "drop", "f2": "slow", "f3": "no_usage"}.get(task)
        return None

    with FakeOpenAI(faults=faults, slow_s=1.0) as server:
        setup_workdir(work, [rung("m", server.base_url, timeout_s=0.5)], n=4, k=1)
        assert main(["sample"]) == 0
    assert server.statuses["drop"] == 1 and server.requests == 4 + 2  # the drop and the slow one retried
    samples = {s["task_id"]: s for s in rows("data/samples/m.jsonl")}
    assert samples["MBPP/3"]["tokens_estimated"] and not samples["MBPP/4"]["tokens_estimated"]
    assert metrics("m")["run"]["retries"] == 2


@pytest.mark.parametrize("fault", ["malformed", "html", "no_choices"])
def test_malformed_answer_is_retried_then_reported_with_the_request_key(work, caplog, fault):
    with FakeOpenAI(faults=lambda key, attempt, body: fault if " f3 " in body["messages"][0]["content"] else None) as server:
        setup_workdir(work, [rung("m", server.base_url, max_retries=2)], n=4, k=1)
        assert main(["sample"]) == 2
        bad = [k for k, n in server.attempts.items() if n > 1]
        assert len(bad) == 1 and server.attempts[bad[0]] == 3 and server.statuses[fault] == 3
        params = load_params("params.yaml")
        provider = make_provider(params.ladder[0], Path("data/sources"))
        key = request_key("m", provider.identity(), make_problems(4)[2].prompt, 0)
        assert f"request {key} (model 'm', task MBPP/3, trial 0): malformed response" in caplog.text
        assert "gave up after 3 attempts" in caplog.text and "rerun to retry only the failed ones" in caplog.text
        assert not Path("data/samples/m.jsonl").exists()
        assert len(rows("data/cache/samples/m.jsonl")) == 3  # the others are kept
        server.faults = None
        server.reset_counts()
        assert main(["sample"]) == 0
        assert server.requests == 1 and len(rows("data/samples/m.jsonl")) == 4


def test_missing_key_variable_is_named_before_any_request(work, server, caplog, monkeypatch):
    setup_workdir(work, [rung("first", server.base_url, api_key_env="CNET_OTHER_KEY"), rung("second", server.base_url)])
    monkeypatch.delenv(KEY_VAR)
    monkeypatch.setenv("CNET_OTHER_KEY", "sk-other")
    assert main(["sample"]) == 2
    assert f"model 'second' reads its API key from the environment variable {KEY_VAR}, which is not set" in caplog.text
    assert server.requests == 0 and not Path("data/cache").exists()


def test_key_never_appears_in_logs_outputs_cache_metrics_or_errors(work, caplog, capfd):
    caplog.set_level(logging.DEBUG)

    def faults(key, attempt, body):
        return "500" if attempt == 0 and fraction(key, 0) < 0.5 else None

    with FakeOpenAI(faults=faults, api_key=SECRET) as server:
        setup_workdir(work, [rung("m", server.base_url)], n=4, k=2)
        assert main(["-v", "sample"]) == 0
        assert server.statuses["200"] == 8 and server.statuses["500"] > 0
    with FakeOpenAI(api_key="a-different-key") as refusing:  # the endpoint refuses our key: HTTP 401
        setup_workdir(work / "refused", [rung("m", refusing.base_url)])
        os.chdir(work / "refused")
        assert main(["-v", "sample"]) == 2
    assert f"HTTP 401: the endpoint refused the API key from ${KEY_VAR}" in caplog.text
    written = [p for p in work.rglob("*") if p.is_file()]
    assert any("cache" in p.parts for p in written) and any(p.name == "sample.json" for p in written)
    out, err = capfd.readouterr()
    for text in [p.read_text(errors="replace") for p in written] + [caplog.text, out, err]:
        assert SECRET not in text and SECRET[-12:] not in text


def test_budget_stops_before_it_is_exceeded_and_keeps_what_was_done(work, server, caplog):
    setup_workdir(work, [rung("m", server.base_url, price=(100, 300), concurrency=1)], n=10, k=1, budget_usd=0.04)
    assert main(["sample"]) == 2
    assert "sample.budget_usd is $0.04" in caplog.text and "raise sample.budget_usd" in caplog.text
    cached = rows("data/cache/samples/m.jsonl")
    assert 0 < len(cached) < 10 and server.requests == len(cached) and not Path("data/samples/m.jsonl").exists()
    spent = sum((r["prompt_tokens"] * 100 + r["completion_tokens"] * 300) / 1e6 for r in cached)
    nxt = make_problems(10)[len(cached)]
    worst_next = worst_case_usd(load_params("params.yaml").ladder[0].price, nxt.prompt, 64)
    assert spent <= 0.04 < spent + worst_next  # stopped exactly when the next request might not fit
    assert f"{10 - len(cached)} requests were not sent" in caplog.text
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["sample"]["budget_usd"] = None
    Path("params.yaml").write_text(yaml.safe_dump(params))
    server.reset_counts()
    assert main(["sample"]) == 0
    assert server.requests == 10 - len(cached) and len(rows("data/samples/m.jsonl")) == 10


def test_concurrency_bound_rpm_cap_and_retry_after(work):
    with FakeOpenAI(latency_s=0.05) as server:
        setup_workdir(work / "c", [rung("m", server.base_url, concurrency=3)], n=12, k=1)
        os.chdir(work / "c")
        assert main(["sample"]) == 0
        assert server.max_in_flight == 3
    with FakeOpenAI() as server:
        setup_workdir(work / "r", [rung("m", server.base_url, concurrency=4, rpm=600)], n=6, k=1)
        os.chdir(work / "r")
        assert main(["sample"]) == 0
        times = sorted(t for t, _ in server.arrivals)
        # 600/min: starts 0.1 s apart; without the cap all four concurrent requests would arrive within
        # milliseconds. The first arrival is left out: it also pays the client's start and a TCP connect.
        later = times[1:]
        assert len(later) == 5 and all(later[j] - later[i] >= (j - i) * 0.1 - 0.02
                                       for i in range(5) for j in range(i + 1, 5))
    with FakeOpenAI(faults=lambda key, attempt, body: "429" if attempt == 0 else None, retry_after="0.4") as server:
        setup_workdir(work / "a", [rung("m", server.base_url, concurrency=2)], n=2, k=1)
        os.chdir(work / "a")
        assert main(["sample"]) == 0
        first = {}
        for t, key in server.arrivals:
            first.setdefault(key, t)
        retries = [t - first[key] for t, key in server.arrivals if t != first[key]]
        assert len(retries) == 2 and min(retries) >= 0.4


def test_progress_bar_shows_in_flight_retries_tokens_cost_and_is_quiet_in_ci(work, server, monkeypatch, capsys):
    setup_workdir(work, [rung("m", server.base_url)], n=3, k=1)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["sample"]) == 0
    err = capsys.readouterr().err
    assert "sample: 100%" in err and all(f"{name}=" in err for name in ("in_flight", "retries", "tokens", "cost"))
    import shutil
    shutil.rmtree("data/cache")
    monkeypatch.setenv("CI", "true")
    assert main(["sample"]) == 0
    assert "sample: 100%" not in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_is_byte_identical_to_an_uninterrupted_run(tmp_path):
    env = {**os.environ, KEY_VAR: SECRET, "PYTHONPATH": str(REPO / "src")}
    cli = [sys.executable, "-m", "complexitynet", "sample"]
    total = 60
    with FakeOpenAI(latency_s=0.05) as server:
        outputs = {}
        for name in ("straight", "killed"):
            work = tmp_path / name
            setup_workdir(work, [rung("m", server.base_url, concurrency=2)], n=30, k=2)
            cache = work / "data/cache/samples/m.jsonl"
            if name == "killed":
                proc = subprocess.Popen(cli, cwd=work, env=env, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and (not cache.exists() or cache.read_bytes().count(b"\n") < 12):
                    time.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                done = len(rows(cache))
                assert 12 <= done < total and not (work / "data/samples").exists()
                server.reset_counts()
            out = subprocess.run(cli, cwd=work, env=env, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            if name == "killed":
                assert server.requests == total - done  # nothing finished was requested again
                keys = [r["key"] for r in rows(cache)]
                assert len(keys) == len(set(keys)) == total  # no duplicate, no torn record
            outputs[name] = (work / "data/samples/m.jsonl").read_bytes()
    assert outputs["killed"] == outputs["straight"]


def batch_rung(base_url: str, **openai: object) -> dict:
    return rung("m", base_url, **{"batch": True, "batch_poll_s": 0.05, **openai})


def test_batch_api_mode_submits_once_and_reruns_from_the_cache(work, caplog):
    with FakeOpenAI(batch_delay_s=0.2) as server:
        setup_workdir(work, [batch_rung(server.base_url)], n=5, k=2)
        server.batch_poll_failures = 2  # a flaky poll is polled again, not fatal
        assert main(["sample"]) == 0
        assert "HTTP 503; polling again" in caplog.text
        assert len(server.batches) == 1 and server.statuses["200"] == 0  # nothing went to /chat/completions
        assert len(server.successes) == 10 and set(server.successes.values()) == {1}
        samples = rows("data/samples/m.jsonl")
        assert len(samples) == 10 and all(s["source"] == "live" and not s["tokens_estimated"] for s in samples)
        assert metrics("m")["run"]["requests_sent"] == 10
        assert main(["sample"]) == 0
        assert len(server.batches) == 1 and metrics("m")["run"]["cache_hits"] == 10


def test_batch_failures_are_reported_then_only_they_are_resubmitted(work, caplog):
    def faults(key, attempt, body):
        return "500" if attempt == 0 and " f2 " in body["messages"][0]["content"] else None

    with FakeOpenAI(faults=faults) as server:
        setup_workdir(work, [batch_rung(server.base_url)], n=3, k=2)
        assert main(["sample"]) == 2
        assert "2 requests failed" in caplog.text and "task MBPP/2, trial 0): batch batch_1: HTTP 500" in caplog.text
        assert len(rows("data/cache/samples/m.jsonl")) == 4
        assert main(["sample"]) == 0
        assert len(server.batches) == 2 and server.batches["batch_2"]["request_counts"]["total"] == 2
        assert len(rows("data/samples/m.jsonl")) == 6


def test_batch_created_but_not_journaled_is_found_not_resubmitted(work):
    """A run killed between creating a batch and journaling it: the rerun finds it by its input file."""
    import asyncio

    from complexitynet.providers.openai_compat import BatchJournal

    with FakeOpenAI() as server:
        setup_workdir(work, [batch_rung(server.base_url)], n=3, k=1)
        spec = load_params("params.yaml").ladder[0]
        provider = make_provider(spec, Path("data/sources"))
        problems = {p.task_id: p for p in make_problems(3)}
        items = [(request_key("m", provider.identity(), r.prompt, r.trial), r) for r in provider.requests(problems, 1)]
        journal_path = Path("data/cache/samples/m.batches.jsonl")

        async def submit() -> None:
            try:
                await provider.submit_batch(items, BatchJournal(journal_path))
            finally:
                await provider.aclose()

        asyncio.run(submit())
        journal_path.write_text(journal_path.read_text().splitlines()[0] + "\n")  # lose the "batch" line
        assert main(["sample"]) == 0
        assert len(server.batches) == 1 and len(rows("data/samples/m.jsonl")) == 3


@pytest.mark.slow
def test_batch_run_killed_while_pending_resumes_without_resubmitting(tmp_path):
    env = {**os.environ, KEY_VAR: SECRET, "PYTHONPATH": str(REPO / "src")}
    cli = [sys.executable, "-m", "complexitynet", "sample"]
    with FakeOpenAI(batch_delay_s=3.0) as server:
        setup_workdir(tmp_path, [batch_rung(server.base_url, batch_poll_s=0.1)], n=4, k=2)
        journal = tmp_path / "data/cache/samples/m.batches.jsonl"
        proc = subprocess.Popen(cli, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not journal.exists() or '"batch"' not in journal.read_text()):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(server.batches) == 1 and not (tmp_path / "data/samples").exists()
        out = subprocess.run(cli, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert len(server.batches) == 1 and len(server.successes) == 8 and set(server.successes.values()) == {1}
        assert len(rows(tmp_path / "data/samples/m.jsonl")) == 8
