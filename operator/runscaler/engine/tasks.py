"""Stopping tasks without swallowing the stopper's own cancellation, and waiting with a limit.

`task.cancel()` followed by `with suppress(CancelledError): await task` has a trap: if the
task doing the stopping is itself cancelled while it waits, the suppress eats that
cancellation too and a shutdown hangs. `stop_task` cannot confuse the two. `wait_event` waits
for an event with a limit using `asyncio.timeout`, which (unlike 3.11's `wait_for`) never
loses a cancellation that races with the event being set. `Flag` is an `asyncio.Event` for
objects every scale set holds several of.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Flag:
    """`asyncio.Event`'s `set`, `clear`, `is_set` and `wait`, whose waiters list exists only
    while someone waits: an Event makes a deque at once (0.86 KiB), and each scale set's
    listener and scaler hold five of them for their whole life."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        for waiter in self._waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            waiters.remove(waiter)
            if not waiters and self._waiters is waiters:
                self._waiters = None


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has finished; its own outcome is ignored.

    `asyncio.wait` never raises the task's exception or cancellation, so the only
    CancelledError that can leave here is the caller's own."""
    if task is None:
        return
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: a failure while stopping is not worth a warning


async def wait_event(event: asyncio.Event | Flag, limit: float) -> bool:
    """Wait for `event` at most `limit` seconds; True when it was set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, limit)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
