"""Retries, Retry-After, BOMs, dropped connections and timeouts, from the simulator's faults."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from runscaler.github.client import ScaleSetClient
from runscaler.github.errors import (
    RateLimitedError,
    ServiceError,
    SessionConflictError,
    TransportError,
)
from runscaler.github.models import RunnerScaleSet
from runscaler.github.retrying import RetryPolicy
from runscaler.simulator.server import Simulator
from tests.integration.githubkit import (
    RecordingTransport,
    add_fault,
    fault_hits,
    make_client,
    simulator,
)

SCALE_SETS = r"/_apis/runtime/runnerscalesets$"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with simulator() as running:
        yield running


@pytest.fixture
def wire() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
async def client(sim: Simulator, wire: RecordingTransport) -> AsyncIterator[ScaleSetClient]:
    async with make_client(sim, transport=wire) as scale_sets:
        yield scale_sets


async def test_a_persistent_500_is_tried_exactly_five_times(
    sim: Simulator, client: ScaleSetClient, wire: RecordingTransport
) -> None:
    fault = await add_fault(sim, method="GET", path=SCALE_SETS, times=-1, status=500)
    with pytest.raises(ServiceError) as caught:
        await client.get_scale_set(runner_group_id=1, name="linux")
    assert wire.count("GET", SCALE_SETS) == 5
    assert await fault_hits(sim, fault) == 5
    assert caught.value.status == 500
    assert str(caught.value).startswith("cannot look up scale set 'linux' (GET http://")
    assert str(caught.value).endswith(
        ": 500 Internal Server Error: simulated fault 1: HTTP 500: giving up after 5 attempts; "
        "GitHub is failing; try again later"
    )


async def test_a_501_is_not_retried(
    sim: Simulator, client: ScaleSetClient, wire: RecordingTransport
) -> None:
    await add_fault(sim, method="GET", path=SCALE_SETS, times=-1, status=501)
    with pytest.raises(ServiceError, match="501 Not Implemented"):
        await client.get_scale_set(runner_group_id=1, name="linux")
    assert wire.count("GET", SCALE_SETS) == 1


async def test_retry_after_is_honoured(
    sim: Simulator, client: ScaleSetClient, wire: RecordingTransport
) -> None:
    await client.check_credentials()  # the token exchange is not part of the timing
    await add_fault(sim, method="GET", path=SCALE_SETS, times=1, status=503, retryAfter=1)
    started = time.monotonic()
    assert await client.get_scale_set(runner_group_id=1, name="linux") is None
    elapsed = time.monotonic() - started
    # The policy's own backoff is 10 ms: only the header explains a wait of a second.
    assert 1.0 <= elapsed < 3.0
    assert [s.status for s in wire.matching("GET", SCALE_SETS)] == [503, 200]


async def test_a_persistent_429_is_rate_limited(
    sim: Simulator, client: ScaleSetClient, wire: RecordingTransport
) -> None:
    await add_fault(sim, method="POST", path=SCALE_SETS, times=-1, status=429, retryAfter=0)
    with pytest.raises(RateLimitedError) as caught:
        await client.create_scale_set(RunnerScaleSet(name="linux", runner_group_id=1))
    assert wire.count("POST", SCALE_SETS) == 5
    assert caught.value.status == 429
    assert "429 Too Many Requests" in str(caught.value)


async def test_bodies_with_a_bom_are_read_on_every_endpoint(
    sim: Simulator, client: ScaleSetClient
) -> None:
    fault = await add_fault(sim, path=r"^/(api/v3|_services|_broker)/", times=-1, bom=True)
    scale_set = await client.create_scale_set(RunnerScaleSet(name="linux", runner_group_id=1))
    assert await client.get_scale_set(runner_group_id=1, name="linux") == scale_set
    session = await client.create_session(scale_set.id, owner="host-a")
    try:
        sim.add_jobs(["linux"])
        message = await session.get_message(last_message_id=0, max_capacity=1)
        assert message is not None and len(message.jobs) == 1
        # An error body with a BOM is still classified by its typeName.
        with pytest.raises(SessionConflictError):
            await client.create_session(scale_set.id, owner="host-b")
    finally:
        await session.close()
    assert await fault_hits(sim, fault) >= 7


async def test_a_dropped_connection_is_retried(
    sim: Simulator, client: ScaleSetClient, wire: RecordingTransport
) -> None:
    await add_fault(sim, method="GET", path=SCALE_SETS, times=2, drop=True)
    assert await client.get_scale_set(runner_group_id=1, name="linux") is None
    assert wire.count("GET", SCALE_SETS) == 3


async def test_an_attempt_slower_than_the_timeout_is_retried(
    sim: Simulator, wire: RecordingTransport
) -> None:
    async with make_client(sim, transport=wire, timeout=0.3) as client:
        await client.check_credentials()
        await add_fault(sim, method="GET", path=SCALE_SETS, times=1, delay=1.0)
        assert await client.get_scale_set(runner_group_id=1, name="linux") is None
    assert wire.count("GET", SCALE_SETS) == 2


async def test_an_unreachable_service_is_a_transport_error_after_all_attempts() -> None:
    async with simulator() as sim:
        url = sim.url
    # The simulator is stopped: its port refuses connections now.
    from runscaler.github.auth import TokenCredentials
    from runscaler.github.errors import TransportError

    wire = RecordingTransport()
    client = ScaleSetClient(
        config_url=f"{url}/acme",
        credentials=lambda: TokenCredentials("ghp_unused-token-value"),
        retry=RetryPolicy(attempts=3, wait_min=0.01, wait_max=0.01),
        transport=wire,
    )
    async with client:
        with pytest.raises(TransportError) as caught:
            await client.check_credentials()
    assert len(wire.sent) == 3
    assert str(caught.value).startswith(
        f"cannot get a runner registration token for acme (POST {url}/api/v3/orgs/acme/"
    )
    assert str(caught.value).endswith(
        "giving up after 3 attempts; check the network, the proxy settings and github.url"
    )


@pytest.mark.parametrize("status", [307, 308])
async def test_a_307_or_308_is_followed_with_the_same_method_and_body(
    sim: Simulator, client: ScaleSetClient, wire: RecordingTransport, status: int
) -> None:
    fault = await add_fault(sim, method="POST", path=SCALE_SETS, status=status)
    created = await client.create_scale_set(
        RunnerScaleSet(name="moved", runner_group_id=1, labels=("moved", "x64"))
    )
    assert (created.name, created.labels) == ("moved", ("moved", "x64"))
    assert await fault_hits(sim, fault) == 1
    first, again = wire.matching("POST", SCALE_SETS)
    assert again.body == first.body and b'"moved"' in again.body
    assert again.headers["authorization"] == first.headers["authorization"]  # same origin


async def test_redirects_stop_after_ten_hops(
    sim: Simulator, client: ScaleSetClient, wire: RecordingTransport
) -> None:
    fault = await add_fault(sim, method="GET", path=SCALE_SETS, times=-1, status=302)
    with pytest.raises(TransportError, match="redirects"):
        await client.get_scale_set(runner_group_id=1, name="linux")
    assert await fault_hits(sim, fault) == 11  # the request and ten redirects, not retried
