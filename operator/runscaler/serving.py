"""A small HTTP/1.1 server on asyncio streams and h11, for the operator's few endpoints.

The operator answers a handful of tiny requests (probes, scrapes, a reload), and a web framework
costs more than they do: aiohttp and its web module are ~11 MiB of resident memory at import.
h11 (already installed for httpx) parses and frames HTTP/1.1; this module adds what a server
must do around it: keep-alive, limits on how much a client may send and how slowly, a JSON
answer for a malformed or oversized request (then close), and a stop that lets requests in
flight finish for a bounded time and closes every other connection at once.

    httpd = HTTPServer(dispatch, error=make_error_response)
    bound = await httpd.start("127.0.0.1", 8080)  # OSError if it cannot listen
    ...
    await httpd.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024
_CONTINUE = h11.InformationalResponse(status_code=100, headers=[])


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server before it is answered with an error and closed."""

    head_bytes: int = 64 * 1024  # request line and headers: 431 past this
    body_bytes: int = 1024 * 1024  # 413 past this (no endpoint here takes a body)
    idle_timeout: float = 30.0  # a kept-alive connection with no request on it is closed
    read_timeout: float = 10.0  # a request's head and body, from its first byte: 408 past this
    write_timeout: float = 10.0  # a client that stops reading its answer is dropped
    shutdown_timeout: float = 2.0  # requests in flight at stop get this long, then are cancelled


# Read at each start, so a test can shorten the timeouts.
LIMITS = Limits()


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent: path and query, for the log
    path: str  # percent-decoded, for routing
    headers: tuple[tuple[str, str], ...]  # names in lower case, in the order sent
    remote: str | None  # the peer's address

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


Dispatch = Callable[[Request], Awaitable[Response]]
ErrorResponse = Callable[[int, str], Response]


class _ClientError(Exception):
    """The client sent something we will not serve: answer `status` (if we still can), close."""

    def __init__(self, status: int, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or message


@dataclass
class _Connection:
    peer: str | None
    busy: bool = False  # a request is being received or answered: stopping waits for it
    request: str | None = None  # the one being answered, for the log: "POST /-/reload"


class HTTPServer:
    """Serves `dispatch` over HTTP/1.1 on a listening address until `stop`."""

    def __init__(self, dispatch: Dispatch, *, error: ErrorResponse) -> None:
        self._dispatch = dispatch
        self._error = error
        self._limits = LIMITS
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.Task[None], _Connection] = {}
        self._stopping = False

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: a free port); returns the bound port. OSError if it cannot."""
        self._limits = LIMITS
        self._server = await asyncio.start_server(self._accepted, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: the connection's task is ours to track and
        # cancel, and one accepted as the listener closes is dropped here, never left running.
        if self._stopping:
            writer.transport.abort()
            return
        peer = writer.get_extra_info("peername")
        connection = _Connection(str(peer[0]) if peer else None)
        task = asyncio.get_running_loop().create_task(
            self._serve(reader, writer, connection), name=f"http-connection-{connection.peer}"
        )
        self._open[task] = connection
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._open.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            # _serve catches everything a client can cause; anything else is a bug here.
            log.error("HTTP connection failed", exc_info=task.exception())

    async def stop(self) -> None:
        """Stop accepting; close idle connections now and busy ones once answered or timed out."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for task, connection in list(self._open.items()):
            if not connection.busy:
                task.cancel()
        try:
            if self._open:
                await asyncio.wait(list(self._open), timeout=self._limits.shutdown_timeout)
        finally:
            late = {task: c for task, c in self._open.items() if not task.done()}
            for task in late:
                task.cancel()
            running = sorted(c.request for c in late.values() if c.request)
            if running:
                log.warning(
                    "stopping the HTTP server cancelled request(s) still running: %s"
                    " (waited up to %gs)",
                    ", ".join(running),
                    self._limits.shutdown_timeout,
                )
            if late:
                await asyncio.wait(late)
            if self._server is not None:
                await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: _Connection
    ) -> None:
        remote = state.peer
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.head_bytes)
        try:
            while True:
                request = await self._receive(conn, reader, writer, state)
                if request is None:
                    return
                state.request = f"{request.method} {request.target}"  # as sent: one line
                response = await self._respond(request)
                await self._send(conn, writer, request.method, response)
                state.request = None
                log.debug(
                    "%s %s %s from %s", request.method, request.target, response.status, remote
                )
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # closing by request, HTTP/1.0, or a body we did not read
                if self._stopping:
                    return
                conn.start_next_cycle()
                state.busy = False
        except _ClientError as exc:
            log.debug("closing the HTTP connection from %s: %s", remote, exc.detail)
            await self._refuse(conn, writer, exc)
        except (OSError, TimeoutError) as exc:  # reset, or a client that stopped reading
            log.debug("HTTP connection from %s lost: %s", remote, exc or type(exc).__name__)
        finally:
            await _close(writer)

    async def _receive(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        state: _Connection,
    ) -> Request | None:
        """The next request, its body read and dropped; None once the client is done."""
        loop = asyncio.get_running_loop()
        limits = self._limits
        state.busy = bool(conn.trailing_data[0])  # a pipelined request already arrived
        deadline = loop.time() + (limits.read_timeout if state.busy else limits.idle_timeout)
        head: h11.Request | None = None
        received = 0
        while True:
            event = _next_event(conn, limits)
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    await self._write(writer, conn.send(_CONTINUE))
                data = await self._read(reader, deadline, state)
                if data is None:
                    return None
                if data and not state.busy:
                    state.busy = True
                    deadline = loop.time() + limits.read_timeout
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
                _check_head(event, limits)
            elif isinstance(event, h11.Data):
                received += len(event.data)
                if received > limits.body_bytes:
                    raise _ClientError(413, f"request body larger than {_size(limits.body_bytes)}")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _request(head, state.peer)
            else:  # ConnectionClosed, or PAUSED (never here: we answer before reading on)
                return None

    async def _read(
        self, reader: asyncio.StreamReader, deadline: float, state: _Connection
    ) -> bytes | None:
        """What arrives by the deadline (b"" at the end); None for an idle connection's timeout."""
        try:
            async with asyncio.timeout_at(deadline):
                return await reader.read(_READ_CHUNK)
        except TimeoutError:
            if not state.busy:
                return None  # a kept-alive connection nobody uses: close it quietly
            timeout = self._limits.read_timeout
            raise _ClientError(408, f"request not received within {timeout:g}s") from None

    async def _respond(self, request: Request) -> Response:
        try:
            return await self._dispatch(request)
        except Exception as exc:  # a bug: say so in JSON, keep serving
            log.exception("%s %s failed", request.method, request.path)
            return self._error(500, f"internal error: {type(exc).__name__}")

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, method: str, response: Response
    ) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Date", email.utils.formatdate(usegmt=True)),
            *response.headers,
        ]
        if self._stopping:
            headers.append(("Connection", "close"))
        try:
            phrase = http.HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        data = conn.send(
            h11.Response(status_code=response.status, headers=headers, reason=phrase.encode())
        )
        if method != "HEAD" and response.body:  # a HEAD answer has the GET's headers only
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
        await self._write(writer, data)

    async def _refuse(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, exc: _ClientError
    ) -> None:
        if conn.our_state not in {h11.IDLE, h11.SEND_RESPONSE}:
            return  # an answer was already started: closing is all that is left
        response = self._error(exc.status, str(exc))
        with contextlib.suppress(OSError, TimeoutError, h11.LocalProtocolError):
            await self._send(conn, writer, "GET", _with_close(response))

    async def _write(self, writer: asyncio.StreamWriter, data: bytes | None) -> None:
        if data:
            writer.write(data)
            async with asyncio.timeout(self._limits.write_timeout):
                await writer.drain()


