"""Real sandboxes for the tests: the Docker engine and bubblewrap.

Where one is missing the tests that need it are skipped, except under CI (CI=true), where
.ci/run installs both and a missing backend is a failure.
"""

from __future__ import annotations

import multiprocessing
import os

import pytest

from complexitynet.sandbox.pool import SandboxPool
from tests.sandbox.sandboxes import LIMITS, TIMEOUTS, make


@pytest.fixture(scope="module", params=["docker", "bwrap"])
def backend(request):
    backend = make(request.param)
    yield backend
    backend.close()


@pytest.fixture()
def pool(backend):
    """One worker, so each case and the check after it share the same sandbox slot."""
    pool = SandboxPool(backend, 1, LIMITS, TIMEOUTS)
    yield pool
    pool.close(close_backend=False)


def _burn(_: int) -> None:
    while True:
        pass


@pytest.fixture()
def busy_machine():
    """Every core of this machine busy with work outside the sandbox (two spinning processes per
    core, at the sandbox's own priority), for the test's duration."""
    ctx = multiprocessing.get_context("fork")
    hogs = [ctx.Process(target=_burn, args=(i,), daemon=True) for i in range(2 * (os.cpu_count() or 1))]
    for hog in hogs:
        hog.start()
    yield
    for hog in hogs:
        hog.kill()
        hog.join()
