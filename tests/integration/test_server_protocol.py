"""The operator's HTTP server as a server: what a client may send, how connections live and end.

test_server.py covers the endpoints' answers; this file covers the HTTP/1.1 around them, over
real loopback sockets: raw bytes where a well-behaved client (httpx) cannot misbehave, httpx
where it can show keep-alive. Timeouts are shortened through `serving.LIMITS` so no test waits
the real 10 s or 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from runscaler import serving
from runscaler.server import serve_http
from tests.fakeoperator import FakeOperator, Outcome
from tests.waiting import eventually


def _limits(monkeypatch: pytest.MonkeyPatch, **changes: float) -> None:
    monkeypatch.setattr(serving, "LIMITS", dataclasses.replace(serving.Limits(), **changes))


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with serve_http(FakeOperator(), listen="127.0.0.1:0", registry=CollectorRegistry()) as u:
        yield u


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _exchange(url: str, data: bytes) -> bytes:
    """Send `data` on a fresh connection; everything the server sends until it closes."""
    reader, writer = await _connect(url)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, body


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("runscaler")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.parametrize(
    "data",
    [
        b"this is not http\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ten\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # HTTP/1.1 requires Host
    ],
    ids=["garbage", "header-without-colon", "bad-content-length", "no-host"],
)
async def test_a_malformed_request_is_answered_400_json_and_closed(
    url: str, data: bytes, server_log: _Records
) -> None:
    raw = await _exchange(url, data)  # returns only once the server closed the connection

    status, headers, body = _parse(raw)
    assert status == 400
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": "malformed HTTP request"}
    assert not [r for r in server_log.records if r.exc_info or r.levelno >= logging.WARNING]


async def test_an_oversized_request_head_is_answered_431_and_closed(
    url: str, server_log: _Records
) -> None:
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    data = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + filler * 70 + b"\r\n"

    raw = await _exchange(url, data)

    status, headers, body = _parse(raw)
    assert status == 431
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": "request head larger than 64 KiB"}
    assert not [r for r in server_log.records if r.exc_info]


async def test_a_head_that_arrives_whole_just_over_the_limit_is_431(url: str) -> None:
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: "
    data = start + b"a" * (64 * 1024 - len(start) + 100) + b"\r\n\r\n"

    status, _, body = _parse(await _exchange(url, data))

    assert (status, json.loads(body)) == (431, {"error": "request head larger than 64 KiB"})


async def test_a_head_just_under_the_limit_is_served(url: str) -> None:
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    data = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + filler * 60

    status, _, body = _parse(await _exchange(url, data + b"\r\n"))

    assert (status, json.loads(body)) == (200, {"status": "ok"})


async def test_a_request_body_over_the_limit_is_413_and_never_reaches_the_handler() -> None:
    view = FakeOperator()
    async with serve_http(view, listen="127.0.0.1:0", registry=CollectorRegistry()) as url:
        head = b"POST /-/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000000\r\n\r\n"
        status, headers, body = _parse(await _exchange(url, head))

    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": "request body larger than 1 MiB"}
    assert view.reloads == []


async def test_a_chunked_body_growing_past_the_limit_is_413(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _limits(monkeypatch, body_bytes=1024)
    view = FakeOperator()
    chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
    data = b"POST /-/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with _serve(view) as url:
        status, _, body = _parse(await _exchange(url, data + chunk * 2 + b"0\r\n\r\n"))

    assert status == 413
    assert json.loads(body) == {"error": "request body larger than 1 KiB"}
    assert view.reloads == []


async def test_a_small_request_body_is_read_and_ignored(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        response = await client.post("/-/reload", content=b"{}")
        again = await client.get("/healthz")  # the body did not corrupt the connection

    assert response.status_code == 200
    assert again.json() == {"status": "ok"}


async def test_expect_100_continue_gets_a_100_then_the_answer(url: str) -> None:
    data = (
        b"POST /-/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await _connect(url)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            interim = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"{}")
            final = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()

    assert interim.startswith(b"HTTP/1.1 100 ")
    status, _, body = _parse(final)
    assert (status, json.loads(body)) == (200, {"result": "applied", "generation": 4})


async def test_two_requests_share_one_kept_alive_connection(url: str) -> None:
    def local_port(response: httpx.Response) -> int:
        stream = response.extensions["network_stream"]
        return int(stream.get_extra_info("client_addr")[1])

    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        first = await client.get("/healthz")
        first_port = local_port(first)
        second = await client.get("/status")
        second_port = local_port(second)

    assert (first.status_code, second.status_code) == (200, 200)
    assert "close" not in first.headers.get("connection", "")
    assert first_port == second_port


async def test_pipelined_requests_are_answered_in_order(url: str) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    two = b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

    raw = await _exchange(url, one + two)

    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"HTTP/1.1 404 Not Found\r\n" in raw
    assert raw.index(b"200 OK") < raw.index(b"404 Not Found")
    assert raw.endswith(b'{"error": "no such endpoint: /nope"}\n')


async def test_head_is_answered_with_the_get_headers_and_no_body(url: str) -> None:
    raw = await _exchange(
        url, b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )

    status, headers, body = _parse(raw)
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert headers["content-length"] == str(len(b'{"status": "ok"}\n'))
    assert body == b""


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("HEAD", "/status", "GET"), ("DELETE", "/healthz", "GET,HEAD"), ("GET", "/-/reload", "POST")],
)
async def test_a_wrong_method_is_405_naming_the_allowed_ones(
    url: str, method: str, path: str, allow: str
) -> None:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        response = await client.request(method, path)

    assert response.status_code == 405
    assert response.headers["allow"] == allow
    if method != "HEAD":
        assert response.json() == {"error": f"{method} is not allowed on {path}"}


async def test_a_query_string_and_percent_encoding_route_like_the_plain_path(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        queried = await client.get("/status?verbose=1")
        encoded = await client.get("/%68ealthz")

    assert queried.status_code == 200
    assert encoded.json() == {"status": "ok"}


class _Broken(FakeOperator):
    def snapshot(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("the status broke")


async def test_a_failing_handler_is_500_json_logged_and_the_server_keeps_serving(
    server_log: _Records,
) -> None:
    async with (
        serve_http(_Broken(), listen="127.0.0.1:0", registry=CollectorRegistry()) as url,
        httpx.AsyncClient(base_url=url, trust_env=False) as client,
    ):
        broken = await client.get("/status")
        healthy = await client.get("/healthz")

    assert broken.status_code == 500
    assert broken.json() == {"error": "internal error: RuntimeError"}
    assert healthy.status_code == 200
    [failed] = [r for r in server_log.records if r.exc_info]
    assert failed.getMessage() == "GET /status failed"


async def test_every_request_is_logged_at_debug(url: str, server_log: _Records) -> None:
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        await client.get("/status?x=1")

    assert "GET /status?x=1 200 from 127.0.0.1" in [r.getMessage() for r in server_log.records]


async def test_a_slow_request_head_does_not_hold_up_other_clients(url: str) -> None:
    slow_reader, slow_writer = await _connect(url)
    slow_writer.write(b"GET /healthz HTTP/1.1\r\nHo")  # and nothing more for now
    await slow_writer.drain()
    try:
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            started = time.monotonic()
            response = await client.get("/healthz")
            took = time.monotonic() - started
    finally:
        slow_writer.write(b"st: 127.0.0.1\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            late = await slow_reader.read()
        slow_writer.close()
        await slow_writer.wait_closed()

    assert response.status_code == 200
    assert took < 1.0
    assert _parse(late)[0] == 200  # the slow one is served too, once it finishes


async def test_a_head_that_trickles_past_the_read_timeout_is_408_and_closed(
    monkeypatch: pytest.MonkeyPatch, server_log: _Records
) -> None:
    _limits(monkeypatch, read_timeout=0.3)
    async with serve_http(
        FakeOperator(), listen="127.0.0.1:0", registry=CollectorRegistry()
    ) as url:
        reader, writer = await _connect(url)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            await writer.drain()
            started = time.monotonic()
            async with asyncio.timeout(5):
                raw = await reader.read()
            took = time.monotonic() - started
        finally:
            writer.close()
            await writer.wait_closed()

    status, headers, body = _parse(raw)
    assert status == 408
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": "request not received within 0.3s"}
    assert 0.2 < took < 3.0
    assert not [r for r in server_log.records if r.exc_info]


async def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _limits(monkeypatch, idle_timeout=0.3)
    async with serve_http(
        FakeOperator(), listen="127.0.0.1:0", registry=CollectorRegistry()
    ) as url:
        reader, writer = await _connect(url)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            async with asyncio.timeout(5):
                await reader.readuntil(b'{"status": "ok"}\n')
                rest = await reader.read()  # EOF: the server hung up, without an answer
        finally:
            writer.close()
            await writer.wait_closed()

    assert rest == b""


async def test_stopping_closes_idle_connections_at_once() -> None:
    served = serve_http(FakeOperator(), listen="127.0.0.1:0", registry=CollectorRegistry())
    url = await served.__aenter__()
    try:
        never_asked = await _connect(url)
        kept_alive = await _connect(url)
        kept_alive[1].write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(5):
            await kept_alive[0].readuntil(b'{"status": "ok"}\n')
    finally:
        started = time.monotonic()
        await served.__aexit__(None, None, None)
        took = time.monotonic() - started

    for reader, writer in (never_asked, kept_alive):
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
    assert took < 1.0  # neither the idle timeout nor the shutdown timeout was waited


class _SlowReload(FakeOperator):
    """A reload that runs until released, recording whether it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def reload(self, *, force: bool = True) -> Outcome:
        self.reloads.append(force)
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.outcome


