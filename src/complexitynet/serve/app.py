"""The HTTP layer: an OpenAI-compatible server over the Router.

Endpoints: POST /v1/chat/completions (streaming and not), GET /v1/models, POST /v1/route (the
decision only), GET /health, GET /metrics (Prometheus). aiohttp serves it: its HTTP parser is C,
while uvicorn here would run on h11, a pure-Python parser (uvloop/httptools are not in
requirements.lock). Upstream calls go through aiohttp's client (serve/upstream.py). Every error is an
OpenAI-style object `{"error": {"message", "type", "code", "param"}}`; overload is a 503 with
Retry-After. Nothing here logs or returns request content or an API key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import orjson
from aiohttp import web

from complexitynet.sandbox.backends import SandboxError
from complexitynet.serve import sse
from complexitynet.serve.batcher import Overloaded
from complexitynet.serve.decide import prompt_text
from complexitynet.serve.router import AllFailed, Attempt, Plan, Router, UnknownModel
from complexitynet.serve.upstream import KeyMissing, StreamBroken, UpstreamRejected
from complexitynet.serve.verify import parse_tests

log = logging.getLogger(__name__)
ROUTER = web.AppKey("router", Router)


class ApiError(Exception):
    """An error the caller gets as an OpenAI-style object."""

    def __init__(self, status: int, message: str, type_: str, code: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}
        return json_response(body, status=self.status, headers=self.headers)


def bad_request(message: str, code: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


CHAT_PATH = "/v1/chat/completions"
OUTCOME = web.RequestKey("complexitynet.outcome", tuple)  # (model, outcome) of a chat request, set where it is decided
# Errors raised after the request was forwarded (or could have been): not refusals, and each its own outcome
AFTER_FORWARDING = {"upstream_unavailable": "upstream_error", "upstream_key_missing": "config_error",
                    "sandbox_unavailable": "sandbox_error", "request_timeout": "timeout",
                    "shutting_down": "shutting_down"}


@web.middleware
async def openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure becomes an OpenAI-style error; an unexpected one is logged and the server goes
    on. Every chat request is counted once, in `complexitynet_requests_total{model, outcome}`."""
    metrics = request.app[ROUTER].metrics
    outcome: tuple[str, str] = ("none", "internal_error")
    try:
        response = await handler(request)
        outcome = request.get(OUTCOME, ("none", "ok"))
        return response
    except ApiError as exc:
        outcome = ("none", AFTER_FORWARDING.get(exc.code, "rejected"))
        if exc.code not in AFTER_FORWARDING:
            metrics.rejected.labels(exc.code).inc()
        return exc.response()
    except web.HTTPException as exc:  # aiohttp's own: unknown path, wrong method, body too large
        if exc.status < 400:
            raise
        outcome = ("none", "rejected")
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status, "http_error")
        metrics.rejected.labels(code).inc()
        return ApiError(exc.status, f"{exc.reason}: {request.method} {request.path}", "invalid_request_error",
                        code).response()
    except ConnectionResetError:  # the caller went away while we answered: nothing to answer
        outcome = (request.get(OUTCOME, ("none", ""))[0], "client_gone")
        log.info("serve: the client of %s %s went away before its answer was complete", request.method, request.path)
        return web.Response(status=499)
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return ApiError(500, "internal error in the router (logged)", "server_error", "internal_error").response()
    finally:
        if request.path == CHAT_PATH and request.method == "POST":
            metrics.requests.labels(*outcome).inc()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """aiohttp's json_response, serialised by orjson (a tenth of the json module's time per answer)."""
    return web.Response(body=orjson.dumps(data), status=status, headers=headers, content_type="application/json")


async def json_body(request: web.Request) -> dict[str, Any]:
    limit = request.app[ROUTER].cfg.max_body_mb
    if request.content_length is not None and request.content_length > limit * 2**20:
        raise ApiError(413, f"request body of {request.content_length} bytes exceeds the router's limit of "
                       f"{limit:g} MB (serve.max_body_mb)", "invalid_request_error", "request_too_large")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body exceeds the router's limit of {limit:g} MB (serve.max_body_mb)",
                       "invalid_request_error", "request_too_large") from None
    try:
        body = orjson.loads(raw)
    except ValueError as exc:  # orjson.JSONDecodeError is one
        raise bad_request(f"the request body is not valid JSON ({exc})", "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", "invalid_json")
    return body


def overloaded(router: Router, why: str) -> ApiError:
    return ApiError(503, f"the router is overloaded ({why}); retry after {router.cfg.retry_after_s} s",
                    "server_error", "overloaded", headers={"Retry-After": str(router.cfg.retry_after_s)})


