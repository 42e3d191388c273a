"""`openai` provider: any Chat Completions endpoint (OpenAI, vLLM, Ollama, llama.cpp server, TGI).

Talks through the official `openai` client with its own retries switched off (max_retries=0):
the sampling engine's retry policy is the one that runs and is counted. Errors are mapped onto the
provider errors by the client's own types. The API key is read from the environment variable the
ladder names, at the last moment, and is never logged, stored, or put in an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from complexitynet.errors import ConfigError
from complexitynet.providers.base import (
    BadResponse,
    LiveProvider,
    ProviderError,
    RawCompletion,
    Request,
    RequestError,
    RetryableError,
)
from complexitynet.retry import retry_after_s, transient_status

if TYPE_CHECKING:
    from complexitynet.config import ModelSpec, RequestParams

log = logging.getLogger(__name__)
T = TypeVar("T")
BATCH_ENDED = {"completed", "failed", "expired", "cancelled"}
NO_KEY = "not-needed"  # what the client sends to endpoints that take no key (api_key_env: null)


class OpenAIProvider(LiveProvider):
    def __init__(self, spec: ModelSpec, sources_dir: Path) -> None:
        super().__init__(spec, sources_dir)
        assert spec.openai is not None  # guaranteed by config validation
        self.cfg = spec.openai
        self.concurrency = self.cfg.concurrency
        self.rpm = self.cfg.rpm
        self.timeout_s = self.cfg.timeout_s
        self.max_retries = self.cfg.max_retries
        self.backoff_s = self.cfg.backoff_s
        self.batch_api = self.cfg.batch
        self._client: Any = None
        self._key: str | None = None

    @property
    def params(self) -> RequestParams:
        return self.cfg.params

    def identity(self) -> dict[str, Any]:
        return {"provider": "openai", "base_url": self.cfg.base_url.rstrip("/"), "model": self.cfg.model,
                "params": self.cfg.params.model_dump(exclude_none=True)}

    def check(self) -> None:
        self._api_key()

    def _api_key(self) -> str:
        env = self.cfg.api_key_env
        if env is None:
            return NO_KEY
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(
                f"model '{self.spec.name}' reads its API key from the environment variable {env}, "
                f"which is not set (or empty): export {env}=... before running, or set "
                f"`openai.api_key_env: null` for an endpoint that needs no key. Keys never go in params.yaml")
        return value

    def _redact(self, text: str) -> str:
        if self._key and self._key != NO_KEY:
            text = text.replace(self._key, "[redacted]")
        return text[:300]

    def _body(self, request: Request) -> dict[str, Any]:
        p = self.cfg.params
        body: dict[str, Any] = {"model": self.cfg.model, "max_tokens": p.max_tokens,
                                "messages": [{"role": "user", "content": request.prompt}]}
        for name in ("temperature", "top_p", "stop"):
            if getattr(p, name) is not None:
                body[name] = getattr(p, name)
        if p.seed is not None:
            body["seed"] = p.seed + request.trial
        return body

    def _get_client(self) -> Any:
        if self._client is None:
            import openai

            self._key = self._api_key()
            # aiohttp as the transport: the openai client's own option "for improved concurrency
            # performance" (see `complete` for what it saves).
            http = openai.DefaultAioHttpClient(timeout=self.cfg.timeout_s)
            self._client = openai.AsyncOpenAI(base_url=self.cfg.base_url, api_key=self._key, max_retries=0,
                                              timeout=self.cfg.timeout_s, http_client=http)
        return self._client

    async def complete(self, batch: list[Request]) -> list[RawCompletion]:
        import openai

        [request] = batch
        client = self._get_client()
        start = time.perf_counter()
        try:
            # The documented low-level `client.post` keeps the client's transport, auth and error
            # types but skips the typed layer of `chat.completions.create` (param transforms, model
            # construction). With the aiohttp transport it halves the client's CPU per request
            # (4.3 -> 2.1 ms on the 2-core build machine), which bounds throughput at high concurrency.
            data = await client.post("/chat/completions", body=self._body(request), cast_to=object)
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.APITimeoutError:
            raise RetryableError(f"timed out (client timeout {self.cfg.timeout_s:g} s)") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            why = self._redact(f"{type(cause).__name__}: {cause}")
            raise RetryableError(f"connection error: {why}") from None
        except ValueError as exc:  # the body is not JSON (a non-JSON content type comes back as a str)
            raise BadResponse(f"malformed response: {self._redact(str(exc))}") from None
        return [parse_completion(data, request, time.perf_counter() - start)]

    async def submit_batch(self, items: list[tuple[str, Request]], journal: BatchJournal) -> str:
        """Upload `items` as one Batch API input file and create the batch; returns the file's id.

        The input file is journaled before the batch is created, so a run killed in between finds
        the batch (by its input file) instead of creating a second one.
        """
        client = self._get_client()
        lines = [json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                             "body": self._body(request)}) for key, request in items]
        data = ("\n".join(lines) + "\n").encode()
        upload = await self._api("uploading a batch", lambda: client.files.create(
            file=("requests.jsonl", data), purpose="batch"))
        journal.submitting(upload.id, [key for key, _ in items])
        await self._create_batch(upload.id, journal)
        return upload.id

    async def _create_batch(self, file_id: str, journal: BatchJournal) -> str:
        batch = await self._api("creating a batch", lambda: self._get_client().batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={"complexitynet_model": self.spec.name}))
        journal.submitted(file_id, batch.id)
        return batch.id

    async def resume_batch(self, file_id: str, journal: BatchJournal) -> str:
        """The batch made from an input file journaled by an interrupted run (created if it never was)."""
        page = await self._api("listing batches", lambda: self._get_client().batches.list(limit=100))
        async for batch in page:
            if batch.input_file_id == file_id:
                journal.submitted(file_id, batch.id)
                return batch.id
        return await self._create_batch(file_id, journal)

    async def collect_batch(self, batch_id: str, requests: dict[str, Request]
                            ) -> tuple[dict[str, RawCompletion], dict[str, str]]:
        """Wait for a batch to end; the completions and failures (with a reason) of `requests`, by key.
        Keys of the batch that are not in `requests` (already in the cache) are ignored."""
        client = self._get_client()
        while True:
            try:
                batch = await self._api("polling", lambda: client.batches.retrieve(batch_id), retryable=True)
                if batch.status in BATCH_ENDED:
                    break
            except RetryableError as exc:  # the batch lives on the server: just poll again
                log.warning("sample: model '%s', batch %s: %s; polling again", self.spec.name, batch_id, exc)
            await asyncio.sleep(self.cfg.batch_poll_s)
        done: dict[str, RawCompletion] = {}
        failed: dict[str, str] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._api("downloading batch results", lambda: client.files.content(file_id))
            for line in content.text.splitlines():
                row = json.loads(line)
                key = row.get("custom_id")
                if key not in requests:
                    continue
                response = row.get("response") or {}
                try:
                    if response.get("status_code") != 200:
                        raise BadResponse(f"HTTP {response.get('status_code')}: "
                                          f"{self._redact(json.dumps(row.get('error') or response.get('body')))}")
                    done[key] = parse_completion(response.get("body"), requests[key], None)
                except BadResponse as exc:
                    failed[key] = f"batch {batch_id}: {exc}"
        for key in requests.keys() - done.keys() - failed.keys():
            failed[key] = f"batch {batch_id} ended '{batch.status}' without an answer"
        return done, failed

    async def _api(self, what: str, call: Callable[[], Awaitable[T]], retryable: bool = False) -> T:
        """A Batch API call with its errors mapped: a ProviderError stops the run (batches are
        journaled, so a rerun resumes); transient errors are RetryableError where `retryable`."""
        import openai

        try:
            return await call()
        except openai.APIStatusError as exc:
            error = self._status_error(exc)
        except openai.APIConnectionError as exc:
            error = RetryableError(f"connection error ({type(exc.__cause__ or exc).__name__})")
        if isinstance(error, RetryableError) and retryable:
            raise error
        if isinstance(error, ProviderError):
            raise error
        raise ProviderError(f"model '{self.spec.name}': {what}: {error}; rerun to resume (batches are journaled)")

    def _status_error(self, exc: Any) -> Exception:
        status = exc.status_code
        where = f"model '{self.spec.name}' ({self.cfg.model} at {self.cfg.base_url})"
        if transient_status(status):
            return RetryableError(f"HTTP {status}", retry_after_s(exc.response.headers))
        if status in (401, 403):
            # The body may echo part of the key: it is not repeated here.
            source = f"${self.cfg.api_key_env}" if self.cfg.api_key_env else "no key (api_key_env: null)"
            return ProviderError(f"{where}: HTTP {status}: the endpoint refused the API key from {source}")
        if status == 404:
            return ProviderError(f"{where}: HTTP 404: {self._redact(exc.message)}; check `openai.model` "
                                 "and `openai.base_url` (it usually ends in /v1)")
        return RequestError(f"HTTP {status}: {self._redact(exc.message)}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def parse_completion(data: Any, request: Request, latency_s: float | None) -> RawCompletion:
    """A Chat Completions response body as a RawCompletion; BadResponse when it has no completion."""
    try:
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise BadResponse("malformed response: no `choices[0].message.content`") from None
    if not isinstance(content, str):
        raise BadResponse("malformed response: `choices[0].message.content` is not a string")
    usage = data.get("usage")  # data is a dict: `choices` was found in it
    usage = usage if isinstance(usage, dict) else {}
    prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (isinstance(prompt_tokens, int) and isinstance(completion_tokens, int)):
        prompt_tokens = completion_tokens = None  # estimated and flagged downstream
    return RawCompletion(task_id=request.task_id, trial=request.trial, completion=content,
                         prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         latency_s=latency_s, finish_reason=choice.get("finish_reason"))


class BatchJournal:
    """Batches submitted for one model, appended to `<cache>/<model>.batches.jsonl`.

    Lines: {"file", "keys"} once the input file is uploaded, {"file", "batch"} once the batch is
    created, {"batch", "done": true} once its answers are in the sample cache. A rerun collects the
    batches that are not done instead of submitting their requests again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, list[str]] = {}  # input file id -> request keys
        self.batch_of: dict[str, str] = {}  # input file id -> batch id
        self.done: set[str] = set()
        if path.exists():
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a torn last line: that step is redone (looked up, not resubmitted)
                os.truncate(path, end)
            for line in data[:end].decode("utf-8").splitlines():
                row = json.loads(line)
                if "keys" in row:
                    self.files[row["file"]] = row["keys"]
                elif "done" in row:
                    self.done.add(row["batch"])
                else:
                    self.batch_of[row["file"]] = row["batch"]

    def pending(self) -> dict[str, str | None]:
        """Input file id -> batch id (None: created in no journaled step) of batches not yet collected."""
        return {f: self.batch_of.get(f) for f in self.files if self.batch_of.get(f) not in self.done}

    def _append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def submitting(self, file_id: str, keys: list[str]) -> None:
        self.files[file_id] = keys
        self._append({"file": file_id, "keys": keys})

    def submitted(self, file_id: str, batch_id: str) -> None:
        self.batch_of[file_id] = batch_id
        self._append({"file": file_id, "batch": batch_id})

    def finished(self, batch_id: str) -> None:
        self.done.add(batch_id)
        self._append({"batch": batch_id, "done": True})
