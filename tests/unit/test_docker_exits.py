"""A scale set's subscription to runner exits: nothing is lost to a cancelled wait."""

from __future__ import annotations

import asyncio

import pytest

from runscaler.backends.base import BackendUnavailable, RunnerExit
from runscaler.backends.docker_api import DockerAPI
from runscaler.backends.docker_events import _CLOSED, ExitSubscription, ExitWatch
from tests.waiting import eventually


def _subscription() -> ExitSubscription:
    def no_engine() -> DockerAPI:
        raise AssertionError("the subscription alone never reaches the engine")

    watch = ExitWatch(docker=no_engine, host="unix:///nowhere", fleet="acme")
    return ExitSubscription(watch, {"dev.runscaler.fleet": "acme"})


async def test_exits_arrive_in_order_and_survive_a_cancelled_wait() -> None:
    subscription = _subscription()
    waiting = asyncio.ensure_future(subscription.__anext__())
    await eventually(lambda: subscription._waiters, message="waiting")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    first, second = RunnerExit("r-1", 0, 1.0), RunnerExit("r-2", 1, 2.0)
    subscription.put(first)
    subscription.put(second)
    assert [await subscription.__anext__(), await subscription.__anext__()] == [first, second]
    later = asyncio.ensure_future(subscription.__anext__())
    await eventually(lambda: subscription._waiters, message="waiting")
    subscription.put(BackendUnavailable("the engine stopped"))
    with pytest.raises(BackendUnavailable, match="engine stopped"):
        await later
    with pytest.raises(StopAsyncIteration):
        await subscription.__anext__()


async def test_a_closed_stream_ends_every_waiting_iteration() -> None:
    subscription = _subscription()
    waiting = asyncio.ensure_future(subscription.__anext__())
    await eventually(lambda: subscription._waiters, message="waiting")
    subscription.put(_CLOSED)
    with pytest.raises(StopAsyncIteration):
        await waiting
    subscription.put(RunnerExit("r-3", 0, 3.0))  # after the end: dropped
    with pytest.raises(StopAsyncIteration):
        await subscription.__anext__()
