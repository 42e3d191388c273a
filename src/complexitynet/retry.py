"""Retry policy, in one place: which failures are worth another try, how long to wait before it, and
what a server's Retry-After asks for.

Used by the sampling engine (complexitynet.live, with the providers' errors) and by the router's
upstream calls (complexitynet.serve.upstream). Each caller keeps its own number of attempts and its
own caps: a sampling run can wait minutes for a rate limit, a router request would rather move to
the next rung.
"""

from __future__ import annotations

import email.utils
import math
import random
import sys
import time
from collections.abc import Mapping
from datetime import timezone

BACKOFF_CAP_S = 60.0  # longest wait between two of our own retries
RETRY_AFTER_CAP_S = 600.0  # longest wait a server's Retry-After can impose
TRANSIENT_STATUSES = frozenset({408, 425, 429})  # Timeout, Too Early, Too Many Requests; and every 5xx


def transient_status(status: int) -> bool:
    """Whether an HTTP status may pass on retry: 408, 425, 429 or any 5xx."""
    return status in TRANSIENT_STATUSES or status >= 500


def transient_error(exc: BaseException) -> bool:
    """Whether an exception from a call to a server may pass on retry: a timeout, a refused, reset or
    dropped connection, or one of aiohttp's client errors (connection, protocol and payload errors)
    except a certificate the system does not trust and a URL it cannot call. Never any other
    OSError: a full disk or a permission error stays until someone fixes it."""
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    aiohttp = sys.modules.get("aiohttp")  # its errors exist only once it is imported: no import here
    return (aiohttp is not None and isinstance(exc, aiohttp.ClientError)
            and not isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.InvalidURL)))


def backoff_s(attempt: int, base_s: float, retry_after: float | None = None, rng: random.Random | None = None,
              cap_s: float = BACKOFF_CAP_S, retry_after_cap_s: float = RETRY_AFTER_CAP_S) -> float:
    """The wait before retry `attempt` (0-based): full jitter over min(cap_s, base_s * 2^attempt); when
    the server said how long to wait (`retry_after`, seconds), that (at most retry_after_cap_s) plus a
    tenth of our jitter, so that clients told the same time do not all come back at once."""
    ours = (rng or random).uniform(0, min(cap_s, base_s * 2 ** attempt))
    if retry_after is None:
        return ours
    return min(retry_after_cap_s, retry_after) + ours * 0.1


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a response's `retry-after-ms` (OpenAI's) or `Retry-After` header, in
    either of its forms: delta-seconds ("120") or an HTTP date ("Fri, 31 Dec 2026 23:59:59 GMT"; a
    date already past is 0). None when neither header is there or the value is unreadable: the
    caller's own backoff applies. `now` (epoch seconds) is for tests."""
    lower = {k.lower(): v for k, v in headers.items()}
    millis = _number(lower.get("retry-after-ms", ""))
    if millis is not None:
        return millis / 1000
    value = lower.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with no claim about local time (RFC 5322); HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(text: str) -> float | None:
    """A finite number of seconds (negative ones read as 0), or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None
