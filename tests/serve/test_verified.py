"""Verified escalation against the real sandbox: a request carrying unit tests climbs the ladder
until an answer's code passes them (judged by the execute stage's harness, never on the host)."""

from __future__ import annotations

import shutil

import pytest

from complexitynet.sandbox.backends import docker_available
from tests.serve.conftest import RouterThread, router_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WRONG = "Sure:\n```python\ndef add(a, b):\n    return a - b\n```\n"
RIGHT = "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\n"
TESTS = {"tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "entry_point": "add"}
PROMPT = [{"role": "user", "content": "Write a function add(a, b) that returns the sum."}]


def backends() -> list[str]:
    found = (["docker"] if docker_available() else []) + (["bwrap"] if shutil.which("bwrap") else [])
    return found or ["none"]


@pytest.fixture(params=backends())
def verified_server(request, tiny_classifier, fake):
    if request.param == "none":
        pytest.skip("no sandbox backend (Docker engine or bwrap): run `make sandbox`")
    fake.faults, fake.reply = None, lambda body: RIGHT if body["model"] == "m-rung-large" else WRONG
    params = router_params(tiny_classifier, [(fake.base_url, None)] * 3, **{"verify.backend": request.param})
    with RouterThread(params) as srv:
        yield srv
    fake.reply = None


def test_failing_answers_escalate_until_the_tests_pass(verified_server):
    client = verified_server.client()
    raw = client.chat.completions.with_raw_response.create(model="complexitynet:0", messages=PROMPT,
                                                           extra_body={"complexitynet": TESTS})
    assert raw.headers["x-complexitynet-model"] == "rung-large"
    assert raw.headers["x-complexitynet-tried"] == "rung-small,rung-medium,rung-large"
    completion = raw.parse()
    assert "a + b" in completion.choices[0].message.content
    tried = completion.model_extra["complexitynet"]["tried"]
    assert [(t["model"], t["result"]) for t in tried] == [
        ("rung-small", "tests_failed"), ("rung-medium", "tests_failed"), ("rung-large", "tests_passed")]
    assert tried[0]["detail"].startswith("fail: 0/2 tests passed")

    # streamed: judged first, then sent as a stream
    chunks = list(client.chat.completions.create(model="complexitynet:0", messages=PROMPT, stream=True,
                                                 extra_body={"complexitynet": TESTS}))
    assert "a + b" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_a_passing_answer_stays_on_the_cheap_rung_and_a_concrete_model_is_not_escalated(verified_server, fake):
    client = verified_server.client()
    fake.reply = lambda body: RIGHT
    raw = client.chat.completions.with_raw_response.create(model="complexitynet:0", messages=PROMPT,
                                                           extra_body={"complexitynet": TESTS})
    assert raw.headers["x-complexitynet-tried"] == "rung-small"
    fake.reply = lambda body: WRONG  # every answer fails: the last one comes back, marked failed
    raw = client.chat.completions.with_raw_response.create(model="rung-medium", messages=PROMPT,
                                                           extra_body={"complexitynet": TESTS})
    tried = raw.parse().model_extra["complexitynet"]["tried"]
    assert [(t["model"], t["result"]) for t in tried] == [("rung-medium", "tests_failed")]


@pytest.fixture(params=backends())
def paying_server(request, paying_router, tiny_baseline, fake):
    if request.param == "none":
        pytest.skip("no sandbox backend (Docker engine or bwrap): run `make sandbox`")
    fake.faults, fake.reply = None, lambda body: RIGHT if body["model"] == "m-rung-large" else WRONG
    params = router_params(tiny_baseline, [(fake.base_url, None)] * 3, router=str(paying_router),
                           **{"verify.backend": request.param})
    with RouterThread(params) as srv:
        yield srv
    fake.reply = None


def test_the_paying_routers_gate_stops_where_the_next_rung_is_not_worth_its_price(paying_server):
    """With tests, the cascade's lambda (5) starts at the cheapest rung; the gate escalates to the
    middle one (0.6 - 5 x 0.1 > 0) but not to the largest (0.9 - 5 x 1 < 0), so the right answer the
    largest would give is never bought: the best failing answer comes back."""
    raw = paying_server.client().chat.completions.with_raw_response.create(
        model="complexitynet", messages=PROMPT, extra_body={"complexitynet": TESTS})
    assert raw.headers["x-complexitynet-tried"] == "rung-small,rung-medium"
    assert raw.headers["x-complexitynet-model"] == "rung-medium" and raw.headers["x-complexitynet-lambda"] == "5"
    tried = raw.parse().model_extra["complexitynet"]["tried"]
    assert [t["result"] for t in tried] == ["tests_failed", "tests_failed"]
    assert "the gate stops here" in tried[1]["detail"]
