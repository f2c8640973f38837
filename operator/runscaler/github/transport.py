"""Sending one request: retries, timeouts, BOM stripping, and the httpx boundary.

Everything httpx can raise stops here and comes out as a `GitHubError` with the cause chained,
so the rest of the package (and its callers) handle one error tree. Bodies are read whole and
a leading UTF-8 byte order mark is dropped, as the Actions service sometimes sends one.

The connection behaves like the Go client's (protocol-notes.md): the operating system's trust
store is trusted (plus `caBundle`), proxies come from the manifest or the environment, SOCKS
included, `NO_PROXY` is honoured even for the manifest's proxy, and redirects are followed (a
307/308 keeps its method and body) up to `MAX_REDIRECTS` hops.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from runscaler.errors import ConfigurationError
from runscaler.github.errors import (
    ClientClosedError,
    ServiceError,
    TransportError,
    classify_response,
    describe,
    status_text,
)
from runscaler.github.retrying import (
    RetryPolicy,
    is_certificate_error,
    retryable_status,
    retryable_transport_error,
)
from runscaler.logs import secrets

log = logging.getLogger("runscaler.github")

# httpcore runs `import sniffio` for every request (to learn which async library runs it).
# Without sniffio installed (anyio 4 no longer needs it) that import fails, and a failed import
# searches the whole sys.path again each time: 0.2 ms a request, a sixth of the CPU a shutdown
# of 100 scale sets takes. Recording the absence makes the failure immediate; httpcore then
# assumes asyncio, which is what runs it.
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

BOM = b"\xef\xbb\xbf"
MAX_REDIRECTS = 10  # as Go's http.Client
_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
Sleep = Callable[[float], Awaitable[None]]


def strip_bom(body: bytes) -> bytes:
    """Drop one leading UTF-8 byte order mark."""
    return body[len(BOM) :] if body.startswith(BOM) else body


@dataclass(frozen=True)
class Response:
    """A finished response: status, headers and the whole body (BOM already stripped)."""

    method: str
    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def label(self) -> str:
        return f"{self.method} {self.url}"

    def json(self, what: str) -> Any:
        """The body as JSON, or a ServiceError saying the service answered something else."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ServiceError(
                describe(
                    f"{what} ({self.label})",
                    status=self.status,
                    detail="the response is not JSON",
                    hint="is github.url pointing at GitHub?",
                ),
                status=self.status,
            ) from exc


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """The operating system's trust store and certifi's (or only `SSL_CERT_FILE`/`SSL_CERT_DIR`
    when set), plus the CAs in `ca_bundle` when given. Shared by every client that asks for the same
    thing: loading a trust store costs about a MiB, and a fleet has a client per scale set."""
    try:
        stamp = ca_bundle.stat().st_mtime_ns if ca_bundle is not None else None
    except OSError:
        stamp = None
    key = (
        str(ca_bundle) if ca_bundle else None,
        stamp,
        os.environ.get("SSL_CERT_FILE"),
        os.environ.get("SSL_CERT_DIR"),
    )
    context = _CONTEXTS.get(key)
    if context is None:
        context = _CONTEXTS[key] = _new_ssl_context(ca_bundle)
    return context


_CONTEXTS: dict[tuple[str | None, int | None, str | None, str | None], ssl.SSLContext] = {}


def _new_ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    cert_file, cert_dir = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cert_file or cert_dir:
        context = ssl.create_default_context(cafile=cert_file, capath=cert_dir)
    else:
        # The OS store, as Go and curl trust it: a GHES CA or a TLS-inspecting proxy's CA
        # installed system-wide must work. certifi too, for Pythons whose OpenSSL finds none.
        import certifi

        context = ssl.create_default_context()
        context.load_verify_locations(cafile=certifi.where())
    if ca_bundle is None:
        return context
    try:
        context.load_verify_locations(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"{ca_bundle}: cannot load CA certificates ({exc}); give a PEM file of CA certificates"
        ) from exc
    return context


