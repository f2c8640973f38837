"""A swarm node fails: its runners are reported lost, new runners go to the node that is left.

The failure is real: node 2's engine is stopped (its heartbeats stop; the manager marks it down
after a few missed ones). The node is brought back at the end so the session's swarm is whole
for later tests, and what ran there must be gone once it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from runscaler.backends.base import LABEL_FLEET, RunnerExit
from runscaler.backends.swarm import SwarmBackend
from tests.integration.dockerkit import unique
from tests.integration.swarmkit import SwarmCluster, pinned
from tests.integration.test_swarm_backend import spec, template
from tests.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def failing_fleet(swarm_cluster: SwarmCluster) -> Iterator[str]:
    name = unique("swf")
    try:
        yield name
    finally:
        swarm_cluster.start_worker()
        swarm_cluster.remove_services(f"{LABEL_FLEET}={name}")


@pytest.fixture
async def backend(swarm_cluster: SwarmCluster, failing_fleet: str) -> AsyncIterator[SwarmBackend]:
    backend = SwarmBackend(fleet=failing_fleet, host=swarm_cluster.host, poll_interval=0.5)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.mark.timeout(180)
async def test_runners_on_a_failed_node_are_lost_within_a_minute_and_new_ones_run_elsewhere(
    backend: SwarmBackend, swarm_cluster: SwarmCluster, failing_fleet: str
) -> None:
    on_worker = template(
        swarm_cluster.image, constraints=[pinned(swarm_cluster, swarm_cluster.worker_id)]
    )
    doomed = ["linux-00000d01", "linux-00000d02"]
    await asyncio.gather(*(backend.start(spec(name, on_worker)) for name in doomed))
    snapshot = await backend.snapshot()
    worker = snapshot.nodes[swarm_cluster.worker_id]
    manager = snapshot.nodes[swarm_cluster.manager_id]
    assert {snapshot.runners[n].node for n in doomed} == {worker}

    exits = backend.exits({})
    try:
        swarm_cluster.stop_worker()
        stopped = time.monotonic()
        lost: list[RunnerExit] = []
        while len(lost) < len(doomed):
            lost.append(await asyncio.wait_for(exits.__anext__(), 60))
        took = time.monotonic() - stopped
    finally:
        await exits.aclose()

    assert took < 60
    assert sorted(e.name for e in lost) == doomed
    assert all(e.lost for e in lost)
    assert all(e.detail == f"node {worker} is down; its task was running" for e in lost)
    owned = {r.name: r for r in await backend.list_owned({})}
    assert all(owned[n].lost and not owned[n].running for n in doomed)

    # Demand is served by the node that is left.
    await backend.start(spec("linux-00000a11", template(swarm_cluster.image)))
    assert (await backend.snapshot()).runners["linux-00000a11"].node == manager

    # The manager lets us remove a lost runner's service while its node is away.
    for name in doomed:
        await backend.remove(name)
    assert [r.name for r in await backend.list_owned({})] == ["linux-00000a11"]

    swarm_cluster.start_worker()
    await eventually(
        lambda: not swarm_cluster.worker_containers(f"{LABEL_FLEET}={failing_fleet}"),
        timeout=60,
        interval=0.5,
        message="the lost runners' containers to be gone once node 2 is back",
    )
    await backend.remove("linux-00000a11")
