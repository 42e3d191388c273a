"""The sampling engine: live requests for every model at once, fast and safe to interrupt.

Per model: at most `concurrency` calls in flight, request starts spaced for an `rpm` cap, a
wall-clock timeout per call, and retries with exponential backoff and full jitter on 408/425/429,
5xx, timeouts, dropped connections and malformed answers (the policy is complexitynet.retry's; a
server's Retry-After is honoured, and holds back the model's other requests too). Across models:
one budget, reserved before each call at its worst case (prompt bound + max_tokens), so the run
stops before exceeding it.

Every answer is appended to a content-addressed log, data/cache/samples/<model>.jsonl, the moment
it arrives (one write() per record; fsync batched in a thread). A SIGKILL at any moment loses
nothing that was written, a rerun sends only what is missing, and a torn last line is dropped.
Models in Batch API mode submit their requests as batches instead, journaled so that a rerun
collects a pending batch rather than submitting it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from complexitynet.config import Price
from complexitynet.errors import ComplexityNetError
from complexitynet.io import AppendLog
from complexitynet.providers.base import LiveProvider, RawCompletion, Request, RequestError, RetryableError
from complexitynet.retry import RETRY_AFTER_CAP_S, backoff_s

log = logging.getLogger(__name__)

PROMPT_OVERHEAD_TOKENS = 64  # chat-template tokens around a prompt, for the budget's worst case


def estimate_tokens(text: str, chars_per_token: float) -> int:
    """A declared estimate for sources without token counts (see `sample.chars_per_token`)."""
    return math.ceil(len(text) / chars_per_token) if text else 0


def cost_usd(price: Price, prompt_tokens: int, completion_tokens: int) -> float:
    return round((prompt_tokens * price.input + completion_tokens * price.output) / 1e6, 9)


def request_key(model: str, identity: dict[str, Any], prompt: str, trial: int) -> str:
    """Content address of one request: same model, endpoint, model id, params, prompt, trial."""
    blob = json.dumps([model, identity, prompt, trial], sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def worst_case_usd(price: Price, prompt: str, max_tokens: int) -> float:
    """An upper bound on one request's cost: a token per UTF-8 byte of prompt, and max_tokens out."""
    prompt_tokens = len(prompt.encode()) + PROMPT_OVERHEAD_TOKENS
    return (prompt_tokens * price.input + max_tokens * price.output) / 1e6


def sample_cache(path: Path) -> AppendLog:
    """Finished requests of one model, by request key (locked, checksummed, torn tail cut: io.AppendLog)."""
    return AppendLog(path, "complexitynet sample", _check_sample_record)


def _check_sample_record(record: dict[str, Any]) -> str | None:
    if not isinstance(record.get("completion"), str):
        return "no completion"
    counts = [record.get(k) for k in ("prompt_tokens", "completion_tokens")]
    if not all(c is None or (type(c) is int and c >= 0) for c in counts):  # None: not reported, estimated later
        return "token counts that are not counts"
    return None


class Budget:
    """The run's spending cap: reserve a call's worst case before it starts, settle to the actual."""

    def __init__(self, limit_usd: float | None) -> None:
        self.limit = limit_usd
        self.spent = 0.0
        self.reserved = 0.0
        self.refused: str | None = None  # what did not fit, for the message

    def reserve(self, amount: float) -> bool:
        if self.limit is not None and self.spent + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, actual: float) -> None:
        self.reserved -= reserved
        self.spent += actual


class Pacer:
    """Spaces one model's request starts for its rpm cap, and holds them during a Retry-After."""

    def __init__(self, rpm: float | None) -> None:
        self.interval = 60.0 / rpm if rpm else 0.0
        self.next_start = 0.0
        self.paused_until = 0.0

    async def wait(self) -> None:
        while True:
            now = time.monotonic()
            start = max(now, self.paused_until, self.next_start)
            if start <= now:
                self.next_start = now + self.interval
                return
            await asyncio.sleep(start - now)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)


@dataclass
class ModelStats:
    """What one model's run did: shown in the progress bar, logged, and written to metrics."""

    sent: int = 0  # requests answered in this run
    cached: int = 0  # requests answered from the cache
    retries: int = 0
    in_flight: int = 0
    unsent: int = 0  # requests not sent because the budget would have been exceeded
    spent_usd: float = 0.0
    tokens: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass
class LiveModel:
    """One live model's part of the run."""

    name: str
    provider: LiveProvider
    price: Price
    requests: list[Request]
    cache: AppendLog
    stats: ModelStats = field(default_factory=ModelStats)
    keys: dict[tuple[str, int], str] = field(default_factory=dict)  # (task, trial) -> request key


def plan(model: LiveModel) -> list[tuple[str, Request]]:
    """Key every request and return those the cache cannot answer (identical requests once)."""
    identity = model.provider.identity()
    todo: dict[str, Request] = {}
    for request in model.requests:
        key = request_key(model.name, identity, request.prompt, request.trial)
        model.keys[request.task_id, request.trial] = key
        if key in model.cache.records:
            model.stats.cached += 1
        else:
            todo.setdefault(key, request)
    return list(todo.items())


