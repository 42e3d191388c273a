"""Real sandboxes for the tests: the Docker engine and bubblewrap.

Where one is missing the tests that need it are skipped, except under CI (CI=true), where
.ci/run installs both and a missing backend is a failure.
"""

from __future__ import annotations

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
