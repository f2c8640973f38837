"""The Docker Engine API: the few calls the Docker and Swarm backends make.

A thin client on our own HTTP/1.1 pool (`engine_http`) instead of aiodocker, which brings
aiohttp (about 13 MiB of resident memory in an operator that otherwise needs neither), and
instead of httpx, whose pool costs several times the CPU in a burst of starts. It speaks the
unversioned API (the engine answers at its own version, as aiodocker's `auto` did), turns an
error status into `EngineError` with the engine's message, and leaves every transport failure
as `OSError` or `TimeoutError`; `docker_client.engine_calls` translates both.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from runscaler.backends.engine_http import EngineHTTP, Response, Target

# Connecting must be quick; an engine that answers slowly under load (30 containers created at
# once, a large container removed) is still alive.
CONNECT_TIMEOUT = 30.0
REQUEST_TIMEOUT = 300.0  # between two reads of an answer
_STREAM_HEADER = 8  # a multiplexed log frame: stream (1 byte), 3 zero bytes, length (4 bytes)

Params = Mapping[str, str | int]


class EngineError(Exception):
    """The engine answered with an error status (`status`) and said why (`message`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"[{status}] {message}")
        self.status = status
        self.message = message


def target_of(url: str, socket_path: str | None, tls: ssl.SSLContext | None) -> Target:
    if socket_path:
        return Target(socket_path=socket_path)
    parts = urlsplit(url)
    return Target(host=parts.hostname or "", port=parts.port or 2375, tls=tls)


class DockerAPI:
    """One engine's API; connections are pooled and made on demand (no I/O until a call)."""

    def __init__(
        self, *, url: str, socket_path: str | None = None, ssl_context: ssl.SSLContext | None
    ) -> None:
        target = target_of(url, socket_path, ssl_context)
        self._http = EngineHTTP(target, connect_timeout=CONNECT_TIMEOUT)

    async def close(self) -> None:
        await self._http.close()

    async def query_json(
        self,
        path: str,
        *,
        method: str = "GET",
        params: Params | None = None,
        body: object = None,
        read_timeout: float | None = REQUEST_TIMEOUT,
    ) -> Any:
        """The answer's JSON (None for an empty answer, as a 204 is)."""
        content = await self.query(
            path, method=method, params=params, body=body, read_timeout=read_timeout
        )
        return json.loads(content) if content.strip() else None

    async def query(
        self,
        path: str,
        *,
        method: str = "GET",
        params: Params | None = None,
        body: object = None,
        read_timeout: float | None = REQUEST_TIMEOUT,
    ) -> bytes:
        """The answer's body; `EngineError` for an error status."""
        async with self.stream(
            path, method=method, params=params, body=body, read_timeout=read_timeout
        ) as response:
            return await response.aread()

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        method: str = "GET",
        params: Params | None = None,
        body: object = None,
        read_timeout: float | None = REQUEST_TIMEOUT,
    ) -> AsyncIterator[Response]:
        """The answer, its body not read yet (an event or pull stream); closed on exit."""
        target = "/" + quote(path, safe="/:@")
        if params:
            target += "?" + urlencode(params)
        content = json.dumps(body).encode() if body is not None else None
        exchange = self._http.request(method, target, body=content, read_timeout=read_timeout)
        async with exchange as response:
            if response.status_code >= 400:
                raise EngineError(response.status_code, _message(await response.aread()))
            yield response

    async def list_containers(self, **filters: list[str]) -> list[dict[str, Any]]:
        """Summaries of every container (running or not) matching `filters`."""
        params = {"all": "1", "filters": json_filters(**filters)}
        return list(await self.query_json("containers/json", params=params) or ())

    async def list_volumes(self, **filters: list[str]) -> list[dict[str, Any]]:
        params = {"filters": json_filters(**filters)}
        return list((await self.query_json("volumes", params=params) or {}).get("Volumes") or ())

    async def logs(self, path: str, params: Params) -> str:
        """A container's or service's output (`…/logs`), stdout and stderr interleaved."""
        return demultiplex(await self.query(path, params=params)).decode(errors="replace")


async def json_lines(response: Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a streamed answer (events, pull progress), one per line; a line
    that is not one is skipped."""
    async for line in response.aiter_lines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            yield item


def json_filters(**values: list[str]) -> str:
    """The `filters` parameter of a listing: `json_filters(label=["a=b"], status=["exited"])`."""
    return json.dumps(values)


def _message(content: bytes) -> str:
    text = content.decode(errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    message = data.get("message") if isinstance(data, dict) else None
    return str(message) if message is not None else text


def demultiplex(raw: bytes) -> bytes:
    """The payload of a multiplexed log stream (frames of stdin/stdout/stderr); a container
    with a TTY sends raw bytes instead, returned as they are."""
    out = bytearray()
    at = 0
    while at < len(raw):
        header = raw[at : at + _STREAM_HEADER]
        if len(header) < _STREAM_HEADER or header[0] > 2 or header[1:4] != b"\0\0\0":
            if at == 0:
                return raw
            break
        size = int.from_bytes(header[4:], "big")
        out += raw[at + _STREAM_HEADER : at + _STREAM_HEADER + size]
        at += _STREAM_HEADER + size
    return bytes(out)
