"""The adaptive start limiter: its window arithmetic, and that it admits, queues and cancels as
the semaphore it replaces did."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runscaler import cli
from runscaler.backends.base import BackendError
from runscaler.engine.running import Operator, RunSettings
from runscaler.engine.startlimit import INITIAL_WINDOW, MAX_WINDOW, StartLimiter
from runscaler.errors import EXIT_USER_ERROR
from tests.waiting import eventually


async def run_round(limiter: StartLimiter, count: int, error: BaseException | None = None) -> None:
    """`count` starts at once, all finishing only once every one is admitted or queued."""
    gate = asyncio.Event()

    async def one() -> None:
        async with limiter:
            await gate.wait()
            if error is not None:
                raise error

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await eventually(lambda: limiter.in_flight == min(count, limiter.window))
    gate.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert limiter.in_flight == 0


async def test_uncapped_starts_with_the_initial_window_and_admits_a_burst_at_once() -> None:
    limiter = StartLimiter()
    assert limiter.window == INITIAL_WINDOW
    gate = asyncio.Event()
    entered = 0

    async def one() -> None:
        nonlocal entered
        async with limiter:
            entered += 1
            await gate.wait()

    tasks = [asyncio.create_task(one()) for _ in range(20)]
    await eventually(lambda: entered == 20)
    gate.set()
    await asyncio.gather(*tasks)


async def test_successes_in_a_full_window_double_it_per_round_up_to_the_cap() -> None:
    limiter = StartLimiter(cap=40, initial=4)
    assert limiter.window == 40  # a cap is where a capped limiter starts
    limiter = StartLimiter(initial=4)
    await run_round(limiter, 4)
    assert limiter.window == 8
    await run_round(limiter, 8)
    assert limiter.window == 16
    capped = StartLimiter(cap=6)
    await run_round(capped, 20)
    assert capped.window == 6


async def test_an_unused_window_does_not_grow() -> None:
    limiter = StartLimiter(initial=8)
    for _ in range(5):
        await run_round(limiter, 3)
    assert limiter.window == 8


async def test_engine_errors_halve_once_per_round_then_growth_is_linear() -> None:
    limiter = StartLimiter(initial=16)
    await run_round(limiter, 16, BackendError("engine: too many requests"))
    assert limiter.window == 8  # sixteen failures of one round halve it once
    await run_round(limiter, 8, TimeoutError())
    assert limiter.window == 4
    # Past the first overload, a full round of successes adds one, not doubles.
    await run_round(limiter, 4)
    assert limiter.window == 4  # 4 + 4 * (1/4..) is just under 5
    await run_round(limiter, 5)
    assert limiter.window == 5


async def test_never_below_one_and_other_errors_teach_nothing() -> None:
    limiter = StartLimiter(initial=2)
    for _ in range(6):
        await run_round(limiter, 2, BackendError("refused"))
    assert limiter.window == 1
    await run_round(limiter, 1)
    assert limiter.window == 2  # one more per round, which at 1 is one per start
    other = StartLimiter(initial=4)
    await run_round(other, 4, RuntimeError("a bug, not the engine"))
    assert other.window == 4


async def test_growth_stops_at_the_ceiling_without_a_cap() -> None:
    limiter = StartLimiter(initial=MAX_WINDOW)
    await run_round(limiter, MAX_WINDOW)
    assert limiter.window == MAX_WINDOW


async def test_a_queued_start_cancelled_leaves_no_slot_taken() -> None:
    limiter = StartLimiter(cap=1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await eventually(lambda: len(limiter._queue) == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not limiter._queue
    limiter.release()
    assert limiter.in_flight == 0
    async with limiter:  # still usable
        assert limiter.in_flight == 1
    assert limiter.in_flight == 0


async def test_a_start_cancelled_as_it_is_admitted_gives_its_slot_to_the_next() -> None:
    limiter = StartLimiter(cap=1)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await eventually(lambda: len(limiter._queue) == 2)
    limiter.release()  # admits `first` ...
    first.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
    assert limiter.in_flight == 1
    limiter.release()
    assert limiter.in_flight == 0


async def test_a_cancelled_start_inside_teaches_nothing() -> None:
    limiter = StartLimiter(initial=2)
    inside = asyncio.Event()

    async def one() -> None:
        async with limiter:
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(one())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (limiter.window, limiter.in_flight) == (2, 0)


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        StartLimiter(cap=0)


def test_the_operator_has_one_fleet_wide_limiter_capped_only_by_the_flag(tmp_path: Path) -> None:
    default = Operator(RunSettings(manifest=tmp_path / "fleet.yaml"))
    assert isinstance(default._limiter, StartLimiter)
    assert (default._limiter.cap, default._limiter.window) == (None, INITIAL_WINDOW)
    capped = Operator(RunSettings(manifest=tmp_path / "fleet.yaml", start_concurrency=5))
    assert (capped._limiter.cap, capped._limiter.window) == (5, 5)


def test_a_start_concurrency_below_one_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.run(["run", str(tmp_path / "fleet.yaml"), "--start-concurrency", "0"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR
    assert err.splitlines() == [err] and "--start-concurrency must be at least 1" in err
