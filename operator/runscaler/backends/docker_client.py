"""Reaching a Docker engine: endpoint parsing, client TLS, and the error boundary.

Every call the Docker backend makes goes through `engine_calls`, which turns whatever `ssl` or
the operating system raise, a timeout, and the engine's error answers (`EngineError`), into our
own tree: `BackendUnavailable` when the engine cannot be reached (or went away mid-call),
`BackendError` with the engine's own message otherwise. So every message says which engine
and what to do.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from runscaler.backends.base import BackendError, BackendUnavailable
from runscaler.backends.docker_api import DockerAPI, EngineError

DEFAULT_HOST = "unix:///var/run/docker.sock"


def default_host() -> str:
    """`$DOCKER_HOST` when set, else the local socket."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


@dataclass(frozen=True)
class DockerTLSPaths:
    """Client TLS for a `tcp://` engine: absolute paths (the loader resolves them against the
    manifest's directory). `ca` verifies the engine; `cert` + `key` identify us to it."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def default_tls(host: str) -> DockerTLSPaths | None:
    """For a `tcp://` host from the environment, the docker CLI's TLS environment:
    `DOCKER_TLS_VERIFY=1` with `ca.pem`, `cert.pem`, `key.pem` in `$DOCKER_CERT_PATH`
    (default `~/.docker`)."""
    if host.startswith("unix:") or os.environ.get("DOCKER_TLS_VERIFY", "") in ("", "0"):
        return None
    base = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
    return DockerTLSPaths(ca=base / "ca.pem", cert=base / "cert.pem", key=base / "key.pem")


@dataclass(frozen=True)
class Endpoint:
    """Where an engine listens, as written (`host`, for messages) and as a URL."""

    host: str
    url: str
    socket_path: str | None = None  # the engine's Unix socket, for `dind`


def parse_host(host: str, *, tls: DockerTLSPaths | None = None) -> Endpoint:
    """`unix:///path` or `tcp://HOST:PORT` (https when `tls` is given) → an `Endpoint`."""
    parts = urlsplit(host)
    if parts.scheme == "unix" and parts.path:
        return Endpoint(host=host, url=f"unix://{parts.path}", socket_path=parts.path)
    if parts.scheme in ("tcp", "http", "https") and parts.hostname:
        port = parts.port or (2376 if tls or parts.scheme == "https" else 2375)
        hostname = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        scheme = "https" if tls or parts.scheme == "https" else "http"
        return Endpoint(host=host, url=f"{scheme}://{hostname}:{port}")
    raise BackendError(
        f"docker.host {host!r} is not an engine address: "
        "use unix:///var/run/docker.sock or tcp://HOST:PORT"
    )


def ssl_context(host: str, tls: DockerTLSPaths) -> ssl.SSLContext:
    """A client context that verifies the engine (against `tls.ca`, else the system store)."""
    if (tls.cert is None) != (tls.key is None):
        raise BackendError(f"docker.tls for {host}: set both cert and key, or neither")
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca) if tls.ca else None
        )
        if tls.cert is not None and tls.key is not None:
            context.load_cert_chain(certfile=str(tls.cert), keyfile=str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise BackendError(
            f"docker.tls for {host}: cannot load the certificates ({_reason(exc)}): "
            "check the ca, cert and key paths"
        ) from exc
    return context


def connect(endpoint: Endpoint, tls: DockerTLSPaths | None) -> DockerAPI:
    """A client for `endpoint` (no I/O until the first call)."""
    context = ssl_context(endpoint.host, tls) if tls is not None else None
    return DockerAPI(url=endpoint.url, socket_path=endpoint.socket_path, ssl_context=context)


class LazyClient:
    """One engine's API client, made on first use: `plan` and `doctor` build backends
    they may never call, and a closed client is made again if the backend is used again."""

    def __init__(self, endpoint: Endpoint, tls: DockerTLSPaths | None) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self._client: DockerAPI | None = None

    def get(self) -> DockerAPI:
        if self._client is None:
            self._client = connect(self._endpoint, self._tls)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


def engine_message(exc: BaseException) -> str:
    """The engine's own words behind a translated error (else the error's message)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, EngineError) and seen.message:
            return str(seen.message).strip().splitlines()[0]
        seen = seen.__cause__
    return str(exc)


def unreachable(host: str) -> str:
    return f"cannot reach Docker at {host}: is the engine running? try runscaler doctor"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _ssl_cause(exc: BaseException) -> BaseException | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _unavailable(host: str, exc: BaseException) -> BackendUnavailable:
    tls = _ssl_cause(exc)
    if tls is not None:
        return BackendUnavailable(
            f"cannot reach Docker at {host}: TLS failed ({_reason(tls)}): "
            "check docker.tls (ca, cert, key) and the engine's certificate"
        )
    if isinstance(exc, TimeoutError):
        return BackendUnavailable(
            f"Docker at {host} did not answer in time: is the engine overloaded or hung? "
            "try runscaler doctor"
        )
    return BackendUnavailable(unreachable(host))


@contextmanager
def engine_calls(host: str, what: str) -> Iterator[None]:
    """Translate every failure inside the block; `what` completes "cannot … at HOST"."""
    try:
        yield
    except BackendError:
        raise
    except EngineError as exc:
        raise BackendError(f"{what} on Docker at {host}: {engine_message(exc)}") from exc
    except (OSError, TimeoutError) as exc:
        raise _unavailable(host, exc) from exc