async def test_a_request_in_flight_at_stop_is_answered_if_it_finishes_in_time() -> None:
    view = _SlowReload()
    served = serve_http(view, listen="127.0.0.1:0", registry=CollectorRegistry())
    url = await served.__aenter__()
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        request = asyncio.create_task(client.post("/-/reload"))
        try:
            await eventually(view.entered.is_set, message="the reload to start")
            stopping = asyncio.create_task(served.__aexit__(None, None, None))
            await eventually(lambda: not _accepts(url), message="the listener to close")
            view.release.set()
            response = await request
        finally:
            view.release.set()
            await asyncio.wait_for(stopping, 5)

    assert response.status_code == 200
    assert response.headers["connection"] == "close"
    assert not view.cancelled


async def test_a_request_still_running_after_the_shutdown_timeout_is_cancelled(
    monkeypatch: pytest.MonkeyPatch, server_log: _Records
) -> None:
    _limits(monkeypatch, shutdown_timeout=0.3)
    view = _SlowReload()
    served = serve_http(view, listen="127.0.0.1:0", registry=CollectorRegistry())
    url = await served.__aenter__()
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        request = asyncio.create_task(client.post("/-/reload"))
        try:
            await eventually(view.entered.is_set, message="the reload to start")
            started = time.monotonic()
            await served.__aexit__(None, None, None)
            took = time.monotonic() - started
            with pytest.raises(httpx.RemoteProtocolError):
                await request
        finally:
            request.cancel()

    assert view.cancelled
    assert 0.25 < took < 2.0
    warnings = [r.getMessage() for r in server_log.records if r.levelno == logging.WARNING]
    assert warnings == [
        "stopping the HTTP server cancelled request(s) still running: POST /-/reload"
        " (waited up to 0.3s)"
    ]


