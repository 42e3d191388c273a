"""Browser checks of the web UIs the pipeline feeds (Prefect's, MLflow's): headless Chromium from
the system package (/usr/bin/chromium; .ci/run installs it), driven by Playwright, loopback only."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# The build machine has no network: nothing Chromium would fetch on its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright Browser). Skips where the system's Chromium is missing, except
    in CI (env CI set), where that fails: CI installs it."""
    if not CHROMIUM.exists():
        message = f"browser tests need Chromium at {CHROMIUM} (Debian package `chromium`; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def screenshot_on_failure(page: Any, path: Path) -> Iterator[None]:
    """On any failure, a full-page screenshot at `path`, named in the error."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(path), full_page=True)
            exc.add_note(f"screenshot of the page: {path} ({page.url})")
        raise


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def wait_healthy(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Until `url` answers 200 (or `proc` exits, or `timeout` seconds pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no {what} at {url} after {timeout} s")


@contextlib.contextmanager
def process(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A server process, its output in `log`; terminated (killed after 30 s) on exit, the log's
    tail printed in CI."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.environ.get("CI"):
            print(f"--- {log.name} (tail)\n" + "".join(log.read_text().splitlines(True)[-40:]))
