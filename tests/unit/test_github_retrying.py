"""The retry policy's arithmetic: backoff, Retry-After, which failures are retried."""

from __future__ import annotations

import ssl
from email.utils import formatdate

import httpx
import pytest

from runscaler.github.retrying import (
    RETRY_AFTER_CEILING,
    RetryPolicy,
    parse_retry_after,
    retryable_status,
    retryable_transport_error,
)


def test_the_default_policy_is_five_attempts_one_to_thirty_seconds() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.wait_min, policy.wait_max) == (5, 1.0, 30.0)
    assert [policy.backoff(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_backoff_scales_from_wait_min() -> None:
    policy = RetryPolicy(attempts=3, wait_min=0.25, wait_max=0.6)
    assert [policy.backoff(n) for n in range(4)] == [0.25, 0.5, 0.6, 0.6]


def test_retry_after_seconds_replace_the_backoff() -> None:
    policy = RetryPolicy()
    assert policy.wait(0, "3") == 3.0
    assert policy.wait(4, "0") == 0.0
    assert policy.wait(2, None) == 4.0
    assert policy.wait(2, "soon") == 4.0


def test_retry_after_may_be_an_http_date() -> None:
    now = 1_700_000_000.0
    header = formatdate(now + 7, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(7.0)
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0


def test_a_huge_retry_after_is_capped() -> None:
    assert RetryPolicy().wait(0, "86400") == RETRY_AFTER_CEILING


@pytest.mark.parametrize("value", [None, "", "-1", "tomorrow", "Mon, 99 Foo 2024"])
def test_unusable_retry_after_values_are_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (599, True),
        (501, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (409, False),
        (200, False),
    ],
)
def test_which_statuses_are_retried(status: int, retried: bool) -> None:
    assert retryable_status(status) is retried


def test_connection_failures_and_timeouts_are_retried() -> None:
    assert retryable_transport_error(httpx.ConnectError("refused"))
    assert retryable_transport_error(httpx.ReadTimeout("slow"))
    assert retryable_transport_error(httpx.RemoteProtocolError("dropped"))
    assert retryable_transport_error(TimeoutError())


def test_bad_schemes_headers_and_certificates_are_not_retried() -> None:
    assert not retryable_transport_error(httpx.UnsupportedProtocol("ftp"))
    assert not retryable_transport_error(httpx.LocalProtocolError("bad header"))
    cert = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert not retryable_transport_error(cert)
    wrapped = httpx.ConnectError("handshake failed")
    wrapped.__cause__ = ssl.SSLCertVerificationError("self-signed certificate")
    assert not retryable_transport_error(wrapped)


def test_a_policy_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)
