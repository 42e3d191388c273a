"""`complexitynet serve` with the router that pays (serve.router): the cost-aware rule decides, a
target suffix is refused, and the paying rule's fallback can refuse a prompt. The verified cascade's
gate is tested against the real sandbox in test_verified.py."""

from __future__ import annotations

import json

import openai
import pytest

from complexitynet import policy as P
from complexitynet.errors import ConfigError
from complexitynet.paying import RouterSpec, load_router, save_router
from tests.serve.conftest import RouterThread, router_params

PROMPT = [{"role": "user", "content": "Write a function to add two numbers."}]


@pytest.fixture(scope="module")
def server(paying_router, tiny_baseline, fake):
    with RouterThread(router_params(tiny_baseline, [(fake.base_url, None)] * 3, router=str(paying_router))) as srv:
        yield srv


def test_the_router_that_pays_routes_by_price_of_quality(server, clean_fake):
    raw = server.client().chat.completions.with_raw_response.create(model="complexitynet", messages=PROMPT)
    assert raw.headers["x-complexitynet-model"] == "rung-medium"  # 0.6 - 0.5 x 0.1 beats 0.2 and 0.9 - 0.5
    assert raw.headers["x-complexitynet-lambda"] == "0.5" and "x-complexitynet-target" not in raw.headers
    decision = raw.parse().model_extra["complexitynet"]["decision"]
    assert decision["success"] == {"rung-small": 0.2, "rung-medium": 0.6, "rung-large": 0.9}
    assert decision["lam"] == 0.5 and decision["target"] is None
    with pytest.raises(openai.BadRequestError, match="routes by the price of quality"):
        server.client().chat.completions.create(model="complexitynet:0.9", messages=PROMPT)


def test_route_endpoint_explains_the_paying_decision(server):
    import urllib.request

    request = urllib.request.Request(f"{server.base_url}/v1/route", data=json.dumps({"messages": PROMPT}).encode(),
                                     headers={"Content-Type": "application/json"})
    body = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert body["model"] == "rung-medium"
    assert "rung-medium has the best predicted success minus price of quality x cost" in body["explanation"]


def test_a_refusing_fallback_answers_422(paying_router, tiny_baseline, fake, tmp_path):
    spec, model = load_router(paying_router)
    refusing = RouterSpec(**{**spec.__dict__, "rule": P.Rule(0.5, "refuse", hopeless_below=0.95)})
    save_router(refusing, {"tfidf": model}, tmp_path / "router")
    params = router_params(tiny_baseline, [(fake.base_url, None)] * 3, router=str(tmp_path / "router"))
    with RouterThread(params) as srv:
        with pytest.raises(openai.UnprocessableEntityError, match="predicted to solve"):
            srv.client().chat.completions.create(model="complexitynet", messages=PROMPT)


def test_a_router_for_another_ladder_size_is_a_clear_error(paying_router, tiny_baseline, fake):
    from complexitynet.serve.router import build_router

    params = router_params(tiny_baseline, [(fake.base_url, None)] * 2, router=str(paying_router))
    with pytest.raises(ConfigError, match="predicts 3 rungs .* but ladder 'test' has 2"):
        build_router(params)
    params = router_params(tiny_baseline, [(fake.base_url, None)] * 3, router="no/such/router")
    with pytest.raises(ConfigError, match="run `complexitynet train`.*serve.router: null"):
        build_router(params)
