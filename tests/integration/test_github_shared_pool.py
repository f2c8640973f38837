"""Scale set clients that reach GitHub the same way share one connection pool.

A fleet has a client per scale set; with 100 of them, one pool (and its proxy transports)
each was memory for nothing. Sharing must not change what a client's user sees: closing one
client fails its own calls (even those on their way) as before, leaves the others working,
and the pool closes with its last user.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import AsyncIterator

import pytest

from runscaler.github.client import ScaleSetClient
from runscaler.github.errors import ClientClosedError
from runscaler.simulator.server import Simulator
from tests.integration.githubkit import add_fault, fault_hits, make_client, simulator
from tests.waiting import eventually

SCALE_SETS = "runnerscalesets"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with simulator() as running:
        yield running


def pool(client: ScaleSetClient) -> object:
    return client._sender.http


async def lookup(client: ScaleSetClient) -> None:
    assert await client.get_scale_set(runner_group_id=1, name="nothing-here") is None


async def test_clients_of_one_host_share_a_pool_that_closes_with_its_last_user(
    sim: Simulator,
) -> None:
    first, second = make_client(sim), make_client(sim, org="other-org")
    other_timeout = make_client(sim, timeout=5.0)
    try:
        assert pool(first) is pool(second)
        assert pool(other_timeout) is not pool(first)
        await asyncio.gather(lookup(first), lookup(second))
        await first.aclose()
        with pytest.raises(ClientClosedError, match="client was closed"):
            await lookup(first)
        await lookup(second)  # the shared pool is still open for it
        assert not pool(second).is_closed  # type: ignore[attr-defined]
    finally:
        await second.aclose()
        await other_timeout.aclose()
    assert pool(second).is_closed  # type: ignore[attr-defined]
    fresh = make_client(sim)
    async with fresh:
        await lookup(fresh)  # a new pool once the old one closed


async def test_closing_a_client_fails_its_call_on_the_way_and_not_the_others(
    sim: Simulator,
) -> None:
    fault = await add_fault(sim, method="GET", path=SCALE_SETS, times=1, delay=30)
    stopping, staying = make_client(sim), make_client(sim)
    try:
        slow = asyncio.create_task(lookup(stopping))
        await eventually(lambda: fault_hits(sim, fault), message="the slow call arrived")
        await stopping.aclose()
        with pytest.raises(ClientClosedError, match="client was closed"):
            await asyncio.wait_for(slow, 5)
        await lookup(staying)
    finally:
        await stopping.aclose()
        await staying.aclose()


async def test_a_caller_cancelled_mid_call_is_cancelled_not_closed(sim: Simulator) -> None:
    fault = await add_fault(sim, method="GET", path=SCALE_SETS, times=1, delay=30)
    async with make_client(sim) as client:
        call = asyncio.create_task(lookup(client))
        await eventually(lambda: fault_hits(sim, fault), message="the call arrived")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not client._sender._exchanges  # nothing left running under the client
        await lookup(client)


class _ImportRecorder(importlib.abc.MetaPathFinder):
    """Sees every import that is not already answered from sys.modules."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        del path, target
        self.names.append(fullname)


async def test_a_request_looks_no_module_up_on_disk(sim: Simulator) -> None:
    # httpcore imports sniffio on every request; a failed import used to search sys.path
    # each time (0.2 ms a request, a sixth of the CPU of stopping 100 scale sets).
    async with make_client(sim) as client:
        await lookup(client)  # the first request imports what requests need
        recorder = _ImportRecorder()
        sys.meta_path.insert(0, recorder)
        try:
            await asyncio.gather(*(lookup(client) for _ in range(5)))
        finally:
            sys.meta_path.remove(recorder)
    assert recorder.names == []
