"""Time limits that measure the program, not the machine: CPU seconds per test, a wall-clock limit
only as a backstop against sleeping, and a sample that ends at the backstop retried once in a fresh
sandbox before it is recorded as a timeout."""

from __future__ import annotations

import pytest

from complexitynet.sandbox.harness import Timeouts
from complexitynet.sandbox.pool import Job, SandboxPool
from complexitynet.schemas import Tests as ProblemTests
from tests.sandbox.sandboxes import LIMITS

pytestmark = [pytest.mark.integration]
# ~1 CPU-second of work: far inside 3 CPU-seconds, yet over 2 wall-clock seconds on a machine whose
# cores are all busy
WORK = "def f():\n    n = 0\n    for i in range(12_000_000):\n        n += i & 1\n    return n\n"
TESTS = ProblemTests(asserts=["assert f() == 6_000_000"])


def test_cpu_limits_do_not_depend_on_machine_load(backend, busy_machine):
    pool = SandboxPool(backend, 1, LIMITS, Timeouts(load_s=60, test_s=60, sample_s=120, test_cpu_s=3.0))
    try:
        _, outcome, _ = pool.run(Job("busy", WORK, TESTS, "f"))
        assert outcome.status == "pass", outcome
    finally:
        pool.close(close_backend=False)


def test_a_cpu_bound_loop_ends_at_its_cpu_limit(backend):
    pool = SandboxPool(backend, 1, LIMITS, Timeouts(load_s=60, test_s=60, sample_s=120, test_cpu_s=1.0))
    try:
        _, outcome, _ = pool.run(Job("loop", "def f():\n    while True: pass\n", TESTS, "f"))
        assert outcome.status == "timeout" and "CPU time limit (1s)" in outcome.detail, outcome
        _, load, _ = pool.run(Job("load", "while True: pass\ndef f():\n    return 6_000_000\n", TESTS, "f"))
        assert load.status == "timeout" and "CPU time limit (1s)" in load.detail, load
        assert pool.backstop_retries == 0
    finally:
        pool.close(close_backend=False)


def test_a_sample_ending_at_the_wall_clock_backstop_is_retried_once(backend):
    pool = SandboxPool(backend, 1, LIMITS, Timeouts(load_s=2, test_s=1, sample_s=10, test_cpu_s=5.0))
    try:
        sleeper = "import time\ndef f():\n    time.sleep(30)\n    return 6_000_000\n"
        _, outcome, _ = pool.run(Job("sleeps", sleeper, TESTS, "f"))
        assert outcome.status == "timeout" and pool.backstop_retries == 1, outcome
        _, after, _ = pool.run(Job("fine", "def f():\n    return 6_000_000\n", TESTS, "f"))
        assert after.status == "pass" and pool.backstop_retries == 1
    finally:
        pool.close(close_backend=False)
