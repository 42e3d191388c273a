"""A fake OpenAI-compatible Chat Completions server on 127.0.0.1, for tests and benchmarks.

It speaks real HTTP (aiohttp), so the real `openai` client talks to it. Answers are a pure
function of the request body, so two runs that send the same requests get the same bytes back.
It can add latency and inject faults, chosen per request by a `faults` callable that sees the
body's hash, how many times that body was seen before, and the parsed body:

- "429": Too Many Requests with a Retry-After header
- "500": Internal Server Error
- "drop": the connection is closed without a response
- "slow": the answer comes after `slow_s` (longer than the client's timeout)
- "malformed": 200 with a body that is not JSON
- "html": 200 with an HTML page (a proxy's error page, say)
- "no_choices": 200 with JSON that lacks `choices`
- "no_usage": a normal answer without `usage`
- "401_echo": 401 whose message repeats the presented key (as some providers' errors do)
- "cut": a stream that breaks after its first two events (the connection closes mid-body)

`reply` (body -> text), when given, chooses the completion text (e.g. per model). A request with
`"stream": true` is answered as server-sent events (a role chunk, content chunks, a finish chunk,
a usage chunk when `stream_options.include_usage` is set, then `[DONE]`).

It counts requests: every attempt and every successful answer per body hash, so tests can assert
that no request succeeded twice. It also serves the Batch API (file upload, batch create, retrieve,
list, file content): a batch completes `batch_delay_s` after it was created, each line answered
like a live request (faults included: a failed line lands in the error file). Run it in a thread (`with FakeOpenAI() as server:`) or as its own
process (`python -m tests.fake_openai --latency 0.2`, which prints its base URL), so that a
benchmark does not share a GIL with the client it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable

from aiohttp import web

Faults = Callable[[str, int, dict], str | None]  # (body hash, earlier attempts, body) -> fault or None


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def fraction(key: str, attempt: int) -> float:
    """A deterministic number in [0, 1) for (body, attempt): fault plans that ignore timing."""
    return int(hashlib.sha256(f"{key}/{attempt}".encode()).hexdigest()[:8], 16) / 2**32


def answer(request: dict, key: str) -> tuple[str, int, int]:
    """The completion text and token counts for a request: a pure function of the request."""
    prompt = "".join(m.get("content") or "" for m in request.get("messages", []))
    text = f"Here you go:\n```python\ndef solution(*args):\n    return {int(key[:6], 16)}\n```\n"
    return text, max(1, len(prompt) // 4), len(text) // 4


class FakeOpenAI:
    """The server; `base_url` is valid between start() and stop() (or inside `with`)."""

    def __init__(self, latency_s: float = 0.0, faults: Faults | None = None, retry_after: str = "0.05",
                 slow_s: float = 5.0, api_key: str | None = None, batch_delay_s: float = 0.2,
                 reply: Callable[[dict], str] | None = None) -> None:
        self.latency_s = latency_s
        self.reply = reply
        self.faults = faults
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.api_key = api_key
        self.batch_delay_s = batch_delay_s
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_polls = 0
        self.batch_poll_failures = 0  # the next N polls of a batch answer 500
        self.attempts: Counter[str] = Counter()  # every request, by body hash
        self.successes: Counter[str] = Counter()  # 200 answers with a completion, by body hash
        self.statuses: Counter[str] = Counter()  # "200", "429", "drop", ...
        self.bodies: dict[str, dict] = {}  # successful request bodies, by body hash
        self.headers_seen: list[dict[str, str]] = []
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), body hash) of every request
        self.in_flight = 0
        self.max_in_flight = 0
        self.base_url = ""
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def requests(self) -> int:
        return sum(self.attempts.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.attempts.clear()
            self.successes.clear()
            self.statuses.clear()
            self.headers_seen.clear()
            self.arrivals.clear()
            self.max_in_flight = 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        key = body_hash(raw)
        with self._lock:
            attempt = self.attempts[key]
            self.attempts[key] += 1
            self.headers_seen.append(dict(request.headers))
            self.arrivals.append((time.monotonic(), key))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, raw, key, attempt)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(self, request: web.Request, raw: bytes, key: str, attempt: int) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._count("401", web.json_response({"error": {"message": "bad key"}}, status=401))
        body = json.loads(raw)
        fault = self.faults(key, attempt, body) if self.faults else None
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "429":
            return self._count("429", web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit"}}, status=429,
                headers={"Retry-After": self.retry_after}))
        if fault == "500":
            return self._count("500", web.json_response({"error": {"message": "boom"}}, status=500))
        if fault == "drop":
            self._count("drop", None)
            assert request.transport is not None
            request.transport.close()  # the client sees the connection end with no response
            return web.Response()
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        if fault == "malformed":
            return self._count("malformed", web.Response(text='{"id": "x", "choices": [', content_type="application/json"))
        if fault == "html":
            return self._count("html", web.Response(text="<html>upstream error</html>", content_type="text/html"))
        if fault == "401_echo":
            presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return self._count("401", web.json_response(
                {"error": {"message": f"Incorrect API key provided: {presented}"}}, status=401))
        if fault == "no_choices":
            return self._count("no_choices", web.json_response({"id": "x", "object": "chat.completion"}))
        with self._lock:
            self.bodies[key] = body
        text, prompt_tokens, completion_tokens = answer(body, key)
        if self.reply is not None:
            text = self.reply(body)
        if body.get("stream"):
            with self._lock:
                self.successes[key] += 1
            self._count("200", None)
            return await self._stream(request, body, key, text, (prompt_tokens, completion_tokens),
                                      cut=fault == "cut", trickle=0.05 if fault == "trickle" else 0.0)
        payload = {
            "id": f"chatcmpl-{key}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
        }
        if fault != "no_usage":
            payload["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                "total_tokens": prompt_tokens + completion_tokens}
        with self._lock:
            self.successes[key] += 1
        return self._count("200", web.json_response(payload))

    async def _stream(self, request: web.Request, body: dict, key: str, text: str,
                      tokens: tuple[int, int], cut: bool = False, trickle: float = 0.0) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": f"chatcmpl-{key}", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
        deltas = [{"role": "assistant", "content": ""}] + [{"content": text[i:i + 16]} for i in range(0, len(text), 16)]
        events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1],
                                                            "total_tokens": sum(tokens)}})
        for i, event in enumerate(events):
            if cut and i == 2:
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            if trickle:  # a slow model: one event every `trickle` seconds
                await asyncio.sleep(trickle)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def _authorised(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _upload(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        form = await request.post()
        data = form["file"].file.read()  # type: ignore[union-attr]
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = data
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "created_at": 0,
                                  "filename": "batch.jsonl", "purpose": form["purpose"], "status": "processed"})

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            batch_id = f"batch_{len(self.batches) + 1}"
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "completion_window": "24h",
                "input_file_id": body["input_file_id"], "status": "in_progress", "created_at": int(time.time()),
                "metadata": body.get("metadata"), "ready_at": time.monotonic() + self.batch_delay_s,
            }
        return web.json_response(self._public(self.batches[batch_id]))

    def _public(self, batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k != "ready_at"}

    async def _get_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        with self._lock:
            self.batch_polls += 1
            if self.batch_poll_failures:
                self.batch_poll_failures -= 1
                return web.json_response({"error": {"message": "try again"}}, status=503)
        if batch["status"] == "in_progress" and time.monotonic() >= batch["ready_at"]:
            self._run_batch(batch)
        return web.json_response(self._public(batch))

    async def _list_batches(self, request: web.Request) -> web.Response:
        data = [self._public(b) for b in reversed(self.batches.values())]
        return web.json_response({"object": "list", "data": data, "has_more": False})

    def _run_batch(self, batch: dict) -> None:
        out, errors = [], []
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            item = json.loads(line)
            raw = json.dumps(item["body"]).encode()
            key = body_hash(raw)
            with self._lock:
                attempt = self.attempts[key]
                self.attempts[key] += 1
            fault = self.faults(key, attempt, item["body"]) if self.faults else None
            if fault:
                errors.append({"id": f"req-{key}", "custom_id": item["custom_id"], "error": None,
                               "response": {"status_code": 500, "body": {"error": {"message": fault}}}})
                continue
            text, prompt_tokens, completion_tokens = answer(item["body"], key)
            with self._lock:
                self.successes[key] += 1
                self.bodies[key] = item["body"]
            out.append({"id": f"req-{key}", "custom_id": item["custom_id"], "error": None, "response": {
                "status_code": 200, "body": {
                    "id": f"chatcmpl-{key}", "object": "chat.completion", "model": item["body"]["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}}})
        for name, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                with self._lock:
                    file_id = f"file-{len(self.files) + 1}"
                    self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[name] = file_id
        batch["status"] = "completed"
        batch["request_counts"] = {"total": len(out) + len(errors), "completed": len(out), "failed": len(errors)}

    async def _file_content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["file_id"])
        if data is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    def _count(self, status: str, response: web.StreamResponse | None) -> web.StreamResponse | None:
        with self._lock:
            self.statuses[status] += 1
        return response

    async def _start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self._get_batch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        sockets = self._runner.addresses
        self.base_url = f"http://127.0.0.1:{sockets[0][1]}/v1"

    def start(self, port: int = 0) -> str:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start(port))
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self.base_url

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible server (prints its base URL)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = FakeOpenAI(latency_s=args.latency)
    print(server.start(args.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