async def plan_for(router: Router, body: dict[str, Any], arrived: float, verified: bool = False) -> Plan:
    """Validate the request and decide where it goes (the classifier runs only for routed names);
    `verified`: the request carries tests."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model name ('complexitynet' routes)", "missing_model", "model")
    try:
        routed, target, index = router.resolve(model)
        text = prompt_text(body.get("messages"))[:router.cfg.classify_max_chars]
    except UnknownModel as exc:
        raise ApiError(404, str(exc), "invalid_request_error", "model_not_found", "model") from None
    except (TypeError, ValueError) as exc:
        param = "model" if "model '" in str(exc) else "messages"
        raise bad_request(str(exc), f"invalid_{param}", param) from None
    if not routed:
        return Plan(index, index + 1)
    try:
        decision = await router.decide(text, target, verified)
    except Overloaded:
        raise overloaded(router, "classifier queue full") from None
    router.metrics.routing_seconds.observe(time.perf_counter() - arrived)
    if decision.index < 0:
        raise ApiError(422, f"no model is predicted to solve this prompt and the router refuses such prompts "
                       f"(train.router.fallback: refuse): {decision.explain(router.ladder)}", "invalid_request_error",
                       "refused")
    return Plan(decision.index, len(router.ladder), decision)


def route_headers(plan: Plan, model: str, tried: list[Attempt]) -> dict[str, str]:
    headers = {"x-complexitynet-model": model, "x-complexitynet-tried": ",".join(a.model for a in tried)}
    if plan.decision is not None:
        headers["x-complexitynet-level"] = plan.decision.level
        if plan.decision.target is not None:
            headers["x-complexitynet-target"] = f"{plan.decision.target:g}"
        if plan.decision.lam is not None:
            headers["x-complexitynet-lambda"] = f"{plan.decision.lam:g}"
    return headers


def extension(plan: Plan, model: str, tried: list[Attempt]) -> dict[str, Any]:
    return {"model": model, "routed": plan.decision is not None,
            "decision": plan.decision.as_dict() if plan.decision else None,
            "tried": tried}  # orjson writes the Attempt dataclasses as objects


def stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage), checked as the OpenAI API checks them: booleans, and an object (or
    null) for stream_options."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request(f"'stream' must be a boolean, not {type(stream).__name__}", "invalid_type", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request(f"'stream_options' must be an object, not {type(options).__name__}", "invalid_type",
                          "stream_options")
    usage = (options or {}).get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        raise bad_request("'stream_options.include_usage' must be a boolean", "invalid_type",
                          "stream_options.include_usage")
    return bool(stream), bool(stream and usage)


async def chat(request: web.Request) -> web.StreamResponse:
    router = request.app[ROUTER]
    arrived = time.perf_counter()
    if router.draining:
        raise shutting_down(router)
    if router.in_flight >= router.cfg.max_in_flight:
        raise overloaded(router, f"{router.in_flight} requests in flight")
    router.in_flight += 1
    # The work runs as a task of its own, so a draining router can stop it and still answer this request
    work = asyncio.ensure_future(_chat(request, router, arrived))
    router.work.add(work)
    try:
        return await work
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # this handler itself is cancelled: let it go
            work.cancel()
            raise
        raise shutting_down(router) from None  # the drain stopped the work
    finally:
        router.work.discard(work)
        router.in_flight -= 1


def shutting_down(router: Router) -> ApiError:
    return ApiError(503, "the router is shutting down; retry (another instance, or this one once it is back)",
                    "server_error", "shutting_down", headers={"Retry-After": str(router.cfg.retry_after_s)})


async def drain(app: web.Application) -> None:
    """On shutdown (SIGTERM): refuse new chat requests, give the running ones `serve.drain_s` to finish,
    then stop them; each gets a 503 (a stream already under way just ends)."""
    router = app[ROUTER]
    router.draining = True
    if router.work:
        log.info("serve: draining %d request(s), at most %g s", len(router.work), router.cfg.drain_s)
        _, late = await asyncio.wait(set(router.work), timeout=router.cfg.drain_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("serve: %d request(s) still running after %g s were stopped with a 503", len(late),
                        router.cfg.drain_s)
            await asyncio.wait(late, timeout=5)


async def within_deadline(router: Router, arrived: float, work: Any) -> Any:
    """`work` under what is left of the request's own deadline (serve.request_timeout_s)."""
    left = router.cfg.request_timeout_s - (time.perf_counter() - arrived)
    try:
        async with asyncio.timeout(max(left, 0.0)):
            return await work
    except TimeoutError:
        raise ApiError(504, f"no answer within serve.request_timeout_s ({router.cfg.request_timeout_s:g} s) "
                       "across the ladder's rungs", "server_error", "request_timeout") from None


