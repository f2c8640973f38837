"""HTTP/1.1 to one Docker engine: pooled keep-alive connections on asyncio streams and h11.

The engine client needs little of HTTP (no redirects, cookies, proxies or HTTP/2) but needs it
cheaply: a burst of 100 runner starts is 200 requests at once. httpcore's pool rescans every
connection for every queued request (most of the CPU such a burst cost, several times
aiodocker's), and aiohttp costs ~13 MiB of memory; h11 is already loaded for the operator's own
server. Each request has a connection to itself, taken idle from the pool or opened for it,
and goes back only when its answer was read to the end; a request that fails or is cancelled
closes its connection, so nothing half read is ever reused.

Every failure to talk to the engine comes out as an `OSError` (a connection refused, reset or
closed mid-answer, TLS) or `TimeoutError`; the caller decides what they mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import h11

_READ_CHUNK = 64 * 1024
_MAX_IDLE = 32  # connections kept open between bursts
# asyncio's TLS layer holds a 256 KiB buffer per connection: keep few of those idle.
_MAX_IDLE_TLS = 4
_KEEPALIVE = 15.0  # an idle connection older than this is closed, not reused


@dataclass(frozen=True)
class Target:
    """Where the engine listens: a Unix socket, or host and port (with TLS when `tls`)."""

    socket_path: str | None = None
    host: str = "docker"
    port: int = 0
    tls: ssl.SSLContext | None = None

    @property
    def authority(self) -> str:
        if self.socket_path:
            return "docker"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()

    def usable(self) -> bool:
        """Still open, nothing unread on it, and not idle for too long."""
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and time.monotonic() - self.idle_since < _KEEPALIVE
        )

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.http.send(event)
            if data:
                self.writer.write(data)
        await self.writer.drain()

    async def next_event(self, read_timeout: float | None) -> h11.Event:
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError as exc:
                raise ConnectionError(f"the engine's answer is not HTTP: {exc}") from exc
            if event is not h11.NEED_DATA:
                if isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("the engine closed the connection before answering")
                return event  # type: ignore[return-value]
            async with asyncio.timeout(read_timeout):
                data = await self.reader.read(_READ_CHUNK)
            self.http.receive_data(data)  # b"" is the end of the stream

    def close(self) -> None:
        # Abort, not close: nothing more is owed to the engine on a connection we drop, and a
        # TLS close would hold the socket open until the engine answered its close_notify,
        # past the end of a loop that stops right after closing the client.
        self.writer.transport.abort()

    async def closed(self) -> None:
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


class Response:
    """An answer whose body is read on demand; `EngineHTTP.request` closes it."""

    def __init__(
        self, connection: _Connection, head: h11.Response, read_timeout: float | None
    ) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self.status_code = head.status_code
        self.headers = {name.decode().lower(): value.decode() for name, value in head.headers}
        self.complete = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while not self.complete:
            event = await self._connection.next_event(self._read_timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines as they arrive (an event or progress stream), without newlines."""
        pending = b""
        async for chunk in self.aiter_bytes():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode(errors="replace")
        if pending:
            yield pending.decode(errors="replace")


class EngineHTTP:
    """A pool of connections to one engine; no I/O until the first request."""

    def __init__(self, target: Target, *, connect_timeout: float) -> None:
        self._target = target
        self._connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._closed = False

    async def close(self) -> None:
        """Close the idle connections, and the others as their requests end."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.gather(*(connection.closed() for connection in idle))

    @asynccontextmanager
    async def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None,
        read_timeout: float | None,
    ) -> AsyncIterator[Response]:
        """Send one request; the answer once its head arrived, its body still to read."""
        connection = await self._connection()
        reusable = False
        try:
            headers = [("Host", self._target.authority), ("Accept", "application/json")]
            if body is not None:
                headers += [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                ]
            events: list[h11.Event] = [h11.Request(method=method, target=target, headers=headers)]
            if body:
                events.append(h11.Data(data=body))
            events.append(h11.EndOfMessage())
            await connection.send(*events)
            while True:
                head = await connection.next_event(read_timeout)
                if isinstance(head, h11.Response):
                    break
            response = Response(connection, head, read_timeout)
            yield response
            reusable = response.complete
        finally:
            self._release(connection, reusable=reusable)

    def _release(self, connection: _Connection, *, reusable: bool) -> None:
        http = connection.http
        if (
            reusable
            and not self._closed
            and len(self._idle) < (_MAX_IDLE_TLS if self._target.tls else _MAX_IDLE)
            and http.our_state is h11.DONE
            and http.their_state is h11.DONE
        ):
            http.start_next_cycle()
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    async def _connection(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the engine client is closed")
        while self._idle:
            connection = self._idle.pop()
            if connection.usable():
                return connection
            connection.close()
        target = self._target
        async with asyncio.timeout(self._connect_timeout):
            if target.socket_path:
                reader, writer = await asyncio.open_unix_connection(
                    target.socket_path, limit=_READ_CHUNK
                )
            else:
                reader, writer = await asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=target.tls,
                    server_hostname=target.host if target.tls else None,
                    limit=_READ_CHUNK,
                )
        return _Connection(reader, writer)
