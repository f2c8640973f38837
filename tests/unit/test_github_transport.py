"""The sender's retry loop and the httpx boundary, for the cases no fake server can produce.

Statuses, Retry-After and dropped connections are tested against the simulator
(tests/integration); here a recording `sleep` shows the exact waits without waiting, and
httpx.MockTransport raises what only a broken network or a bad certificate would.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx._utils import URLPattern as httpx_pattern

from runscaler.errors import ConfigurationError
from runscaler.github.errors import (
    ClientClosedError,
    GitHubError,
    RateLimitedError,
    ServiceError,
    TransportError,
)
from runscaler.github.retrying import RetryPolicy
from runscaler.github.transport import Sender, build_http_client, no_proxy_mounts, ssl_context
from runscaler.logs import secrets

URL = "http://127.0.0.1:9/x"


class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def _sender(
    handler: httpx.MockTransport,
    recorder: Recorder,
    *,
    policy: RetryPolicy | None = None,
    timeout: float = 5.0,
) -> Sender:
    http = httpx.AsyncClient(transport=handler)
    return Sender(http=http, retry=policy or RetryPolicy(), timeout=timeout, sleep=recorder.sleep)


def _statuses(
    *statuses: int, headers: dict[str, str] | None = None
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    replies: Iterator[int] = iter(statuses)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(replies), headers=headers, content=b"")

    return httpx.MockTransport(handle), seen


async def test_a_persistent_503_is_tried_five_times_with_exponential_waits() -> None:
    transport, seen = _statuses(*[503] * 5)
    recorder = Recorder()
    with pytest.raises(ServiceError) as caught:
        await _sender(transport, recorder).send("GET", URL, what="cannot get x", headers={})
    assert len(seen) == 5
    assert recorder.waits == [1.0, 2.0, 4.0, 8.0]
    assert str(caught.value) == (
        f"cannot get x (GET {URL}): 503 Service Unavailable: unknown error: giving up after 5 "
        "attempts; GitHub is failing; try again later"
    )


async def test_retry_after_replaces_the_backoff() -> None:
    transport, seen = _statuses(429, 429, 200, headers={"Retry-After": "3"})
    recorder = Recorder()
    response = await _sender(transport, recorder).send("GET", URL, what="x", headers={})
    assert (response.status, len(seen)) == (200, 3)
    assert recorder.waits == [3.0, 3.0]


async def test_a_persistent_429_is_rate_limited() -> None:
    transport, _ = _statuses(429, 429, 429)
    with pytest.raises(RateLimitedError, match="429 Too Many Requests"):
        await _sender(transport, Recorder(), policy=RetryPolicy(attempts=3)).send(
            "GET", URL, what="x", headers={}
        )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 501])
async def test_other_answers_are_returned_at_once(status: int) -> None:
    transport, seen = _statuses(status)
    response = await _sender(transport, Recorder()).send("GET", URL, what="x", headers={})
    assert (response.status, len(seen)) == (status, 1)


async def test_extra_retry_statuses_return_the_last_answer() -> None:
    transport, seen = _statuses(401, 403, 401)
    response = await _sender(transport, Recorder(), policy=RetryPolicy(attempts=3)).send(
        "POST", URL, what="x", headers={}, retry_statuses=(401, 403)
    )
    assert (response.status, len(seen)) == (401, 3)


async def test_network_failures_become_a_transport_error_with_the_cause_chained() -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadError("connection reset by peer", request=request)

    recorder = Recorder()
    sender = _sender(httpx.MockTransport(handle), recorder, policy=RetryPolicy(attempts=3))
    with pytest.raises(TransportError) as caught:
        await sender.send("GET", URL, what="cannot get x", headers={})
    assert calls == 3
    assert recorder.waits == [1.0, 2.0]
    assert isinstance(caught.value.__cause__, httpx.ReadError)
    assert str(caught.value) == (
        f"cannot get x (GET {URL}): connection reset by peer, giving up after 3 attempts; "
        "check the network, the proxy settings and github.url"
    )


async def test_an_untrusted_certificate_is_not_retried_and_names_the_ca_bundle() -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        error = httpx.ConnectError("handshake failed", request=request)
        error.__cause__ = ssl.SSLCertVerificationError("self-signed certificate in chain")
        raise error

    with pytest.raises(TransportError) as caught:
        await _sender(httpx.MockTransport(handle), Recorder()).send(
            "GET", URL, what="cannot get x", headers={}
        )
    assert calls == 1
    assert str(caught.value).endswith(
        "handshake failed, giving up after 1 attempt; the server's TLS certificate is not "
        "trusted; give its CA with caBundle"
    )


async def test_an_attempt_that_outlives_the_timeout_is_retried() -> None:
    calls = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # a server that never answers
        return httpx.Response(200)

    sender = _sender(httpx.MockTransport(handle), Recorder(), timeout=0.05)
    response = await sender.send("GET", URL, what="x", headers={})
    assert (response.status, calls) == (200, 2)


async def test_an_invalid_url_is_a_transport_error() -> None:
    transport, _ = _statuses(200)
    with pytest.raises(TransportError, match="invalid URL"):
        await _sender(transport, Recorder()).send("GET", "ftp://[::1", what="x", headers={})


async def test_a_bom_is_stripped_from_the_body() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b"\xef\xbb\xbf[1]"))
    response = await _sender(transport, Recorder()).send("GET", URL, what="x", headers={})
    assert response.json("x") == [1]


def test_a_ca_bundle_that_cannot_be_read_is_a_configuration_error(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match=r"ca\.pem: cannot load CA certificates"):
        ssl_context(bundle)


def test_clients_share_one_trust_store() -> None:
    # Loading a trust store costs about a MiB; a fleet has one client per scale set.
    assert ssl_context(None) is ssl_context(None)
    assert ssl_context(None).get_ca_certs() or ssl_context(None).cert_store_stats()["x509_ca"]


async def test_a_proxy_password_is_registered_as_a_secret() -> None:
    client = build_http_client(
        proxy="http://user:proxy-password-1@127.0.0.1:3128",
        ca_bundle=None,
        timeout=1.0,
        transport=None,
    )
    await client.aclose()
    assert secrets.redact("proxy-password-1") == "***"
    secrets.discard("proxy-password-1")


def test_the_operating_systems_trust_store_is_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    # A GHES CA (or a TLS-inspecting proxy's) installed system-wide must work, as with curl.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    system = {c["serialNumber"] for c in ssl.create_default_context().get_ca_certs()}
    if not system:
        pytest.skip("this machine's OpenSSL loads no CA file from the system store")
    ours = {c["serialNumber"] for c in ssl_context(None).get_ca_certs()}
    assert system <= ours


async def test_a_call_on_a_closed_client_is_a_github_error_with_the_cause_chained() -> None:
    transport, _ = _statuses(200)
    sender = _sender(transport, Recorder())
    await sender.http.aclose()
    with pytest.raises(ClientClosedError, match="client was closed") as caught:
        await sender.send("GET", URL, what="x", headers={})
    assert isinstance(caught.value, GitHubError)
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_a_socks_proxy_from_the_environment_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # httpx reads ALL_PROXY (Go does not); without socksio this raised ImportError.
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:9")
    client = build_http_client(proxy=None, ca_bundle=None, timeout=1.0, transport=None)
    await client.aclose()
    client = build_http_client(
        proxy="socks5h://127.0.0.1:9", ca_bundle=None, timeout=1.0, transport=None
    )
    await client.aclose()


@pytest.mark.parametrize(
    ("no_proxy", "direct", "proxied"),
    [
        ("", [], ["https://ghe.corp/api"]),
        ("*", ["https://ghe.corp/api", "http://127.0.0.1:1/"], []),
        ("ghe.corp", ["https://ghe.corp/x", "https://a.ghe.corp/x"], ["https://xghe.corp/x"]),
        (" .corp , 10.1.2.3", ["https://ghe.corp/x", "http://10.1.2.3:8/"], ["https://api.io/"]),
        ("::1", ["http://[::1]:8/"], ["http://127.0.0.1:8/"]),
    ],
)
def test_no_proxy_exempts_hosts_from_the_manifests_proxy(
    no_proxy: str, direct: list[str], proxied: list[str]
) -> None:
    mounts = {httpx_pattern(p) for p in no_proxy_mounts({"NO_PROXY": no_proxy})}
    for url in direct:
        assert any(p.matches(httpx.URL(url)) for p in mounts), url
    for url in proxied:
        assert not any(p.matches(httpx.URL(url)) for p in mounts), url
