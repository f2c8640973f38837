"""The Engine API client's own parsing: log frames, error answers, image references."""

from __future__ import annotations

import asyncio
import json

import pytest

from runscaler.backends.docker_api import DockerAPI, _message, demultiplex
from runscaler.backends.docker_pull import has_tag_or_digest


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_a_multiplexed_log_keeps_stdout_and_stderr_in_order() -> None:
    raw = frame(1, b"out one\n") + frame(2, b"err\n") + frame(1, b"out two\n")
    assert demultiplex(raw) == b"out one\nerr\nout two\n"


def test_a_tty_log_is_raw_bytes_and_comes_back_whole() -> None:
    assert demultiplex(b"plain output\n") == b"plain output\n"
    assert demultiplex(b"") == b""


def test_a_truncated_last_frame_keeps_what_arrived() -> None:
    raw = frame(1, b"whole\n") + bytes([2, 0, 0, 0, 0, 0, 0, 9]) + b"part"
    assert demultiplex(raw) == b"whole\npart"


def test_an_error_answer_gives_the_engines_message() -> None:
    assert _message(json.dumps({"message": "No such container: x"}).encode()) == (
        "No such container: x"
    )
    assert _message(b"page not found\n") == "page not found"


@pytest.mark.parametrize(
    ("image", "tagged"),
    [
        ("busybox", False),
        ("busybox:1.36", True),
        ("127.0.0.1:5000/runner", False),
        ("127.0.0.1:5000/runner:2", True),
        ("runner@sha256:" + "0" * 64, True),
    ],
)
def test_a_reference_has_a_tag_only_after_its_last_slash(image: str, tagged: bool) -> None:
    assert has_tag_or_digest(image) is tagged


async def test_the_environments_proxy_is_never_used_for_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator started with HTTP_PROXY set (for GitHub) must still reach a tcp:// engine
    directly: the request goes to the engine's port, not the proxy's."""
    seen: list[str] = []

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        seen.append(line.decode().split()[1])
        while (await reader.readline()).strip():
            pass
        body = b'{"Version": "27.0"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(engine, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: nothing there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api = DockerAPI(url=f"http://127.0.0.1:{port}", ssl_context=None)
    try:
        assert await api.query_json("version") == {"Version": "27.0"}
    finally:
        await api.close()
        server.close()
        await server.wait_closed()
    assert seen == ["/version"]  # a proxied request would name the whole URL
