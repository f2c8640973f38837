"""A guard every integration test gets: it fails a test that leaks asyncio tasks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

# Tasks of our own that finish on their own shortly after a test (a cancelled operation's
# undo, a closing stream) get this long before they count as leaked.
SETTLE = 2.0


def _ours(task: asyncio.Task[object]) -> bool:
    """aiohttp's per-connection handlers of an in-process server (the simulator) are the
    server library's: a server's cleanup cancels them, and they may finish after it returns."""
    code = getattr(task.get_coro(), "cr_code", None)
    return code is None or "aiohttp" not in code.co_filename


@pytest.fixture(autouse=True)
async def _no_leaked_tasks() -> AsyncIterator[None]:
    """Every task a test started is done when its fixtures are torn down. Set up before
    (so torn down after) the test's other fixtures; costs a set difference per test."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    deadline = time.monotonic() + SETTLE
    while True:
        leaked = [
            t
            for t in asyncio.all_tasks() - before
            if t is not current and not t.done() and _ours(t)
        ]
        if not leaked or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.02)
    names = sorted(t.get_name() for t in leaked)
    for task in leaked:
        task.cancel()
    assert not leaked, f"the test left these asyncio tasks running: {names}"
