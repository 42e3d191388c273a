"""The router over HTTP with the real `openai` client: routing, pass-through, streaming, escalation,
endpoints, metrics, bad input, overload and secrets. Upstreams are fake servers on loopback."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request

import aiohttp
import openai
import pytest
from aiohttp import web

from tests.fake_openai import FakeOpenAI
from tests.serve.conftest import KEY_ENV, RUNGS, SECRET, RouterThread, router_params

pytestmark = pytest.mark.slow  # loads a real (tiny) classifier
PROMPT = [{"role": "user", "content": "Write a function to add two numbers."}]


@pytest.fixture(scope="module")
def server(tiny_classifier, fake):
    with RouterThread(router_params(tiny_classifier, [(fake.base_url, None)] * 3)) as srv:
        yield srv


def post(url: str, data: bytes, headers: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def assert_openai_error(body: dict, code: str) -> str:
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    assert body["error"]["code"] == code, body
    return body["error"]["message"]


def test_routed_request_goes_to_the_chosen_rung_with_headers_and_extension(server, clean_fake):
    client = server.client()
    raw = client.chat.completions.with_raw_response.create(model="complexitynet:0", messages=PROMPT)
    completion = raw.parse()
    assert raw.headers["x-complexitynet-model"] == "rung-small"  # target 0: the cheapest always suffices
    assert raw.headers["x-complexitynet-level"] in ["small", "medium", "large", "none"]
    assert raw.headers["x-complexitynet-tried"] == "rung-small"
    assert "```python" in completion.choices[0].message.content
    ext = completion.model_extra["complexitynet"]
    assert ext["model"] == "rung-small" and ext["routed"] and ext["decision"]["target"] == 0
    assert [b["model"] for b in clean_fake.bodies.values()] == ["m-rung-small"]  # the rung's model id upstream

    high = client.chat.completions.with_raw_response.create(model="complexitynet:1", messages=PROMPT)
    assert high.headers["x-complexitynet-model"] == "rung-large"  # no rung reaches 1: the largest
    default = client.chat.completions.with_raw_response.create(model="complexitynet", messages=PROMPT)
    assert default.headers["x-complexitynet-target"] == "0.5"  # serve.target


def test_concrete_model_passes_through_without_routing(server, clean_fake):
    raw = server.client().chat.completions.with_raw_response.create(model="rung-medium", messages=PROMPT)
    assert raw.headers["x-complexitynet-model"] == "rung-medium"
    assert "x-complexitynet-level" not in raw.headers
    assert raw.parse().model_extra["complexitynet"]["decision"] is None


def test_streaming_end_to_end(server, clean_fake):
    client = server.client()
    chunks = list(client.chat.completions.create(model="complexitynet:0", messages=PROMPT, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Here you go:") and text.rstrip().endswith("```")
    assert all(c.choices for c in chunks)  # no usage chunk unless asked for
    with_usage = list(client.chat.completions.create(model="complexitynet:0", messages=PROMPT, stream=True,
                                                     stream_options={"include_usage": True}))
    assert with_usage[-1].usage is not None and with_usage[-1].usage.completion_tokens > 0
    metrics = get(f"{server.base_url}/metrics").decode()
    assert 'complexitynet_spend_usd_total{model="rung-small"}' in metrics  # streamed usage is counted


def test_a_stream_the_upstream_breaks_off_breaks_for_the_caller(server, clean_fake, caplog):
    """After the first byte no other rung can take over: the caller's client must see a broken stream,
    not a stream that looks complete, and the router goes on serving."""
    clean_fake.faults = lambda key, attempt, body: "cut"
    client = server.client()
    received = []
    with caplog.at_level(logging.WARNING), pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(model="complexitynet:0", messages=PROMPT, stream=True):
            received.append(chunk)
    assert received and received[0].choices[0].delta.role == "assistant"  # the part that came through
    assert "the stream from rung-small broke off (the upstream's answer was malformed or cut off (Response payload is not completed" in caplog.text
    assert "unexpected error" not in caplog.text
    clean_fake.faults = None
    assert client.chat.completions.create(model="complexitynet:0", messages=PROMPT).choices[0].message.content
    metrics = get(f"{server.base_url}/metrics").decode()
    assert 'complexitynet_requests_total{model="rung-small",outcome="upstream_error"} 1.0' in metrics


def test_escalates_when_the_chosen_rung_fails(server, clean_fake):
    clean_fake.faults = lambda key, attempt, body: "500" if body["model"] == "m-rung-small" else None
    client = server.client()
    raw = client.chat.completions.with_raw_response.create(model="complexitynet:0", messages=PROMPT)
    assert raw.headers["x-complexitynet-model"] == "rung-medium"
    assert raw.headers["x-complexitynet-tried"] == "rung-small,rung-medium"
    tried = raw.parse().model_extra["complexitynet"]["tried"]
    assert [(t["model"], t["result"]) for t in tried] == [("rung-small", "upstream_error"), ("rung-medium", "ok")]
    assert "HTTP 500 after 2 attempt(s)" in tried[0]["detail"]  # one retry, then the next rung
    stream = client.chat.completions.with_raw_response.create(model="complexitynet:0", messages=PROMPT, stream=True)
    assert stream.headers["x-complexitynet-model"] == "rung-medium"  # streams escalate before the first byte
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)

    clean_fake.faults = lambda key, attempt, body: "drop"
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="complexitynet:0", messages=PROMPT)
    assert err.value.status_code == 502 and err.value.body["code"] == "upstream_unavailable"
    assert "rung-large" in err.value.body["message"]
    metrics = get(f"{server.base_url}/metrics").decode()
    assert 'complexitynet_escalations_total{model="rung-small",reason="upstream_error"}' in metrics


def test_a_stream_answered_with_something_else_escalates(server, clean_fake):
    """A rung that answers a streaming request 200 with a body that is not SSE is broken: the request
    escalates (as a non-streaming one gets a 502 when every rung does it), nothing is relayed."""
    clean_fake.faults = lambda key, attempt, body: "html" if body["model"] == "m-rung-small" else None
    stream = server.client().chat.completions.with_raw_response.create(model="complexitynet:0", messages=PROMPT,
                                                                       stream=True)
    assert stream.headers["x-complexitynet-tried"] == "rung-small,rung-medium"
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    clean_fake.faults = lambda key, attempt, body: "html"
    with pytest.raises(openai.APIStatusError) as err:
        list(server.client().chat.completions.create(model="complexitynet:0", messages=PROMPT, stream=True))
    assert err.value.status_code == 502 and "not text/event-stream" in err.value.body["message"]


def test_upstream_client_errors_pass_through_unescalated(server, clean_fake):
    clean_fake.faults = lambda key, attempt, body: "401_echo"
    with pytest.raises(openai.AuthenticationError):
        server.client().chat.completions.create(model="complexitynet:0", messages=PROMPT)
    assert clean_fake.requests == 1


def test_endpoints_route_models_health_metrics(server, clean_fake):
    status, _, decision = post(f"{server.base_url}/v1/route", json.dumps({"prompt": "reverse a list"}).encode())
    assert status == 200 and decision["model"] in RUNGS and set(decision["probs"]) == {"small", "medium", "large", "none"}
    assert decision["target"] == 0.5 and "rung" in decision["explanation"] and decision["prices"]["rung-large"]
    assert clean_fake.requests == 0  # decision only
    ids = [m.id for m in server.client().models.list()]
    assert ids == ["complexitynet", *RUNGS]
    health = json.loads(get(f"{server.base_url}/health"))
    assert health["status"] == "ok" and health["ladder"] == "test" and health["target_source"] == "serve.target"
    server.client().chat.completions.create(model="complexitynet:0", messages=PROMPT)
    metrics = get(f"{server.base_url}/metrics").decode()
    for name in ("complexitynet_requests_total", "complexitynet_routing_seconds_bucket",
                 "complexitynet_upstream_seconds_bucket", "complexitynet_spend_usd_total",
                 "complexitynet_tokens_total"):
        assert name in metrics, name


def test_concurrent_requests_are_classified_in_batches(server, clean_fake):
    before = server.router.batcher.batches
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            server.client().chat.completions.create(
                model="complexitynet:0", messages=[{"role": "user", "content": f"Write function number {i}."}])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert server.router.batcher.batches - before < 24  # some prompts shared a forward pass


def test_bad_input_gets_openai_errors_and_the_server_keeps_serving(server, clean_fake):
    url = f"{server.base_url}/v1/chat/completions"
    status, _, body = post(url, b'{"model": "complexitynet", "messages": [')
    assert status == 400 and "not valid JSON" in assert_openai_error(body, "invalid_json")
    status, _, body = post(url, json.dumps({"model": "complexitynet"}).encode())
    assert status == 400 and body["error"]["param"] == "messages"
    status, _, body = post(url, json.dumps({"model": "complexitynet", "messages": [{"role": "system",
                                                                                   "content": "x"}]}).encode())
    assert status == 400 and "role 'user'" in body["error"]["message"]
    status, _, body = post(url, json.dumps({"model": "complexitynet:2", "messages": PROMPT}).encode())
    assert status == 400 and "[0, 1]" in body["error"]["message"]
    status, _, body = post(url, json.dumps({"messages": PROMPT}).encode())
    assert status == 400 and body["error"]["code"] == "missing_model"
    status, _, body = post(url, json.dumps({"model": "complexitynet", "messages": PROMPT,
                                            "complexitynet": {"tests": "assert f()"}}).encode())
    assert status == 400 and body["error"]["code"] == "invalid_tests"
    with pytest.raises(openai.NotFoundError) as err:
        server.client().chat.completions.create(model="gpt-5-imaginary", messages=PROMPT)
    assert err.value.body["code"] == "model_not_found" and "rung-small" in err.value.body["message"]
    huge = [{"role": "user", "content": "x" * (10 * 2**20)}]
    status, _, body = post(url, json.dumps({"model": "complexitynet", "messages": huge}).encode())
    assert status == 413 and "serve.max_body_mb" in assert_openai_error(body, "request_too_large")
    status, _, body = post(f"{server.base_url}/v1/nope", b"{}")
    assert status == 404 and body["error"]["code"] == "not_found"
    # types the OpenAI API checks: a string for `stream` is not "true", `stream_options` is an object
    for field, value, param in (("stream", "false", "stream"), ("stream_options", "x", "stream_options"),
                                ("stream_options", [1], "stream_options"),
                                ("stream_options", {"include_usage": "yes"}, "stream_options.include_usage")):
        status, _, body = post(url, json.dumps({"model": "complexitynet", "messages": PROMPT, field: value}).encode())
        assert status == 400 and body["error"]["param"] == param, (field, value, body)
        assert_openai_error(body, "invalid_type")
    parts = [{"role": "user", "content": [{"type": "text", "text": 42}]}]
    status, _, body = post(url, json.dumps({"model": "complexitynet", "messages": parts}).encode())
    assert status == 400 and "'text' as a string" in assert_openai_error(body, "invalid_messages")
    assert clean_fake.requests == 0  # none of that reached an upstream
    ok = server.client().chat.completions.create(model="complexitynet:0", messages=PROMPT)
    assert ok.choices[0].message.content


def test_overload_is_a_503_with_retry_after(tiny_classifier):
    with FakeOpenAI(latency_s=0.5) as slow, \
            RouterThread(router_params(tiny_classifier, [(slow.base_url, None)] * 3, max_in_flight=2)) as srv:
        results: list[tuple[int, dict, dict]] = []
        body = json.dumps({"model": "rung-small", "messages": PROMPT}).encode()
        threads = [threading.Thread(target=lambda: results.append(post(f"{srv.base_url}/v1/chat/completions", body)))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r[0] for r in results)
        assert statuses.count(200) >= 2 and 503 in statuses
        refused = next(r for r in results if r[0] == 503)
        assert refused[1]["Retry-After"] == "1" and assert_openai_error(refused[2], "overloaded")
        assert post(f"{srv.base_url}/v1/chat/completions", body)[0] == 200  # and it recovers


def test_keys_come_from_the_environment_and_never_leak(tiny_classifier, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI() as open_up, FakeOpenAI(api_key=SECRET) as keyed, \
            RouterThread(router_params(tiny_classifier, [(open_up.base_url, None), (keyed.base_url, KEY_ENV),
                                                         (keyed.base_url, "CNET_TEST_KEY_NOT_SET")])) as srv:
        client = srv.client()
        ok = client.chat.completions.with_raw_response.create(model="rung-medium", messages=PROMPT)
        assert ok.http_response.status_code == 200  # the key from KEY_ENV reached the upstream
        keyed.faults = lambda key, attempt, body: "401_echo"  # an upstream error that repeats the key
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(model="rung-medium", messages=PROMPT)
        assert SECRET not in json.dumps(err.value.body) and "[redacted]" in json.dumps(err.value.body)
        with pytest.raises(openai.InternalServerError) as err:  # the largest rung's variable is unset
            client.chat.completions.create(model="complexitynet:1", messages=PROMPT)
        assert err.value.body["code"] == "upstream_key_missing"
        assert "CNET_TEST_KEY_NOT_SET" in err.value.body["message"]
        assert client.chat.completions.create(model="rung-small", messages=PROMPT).choices  # still serving
        # an answer that repeats the key, whole or as a stream cut anywhere, comes back redacted
        keyed.faults = None
        keyed.reply = lambda body: f"your key is {SECRET}, twice: {SECRET}"
        answer = client.chat.completions.create(model="rung-medium", messages=PROMPT).choices[0].message.content
        assert SECRET not in answer and answer.count("[redacted]") == 2
        streamed = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(model="rung-medium", messages=PROMPT, stream=True)
                           if c.choices)
        assert SECRET not in streamed and streamed.count("[redacted]") == 2
        exposed = get(f"{srv.base_url}/metrics") + get(f"{srv.base_url}/health") + get(f"{srv.base_url}/v1/models")
        assert SECRET.encode() not in exposed
    assert SECRET not in caplog.text and SECRET not in repr(srv.router.upstreams)


def test_every_chat_request_is_counted_once_by_outcome(tiny_classifier, caplog):
    """ok, an upstream 4xx passed back, a 502, a refusal, a client gone mid-stream and an internal
    error: one count each in complexitynet_requests_total, and refusals only in complexitynet_rejected."""
    import socket
    import time

    with FakeOpenAI() as up, RouterThread(router_params(tiny_classifier, [(up.base_url, None)] * 3)) as srv:
        client, url = srv.client(), f"{srv.base_url}/v1/chat/completions"
        assert client.chat.completions.create(model="rung-small", messages=PROMPT).choices
        up.faults = lambda key, attempt, body: "401_echo"
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="rung-small", messages=PROMPT)
        up.faults = lambda key, attempt, body: "drop"
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="rung-large", messages=PROMPT)
        assert post(url, b"{not json")[0] == 400
        # a caller that reads the first bytes of a slow stream and hangs up
        up.faults = lambda key, attempt, body: "trickle"
        up.reply = lambda body: "x" * 400
        body = json.dumps({"model": "rung-small", "messages": PROMPT, "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", int(srv.base_url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        original = srv.router.decide

        async def broken(*args, **kwargs):
            raise RuntimeError("a bug")

        srv.router.decide = broken
        try:
            assert post(url, json.dumps({"model": "complexitynet", "messages": PROMPT}).encode())[0] == 500
        finally:
            srv.router.decide = original
        expected = {("rung-small", "ok"): 1, ("rung-small", "upstream_rejected"): 1, ("none", "upstream_error"): 1,
                    ("none", "rejected"): 1, ("rung-small", "client_gone"): 1, ("none", "internal_error"): 1}
        deadline = time.monotonic() + 60  # the stream notices its caller is gone at its next write
        while True:
            text = get(f"{srv.base_url}/metrics").decode()
            counts = {}
            for line in text.splitlines():
                if line.startswith("complexitynet_requests_total{"):
                    labels, value = line.rsplit(" ", 1)
                    model = labels.split('model="')[1].split('"')[0]
                    outcome = labels.split('outcome="')[1].split('"')[0]
                    counts[model, outcome] = int(float(value))
            if counts == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counts == expected
        assert 'complexitynet_rejected_total{reason="invalid_json"} 1.0' in text
        assert "upstream_unavailable" not in text  # a 502 is an outcome, not a refusal
    assert caplog.text.count("unexpected error") == 1  # the bug; the client who left is not an error


def test_a_request_has_one_deadline_across_rungs(tiny_classifier):
    """serve.request_timeout_s bounds the whole request (every rung, every retry): a 504, not minutes."""
    with FakeOpenAI(latency_s=30) as slow, RouterThread(router_params(
            tiny_classifier, [(slow.base_url, None)] * 3, upstream_timeout_s=60, request_timeout_s=1)) as srv:
        status, _, body = post(f"{srv.base_url}/v1/chat/completions",
                               json.dumps({"model": "complexitynet:1", "messages": PROMPT}).encode())
        assert status == 504 and "serve.request_timeout_s (1 s)" in assert_openai_error(body, "request_timeout")
        assert 'complexitynet_requests_total{model="none",outcome="timeout"} 1.0' in get(f"{srv.base_url}/metrics").decode()


def test_the_classifier_reads_at_most_classify_max_chars_of_a_huge_prompt(server, clean_fake):
    """Several multi-megabyte prompts must not stall everyone's routing: the classifier gets the
    first serve.classify_max_chars characters of each."""
    seen: list[int] = []
    submit = server.router.batcher.submit

    async def spy(text: str):
        seen.append(len(text))
        return await submit(text)

    server.router.batcher.submit = spy
    try:
        huge = "Write a function to add two numbers. " + "x" * (3 * 2**20)
        status, _, decision = post(f"{server.base_url}/v1/route", json.dumps({"prompt": huge}).encode())
    finally:
        server.router.batcher.submit = submit
    assert status == 200 and decision["model"] in RUNGS
    assert seen == [server.router.cfg.classify_max_chars]


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length"}


class LoopbackProxy:
    """A forward HTTP proxy on 127.0.0.1, in a thread of its own: it takes the absolute-URI requests
    that clients send a proxy ("POST http://host:port/path HTTP/1.1"), forwards each, and relays the
    answer as it arrives. `seen` lists each request's method and target."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.raw_path}")
        if not request.raw_path.startswith("http://"):
            return web.Response(status=400, text="this proxy takes absolute URIs only")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(request.method, request.raw_path, headers=headers,
                                          data=await request.read()) as answer:
            out = web.StreamResponse(status=answer.status, headers={
                k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP})
            await out.prepare(request)
            async for chunk in answer.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(trust_env=False, auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    def __enter__(self) -> LoopbackProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def direct_post(base_url: str, body: dict) -> tuple[int, bytes]:
    """POST to the router with http.client, which never goes through a proxy (urllib and the openai
    client would take HTTP_PROXY too)."""
    host, port = urllib.parse.urlsplit(base_url).hostname, urllib.parse.urlsplit(base_url).port
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_an_upstream_is_reached_through_the_proxy_in_the_routers_environment(tiny_baseline, clean_fake, monkeypatch):
    """HTTP_PROXY in the router's environment carries its upstream calls, plain and streamed (aiohttp's
    trust_env); a host in NO_PROXY is called directly."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    with LoopbackProxy() as proxy, \
            RouterThread(router_params(tiny_baseline, [(clean_fake.base_url, None)] * 3)) as srv:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        status, raw = direct_post(srv.base_url, {"model": "complexitynet:0", "messages": PROMPT})
        assert status == 200, raw
        assert json.loads(raw)["choices"][0]["message"]["content"].startswith("Here you go:")
        target = f"POST {clean_fake.base_url}/chat/completions"
        assert proxy.seen == [target] and clean_fake.requests == 1
        status, raw = direct_post(srv.base_url, {"model": "complexitynet:0", "messages": PROMPT, "stream": True})
        assert status == 200 and raw.rstrip().endswith(b"data: [DONE]") and b"Here you go" in raw
        assert proxy.seen == [target] * 2 and clean_fake.requests == 2

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        status, raw = direct_post(srv.base_url, {"model": "complexitynet:0", "messages": PROMPT})
        assert status == 200 and proxy.seen == [target] * 2 and clean_fake.requests == 3


def test_sse_relay_splits_events_across_any_chunking():
    """sse.relay (what a streamed answer goes through on its way to the caller): events come out whole
    and in order however the upstream's bytes were cut, CRLF line ends included (sse-starlette's
    default), and the usage-only event reaches the caller only when asked for."""
    from complexitynet.serve import sse

    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}'
    stream = b"data: a\r\n\r\ndata: b\r\n\r\n" + usage + b"\r\n\r\ndata: [DONE]\r\n\r\n"

    async def relay(pieces: list[bytes], keep_usage: bool) -> tuple[list[bytes], dict | None]:
        async def chunks():
            for piece in pieces:
                yield piece

        out: list[bytes] = []

        async def write(data: bytes) -> None:
            out.append(data)

        return out, await sse.relay(chunks(), write, keep_usage)

    want = [b"data: a\n\n", b"data: b\n\n", usage + b"\n\n", sse.DONE]
    for cut in range(1, len(stream)):  # every two-piece split, CRLFs straddling included
        out, found = asyncio.run(relay([stream[:cut], stream[cut:]], keep_usage=True))
        assert out == want and found == {"prompt_tokens": 3, "completion_tokens": 2}, cut
    out, _ = asyncio.run(relay([stream[i:i + 1] for i in range(len(stream))], keep_usage=False))
    assert out == [want[0], want[1], want[3]]
