"""A pool of sandbox sessions, one per worker, that turns samples into verdicts in parallel.

Sessions are long-lived (a container start costs ~0.4 s; a sample ~5 ms) and are recycled after
any anomaly (timeout, crash, stray processes). A failure of the sandbox itself is retried in a
fresh session; if the same sample breaks fresh sessions every time it is the sample's doing and
is recorded as a crash. If no session can be started at all, `SandboxError` stops the stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from complexitynet.sandbox.backends import Backend, Limits, SandboxError, Session
from complexitynet.sandbox.harness import Outcome, Timeouts, reference_outputs, run_tests

if TYPE_CHECKING:
    from complexitynet.config import Params
from complexitynet.schemas import Tests

log = logging.getLogger(__name__)
OUTSIDE_FAULTS = 5  # sandboxes killed from outside while running one job before the stage stops


@dataclass(frozen=True)
class Job:
    """Run `code` against `tests`; or, with `inputs`, only call its entry point on them (the outcome's
    `outputs`: how prepare computes a reference's expected outputs)."""

    key: object  # returned with the outcome, e.g. (task_id, trial)
    code: str
    tests: Tests
    entry_point: str
    inputs: list[Any] | None = None


class SandboxPool:
    def __init__(self, backend: Backend, workers: int, limits: Limits, timeouts: Timeouts,
                 attempts: int = 3) -> None:
        self.backend, self.workers, self.limits, self.timeouts = backend, workers, limits, timeouts
        self.attempts = attempts
        self._idle: queue.Queue[tuple[int, Session | None]] = queue.Queue()
        for slot in range(workers):
            self._idle.put((slot, None))  # sessions open lazily, in the worker that needs them
        self.recycled = 0
        self.backstop_retries = 0  # samples rerun because a wall-clock backstop ended them
        self.python = ""  # the sandbox interpreter's version, from the first session's greeting

    def _open(self, slot: int) -> Session:
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                return self.backend.open(slot)
            except SandboxError as exc:
                last = exc
                log.warning("sandbox start failed (attempt %d/%d): %s", attempt + 1, self.attempts, exc)
                time.sleep(0.5 * (attempt + 1))
        raise SandboxError(f"cannot start a {self.backend.name} sandbox after {self.attempts} attempts: {last}")

    def run(self, job: Job) -> tuple[object, Outcome, float]:
        slot, session = self._idle.get()
        try:
            sandbox_failures, outside_faults, retried = 0, 0, False
            while True:
                if session is None:
                    session = self._open(slot)
                    self.python = str(session.hello.get("python", ""))
                start = time.monotonic()
                try:
                    if job.inputs is None:
                        outcome = run_tests(session, job.code, job.tests, job.entry_point, self.limits,
                                            self.timeouts)
                    else:
                        outcome = reference_outputs(session, job.code, job.entry_point, job.inputs, self.limits,
                                                    self.timeouts, job.tests.setup)
                except SandboxError as exc:
                    fault = session.outside_fault()  # asked before close: it reads the sandbox's state
                    session.close()
                    session = None
                    self.recycled += 1
                    if fault is not None:  # killed, paused, removed from outside: never the model's failure
                        outside_faults += 1
                        if outside_faults >= OUTSIDE_FAULTS:
                            raise SandboxError(
                                f"the sandbox failed {outside_faults} times from outside while running {job.key} "
                                f"(last: {fault}); nothing was recorded for it. Check the host and the engine "
                                "(`docker events`), then rerun: finished work is cached") from None
                        log.warning("sandbox for %s failed from outside (%s); retrying in a fresh one", job.key, fault)
                        continue
                    sandbox_failures += 1
                    if sandbox_failures >= 2:  # fresh sandboxes die on this sample: the sample did it
                        return job.key, Outcome("crash", 0, job.tests.total, f"the sandbox died: {exc}",
                                               failed=tuple(range(job.tests.total))), 0.0
                    log.debug("sandbox failed on %s, retrying in a fresh one: %s", job.key, exc)
                    continue
                duration = time.monotonic() - start
                if outcome.anomaly:
                    session.close()
                    session = None
                    self.recycled += 1
                if outcome.backstop and not retried:  # maybe a starved machine, not the program: once more
                    retried = True
                    self.backstop_retries += 1
                    log.debug("%s ended at a wall-clock limit; retrying it in a fresh sandbox", job.key)
                    continue
                return job.key, outcome, duration
        finally:
            self._idle.put((slot, session))

    def map(self, jobs: Iterable[Job]) -> Iterator[tuple[object, Outcome, float]]:
        """Run jobs in parallel and yield (key, outcome, seconds) as each finishes."""
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sandbox")
        try:
            futures = [pool.submit(self.run, job) for job in jobs]
            for future in as_completed(futures):
                yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self, close_backend: bool = True) -> None:
        """Close every idle session (and the backend, unless it is shared with other pools)."""
        while not self._idle.empty():
            slot, session = self._idle.get_nowait()
            if session is not None:
                session.close()
        for slot in range(self.workers):
            self._idle.put((slot, None))
        if close_backend:
            self.backend.close()


@dataclass(frozen=True)
class SandboxConfig:
    """What a worker needs to open sandboxes: picklable, so it travels to Prefect/Dask workers."""

    backend: str
    workers: int
    image_build: str
    limits: dict[str, int]
    timeouts: dict[str, float]

    @classmethod
    def from_params(cls, params: Params, backend: str | None = None) -> SandboxConfig:
        cfg = params.execute
        return cls(backend or cfg.backend, cfg.workers or os.cpu_count() or 1, cfg.image_build,
                   cfg.limits.model_dump(), cfg.timeouts.model_dump())

    def resolved(self) -> SandboxConfig:
        """The same with `auto` decided here, so every worker uses (and metrics name) one backend."""
        from complexitynet.sandbox.backends import resolve_backend

        return dataclasses.replace(self, backend=resolve_backend(self.backend))

    def fingerprint(self) -> str:
        """What a verdict depends on besides code and tests: the image (runner and Dockerfile), the
        trusted harness and protocol that judge, limits and timeouts."""
        import hashlib

        from complexitynet.sandbox import harness, protocol
        from complexitynet.sandbox.backends import Limits
        from complexitynet.sandbox.harness import Timeouts
        from complexitynet.sandbox.image import image_name

        judge = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (harness, protocol))).hexdigest()[:12]
        return json.dumps([image_name(), judge, dataclasses.asdict(Limits(**self.limits)),
                           dataclasses.asdict(Timeouts(**self.timeouts))])

    def open_pool(self, workers: int | None = None):
        from complexitynet.sandbox.backends import Limits, make_backend
        from complexitynet.sandbox.harness import Timeouts
        from complexitynet.sandbox.pool import SandboxPool

        limits = Limits(**self.limits)
        backend = make_backend(self.backend, limits, self.image_build)
        return SandboxPool(backend, workers or self.workers, limits, Timeouts(**self.timeouts))
