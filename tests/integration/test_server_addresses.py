"""The server's address rules by table: `--listen` parsing and who may use the `/-/` endpoints.

Tests may only use loopback, so a real non-loopback peer cannot connect here; the peer check
is a pure function, tested by table, and the HTTP tests show the server applies it.
"""

from __future__ import annotations

import pytest

from runscaler.errors import ConfigurationError
from runscaler.server import base_url, is_local_request, is_loopback_peer, parse_listen


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8080", ("::1", 8080)),
        (" 127.0.0.1:1 ", ("127.0.0.1", 1)),
    ],
)
def test_listen_addresses_that_parse(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize(
    "listen",
    ["8080", ":8080", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "::1:8080", "[::1]"],
)
def test_listen_addresses_that_do_not_parse_say_how_to_write_one(listen: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_listen(listen)

    assert str(caught.value) == (
        f"invalid --listen {listen!r}: use HOST:PORT, like 127.0.0.1:8080 or [::1]:8080"
    )


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [("127.0.0.1", 8080, "http://127.0.0.1:8080"), ("::1", 9, "http://[::1]:9")],
)
def test_base_url_brackets_ipv6(host: str, port: int, url: str) -> None:
    assert base_url(host, port) == url


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.10.0.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("203.0.113.7", False),
        ("::ffff:203.0.113.7", False),
        ("2001:db8::1", False),
        ("fe80::1%eth0", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_loopback_peers(remote: str | None, loopback: bool) -> None:
    assert is_loopback_peer(remote) is loopback


@pytest.mark.parametrize(
    ("remote", "host", "headers", "local"),
    [
        ("127.0.0.1", "127.0.0.1:8080", [], True),
        ("127.0.0.1", "localhost:8080", [], True),
        ("::1", "[::1]:8080", [], True),
        ("127.0.0.1", None, [], True),
        ("203.0.113.7", "127.0.0.1:8080", [], False),
        ("127.0.0.1", "attacker.example:8080", [], False),
        ("127.0.0.1", "127.0.0.1.attacker.example", [], False),
        ("127.0.0.1", "127.0.0.1:8080", ["X-Forwarded-For"], False),
        ("127.0.0.1", "127.0.0.1:8080", ["x-real-ip"], False),
        ("127.0.0.1", "127.0.0.1:8080", ["forwarded"], False),
        ("127.0.0.1", "127.0.0.1:8080", ["Accept", "User-Agent"], True),
    ],
)
def test_local_requests(remote: str, host: str | None, headers: list[str], local: bool) -> None:
    assert is_local_request(remote=remote, host_header=host, header_names=headers) is local
