"""Failures of the sandbox itself are retried and never recorded as the model's failure."""

from __future__ import annotations

import os
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


class SabotagedBackend(Backend):
    """A real backend whose first `times` sessions are killed or paused from outside 0.3 s into their
    first sample (as `docker kill`/`docker pause` or a SIGKILL of bwrap would)."""

    def __init__(self, inner: Backend, times: int, how: str = "kill"):
        self.inner, self.times, self.how, self.name = inner, times, how, inner.name

    @property
    def sandbox(self) -> str:
        return self.inner.sandbox

    def open(self, slot: int):
        session = self.inner.open(slot)
        if self.times > 0:
            self.times -= 1
            action = _kill if self.how == "kill" else lambda s: s.container.pause()
            threading.Timer(0.3, action, args=(session,)).start()
        return session


def run_slow_ok(backend: Backend) -> tuple[object, SandboxPool]:
    """SLOW_OK's outcome on a one-slot pool over `backend`, and the pool (for its counters)."""
    pool = SandboxPool(backend, 1, LIMITS, TIMEOUTS)
    try:
        _, outcome, _ = pool.run(SLOW_OK)
    finally:
        pool.close(close_backend=False)
    return outcome, pool


def test_sandboxes_killed_from_outside_again_and_again_are_never_the_models_failure(backend):
    outcome, pool = run_slow_ok(SabotagedBackend(backend, times=3))
    assert outcome.status == "pass" and pool.recycled == 3, outcome


def test_a_paused_container_is_retried_not_judged(backend):
    if backend.name != "docker":
        pytest.skip("docker pause")
    outcome, pool = run_slow_ok(SabotagedBackend(backend, times=1, how="pause"))
    assert outcome.status == "pass" and pool.recycled == 1, outcome


def test_sandboxes_killed_from_outside_every_time_stop_the_stage_with_nothing_recorded(backend):
    pool = SandboxPool(SabotagedBackend(backend, times=99), 1, LIMITS, TIMEOUTS)
    try:
        with pytest.raises(SandboxError, match="failed 5 times from outside while running slow.*nothing was recorded"):
            pool.run(SLOW_OK)
    finally:
        pool.close(close_backend=False)


def test_containers_left_by_a_killed_run_are_removed_at_the_next_start(backend):
    if backend.name != "docker":
        pytest.skip("bwrap leaves no containers: its sandboxes die with their parent")
    import subprocess

    from complexitynet.sandbox.backends import DockerSession

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs, like an `execute` that was SIGKILLed
    left = backend.client.containers.create(backend.image, labels={DockerSession.LABEL: str(dead.pid)})
    mine = backend.client.containers.create(backend.image, labels={DockerSession.LABEL: str(os.getpid())})
    try:
        fresh = DockerBackend(LIMITS)
        fresh.close()
        remaining = {c.id for c in backend.client.containers.list(all=True, filters={"label": DockerSession.LABEL})}
        assert left.id not in remaining and mine.id in remaining and fresh.removed_leftovers >= 1
    finally:
        mine.remove(force=True)


def test_transient_start_failures_are_retried(backend):
    outcome, _ = run_slow_ok(FlakyBackend(backend, failures=2))
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
