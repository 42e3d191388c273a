"""The sampling engine's parts and the provider registry, without a server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from complexitynet import config
from complexitynet.config import Price, load_params, parse_rung
from complexitynet.errors import ConfigError, DataError
from complexitynet.providers import PROVIDERS, make_provider
from complexitynet.providers.base import Request
from complexitynet.providers.hf_local import HFLocalProvider
from complexitynet.providers.openai_compat import OpenAIProvider
from complexitynet.providers.recorded import RecordedProvider
from complexitynet.live import (
    Budget,
    Pacer,
    latency_summary,
    request_key,
    sample_cache,
    worst_case_usd,
)
from tests.live_helpers import make_problems

REPO = Path(__file__).resolve().parents[2]


def openai_spec(**block: object) -> config.OpenAIRung:
    return parse_rung({"name": "m", "provider": "openai", "price": {"input": 1, "output": 2},
                                     "openai": {"model": "gpt-x", **block}})


def test_request_key_covers_model_endpoint_id_params_prompt_and_trial(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit-secret-0123456789")
    identity = OpenAIProvider(openai_spec(), Path(".")).identity()
    base = request_key("m", identity, "p", 0)
    assert request_key("m", dict(reversed(identity.items())), "p", 0) == base
    changed = [
        request_key("m2", identity, "p", 0),
        request_key("m", {**identity, "base_url": "http://127.0.0.1:8000/v1"}, "p", 0),
        request_key("m", {**identity, "model": "gpt-y"}, "p", 0),
        request_key("m", {**identity, "params": {"max_tokens": 5}}, "p", 0),
        request_key("m", identity, "p2", 0),
        request_key("m", identity, "p", 1),
    ]
    assert len({base, *changed}) == 7
    assert "sk-unit-secret" not in json.dumps(identity)  # the cache never sees the key


def test_worst_case_bounds_prompt_bytes_and_max_tokens():
    price = Price(input=2, output=10)
    assert worst_case_usd(price, "héllo", 100) == pytest.approx(((6 + 64) * 2 + 100 * 10) / 1e6)


def test_sample_cache_is_locked_and_drops_records_that_disagree_with_themselves(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    cache = sample_cache(path)
    cache.add({"key": "a", "completion": "x", "prompt_tokens": 3, "completion_tokens": 1})
    cache.add({"key": "u", "completion": "y", "prompt_tokens": None, "completion_tokens": None})  # usage not reported
    with pytest.raises(DataError, match="another `complexitynet sample` is using this cache"):
        sample_cache(path)
    cache.add({"key": "b", "completion": None, "prompt_tokens": 3, "completion_tokens": 1})  # e.g. an old bug
    cache.close()
    again = sample_cache(path)
    assert list(again.records) == ["a", "u"] and "1 no completion" in caplog.text
    again.close()


def test_budget_reserves_worst_case_and_settles_actual():
    budget = Budget(1.0)
    assert budget.reserve(0.6) and not budget.reserve(0.5)
    budget.settle(0.6, 0.1)
    assert budget.spent == pytest.approx(0.1) and budget.reserve(0.9) and not budget.reserve(0.01)
    assert Budget(None).reserve(1e9)


def test_pacer_spaces_starts_and_pauses():
    async def starts(pacer: Pacer, n: int, pause: float = 0.0) -> list[float]:
        if pause:
            pacer.pause(pause)
        out = []
        for _ in range(n):
            await pacer.wait()
            out.append(time.monotonic())
        return out

    times = asyncio.run(starts(Pacer(rpm=1200), 4))
    assert all(b - a >= 0.049 for a, b in zip(times, times[1:]))
    t0 = time.monotonic()
    assert asyncio.run(starts(Pacer(rpm=None), 1, pause=0.2))[0] - t0 >= 0.2


def test_latency_summary_percentiles_and_truncations():
    records = [{"latency_s": x / 10, "finish_reason": "length" if x == 3 else "stop"} for x in range(1, 11)]
    assert latency_summary(records) == {"latency_p50_s": 0.5, "latency_p95_s": 1.0, "finish_length": 1}
    assert latency_summary([])["latency_p50_s"] is None


def test_registry_matches_the_config_and_lists_choices():
    assert set(PROVIDERS) == set(config.PROVIDERS)
    assert isinstance(make_provider(openai_spec(), Path(".")), OpenAIProvider)
    spec = openai_spec().model_copy(update={"provider": "vertex"})
    with pytest.raises(ConfigError, match=r"unknown provider 'vertex'; available: \['hf-local', 'openai', 'recorded'\]"):
        make_provider(spec, Path("."))


def test_importing_providers_loads_no_heavy_library():
    code = ("import sys, complexitynet.providers, complexitynet.sample, complexitynet.cli; "
            "print(sorted(m for m in ('openai', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def write_params(tmp_path: Path, rung: dict) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["ladders"]["live"] = [rung]
    raw["base"]["ladder"] = "live"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("rung, message", [
    ({"provider": "openai"}, "ladders.live.0.openai: this provider needs a `openai:` block"),
    ({"provider": "openai", "openai": {"model": "x"}, "hf_local": {"package": "p"}},
     "ladders.live.0.hf_local: not this provider's block: remove `hf_local:`"),
    ({"provider": "gpt", "openai": {"model": "x"}}, "ladders.live.0: provider must be one of recorded, openai, hf-local"),
    ({"provider": "openai", "openai": {"model": "x", "params": {"temprature": 1}}},
     "ladders.live.0.openai.params.temprature: unknown key"),
    ({"provider": "openai", "openai": {"model": "x", "api_key_env": "sk-123"}}, "ladders.live.0.openai.api_key_env"),
    ({"provider": "openai", "openai": {"model": "x", "base_url": "localhost:8000"}}, "ladders.live.0.openai.base_url"),
    ({"provider": "openai", "openai": {"model": "x", "concurrency": 0}}, "ladders.live.0.openai.concurrency"),
    ({"provider": "hf-local", "hf_local": {"model": "m", "package": "p"}}, "give exactly one of `model`"),
    ({"provider": "hf-local", "hf_local": {}}, "give exactly one of `model`"),
    ({"provider": "hf-local", "hf_local": {"package": "p", "device": "tpu"}}, "ladders.live.0.hf_local.device"),
])
def test_live_rung_errors_name_the_key(tmp_path, rung, message):
    path = write_params(tmp_path, {"name": "m", "price": {"input": 1, "output": 1}, **rung})
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert message in str(info.value)


def test_example_live_ladders_in_params_are_valid_but_not_default():
    params = load_params(REPO / "params.yaml")
    assert params.ladder_name == "mbpp" and all(not m.live for m in params.ladder)
    live = [m for ladder in params.ladders.values() for m in ladder if m.live]
    assert {m.provider for m in live} == {"openai", "hf-local"}


def test_hf_local_check_names_a_missing_package_or_gguf_file(tmp_path):
    def provider(**block: object) -> HFLocalProvider:
        spec = parse_rung({"name": "m", "provider": "hf-local", "price": {"input": 0, "output": 0},
                                         "hf_local": block})
        return HFLocalProvider(spec, tmp_path)

    with pytest.raises(ConfigError, match="`hf_local.package: no_such_weights_pkg` is not an installed package"):
        provider(package="no_such_weights_pkg").check()
    (tmp_path / "a.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"no GGUF file 'b.gguf' in .*; found: \['a.gguf'\]"):
        provider(model=str(tmp_path), gguf_file="b.gguf").check()


def test_recorded_provider_fits_the_interface(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"task_id": f"MBPP/{i}", "model": "mine", "trial": 0, "completion": f"c{i}"}) + "\n"
                            for i in (1, 2)))
    spec = parse_rung({"name": "mine", "provider": "recorded", "price": {"input": 1, "output": 1},
                                     "recorded": {"source": "jsonl", "model": "mine", "path": str(path)}})
    provider = make_provider(spec, tmp_path)
    assert isinstance(provider, RecordedProvider) and not provider.live
    problems = {p.task_id: p for p in make_problems(2)}
    requests = provider.requests(problems, k=5)  # the recording decides the trials
    assert requests == [Request("MBPP/1", 0, problems["MBPP/1"].prompt), Request("MBPP/2", 0, problems["MBPP/2"].prompt)]
    assert [r.completion for r in asyncio.run(provider.complete(requests))] == ["c1", "c2"]
    with pytest.raises(DataError, match="no recorded completion"):
        asyncio.run(provider.complete([Request("MBPP/1", 3, "")]))