async def test_cancelling_a_stop_that_waits_for_a_request_leaves_nothing() -> None:
    view = _SlowReload()
    bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def operator() -> None:
        async with serve_http(view, listen="127.0.0.1:0", registry=CollectorRegistry()) as url:
            bound.set_result(url)
            await asyncio.Event().wait()  # until cancelled: then the stop waits for the reload

    serving_task = asyncio.create_task(operator())
    url = await bound
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        request = asyncio.create_task(client.post("/-/reload"))
        try:
            await eventually(view.entered.is_set, message="the reload to start")
            serving_task.cancel()  # the stop begins, waiting for the reload in flight
            await eventually(lambda: not _accepts(url), message="the stop to begin")
            serving_task.cancel()  # and is cancelled in turn
            with pytest.raises(asyncio.CancelledError):
                await serving_task
            with pytest.raises(httpx.RemoteProtocolError):
                await request
        finally:
            request.cancel()
            serving_task.cancel()

    assert view.cancelled


async def test_cancelling_serve_http_as_it_starts_leaves_no_listener() -> None:
    for steps in range(4):  # each await point of the start, then once serving
        entered: list[str] = []
        task = asyncio.create_task(_serve_forever(entered))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if entered:
            assert not _accepts(entered[0])


async def _serve_forever(entered: list[str]) -> None:
    async with _serve(FakeOperator()) as url:
        entered.append(url)
        await asyncio.Event().wait()


def _serve(view: FakeOperator) -> contextlib.AbstractAsyncContextManager[str]:
    return serve_http(view, listen="127.0.0.1:0", registry=CollectorRegistry())


def _accepts(url: str) -> bool:
    """Whether something still listens at url (a blocking connect: loopback answers at once)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) == 0
