"""Faults on demand: make the next N matching requests fail the way networks and GitHub do.

`POST /_sim/faults {"method", "path", "times", "status", "retryAfter", "delay", "bom",
"drop", "empty", "after"}` schedules one. The middleware here applies the live faults matching
a request (method and a regex searched in the path) before the real handler runs: wait
`delay`, then drop the connection, or answer `status` (with `Retry-After`; a 3xx redirects to
the same URL), or answer 200 with an empty body (`empty`, as the live broker sometimes does),
or let the handler answer and put a UTF-8 BOM before its body. With `after` the handler runs
first and its answer is then lost (dropped, or replaced by `status`): the request took effect
but the client never heard, which is how a retried request meets its own first attempt.
`times` -1 (or null) means every matching request. Every matching fault applies and counts
the request (delays add up; the first status wins), so an "always a BOM" fault composes with a
one-off 503. The control API (`/_sim/...`) is never
faulted, so a test can always clear faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
_FIELDS = {
    "method",
    "path",
    "times",
    "status",
    "retryAfter",
    "delay",
    "bom",
    "drop",
    "empty",
    "after",
}


@dataclass
class Fault:
    id: int
    method: str | None
    path: re.Pattern[str]
    times: int  # remaining; -1 = unlimited
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    bom: bool = False
    drop: bool = False
    empty: bool = False
    after: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times == 0:
            return False
        if self.method is not None and self.method != method.upper():
            return False
        return self.path.search(path) is not None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path.pattern,
            "remaining": self.times,
            "hits": self.hits,
            "status": self.status,
            "retryAfter": self.retry_after,
            "delay": self.delay,
            "bom": self.bom,
            "drop": self.drop,
            "empty": self.empty,
            "after": self.after,
        }


def parse_fault(spec: object, *, fault_id: int) -> Fault:
    """A fault from its JSON form; ValueError with a one-line reason when it is malformed."""
    if not isinstance(spec, dict):
        raise ValueError("a fault is a JSON object")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
    try:
        path = re.compile(str(spec.get("path", "")))
    except re.error as exc:
        raise ValueError(f"path is not a valid regex: {exc}") from None
    times = spec.get("times", 1)
    times = -1 if times is None else _number(times, "times", integer=True)
    if times < -1 or times == 0:
        raise ValueError("times must be a positive count, or -1 for every request")
    status = spec.get("status")
    if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
        raise ValueError("status must be an HTTP status code")
    method = spec.get("method")
    retry_after = spec.get("retryAfter")
    fault = Fault(
        id=fault_id,
        method=str(method).upper() if method else None,
        path=path,
        times=int(times),
        status=status,
        retry_after=None if retry_after is None else _number(retry_after, "retryAfter"),
        delay=_number(spec.get("delay", 0), "delay"),
        bom=bool(spec.get("bom", False)),
        drop=bool(spec.get("drop", False)),
        empty=bool(spec.get("empty", False)),
        after=bool(spec.get("after", False)),
    )
    if not (fault.status or fault.drop or fault.bom or fault.delay or fault.empty):
        raise ValueError("a fault needs at least one of status, drop, bom, empty or delay")
    if fault.after and not (fault.status or fault.drop):
        raise ValueError("after needs status or drop: the answer that replaces the real one")
    return fault


def _number(value: object, name: str, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if integer and not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if value < 0 and not (integer and value == -1):
        raise ValueError(f"{name} must not be negative")
    return value


class Faults:
    """The scheduled faults, in the order they were added."""

    def __init__(self) -> None:
        self.items: list[Fault] = []
        self._next_id = 0

    def add(self, spec: object) -> Fault:
        self._next_id += 1
        fault = parse_fault(spec, fault_id=self._next_id)
        self.items.append(fault)
        return fault

    def clear(self) -> None:
        self.items.clear()

    def take(self, method: str, path: str) -> list[Fault]:
        """Every live fault matching this request, each with one use counted."""
        taken = []
        for fault in self.items:
            if fault.matches(method, path):
                fault.hits += 1
                if fault.times > 0:
                    fault.times -= 1
                taken.append(fault)
        return taken


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fault_middleware(faults: Faults) -> Any:
    @web.middleware
    async def apply_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        taken = faults.take(request.method, request.path)
        if not taken:
            return await handler(request)
        log.info("faults %s on %s %s", [f.id for f in taken], request.method, request.path)
        delay = sum(f.delay for f in taken)
        if delay:
            await asyncio.sleep(delay)
        if any(f.after for f in taken):
            with contextlib.suppress(web.HTTPException):
                await handler(request)  # it takes effect; its answer is lost below
        if any(f.drop for f in taken):
            if request.transport is not None:
                request.transport.abort()
            # Nothing reaches the client: the connection is gone before the response is written.
            return web.Response(status=204)
        failing = next((f for f in taken if f.status is not None), None)
        if failing is not None:
            response: web.StreamResponse = _fault_response(failing, request)
        elif any(f.empty for f in taken):
            response = web.Response(status=200)
        else:
            response = await handler(request)
        if any(f.bom for f in taken) and isinstance(response, web.Response) and response.body:
            body = response.body
            if isinstance(body, bytes | bytearray):
                response.body = BOM + bytes(body)
        return response

    return apply_faults


def _fault_response(fault: Fault, request: web.Request) -> web.Response:
    assert fault.status is not None
    headers = {}
    if 300 <= fault.status < 400:
        headers["Location"] = str(request.url)
    if fault.retry_after is not None:
        seconds = fault.retry_after
        headers["Retry-After"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
    body = {
        "typeName": "GitHub.Services.WebApi.VssServiceException, GitHub.Services.WebApi",
        "message": f"simulated fault {fault.id}: HTTP {fault.status}",
    }
    return web.Response(
        status=fault.status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )
