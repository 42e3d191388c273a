"""Micro-batching of classifier calls: prompts arriving together are classified in one forward pass.

The encoder is compute-bound on a CPU, so batching buys throughput mainly by amortising the
per-call overhead (tokenizer, dispatch, Python); padding is kept small by sorting a batch by length
and running it in length-similar sub-batches (`sub_batch`; 0 = the whole batch in one call, for
classifiers that do not pad, where every extra call is pure overhead). A lone prompt waits for
company at most half as long as the last forward pass took (p): waiting w delays both prompts by w,
while not waiting delays the late one by at most p, so waiting pays only for w < p/2. A fast
classifier is thus not held back by `wait_s`; a transformer's (p >= 8 ms here) is unchanged. Inference runs in one dedicated thread (torch
releases the GIL), so the event loop keeps accepting and forwarding requests meanwhile. The queue is
bounded: when it is full, `submit` raises `Overloaded` at once instead of letting latency grow
without limit. An `inline` classifier (tens of microseconds a prompt, nothing to amortise: the
compiled TF-IDF baseline, given as its one-prompt function) skips all of this and runs in the event
loop, one prompt per call: the queue, the futures and the thread hop would cost more than the
classification.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Predict = Callable[[list[str]], np.ndarray]  # texts -> one row of level probabilities per text
PredictOne = Callable[[str], list[float]]  # one text -> its level probabilities
SUB_BATCH = 8  # rows per forward pass inside a length-sorted batch: little padding, few calls


class Overloaded(Exception):
    """The classifier queue is full."""


def sorted_predict(predict: Predict, texts: list[str], sub_batch: int = SUB_BATCH) -> np.ndarray:
    """predict() over length-sorted sub-batches of `sub_batch` rows (0: one call), rows returned in
    the input order."""
    if sub_batch <= 0:
        return np.asarray(predict(texts))
    order = np.argsort([len(t) for t in texts], kind="stable")
    rows = np.concatenate([predict([texts[i] for i in order[start:start + sub_batch]])
                           for start in range(0, len(order), sub_batch)])
    out = np.empty_like(rows)
    out[order] = rows
    return out


class MicroBatcher:
    """Collects prompts for up to `wait_s` after the first (or until `batch_size`), then classifies
    them together. Start it inside the event loop that will call `submit`."""

    def __init__(self, predict: Predict, batch_size: int, wait_s: float, queue_bound: int,
                 sub_batch: int = SUB_BATCH, inline: PredictOne | None = None) -> None:
        self.predict, self.batch_size, self.wait_s, self.sub_batch = predict, batch_size, wait_s, sub_batch
        self.inline = inline
        self.last_pass_s = 2 * wait_s  # the last forward pass's duration (caps the wait for company)
        self.queue: asyncio.Queue[tuple[str, asyncio.Future]] = asyncio.Queue(maxsize=queue_bound)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier")
        self.batches = 0  # forward batches run (the tests check that load is batched)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.inline is not None:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True)

    async def submit(self, text: str) -> Sequence[float]:
        """The level probabilities for `text`; raises Overloaded when the queue is full."""
        if self.inline is not None:
            self.batches += 1
            return self.inline(text)
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((text, future))
        except asyncio.QueueFull:
            raise Overloaded from None
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + min(self.wait_s, self.last_pass_s / 2)
            while len(batch) < self.batch_size:
                if not self.queue.empty():  # already waiting: take them without yielding
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
            await self._classify(loop, batch)

    async def _classify(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[str, asyncio.Future]]) -> None:
        live = [(text, fut) for text, fut in batch if not fut.done()]  # a cancelled client needs no answer
        if not live:
            return
        started = loop.time()
        try:
            rows = await loop.run_in_executor(self.executor, sorted_predict, self.predict, [t for t, _ in live],
                                              self.sub_batch)
        except Exception as exc:  # noqa: BLE001 - hand the failure to every waiting request
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        self.batches += 1
        self.last_pass_s = loop.time() - started
        for (_, fut), row in zip(live, rows):
            if not fut.done():
                fut.set_result(row)
