"""Stopping tasks without swallowing the stopper's own cancellation, and waiting with a limit.

`task.cancel()` followed by `with suppress(CancelledError): await task` has a trap: if the
task doing the stopping is itself cancelled while it waits, the suppress eats that
cancellation too and a shutdown hangs. `stop_task` cannot confuse the two. `wait_event` waits
for an event with a limit using `asyncio.timeout`, which (unlike 3.11's `wait_for`) never
loses a cancellation that races with the event being set.
"""

from __future__ import annotations

import asyncio
from typing import Any


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


async def wait_event(event: asyncio.Event, limit: float) -> bool:
    """Wait for `event` at most `limit` seconds; True when it was set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, limit)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
