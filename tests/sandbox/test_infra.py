"""Failures of the sandbox itself are retried and never recorded as the model's failure."""

from __future__ import annotations

import threading

import pytest

from complexitynet.sandbox.backends import Backend, DockerBackend, SandboxError, make_backend
from complexitynet.sandbox.pool import Job, SandboxPool
from complexitynet.schemas import Tests as ProblemTests
from tests.sandbox.sandboxes import LIMITS, TIMEOUTS

pytestmark = [pytest.mark.integration]
SLOW_OK = Job("slow", "import time\ndef f():\n    time.sleep(1.0)\n    return 8", ProblemTests(asserts=["assert f() == 8"]), "f")


def _kill(session) -> None:
    if hasattr(session, "container"):
        session.container.kill()
    else:
        session.proc.kill()


def test_sandbox_killed_mid_sample_is_retried_not_blamed(pool):
    pool.run(Job("warm", "def f():\n    return 8", ProblemTests(asserts=["assert f() == 8"]), "f"))
    slot, session = pool._idle.get()
    pool._idle.put((slot, session))
    threading.Timer(0.3, _kill, args=(session,)).start()
    _, outcome, _ = pool.run(SLOW_OK)
    assert outcome.status == "pass", outcome
    assert pool.recycled == 1


def test_sandbox_dead_between_samples_is_replaced(pool):
    pool.run(SLOW_OK)
    slot, session = pool._idle.get()
    pool._idle.put((slot, session))
    _kill(session)
    _, outcome, _ = pool.run(SLOW_OK)
    assert outcome.status == "pass" and pool.recycled == 1


class FlakyBackend(Backend):
    """A real backend whose first `failures` session starts fail, like an engine that hiccups."""

    def __init__(self, inner: Backend, failures: int):
        self.inner, self.failures, self.name = inner, failures, inner.name

    @property
    def sandbox(self) -> str:
        return self.inner.sandbox

    def open(self, slot: int):
        if self.failures > 0:
            self.failures -= 1
            raise SandboxError("simulated: container could not start")
        return self.inner.open(slot)


def test_transient_start_failures_are_retried(backend):
    pool = SandboxPool(FlakyBackend(backend, failures=2), 1, LIMITS, TIMEOUTS)
    try:
        _, outcome, _ = pool.run(SLOW_OK)
    finally:
        pool.close(close_backend=False)
    assert outcome.status == "pass"


def test_persistent_start_failure_stops_with_a_clear_error(backend):
    pool = SandboxPool(FlakyBackend(backend, failures=99), 2, LIMITS, TIMEOUTS)
    with pytest.raises(SandboxError, match="after 3 attempts"):
        list(pool.map([SLOW_OK] * 4))
    pool.close(close_backend=False)


def test_engine_unreachable_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    with pytest.raises(SandboxError, match="Docker engine not reachable"):
        DockerBackend(LIMITS)
    with pytest.raises(SandboxError, match="unknown sandbox backend 'podman'"):
        make_backend("podman", LIMITS)
