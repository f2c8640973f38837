"""When to try a request again, and how long to wait first.

The policy is go-retryablehttp's as the Go client configures it (protocol.md §4): five attempts
in all, exponential backoff from one second capped at thirty, the server's `Retry-After`
honoured; transport failures, 429 and 5xx (but 501) are retried, other 4xx are answers.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

# A server asking for more than this is treated as asking for this: a listener that sleeps an
# hour on one header stops noticing shutdown requests and configuration changes.
RETRY_AFTER_CEILING = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` in total (not retries); waits in seconds."""

    attempts: int = 5
    wait_min: float = 1.0
    wait_max: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.wait_min < 0 or self.wait_max < 0:
            raise ValueError("RetryPolicy waits must not be negative")

    def backoff(self, attempt: int) -> float:
        """The wait after the failed attempt number `attempt` (0-based): min·2ⁿ, capped."""
        return float(min(self.wait_max, self.wait_min * (2**attempt)))

    def wait(self, attempt: int, retry_after: str | None, *, now: float | None = None) -> float:
        """The wait before the next attempt: the server's Retry-After when it gave one."""
        asked = parse_retry_after(retry_after, now=now)
        if asked is not None:
            return min(asked, RETRY_AFTER_CEILING)
        return self.backoff(attempt)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds to wait: delta-seconds or an HTTP-date; None if absent/bad."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def retryable_status(status: int) -> bool:
    """429, and 5xx except 501 Not Implemented (status 0 cannot reach us through httpx)."""
    return status == 429 or (500 <= status <= 599 and status != 501)


def retryable_transport_error(exc: BaseException) -> bool:
    """Connection trouble is retried; a bad scheme, a bad header or a bad certificate is not."""
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.InvalidURL):
        return False
    if isinstance(exc, TimeoutError):
        return True
    if not isinstance(exc, httpx.TransportError):
        return False
    return not is_certificate_error(exc)


def is_certificate_error(exc: BaseException) -> bool:
    """True when a TLS certificate check is somewhere in the exception's causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False