def _next_event(conn: h11.Connection, limits: Limits) -> object:
    try:
        return conn.next_event()
    except h11.RemoteProtocolError as exc:
        if exc.error_status_hint == 431:
            raise _head_too_large(limits) from None
        raise _ClientError(exc.error_status_hint, "malformed HTTP request", str(exc)) from None


def _head_too_large(limits: Limits) -> _ClientError:
    return _ClientError(431, f"request head larger than {_size(limits.head_bytes)}")


def _check_head(head: h11.Request, limits: Limits) -> None:
    # h11 bounds a head still arriving; one that arrived whole is measured here.
    if _head_size(head) > limits.head_bytes:
        raise _head_too_large(limits)
    length = _content_length(head)
    if length is not None and length > limits.body_bytes:
        raise _ClientError(413, f"request body larger than {_size(limits.body_bytes)}")


def _request(head: h11.Request, remote: str | None) -> Request:
    target = head.target.decode("ascii", "replace")
    if target.startswith("/"):
        raw_path = target.partition("?")[0]
    else:  # absolute form (a proxy's), or `*`
        raw_path = urllib.parse.urlsplit(target).path or target
    return Request(
        method=head.method.decode("ascii", "replace"),
        target=target,
        path=urllib.parse.unquote(raw_path, errors="replace"),
        headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers),
        remote=remote,
    )


def _head_size(head: h11.Request) -> int:
    line = len(head.method) + len(head.target) + len(b"  HTTP/1.1\r\n")
    return line + sum(len(k) + len(v) + 4 for k, v in head.headers) + 2


def _content_length(head: h11.Request) -> int | None:
    for name, value in head.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return None


def _with_close(response: Response) -> Response:
    return Response(
        response.status,
        response.body,
        response.content_type,
        (*response.headers, ("Connection", "close")),
    )


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close, letting the answer flush for a moment; a peer that does not read is cut off."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


def _size(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"
