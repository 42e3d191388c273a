"""Verified escalation: judge an answer's code against the unit tests a request carries.

The code is extracted as the sample stage does (extract.py) and run in the same sandbox pool and
trusted harness as the execute stage, never in this process. The pool starts on the first request
that carries tests, so a router that never sees tests never needs Docker or bwrap.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from complexitynet.config import ExecuteParams, VerifyParams
from complexitynet.extract import extract_code
from complexitynet.sandbox.harness import Outcome
from complexitynet.schemas import Tests

MAX_TESTS = 100


@dataclass(frozen=True)
class TestSpec:
    """The request's `complexitynet` extension: assert statements, the function they call, setup code."""

    asserts: list[str]
    entry_point: str | None
    setup: str


def parse_tests(extension: Any) -> TestSpec | None:
    """The tests of a request's `complexitynet` field (None when it carries none); ValueError or
    TypeError if malformed."""
    if extension is None:
        return None
    if not isinstance(extension, dict):
        raise TypeError("'complexitynet' must be an object, e.g. {\"tests\": [\"assert f(1) == 2\"], "
                         "\"entry_point\": \"f\"}")
    unknown = set(extension) - {"tests", "entry_point", "setup"}
    if unknown:
        raise ValueError(f"'complexitynet' has unknown field(s) {sorted(unknown)}; "
                         "known: tests, entry_point, setup")
    tests, entry, setup = extension.get("tests"), extension.get("entry_point"), extension.get("setup", "")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError("'complexitynet.tests' must be a non-empty list of assert statements (strings)")
    if len(tests) > MAX_TESTS:
        raise ValueError(f"'complexitynet.tests' holds {len(tests)} tests; at most {MAX_TESTS}")
    if entry is not None and not isinstance(entry, str):
        raise ValueError("'complexitynet.entry_point' must be the name of the function the tests call")
    if not isinstance(setup, str):
        raise TypeError("'complexitynet.setup' must be Python source (a string)")
    return TestSpec(tests, entry, setup)


class Verifier:
    """A lazily started SandboxPool; `judge` runs one answer's code against a TestSpec."""

    def __init__(self, cfg: VerifyParams, execute: ExecuteParams) -> None:
        self.cfg, self.execute = cfg, execute
        self.executor = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="verify")
        self._pool: Any = None
        self._lock = threading.Lock()

    def _pool_ready(self) -> Any:
        from complexitynet.sandbox.backends import Limits, make_backend
        from complexitynet.sandbox.harness import Timeouts
        from complexitynet.sandbox.pool import SandboxPool

        with self._lock:
            if self._pool is None:
                limits = Limits(**self.execute.limits.model_dump())
                timeouts = Timeouts(**self.execute.timeouts.model_dump())
                backend = make_backend(self.cfg.backend, limits, self.execute.image_build)
                self._pool = SandboxPool(backend, self.cfg.workers, limits, timeouts)
            return self._pool

    def _run(self, text: str, spec: TestSpec) -> Outcome:
        from complexitynet.sandbox.pool import Job

        code = extract_code(text, spec.entry_point)
        tests = Tests(setup=spec.setup, asserts=spec.asserts)
        _, outcome, _ = self._pool_ready().run(Job("request", code, tests, spec.entry_point or ""))
        return outcome

    async def judge(self, text: str, spec: TestSpec) -> Outcome:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._run, text, spec)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._pool is not None:
            self._pool.close()