def build_http_client(
    *,
    proxy: str | None,
    ca_bundle: Path | None,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None,
    limits: httpx.Limits | None = None,
) -> httpx.AsyncClient:
    """The one httpx client of a ScaleSetClient; proxy settings come from the environment too
    (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`), and `NO_PROXY` exempts hosts from `proxy`."""
    if proxy:
        password = urlsplit(proxy).password
        secrets.add(password)
    for name in (*_PROXY_VARIABLES, *(n.lower() for n in _PROXY_VARIABLES)):
        value = os.environ.get(name)
        if value:
            secrets.add(urlsplit(value).password)
    try:
        return httpx.AsyncClient(
            proxy=proxy or None,
            mounts=no_proxy_mounts(os.environ) if proxy else None,
            verify=ssl_context(ca_bundle),
            timeout=httpx.Timeout(timeout),
            transport=transport,
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            trust_env=True,
        )
    except ImportError as exc:  # a SOCKS proxy without socksio (a broken install)
        raise ConfigurationError(
            f"cannot use the proxy: {exc}; reinstall runscaler with its dependencies"
        ) from exc
    except (ValueError, httpx.InvalidURL) as exc:
        raise ConfigurationError(
            f"invalid proxy URL: {exc}; use http://HOST:PORT or socks5://HOST:PORT "
            "(in github.proxy, HTTPS_PROXY or ALL_PROXY)"
        ) from exc


# A shared client has no connection limit: every scale set holds one long poll open.
_SHARED_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20)


class HTTPLease:
    """One ScaleSetClient's use of an httpx client that it may share with others.

    Scale sets of one fleet mostly reach one GitHub host the same way (same proxy, CA bundle
    and timeout): they share one httpx client, so one connection pool and one set of proxy
    transports, instead of one each. Credentials are not part of it (each request carries its
    own token), so a scale set whose credentials change still reconnects on its own. The
    client is closed when its last user lets go; a lease let go is closed for its user."""

    def __init__(self, key: object, client: httpx.AsyncClient) -> None:
        self._key = key
        self.client = client
        self.closed = False

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        shared = _SHARED.get(self._key)
        if shared is None or shared[0] is not self.client:
            await self.client.aclose()  # a private client
            return
        _, loop, users = shared
        if users > 1:
            _SHARED[self._key] = (self.client, loop, users - 1)
            return
        del _SHARED[self._key]
        await self.client.aclose()


_SHARED: dict[object, tuple[httpx.AsyncClient, asyncio.AbstractEventLoop, int]] = {}


