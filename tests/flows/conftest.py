"""Prefect fixtures: a temporary Prefect server (SQLite) for the whole session, and a private
result store per test so one test's cached task results never answer another's."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def prefect_server():
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def prefect_results(prefect_server, tmp_path):
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path / "prefect-results"}):
        yield tmp_path / "prefect-results"
