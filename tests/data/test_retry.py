"""The retry policy (complexitynet.retry): Retry-After in both forms, the backoff and its caps, and
which failures are transient."""

from __future__ import annotations

import asyncio
import email.utils
import errno
import random
import time

import aiohttp
import pytest

from complexitynet.retry import (
    BACKOFF_CAP_S,
    RETRY_AFTER_CAP_S,
    backoff_s,
    retry_after_s,
    transient_error,
    transient_status,
)

NOW = 1_800_000_000.0  # a fixed clock for the date forms


def test_retry_after_delta_seconds():
    assert retry_after_s({"Retry-After": "2"}) == 2.0
    assert retry_after_s({"retry-after": " 120 "}) == 120.0
    assert retry_after_s({"retry-after": "0.5"}) == 0.5
    assert retry_after_s({"retry-after": "-3"}) == 0.0
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5  # OpenAI's, more precise
    assert retry_after_s({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0


def test_retry_after_http_date_is_the_time_until_then_not_zero():
    for form in (email.utils.formatdate(NOW + 30, usegmt=True),  # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
                 email.utils.formatdate(NOW + 30, usegmt=False),  # "-0000"
                 time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(NOW + 30)),  # RFC 850
                 time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(NOW + 30))):  # asctime
        assert retry_after_s({"Retry-After": form}, now=NOW) == pytest.approx(30), form
    real = email.utils.formatdate(time.time() + 10, usegmt=True)  # against the real clock
    assert 8 <= retry_after_s({"retry-after": real}) <= 10


def test_retry_after_in_the_past_is_now():
    assert retry_after_s({"Retry-After": email.utils.formatdate(NOW - 3600, usegmt=True)}, now=NOW) == 0.0


@pytest.mark.parametrize("value", ["soon", "", "Fri, 99 Foo 2026 25:61:61 GMT", "nan", "inf", "1e999", "2 s"])
def test_retry_after_garbage_is_none_so_our_backoff_applies(value):
    assert retry_after_s({"Retry-After": value}, now=NOW) is None
    assert retry_after_s({}) is None


def test_backoff_is_full_jitter_over_a_capped_exponential():
    rng = random.Random(0)
    for attempt in range(12):
        delays = [backoff_s(attempt, 0.5, None, rng) for _ in range(200)]
        bound = min(BACKOFF_CAP_S, 0.5 * 2 ** attempt)
        assert 0 <= min(delays) and max(delays) <= bound and max(delays) > 0.8 * bound
    assert max(backoff_s(30, 0.5, None, rng, cap_s=5.0) for _ in range(200)) <= 5.0  # a caller's own cap


def test_backoff_honours_retry_after_up_to_its_cap():
    rng = random.Random(0)
    assert 3.0 <= backoff_s(0, 0.5, 3.0, rng) <= 3.05  # the server's wait, a tenth of our jitter on top
    assert 0.0 <= backoff_s(0, 0.5, 0.0, rng) <= 0.05
    assert RETRY_AFTER_CAP_S <= backoff_s(0, 0.5, 10 * RETRY_AFTER_CAP_S, rng) <= RETRY_AFTER_CAP_S + 0.05
    assert 5.0 <= backoff_s(0, 0.5, 3600.0, rng, cap_s=5.0, retry_after_cap_s=5.0) <= 5.05


def test_transient_statuses():
    assert [s for s in (200, 400, 401, 403, 404, 408, 409, 413, 422, 425, 429, 500, 502, 503, 504, 599)
            if transient_status(s)] == [408, 425, 429, 500, 502, 503, 504, 599]


def test_transient_errors_are_timeouts_and_connections_never_a_disk_or_a_permission():
    for exc in (TimeoutError(), asyncio.TimeoutError(), ConnectionRefusedError(), ConnectionResetError(),
                BrokenPipeError(), aiohttp.ServerDisconnectedError(), aiohttp.ClientPayloadError("cut"),
                aiohttp.ServerTimeoutError("read"), aiohttp.ClientOSError(errno.ECONNRESET, "reset")):
        assert transient_error(exc), exc
    for exc in (OSError(errno.ENOSPC, "No space left on device"), PermissionError(errno.EACCES, "denied"),
                FileNotFoundError(), ValueError("x"), RuntimeError("x"), aiohttp.InvalidURL("ftp://x")):
        assert not transient_error(exc), exc
