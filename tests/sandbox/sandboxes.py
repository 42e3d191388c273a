"""Real sandbox backends for the tests (shared by the fixtures and the test modules)."""

from __future__ import annotations

import os
import shutil

import pytest

from complexitynet.sandbox.backends import BwrapBackend, DockerBackend, Limits, SandboxError, docker_available
from complexitynet.sandbox.harness import Timeouts

# Tight limits so the adversarial cases finish fast; the stage's defaults are more generous.
LIMITS = Limits(memory_mb=256, cpu_s=5, file_mb=8, nproc=24, nofile=64, tmp_mb=32)
TIMEOUTS = Timeouts(load_s=5.0, test_s=4.0, sample_s=15.0, test_cpu_s=1.0)  # CPU ends loops; wall clock backstops


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this sandbox backend: {reason}")
    pytest.skip(reason)


def make(name: str, limits: Limits = LIMITS):
    if name == "docker":
        if not docker_available():
            _unavailable("no Docker engine answers")
        try:
            return DockerBackend(limits, image_build=os.environ.get("COMPLEXITYNET_IMAGE_BUILD", "auto"))
        except SandboxError as exc:
            _unavailable(str(exc))
    if shutil.which("bwrap") is None:
        _unavailable("bwrap is not installed")
    return BwrapBackend(limits)
