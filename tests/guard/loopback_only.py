"""Refuse every network connection that is not to loopback or a Unix socket.

Installed in the test process by `tests/conftest.py` and in every Python subprocess a test
starts (through `sitecustomize.py` next to this file, when `RUNSCALER_TEST_LOOPBACK_ONLY=1`).
A refused attempt raises at once and is recorded, so a test that swallows the error (a client
that retries) still fails: the conftest fixture checks the record after every test.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import traceback
from typing import Any

violations: list[str] = []
_installed = False


def _loopback_host(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%")[0].lower()
    if name in ("localhost", "") or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def _refuse(what: str) -> None:
    message = f"non-loopback network access refused by the test guard: {what}"
    violations.append(message)
    log = os.environ.get("RUNSCALER_TEST_GUARD_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(f"pid {os.getpid()}: {message}\n")
            handle.write("".join(traceback.format_stack(limit=12)))
    print(message, file=sys.stderr)


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if not _loopback_host(host):
                _refuse(f"connect to {address!r}")
                raise ConnectionRefusedError(f"test guard: {address!r} is not loopback")

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return original_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _loopback_host(host):
            _refuse(f"resolve {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: {host!r} is not loopback")
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
