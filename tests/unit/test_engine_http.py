"""The engine client's connection pool against a loopback server that answers as told.

The real engine is in the integration tests; these make the cases it will not make on demand:
an idle connection the server closed, an answer cut off, one that never comes, a cancelled
request, and a streamed body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from runscaler.backends.engine_http import EngineHTTP, Target
from tests.waiting import eventually


@dataclass
class Engine:
    """Counts connections and requests; `answer` returns the bytes for each request line."""

    answer: Callable[[str], bytes]
    connections: int = 0
    requests: list[str] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                while (await reader.readline()).strip():
                    pass  # headers; the client sends no body in these tests
                self.requests.append(line.decode().split()[1])
                reply = self.answer(self.requests[-1])
                if not reply:
                    continue  # never answer
                writer.write(reply)
                await writer.drain()
                if b"Connection: close" in reply:
                    break
        writer.close()


def ok(body: bytes = b"{}") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@contextlib.asynccontextmanager
async def engine(answer: Callable[[str], bytes]) -> AsyncIterator[tuple[Engine, EngineHTTP]]:
    fake = Engine(answer)
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = EngineHTTP(Target(host="127.0.0.1", port=port), connect_timeout=5)
    try:
        yield fake, client
    finally:
        await client.close()
        for writer in fake.writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def get(client: EngineHTTP, target: str, *, read_timeout: float | None = 5) -> bytes:
    async with client.request("GET", target, body=None, read_timeout=read_timeout) as response:
        return await response.aread()


async def test_requests_one_after_another_share_one_connection() -> None:
    async with engine(lambda _: ok(b"[1]")) as (fake, client):
        assert [await get(client, "/a"), await get(client, "/b")] == [b"[1]", b"[1]"]
        assert fake.connections == 1


async def test_requests_at_once_each_get_a_connection() -> None:
    async with engine(lambda _: ok()) as (fake, client):
        await asyncio.gather(*(get(client, f"/{i}") for i in range(5)))
        assert sorted(fake.requests) == [f"/{i}" for i in range(5)]
        assert fake.connections >= 2


async def test_an_idle_connection_the_engine_closed_is_not_reused() -> None:
    async with engine(lambda _: ok()) as (fake, client):
        await get(client, "/first")
        for writer in fake.writers:
            writer.close()
        await eventually(lambda: all(c.reader.at_eof() for c in client._idle), message="EOF")
        assert await get(client, "/second") == b"{}"
        assert fake.connections == 2


async def test_an_answer_cut_off_is_a_connection_error_and_the_connection_is_dropped() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\npartial"
    async with engine(lambda target: cut if target == "/cut" else ok()) as (_, client):
        with pytest.raises(ConnectionError):
            await get(client, "/cut")
        assert client._idle == []
        assert await get(client, "/next") == b"{}"


async def test_an_answer_that_never_comes_times_out() -> None:
    async with engine(lambda _: b"") as (_, client):
        with pytest.raises(TimeoutError):
            await get(client, "/slow", read_timeout=0.2)
        assert client._idle == []


async def test_a_cancelled_request_closes_its_connection() -> None:
    async with engine(lambda target: b"" if target == "/held" else ok()) as (fake, client):
        held = asyncio.create_task(get(client, "/held", read_timeout=None))
        await eventually(lambda: fake.requests == ["/held"], message="the request sent")
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        assert client._idle == []
        assert await get(client, "/after") == b"{}"
        assert fake.connections == 2


async def test_a_chunked_stream_comes_as_lines_and_the_connection_is_kept() -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (b'{"a": 1}\n{"b"', b": 2}\n", b"end"))
    streamed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    async with engine(lambda _: streamed) as (fake, client):
        async with client.request("GET", "/events", body=None, read_timeout=5) as response:
            lines = [line async for line in response.aiter_lines()]
        assert lines == ['{"a": 1}', '{"b": 2}', "end"]
        await get(client, "/again")
        assert fake.connections == 1


async def test_a_closed_client_refuses_new_requests_and_keeps_no_connection() -> None:
    async with engine(lambda _: ok()) as (_, client):
        await get(client, "/one")
        await client.close()
        assert client._idle == []
        with pytest.raises(ConnectionError, match="closed"):
            await get(client, "/two")