def lease_http_client(
    *,
    proxy: str | None,
    ca_bundle: Path | None,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None,
) -> HTTPLease:
    """A lease on the shared client for these settings (in this event loop), made on first
    use; a private client when a transport is given (tests) or no loop is running."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if transport is not None or loop is None:
        client = build_http_client(
            proxy=proxy, ca_bundle=ca_bundle, timeout=timeout, transport=transport
        )
        return HTTPLease(object(), client)
    environment = tuple(
        os.environ.get(name)
        for base in (*_PROXY_VARIABLES, "NO_PROXY")
        for name in (base, base.lower())
    )
    key = (id(loop), proxy, id(ssl_context(ca_bundle)), timeout, environment)
    shared = _SHARED.get(key)
    if shared is None or shared[1] is not loop or shared[0].is_closed:
        client = build_http_client(
            proxy=proxy,
            ca_bundle=ca_bundle,
            timeout=timeout,
            transport=None,
            limits=_SHARED_LIMITS,
        )
        _SHARED[key] = (client, loop, 1)
    else:
        client = shared[0]
        _SHARED[key] = (client, loop, shared[2] + 1)
    return HTTPLease(key, client)


def no_proxy_mounts(environ: Mapping[str, str]) -> dict[str, httpx.AsyncBaseTransport | None]:
    """`NO_PROXY` as httpx mounts that bypass the proxy (None: the direct transport).

    httpx applies `NO_PROXY` only to proxies it read from the environment; Go applies it to
    every proxy, and so do we. The patterns follow httpx's reading of the variable: `*` is
    every host, `.example.com` and `example.com` match the host and its subdomains.
    """
    text = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        if entry == "*":
            return {"all://": None}
        if "://" in entry:
            mounts[entry] = None
            continue
        host = entry.lstrip("*").lstrip(".")
        if ":" in host and not host.startswith("["):
            mounts[f"all://[{host}]"] = None  # an IPv6 address
        elif host.replace(".", "").isdigit() or host.lower() == "localhost":
            mounts[f"all://{host}"] = None
        else:
            mounts[f"all://*{host}"] = None  # the host and its subdomains
    return mounts


class Sender:
    """Sends requests with the retry policy and turns failures into GitHubErrors."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        retry: RetryPolicy,
        timeout: float,
        sleep: Sleep = asyncio.sleep,
        lease: HTTPLease | None = None,
    ) -> None:
        self.http = http
        self.retry = retry
        self.timeout = timeout
        self.sleep = sleep
        self._lease = lease
        self._exchanges: set[asyncio.Future[tuple[httpx.Response, bytes]]] = set()

    @property
    def closed(self) -> bool:
        return self.http.is_closed or (self._lease is not None and self._lease.closed)

    async def aclose(self) -> None:
        """Close: calls on their way fail as `ClientClosedError`, as with a closed pool,
        though a shared pool stays open for its other users."""
        if self._lease is not None:
            await self._lease.aclose()
        else:
            await self.http.aclose()
        for exchange in list(self._exchanges):
            exchange.cancel()

    async def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Mapping[str, str],
        content: bytes | None = None,
        retry_statuses: Collection[int] = (),
    ) -> Response:
        """Send until an answer that is not worth retrying, or the attempts run out.

        Returns the final response whatever its status (the caller judges it), except when
        a retryable status or transport failure lasted through every attempt: that raises.
        `retry_statuses` adds statuses retried for this request only (G3's 401/403), whose
        last response is returned rather than raised.
        """
        label = f"{what} ({method} {url})"
        try:
            request = self.http.build_request(method, url, headers=headers, content=content)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            raise TransportError(describe(label, detail=f"invalid URL: {exc}")) from exc
        attempts = self.retry.attempts
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self._attempt(request)
            except (httpx.HTTPError, httpx.InvalidURL, TimeoutError) as exc:
                if last or not retryable_transport_error(exc):
                    raise _transport_error(label, exc, attempts=attempt + 1) from exc
                wait = self.retry.backoff(attempt)
                log.warning(
                    "%s %s: %s; retrying in %.1fs (attempt %d of %d)",
                    method,
                    url,
                    _reason(exc),
                    wait,
                    attempt + 2,
                    attempts,
                )
                await self.sleep(wait)
                continue
            extra = response.status in retry_statuses
            if not (retryable_status(response.status) or extra):
                return response
            if last:
                if extra:
                    return response
                raise classify_response(
                    label,
                    status=response.status,
                    headers=response.headers,
                    body=response.body,
                    detail=f"giving up after {attempts} attempt{'s' if attempts > 1 else ''}",
                    hint=None if response.status == 429 else "GitHub is failing; try again later",
                )
            wait = self.retry.wait(attempt, response.headers.get("retry-after"))
            log.warning(
                "%s %s: %s; retrying in %.1fs (attempt %d of %d)",
                method,
                url,
                status_text(response.status),
                wait,
                attempt + 2,
                attempts,
            )
            await self.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises on its last attempt")

    async def _attempt(self, request: httpx.Request) -> Response:
        started = time.monotonic()
        if self.closed:
            raise self._closed_error(request) from RuntimeError("the client is closed")
        # Its own task, so closing this client can stop it without closing a shared pool.
        exchange = asyncio.ensure_future(self._exchange(request))
        self._exchanges.add(exchange)
        try:
            async with asyncio.timeout(self.timeout):
                reply, body = await exchange
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if exchange.cancelled() and self.closed and (task is None or not task.cancelling()):
                raise self._closed_error(request) from RuntimeError("the client was closed")
            raise
        except RuntimeError as exc:
            if not self.closed:
                raise
            raise self._closed_error(request) from exc
        finally:
            self._exchanges.discard(exchange)
        log.debug(
            "%s %s -> %d in %.0f ms",
            request.method,
            request.url,
            reply.status_code,
            (time.monotonic() - started) * 1000,
        )
        return Response(
            method=request.method,
            url=str(request.url),
            status=reply.status_code,
            headers=reply.headers,
            body=body,
        )

    async def _exchange(self, request: httpx.Request) -> tuple[httpx.Response, bytes]:
        reply = await self.http.send(request)
        return reply, strip_bom(reply.content)

    @staticmethod
    def _closed_error(request: httpx.Request) -> ClientClosedError:
        # The scale set was stopped while this call was on its way: a GitHubError too.
        return ClientClosedError(
            f"{request.method} {request.url}: the client was closed (its scale set stopped)"
        )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    text = str(exc).strip()
    return text or type(exc).__name__


def _transport_error(label: str, exc: BaseException, *, attempts: int) -> TransportError:
    if is_certificate_error(exc):
        hint = "the server's TLS certificate is not trusted; give its CA with caBundle"
    elif isinstance(exc, httpx.ProxyError):
        hint = "check the proxy setting"
    else:
        hint = "check the network, the proxy settings and github.url"
    tries = f"giving up after {attempts} attempt{'s' if attempts > 1 else ''}"
    return TransportError(describe(label, detail=f"{_reason(exc)}, {tries}", hint=hint))
