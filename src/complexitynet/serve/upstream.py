"""Forwarding to one rung's Chat Completions endpoint, with retries.

The calls go through aiohttp's client, one session per router process (`open_session`), created
with `trust_env=True`: HTTP_PROXY / HTTPS_PROXY / NO_PROXY in the router's environment apply (and
~/.netrc, as aiohttp reads it), so a router inside a company network reaches hosted APIs through
its proxy; TLS is verified against the system's CA roots (SSL_CERT_FILE adds a company's own). The
`openai` client is not used: the router forwards the caller's request body as it is and passes the
upstream bytes back, streaming included, where the `openai` client would parse and re-serialise
every answer. The API key is read once from the variable the ladder names, sent only in the
Authorization header, and removed from any upstream error body passed back.

Deadlines are asyncio's: a plain answer has one (`serve.upstream_timeout_s`) for the whole
exchange; a stream has it for its head, then for each read of its body. A connection goes back to
the pool when its response was read to the end, and is closed when one was given up half-way (a
timeout, a stream the caller left). Which failures are retried, and the wait before each retry, are
complexitynet.retry's; waits here are capped at MAX_WAIT_S: past that, the next rung is the better bet.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from yarl import URL

from complexitynet import retry
from complexitynet.config import ConfigError, ModelSpec, ServeParams

MAX_WAIT_S = 5.0  # longest pause between attempts
MAX_BODY = 64 * 2**20  # bytes of a whole (non-streamed) answer
# Streams arrive as the upstream sends them (identity); the User-Agent names the router
HEADERS = {"User-Agent": "complexitynet-router", "Accept-Encoding": "identity"}


class UpstreamFailed(Exception):
    """The rung did not answer after its retries (timeouts, dropped connections, 408/425/429/5xx, junk)."""


class UpstreamRejected(Exception):
    """The rung refused the request itself (a status that is not transient, such as 400 or 401): the
    caller must see it."""

    def __init__(self, status: int, body: bytes, model: str = "") -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.body, self.model = status, body, model


class KeyMissing(Exception):
    """The rung's api_key_env variable is not set in the router's environment."""


class StreamBroken(Exception):
    """An upstream stream ended before its end (the connection broke, the framing or encoding did)."""


def open_session(cfg: ServeParams) -> aiohttp.ClientSession:
    """The router's upstream client (inside the serving event loop). Its pool holds up to
    `serve.max_in_flight` connections, one per request being served, so no request waits for a
    connection; idle ones are kept for reuse (aiohttp closes them after 15 s). No cookies are kept: one
    caller's upstream cookies must not travel with another's request. Redirects are not followed."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=cfg.max_in_flight, limit_per_host=0),
        trust_env=True, headers=HEADERS, cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None))  # the deadlines are ours (above)


@dataclass
class Upstream:
    spec: ModelSpec
    client: aiohttp.ClientSession
    timeout_s: float
    retries: int
    backoff_s: float
    _key: str | None = field(default=None, repr=False)  # never printed

    def __post_init__(self) -> None:
        assert self.spec.openai is not None  # serving_ladder() checked the provider
        self.cfg = self.spec.openai
        self.url = URL(self.cfg.base_url.rstrip("/") + "/chat/completions")
        if self.url.scheme not in ("http", "https") or not self.url.host:
            raise ConfigError(f"model '{self.spec.name}': openai.base_url '{self.cfg.base_url}' is not an http:// or "
                              "https:// URL; give the endpoint's base URL, e.g. http://127.0.0.1:8000/v1")
        env = self.cfg.api_key_env
        self._key = (os.environ.get(env, "").strip() or None) if env else None
        self._headers = {"Content-Type": "application/json"}  # the key is in them: never shown
        if self._key:
            self._headers["Authorization"] = f"Bearer {self._key}"

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

    async def open_stream(self, body: bytes) -> aiohttp.ClientResponse:
        """An open 2xx streaming response (retried until its head arrives; not after). Read it with
        `stream_body` and release it when done."""
        return await self._with_retries(body, stream=True)

    async def stream_body(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """A stream's body as it arrives, with the key redacted; each wait for the upstream at most
        timeout_s (TimeoutError); StreamBroken when the upstream breaks off."""
        async for chunk in self.redact_stream(self._read_stream(resp)):
            yield chunk

    async def _read_stream(self, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    chunk = await resp.content.readany()
            except aiohttp.ClientError as exc:
                raise StreamBroken(_why(exc)) from None
            if not chunk:
                return
            yield chunk

    async def _with_retries(self, body: bytes, stream: bool) -> Any:
        problem = self.key_problem()
        if problem:
            raise KeyMissing(problem)
        last = ""
        for attempt in range(self.retries + 1):
            after = None
            try:
                return await self._attempt(body, stream)
            except _Retry as exc:
                last, after = exc.reason, exc.after_s
            except TimeoutError:
                last = f"no answer within {self.timeout_s:g} s"
            except (aiohttp.ClientError, ConnectionError) as exc:  # refused, reset, DNS, TLS, broken HTTP
                last = _why(exc)
                if not retry.transient_error(exc):  # e.g. a certificate the system does not trust
                    raise UpstreamFailed(f"{last} (not retried)") from None
            if attempt < self.retries:
                await asyncio.sleep(retry.backoff_s(attempt, self.backoff_s, after, cap_s=MAX_WAIT_S,
                                                    retry_after_cap_s=MAX_WAIT_S))
        raise UpstreamFailed(f"{last} after {self.retries + 1} attempt(s)")

    async def _attempt(self, body: bytes, stream: bool) -> Any:
        async with asyncio.timeout(self.timeout_s):
            resp = await self.client.post(self.url, data=body, headers=self._headers, allow_redirects=False)
            kind = resp.headers.get("Content-Type", "")
            if resp.status < 300 and stream and kind.startswith("text/event-stream"):
                return resp
            try:
                data = self.redact(await _read(resp))  # an answer never carries the key back to the caller
            finally:
                resp.release()  # back to the pool when read to its end; closed otherwise
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
        if retry.transient_status(resp.status):
            raise _Retry(f"HTTP {resp.status}", retry.retry_after_s(resp.headers))
        raise UpstreamRejected(resp.status, data, self.name)


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    """The whole body, at most MAX_BODY bytes (an upstream cannot fill the router's memory)."""
    if resp.content_length is not None and resp.content_length <= MAX_BODY:
        return await resp.read()
    parts, size = [], 0
    async for part in resp.content.iter_any():
        size += len(part)
        if size > MAX_BODY:
            raise _Retry(f"an answer over {MAX_BODY} bytes")
        parts.append(part)
    return b"".join(parts)


def _why(exc: BaseException) -> str:
    """What broke, in plain words, for `tried` and the log (never the request's headers)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve the upstream's host name {exc.host!r} (DNS); check base_url and the network"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"{exc.host}'s TLS certificate is not trusted here (set SSL_CERT_FILE for a private CA)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({cause}); is the upstream running?"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the upstream closed the connection before it answered"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the upstream's answer was malformed or cut off ({' '.join(str(exc).split())})"
    text = " ".join(str(exc).split())  # one line: some span several
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Retry(Exception):
    def __init__(self, reason: str, after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.after_s = reason, after_s