async def _chat(request: web.Request, router: Router, arrived: float) -> web.StreamResponse:
    body = await json_body(request)
    try:
        tests = parse_tests(body.pop("complexitynet", None))
    except (TypeError, ValueError) as exc:
        raise bad_request(str(exc), "invalid_tests", "complexitynet") from None
    stream, keep_usage = stream_flags(body)
    plan = await plan_for(router, body, arrived, tests is not None)
    try:
        if stream and tests is None:
            return await _relay(request, router, body, plan, keep_usage, arrived)
        answer = await within_deadline(router, arrived,
                                       router.answer({**body, "stream": False} if stream else body, plan, tests))
    except KeyMissing as exc:
        raise ApiError(500, str(exc), "server_error", "upstream_key_missing") from None
    except UpstreamRejected as exc:
        request[OUTCOME] = (exc.model, "upstream_rejected")
        return web.Response(body=exc.body, status=exc.status, content_type="application/json")
    except AllFailed as exc:
        log.error("serve: no model answered %s %s: %s", request.method, request.path, exc)
        raise ApiError(502, f"no model answered; tried {exc}", "server_error", "upstream_unavailable") from None
    except SandboxError as exc:
        raise ApiError(503, f"cannot judge the answer: {exc}", "server_error", "sandbox_unavailable") from None
    name = answer.upstream.name
    request[OUTCOME] = (name, "ok")
    headers = route_headers(plan, name, answer.tried)
    if stream:
        return web.Response(body=sse.from_answer(answer.data, keep_usage), headers=headers,
                            content_type="text/event-stream")
    return json_response({**answer.data, "complexitynet": extension(plan, name, answer.tried)}, headers=headers)


async def _relay(request: web.Request, router: Router, body: dict[str, Any], plan: Plan,
                 keep_usage: bool, arrived: float) -> web.StreamResponse:
    upstream_body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
    resp, up, tried = await within_deadline(router, arrived, router.open_stream(upstream_body, plan))
    request[OUTCOME] = (up.name, "ok")
    out = web.StreamResponse(headers={**route_headers(plan, up.name, tried), "Content-Type": "text/event-stream",
                                      "Cache-Control": "no-cache"})
    try:
        await out.prepare(request)
        usage = await sse.relay(up.stream_body(resp), out.write, keep_usage, up.secret)
    except (StreamBroken, TimeoutError) as exc:  # the upstream broke off (errors writing to the caller are OSErrors)
        # The caller has the first bytes, so no other rung can take over and no error object fits the
        # stream: the caller's connection ends short of the stream's last chunk, which its client
        # reports as a broken stream (the openai client: APIConnectionError).
        request[OUTCOME] = (up.name, "upstream_error")
        log.warning("serve: the stream from %s broke off (%s); ending the caller's connection", up.name,
                    str(exc) or f"no data for {up.timeout_s:g} s")
        if request.transport is not None:
            request.transport.close()
        return out
    except ConnectionResetError:  # the caller went away mid-stream: counted, not an error of ours
        request[OUTCOME] = (up.name, "client_gone")
        log.info("serve: the client left a stream from %s before its end", up.name)
        return out
    finally:
        resp.release()  # the connection back to the pool when the stream ended; closed otherwise
    router.metrics.usage(up.name, usage, up.spec.price.input, up.spec.price.output)
    await out.write_eof()
    return out


async def route_only(request: web.Request) -> web.Response:
    """POST /v1/route: the decision for {"messages": [...]} or {"prompt": "..."}, nothing forwarded."""
    router = request.app[ROUTER]
    body = await json_body(request)
    if isinstance(body.get("prompt"), str):
        body = {**body, "messages": [{"role": "user", "content": body["prompt"]}]}
    body.setdefault("model", "complexitynet")
    plan = await plan_for(router, body, time.perf_counter())
    if plan.decision is None:
        raise bad_request("/v1/route decides for routed names only ('complexitynet' or 'complexitynet:<target>')",
                          "invalid_model", "model")
    return json_response({**plan.decision.as_dict(), "explanation": plan.decision.explain(router.ladder),
                          "prices": {m.name: m.price.model_dump() for m in router.ladder}})


async def models(request: web.Request) -> web.Response:
    names = ["complexitynet", *request.app[ROUTER].models()]
    return json_response({"object": "list", "data": [
        {"id": n, "object": "model", "created": 0, "owned_by": "complexitynet"} for n in names]})


async def health(request: web.Request) -> web.Response:
    router = request.app[ROUTER]
    return json_response({"status": "ok", "ladder": router.ladder_name, "models": router.models(),
                          "target": router.target, "target_source": router.target_source,
                          "in_flight": router.in_flight, "pid": os.getpid()})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[ROUTER].metrics.render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def build_app(router: Router) -> web.Application:
    # aiohttp refuses bodies over client_max_size while reading; json_body turns that into a 413
    app = web.Application(middlewares=[openai_errors], client_max_size=int(router.cfg.max_body_mb * 2**20) + 1)
    app[ROUTER] = router

    async def start(app: web.Application) -> None:
        await router.start()

    async def stop(app: web.Application) -> None:
        await router.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(drain)
    app.on_cleanup.append(stop)
    app.router.add_post(CHAT_PATH, chat)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/route", route_only)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
