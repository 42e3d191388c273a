"""Shared fixtures: the real public data, read from a mirror (../shared/data here and in CI)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from complexitynet.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]


def mirror_dir() -> Path | None:
    """Where the public sources are mirrored: $COMPLEXITYNET_MIRROR, else ../shared/data."""
    env = os.environ.get("COMPLEXITYNET_MIRROR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path.resolve() if (path / "mbpp" / "mbpp.jsonl").exists() else None


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = mirror_dir()
    if path is None:
        pytest.skip("needs the public data mirror: set COMPLEXITYNET_MIRROR (see docs/data-contracts.md, Data sources)")
    return path


@pytest.fixture(scope="session")
def sources_dir(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All sources fetched (from the mirror, checksums verified) into a session temp dir."""
    from complexitynet.fetch import fetch

    dest = tmp_path_factory.mktemp("sources")
    fetch(dest, [mirror])
    return dest


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(REPO / "params.yaml")


def _burn(_: int) -> None:
    while True:
        pass


@pytest.fixture()
def busy_machine():
    """Every core of this machine busy (two spinning processes per core) for the test's duration:
    the sandbox's limits, and the Prefect server's start, must hold on a loaded machine."""
    ctx = multiprocessing.get_context("fork")
    hogs = [ctx.Process(target=_burn, args=(i,), daemon=True) for i in range(2 * (os.cpu_count() or 1))]
    for hog in hogs:
        hog.start()
    yield
    for hog in hogs:
        hog.kill()
        hog.join()
