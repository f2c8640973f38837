"""`Flag` behaves as the `asyncio.Event` it replaces, and keeps no waiter once none waits."""

from __future__ import annotations

import asyncio

from runscaler.engine.tasks import Flag, stop_task, wait_event
from tests.waiting import eventually


async def test_set_wakes_every_waiter_and_a_set_flag_answers_at_once() -> None:
    flag = Flag()
    waiting = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await eventually(lambda: flag._waiters is not None and len(flag._waiters) == 3)
    flag.set()
    flag.clear()  # cleared before they ran: each was woken all the same, as with an Event
    assert await asyncio.gather(*waiting) == [True, True, True]
    assert flag._waiters is None and not flag.is_set()
    flag.set()
    assert flag.is_set() and await flag.wait()


async def test_a_cancelled_or_timed_out_wait_leaves_nothing_behind() -> None:
    flag = Flag()
    waiting = asyncio.ensure_future(flag.wait())
    await eventually(lambda: flag._waiters is not None)
    await stop_task(waiting)
    assert waiting.cancelled() and flag._waiters is None
    assert await wait_event(flag, 0.01) is False
    assert flag._waiters is None
    flag.set()
    assert await wait_event(flag, 0.01) is True
