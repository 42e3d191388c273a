"""Forwarding to one rung's Chat Completions endpoint, with retries.

The router's own HTTP/1.1 client (serve/http1.py) is used, not the `openai` client: the router
forwards the caller's request body as it is and passes the upstream bytes back, streaming
included, where the `openai` client would parse and re-serialise every answer. The API key is read
once from the variable the ladder names, sent only in the Authorization header, and removed from
any upstream error body passed back.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from complexitynet.config import ConfigError, ModelSpec
from complexitynet.serve.http1 import Client, HTTPError, Response

RETRY_STATUSES = {408, 409, 429}  # and every 5xx
MAX_WAIT_S = 5.0  # longest pause between attempts: past that, the next rung is the better bet


class UpstreamFailed(Exception):
    """The rung did not answer after its retries (timeouts, dropped connections, 408/429/5xx, junk)."""


class UpstreamRejected(Exception):
    """The rung refused the request itself (a 4xx other than 408/409/429): the caller must see it."""

    def __init__(self, status: int, body: bytes, model: str = "") -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.body, self.model = status, body, model


class KeyMissing(Exception):
    """The rung's api_key_env variable is not set in the router's environment."""


@dataclass
class Upstream:
    spec: ModelSpec
    client: Client
    timeout_s: float
    retries: int
    backoff_s: float
    _key: str | None = field(default=None, repr=False)  # never printed

    def __post_init__(self) -> None:
        assert self.spec.openai is not None  # serving_ladder() checked the provider
        self.cfg = self.spec.openai
        self.url = self.cfg.base_url.rstrip("/") + "/chat/completions"
        env = self.cfg.api_key_env
        self._key = (os.environ.get(env, "").strip() or None) if env else None
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        try:  # the request's bytes up to its Content-Length, once: the key is in them, so never shown
            self._origin, self._head = self.client.request_head(self.url, headers)
        except ValueError as exc:
            raise ConfigError(f"model '{self.spec.name}': openai.base_url {exc}; give the endpoint's base URL, "
                              "e.g. http://127.0.0.1:8000/v1") from None

    @property
    def name(self) -> str:
        return self.spec.name

    def key_problem(self) -> str | None:
        """Why this rung cannot be called (its key variable is unset), or None."""
        env = self.cfg.api_key_env
        if env and not self._key:
            return (f"model '{self.name}' reads its API key from the environment variable {env}, which is not set "
                    f"in the router's environment; export {env} and restart the router (or set "
                    "`openai.api_key_env: null` for an endpoint that needs no key)")
        return None

    @property
    def secret(self) -> str | None:
        """The key, for the stream relay to take out of streamed text (never logged or shown)."""
        return self._key

    def redact(self, data: bytes) -> bytes:
        return data.replace(self._key.encode(), b"[redacted]") if self._key else data

    async def redact_stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The chunks with the key redacted, also where it spans two chunks (the last len(key) - 1
        bytes wait for the next chunk)."""
        if not self._key:
            async for chunk in chunks:
                yield chunk
            return
        keep = len(self._key.encode()) - 1
        pending = b""
        async for chunk in chunks:
            pending = self.redact(pending + chunk)
            if len(pending) > keep:
                yield pending[:len(pending) - keep]
                pending = pending[len(pending) - keep:]
        if pending:
            yield pending

    def body_for(self, request: dict[str, Any]) -> bytes:
        """The caller's request with this rung's model id."""
        return orjson.dumps({**request, "model": self.cfg.model})

    async def complete(self, body: bytes) -> dict[str, Any]:
        """A non-streaming answer as parsed JSON; a malformed 200 counts as a failed attempt."""
        return await self._with_retries(body, stream=False)

    async def open_stream(self, body: bytes) -> Response:
        """An open 2xx streaming response (retried until its head arrives; not after). A plain answer has
        one deadline for the whole exchange; a stream lasts as long as the answer, so its head has
        that deadline and then each read of its body (`Response.chunks(timeout_s)`)."""
        return await self._with_retries(body, stream=True)

    async def _with_retries(self, body: bytes, stream: bool) -> Any:
        problem = self.key_problem()
        if problem:
            raise KeyMissing(problem)
        last = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * 2 ** attempt * random.uniform(0.5, 1.0)
            try:
                return await self._attempt(body, stream)
            except _Retry as retry:
                last = retry.reason
                wait = max(wait, retry.after_s)
            except HTTPError as exc:
                last = str(exc)
            except (OSError, TimeoutError) as exc:  # refused, reset, DNS, TLS; or no answer within timeout_s
                last = type(exc).__name__
            if attempt < self.retries:
                await asyncio.sleep(min(wait, MAX_WAIT_S))
        raise UpstreamFailed(f"{last} after {self.retries + 1} attempt(s)")

    async def _attempt(self, body: bytes, stream: bool) -> Any:
        async with asyncio.timeout(self.timeout_s):
            resp = await self.client.post(self._origin, self._head, body)
            kind = resp.headers.get("content-type", "")
            if resp.status < 300 and stream and kind.startswith("text/event-stream"):
                return resp
            data = self.redact(await resp.read())  # an answer never carries the key back to the caller
        if resp.status < 300 and stream:  # a 200 that is not a stream: the rung is broken, not the request
            raise _Retry(f"a malformed stream (Content-Type {kind or 'missing'}, not text/event-stream)")
        if resp.status < 300:
            try:
                answer = orjson.loads(data)
            except ValueError:
                raise _Retry("a malformed answer (not JSON)") from None
            if not isinstance(answer, dict) or not answer.get("choices"):
                raise _Retry("a malformed answer (no choices)")
            return answer
        if resp.status in RETRY_STATUSES or resp.status >= 500:
            raise _Retry(f"HTTP {resp.status}", _retry_after(resp.headers.get("retry-after")))
        raise UpstreamRejected(resp.status, self.redact(data), self.name)


class _Retry(Exception):
    def __init__(self, reason: str, after_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason, self.after_s = reason, after_s


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0  # an HTTP date: fall back to our own backoff
