"""The operator's HTTP endpoints: health, readiness, status, metrics, reload, applied fleet.

    async with serve_http(operator, listen="127.0.0.1:8080", registry=metrics.registry) as url:
        ...  # url is the bound base URL, e.g. http://127.0.0.1:8080

The endpoints are cli.md's table. Reading ones (`/healthz`, `/readyz`, `/status`, `/metrics`)
answer anyone who can connect, so Prometheus can scrape from elsewhere when `--listen` allows
it. The two under `/-/` act on the operator or describe its fleet, so they answer only a
loopback peer that reached us by a loopback name: a request relayed by a proxy, or sent under
a foreign `Host` (a DNS-rebinding page in a local browser), gets 403. Every answer is JSON
except `/metrics`, and every body passes through the secret registry on the way out.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from runscaler.engine.status import FleetStatus
from runscaler.errors import ConfigurationError
from runscaler.fingerprints import fingerprint_fleet_dump
from runscaler.logs import secrets
from runscaler.manifest.values import is_loopback_host
from runscaler.serving import HTTPServer, Request, Response

log = logging.getLogger(__name__)

_PROXY_HEADERS = frozenset({"forwarded", "x-forwarded-for", "x-real-ip"})

Handler = Callable[[Request], Awaitable[Response]]


class ReloadResult(Protocol):
    """What a reload reports (`engine.reloader.ReloadOutcome`)."""

    @property
    def result(self) -> str: ...  # applied | unchanged | rejected

    @property
    def generation(self) -> int: ...

    @property
    def error(self) -> str | None: ...


class OperatorView(Protocol):
    """What the server needs from the running operator (`engine.running.Operator`)."""

    ready: bool

    def snapshot(self) -> FleetStatus: ...

    def readiness(self) -> dict[str, str]:
        """Scale sets that should be listening and are not, each with why."""
        ...

    async def reload(self, *, force: bool = True) -> ReloadResult: ...

    def applied_fleet(self) -> dict[str, Any] | None: ...


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8080` for IPv6) → (host, port); port 0 picks a free one."""
    text = listen.strip()
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        port, ok = rest[1:], bool(closed) and rest.startswith(":")
    else:
        host, colon, port = text.rpartition(":")
        ok = bool(colon) and ":" not in host
    if not ok or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigurationError(
            f"invalid --listen {listen!r}: use HOST:PORT, like 127.0.0.1:8080 or [::1]:8080"
        )
    return host, int(port)


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback_peer(remote: str | None) -> bool:
    """Whether a peer address is loopback (IPv4-mapped IPv6 too); unknown peers are not."""
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_local_request(
    *, remote: str | None, host_header: str | None, header_names: Iterable[str] = ()
) -> bool:
    """A loopback peer that addressed us by a loopback name, with no proxy in between."""
    if not is_loopback_peer(remote) or any(h.lower() in _PROXY_HEADERS for h in header_names):
        return False
    if host_header is None:
        return True  # HTTP/1.0 without Host: nothing a browser sends
    name = host_header.strip()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    return is_loopback_host(name)


def _json(data: Any, *, status: int = 200) -> Response:
    text = secrets.redact(json.dumps(data, sort_keys=False))
    return Response(status, (text + "\n").encode(), "application/json; charset=utf-8")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status=status)


class _Routes:
    def __init__(self, view: OperatorView, registry: CollectorRegistry) -> None:
        self.view = view
        self.registry = registry
        self.table: dict[str, dict[str, Handler]] = {
            "/healthz": {"GET": self.healthz, "HEAD": self.healthz},
            "/readyz": {"GET": self.readyz, "HEAD": self.readyz},
            "/status": {"GET": self.status},
            "/metrics": {"GET": self.metrics},
            "/-/reload": {"POST": _local_only(self.reload)},
            "/-/fleet": {"GET": _local_only(self.fleet)},
        }

    async def dispatch(self, request: Request) -> Response:
        methods = self.table.get(request.path)
        if methods is None:
            return _error(404, f"no such endpoint: {request.path}")
        handler = methods.get(request.method)
        if handler is None:
            answer = _error(405, f"{request.method} is not allowed on {request.path}")
            return replace(answer, headers=(("Allow", ",".join(sorted(methods))),))
        return await handler(request)

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Ready means serving: every scale set that should listen holds its session."""
        if not self.view.ready:
            return _json({"status": "starting"}, status=503)
        problems = self.view.readiness()
        if problems:
            return _json({"status": "degraded", "notServing": problems}, status=503)
        return _json({"status": "ready"})

    async def status(self, request: Request) -> Response:
        return _json(self.view.snapshot().to_json())

    async def metrics(self, request: Request) -> Response:
        body = secrets.redact(generate_latest(self.registry).decode())
        return Response(200, body.encode(), CONTENT_TYPE_PLAIN_0_0_4)

    async def reload(self, request: Request) -> Response:
        outcome = await self.view.reload(force=True)
        if outcome.result == "rejected":
            return _json({"result": "rejected", "error": outcome.error}, status=422)
        return _json({"result": outcome.result, "generation": outcome.generation})

    async def fleet(self, request: Request) -> Response:
        applied = self.view.applied_fleet()
        if applied is None:
            return _error(503, "no manifest is applied yet")
        return _json(fingerprint_fleet_dump(applied))


def _local_only(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        local = is_local_request(
            remote=request.remote,
            host_header=request.header("Host"),
            header_names=(name for name, _ in request.headers),
        )
        if not local:
            log.warning(
                "refused %s %s from %s: not loopback", request.method, request.path, request.remote
            )
            return _error(403, f"{request.path} answers only loopback clients on this host")
        return await handler(request)

    return guarded


def _listen_error(host: str, port: int, exc: OSError) -> ConfigurationError:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    reason = {
        errno.EADDRINUSE: "address in use",
        errno.EADDRNOTAVAIL: "no such address on this host",
        errno.EACCES: "permission denied",
    }.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
    return ConfigurationError(f"cannot listen on {where}: {reason}; pass --listen HOST:PORT")


@contextlib.asynccontextmanager
async def serve_http(
    view: OperatorView, *, listen: str, registry: CollectorRegistry
) -> AsyncIterator[str]:
    """Serve the endpoints on `listen` until the block ends; yields the bound base URL."""
    host, port = parse_listen(listen)
    httpd = HTTPServer(_Routes(view, registry).dispatch, error=_error)
    try:
        try:
            bound = await httpd.start(host, port)
        except OSError as exc:
            raise _listen_error(host, port, exc) from None
        url = base_url(host, bound)
        log.debug("serving the operator's endpoints at %s", url)
        yield url
    finally:
        await httpd.stop()