class Progress:
    """One tqdm bar over every model's requests; silent when disabled."""

    def __init__(self, models: list[LiveModel], total: int, enabled: bool) -> None:
        self.models = models
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="sample", unit="req", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 0) -> None:
        if self.bar is None:
            return
        stats = [m.stats for m in self.models]
        self.bar.set_postfix(in_flight=sum(s.in_flight for s in stats), retries=sum(s.retries for s in stats),
                             tokens=sum(s.tokens for s in stats),
                             cost=f"${sum(s.spent_usd for s in stats):.4f}", refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _call(model: LiveModel, batch: list[tuple[str, Request]], pacer: Pacer, rng: random.Random,
                progress: Progress) -> list[RawCompletion] | None:
    """One call with retries; None (and a recorded failure) when it cannot succeed."""
    provider, stats = model.provider, model.stats
    requests = [r for _, r in batch]
    reason = ""
    for attempt in range(provider.max_retries + 1):
        await pacer.wait()
        stats.in_flight += len(batch)
        progress.update()
        try:
            async with asyncio.timeout(provider.timeout_s):
                raws = await provider.complete(requests)
            if len(raws) != len(batch):
                raise RetryableError(f"provider returned {len(raws)} completions for {len(batch)} requests")
            return raws
        except TimeoutError:
            reason, retry_after = f"timed out after {provider.timeout_s:g} s", None
        except RetryableError as exc:
            reason, retry_after = str(exc), exc.retry_after
        except RequestError as exc:
            reason = str(exc)
            break
        finally:
            stats.in_flight -= len(batch)
        if attempt == provider.max_retries:
            reason = f"{reason} (gave up after {attempt + 1} attempts)"
            break
        if retry_after is not None:
            pacer.pause(min(RETRY_AFTER_CAP_S, retry_after))
        stats.retries += 1
        progress.update()
        log.debug("sample: %s %s#%d: %s; retry %d", model.name, requests[0].task_id, requests[0].trial,
                  reason, attempt + 1)
        await asyncio.sleep(backoff_s(attempt, provider.backoff_s, retry_after, rng))
    stats.failures.extend(_failure(model.name, key, request, reason) for key, request in batch)
    return None


async def _run_model(model: LiveModel, todo: list[tuple[str, Request]], budget: Budget,
                     chars_per_token: float, progress: Progress, rng: random.Random) -> None:
    provider, stats = model.provider, model.stats
    queue = list(reversed(todo))  # pop() from the end: requests go out in task order
    pacer = Pacer(provider.rpm)
    max_tokens = provider.params.max_tokens

    async def worker() -> None:
        while queue:
            batch = [queue.pop() for _ in range(min(provider.batch_size, len(queue)))]
            worst = sum(worst_case_usd(model.price, r.prompt, max_tokens) for _, r in batch)
            if not budget.reserve(worst):
                _refused(budget, model.name, batch[0][1], worst)
                stats.unsent += len(batch) + len(queue)
                queue.clear()
                return
            actual = 0.0
            try:
                raws = await _call(model, batch, pacer, rng, progress)
                for (key, request), raw in zip(batch, raws or []):
                    actual += _account(model, request, raw, chars_per_token)
                    model.cache.add(_record(model.name, key, request, raw))
            finally:
                budget.settle(worst, actual)
                stats.spent_usd += actual
            progress.update(len(batch))

    await asyncio.gather(*(worker() for _ in range(provider.concurrency)))


BATCH_MAX_REQUESTS = 50_000  # the Batch API's limit per input file


async def _run_batch_model(model: LiveModel, todo: list[tuple[str, Request]], budget: Budget,
                           chars_per_token: float, progress: Progress) -> None:
    """Batch API mode: collect batches an earlier run submitted, submit the rest, wait for all."""
    from complexitynet.providers.openai_compat import BatchJournal, OpenAIProvider

    provider, stats = model.provider, model.stats
    assert isinstance(provider, OpenAIProvider)
    journal = BatchJournal(model.cache.path.with_name(f"{model.name}.batches.jsonl"))
    requests = dict(todo)
    files = list(journal.pending())  # input files of batches submitted earlier, not yet collected
    submitted = {key for f in files for key in journal.files[f]}
    fresh: list[tuple[str, Request]] = []
    reserved = 0.0
    for key, request in todo:
        if key in submitted:
            continue
        worst = worst_case_usd(model.price, request.prompt, provider.params.max_tokens)
        if not budget.reserve(worst):
            _refused(budget, model.name, request, worst)
            stats.unsent = sum(k not in submitted for k, _ in todo) - len(fresh)
            break
        reserved += worst
        fresh.append((key, request))

    async def collect(file_id: str) -> None:
        nonlocal actual
        batch_id = journal.batch_of[file_id]
        mine = {k: requests[k] for k in journal.files[file_id] if k in requests}
        done, failed = await provider.collect_batch(batch_id, mine)
        for key, raw in sorted(done.items()):
            actual += _account(model, requests[key], raw, chars_per_token)
            model.cache.add(_record(model.name, key, requests[key], raw))
        for key, reason in sorted(failed.items()):
            stats.failures.append(_failure(model.name, key, requests[key], reason))
        model.cache.sync()
        journal.finished(batch_id)
        stats.in_flight -= len(mine)
        progress.update(len(mine))

    actual = 0.0
    try:
        for f in files:
            if journal.batch_of.get(f) is None:  # killed between upload and create: find or create it
                await provider.resume_batch(f, journal)
        for start in range(0, len(fresh), BATCH_MAX_REQUESTS):
            files.append(await provider.submit_batch(fresh[start:start + BATCH_MAX_REQUESTS], journal))
        stats.in_flight = sum(k in requests for f in files for k in journal.files[f])
        progress.update()
        await asyncio.gather(*(collect(f) for f in files))
    finally:
        stats.in_flight = 0
        budget.settle(reserved, actual)
        stats.spent_usd += actual


def _account(model: LiveModel, request: Request, raw: RawCompletion, chars_per_token: float) -> float:
    """Count one answer's tokens in the model's stats; its cost (estimated where usage was missing)."""
    prompt_tokens = raw.prompt_tokens
    if prompt_tokens is None:
        prompt_tokens = estimate_tokens(request.prompt, chars_per_token)
    completion_tokens = raw.completion_tokens
    if completion_tokens is None:
        completion_tokens = estimate_tokens(raw.completion, chars_per_token)
    model.stats.tokens += prompt_tokens + completion_tokens
    model.stats.sent += 1
    return cost_usd(model.price, prompt_tokens, completion_tokens)


def _refused(budget: Budget, model: str, request: Request, worst: float) -> None:
    budget.refused = budget.refused or (f"the next request to '{model}' ({request.task_id} trial "
                                        f"{request.trial}) could cost up to ${worst:.4f}")


def _failure(model: str, key: str, request: Request, reason: str) -> str:
    return f"request {key} (model '{model}', task {request.task_id}, trial {request.trial}): {reason}"


def _record(model: str, key: str, request: Request, raw: RawCompletion) -> dict[str, Any]:
    """One sample-cache line: the answer to one request (its latency is that of its first answer)."""
    return {"key": key, "model": model, "task_id": request.task_id, "trial": request.trial,
            "completion": raw.completion, "prompt_tokens": raw.prompt_tokens,
            "completion_tokens": raw.completion_tokens, "finish_reason": raw.finish_reason,
            "latency_s": None if raw.latency_s is None else round(raw.latency_s, 4)}


async def _syncer(caches: list[AppendLog], stop: asyncio.Event) -> None:
    """fsync appended records in a thread, coalesced, so the event loop never waits on the disk."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
        for cache in caches:
            await asyncio.to_thread(cache.sync)


async def run_live(models: list[LiveModel], budget: Budget, chars_per_token: float,
                   progress: bool = False, seed: int = 0) -> None:
    """Answer every model's requests (from the cache or the endpoint); stats land in `model.stats`.

    A ProviderError (a refused key, an unknown model) stops every model at once; per-request failures
    and budget stops are left in the stats for the caller to report.
    """
    todos = {m.name: plan(m) for m in models}
    bar = Progress(models, sum(len(t) for t in todos.values()), progress)
    rng = random.Random(seed)
    stop = asyncio.Event()
    syncer = asyncio.create_task(_syncer([m.cache for m in models], stop))
    try:
        async with asyncio.TaskGroup() as group:
            for m in models:
                if m.provider.batch_api:
                    group.create_task(_run_batch_model(m, todos[m.name], budget, chars_per_token, bar))
                else:
                    group.create_task(_run_model(m, todos[m.name], budget, chars_per_token, bar, rng))
    except* ComplexityNetError as errors:
        raise errors.exceptions[0] from None
    finally:
        stop.set()
        await syncer
        bar.close()
        for m in models:
            await m.provider.aclose()


@contextlib.contextmanager
def open_caches(cache_dir: Path, names: list[str]) -> Iterator[dict[str, AppendLog]]:
    caches: dict[str, AppendLog] = {}
    try:
        for name in names:
            caches[name] = sample_cache(cache_dir / f"{name}.jsonl")
        yield caches
    finally:
        for cache in caches.values():
            cache.close()


def latency_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency percentiles (of each request's first answer, from the cache) and truncation count."""
    latencies = sorted(r["latency_s"] for r in records if r.get("latency_s") is not None)

    def pct(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, math.ceil(q * len(latencies)) - 1)] if latencies else None

    return {"latency_p50_s": pct(0.5), "latency_p95_s": pct(0.95),
            "finish_length": sum(r.get("finish_reason") == "length" for r in records)}
