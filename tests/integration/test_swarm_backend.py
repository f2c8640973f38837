"""The Swarm backend on a real two-node swarm: runners placed, found, exited, removed.

Every runner is a busybox service pulled from the local registry by whichever node Swarm picks;
`swarm_fleet` gives each test its own fleet and removes whatever carries its label afterwards.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from runscaler.backends.base import (
    JIT_CONFIG_ENV,
    LABEL_FLEET,
    LABEL_RUNNER,
    LABEL_SCALE_SET,
    BackendError,
    RunnerExit,
    RunnerNotFound,
    RunnerSpec,
)
from runscaler.backends.swarm import SwarmBackend, leftover_services, service_name
from runscaler.backends.swarm_hygiene import run_on_every_node
from runscaler.logs import REDACTED
from runscaler.manifest.models import SwarmTemplate
from tests.integration.dockerkit import unique
from tests.integration.swarmkit import SwarmCluster, pinned
from tests.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def template(image: str, **fields: Any) -> SwarmTemplate:
    return SwarmTemplate.model_validate(
        {"image": image, "user": "0", "network": "host", "command": ["sleep", "300"], **fields}
    )


def spec(name: str, tpl: SwarmTemplate, *, scale_set: str = "linux") -> RunnerSpec:
    return RunnerSpec(
        name=name,
        jit_config=f"JIT-{secrets.token_hex(16)}",
        labels={LABEL_SCALE_SET: scale_set, LABEL_RUNNER: name},
        template=tpl,
    )


@pytest.fixture
def swarm_fleet(swarm_cluster: SwarmCluster) -> Iterator[str]:
    name = unique("sw")
    try:
        yield name
    finally:
        swarm_cluster.remove_services(f"{LABEL_FLEET}={name}")


@pytest.fixture
async def backend(swarm_cluster: SwarmCluster, swarm_fleet: str) -> AsyncIterator[SwarmBackend]:
    backend = SwarmBackend(fleet=swarm_fleet, host=swarm_cluster.host, poll_interval=0.3)
    try:
        yield backend
    finally:
        await backend.close()


def inspect_service(cluster: SwarmCluster, name: str) -> dict[str, Any]:
    out = cluster.manager.docker("service", "inspect", name).stdout
    data: list[dict[str, Any]] = json.loads(out)
    return data[0]


async def test_runners_are_job_services_spread_over_both_nodes_and_removed_with_their_containers(
    backend: SwarmBackend, swarm_cluster: SwarmCluster, swarm_fleet: str
) -> None:
    names = [f"linux-{i:08x}" for i in range(4)]
    tpl = template(swarm_cluster.image)

    await asyncio.gather(*(backend.start(spec(name, tpl)) for name in names))

    owned = {r.name: r for r in await backend.list_owned({LABEL_SCALE_SET: "linux"})}
    assert set(owned) == set(names)
    assert all(r.running and not r.lost for r in owned.values())
    assert len({r.node for r in owned.values()}) == 2, owned  # both nodes took runners
    service = inspect_service(swarm_cluster, service_name(swarm_fleet, names[0]))
    assert service["Spec"]["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    assert service["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
    assert service["Spec"]["Labels"][LABEL_RUNNER] == names[0]

    await asyncio.gather(*(backend.remove(name) for name in names))

    assert await backend.list_owned({}) == []
    await eventually(
        lambda: not swarm_cluster.containers(f"{LABEL_FLEET}={swarm_fleet}"),
        timeout=45,
        interval=0.5,
        message="the runners' containers to be gone from both nodes",
    )
    with pytest.raises(RunnerNotFound):
        await backend.remove(names[0])


async def test_a_constraint_pins_every_runner_to_one_node(
    backend: SwarmBackend, swarm_cluster: SwarmCluster
) -> None:
    tpl = template(
        swarm_cluster.image, constraints=[pinned(swarm_cluster, swarm_cluster.worker_id)]
    )
    names = [f"pinned-{i:08x}" for i in range(3)]

    await asyncio.gather(*(backend.start(spec(n, tpl)) for n in names))

    snapshot = await backend.snapshot()
    nodes = {snapshot.runners[n].node for n in names}
    worker = snapshot.nodes[swarm_cluster.worker_id]
    assert nodes == {worker}
    await asyncio.gather(*(backend.remove(name) for name in names))


async def test_a_runner_no_node_can_take_fails_to_start_with_swarms_reason_and_leaves_nothing(
    backend: SwarmBackend, swarm_cluster: SwarmCluster, swarm_fleet: str
) -> None:
    tpl = template(swarm_cluster.image, constraints=["node.labels.pool==nowhere"])

    with pytest.raises(BackendError, match=r"pending: no suitable node \(scheduling constraints"):
        await backend.start(spec("stuck-00000001", tpl))

    assert swarm_cluster.services(f"{LABEL_FLEET}={swarm_fleet}") == []


async def test_an_image_no_node_can_pull_is_a_start_failure_and_leaves_nothing(
    backend: SwarmBackend, swarm_cluster: SwarmCluster, swarm_fleet: str
) -> None:
    registry = swarm_cluster.image.split("/", 1)[0]
    tpl = template(f"{registry}/runscaler-test/absent:1")

    with pytest.raises(BackendError, match="runner nopull-00000001: task rejected"):
        await backend.start(spec("nopull-00000001", tpl))

    assert swarm_cluster.services(f"{LABEL_FLEET}={swarm_fleet}") == []


async def test_an_exit_is_reported_once_with_its_code_and_the_node_in_its_detail(
    backend: SwarmBackend, swarm_cluster: SwarmCluster
) -> None:
    tpl = template(swarm_cluster.image, command=["sh", "-c", "echo done; exit 3"])
    exits = backend.exits({LABEL_SCALE_SET: "linux"})
    try:
        await backend.start(spec("linux-0000e417", tpl))
        event = await asyncio.wait_for(exits.__anext__(), 30)
    finally:
        await exits.aclose()

    assert isinstance(event, RunnerExit)
    assert (event.name, event.exit_code, event.lost) == ("linux-0000e417", 3, False)
    assert event.detail is not None and event.detail.startswith("failed on node ")
    owned = await backend.list_owned({})
    assert [(r.name, r.running, r.exit_code) for r in owned] == [("linux-0000e417", False, 3)]
    assert [left.runner for left in await leftover_services(backend)] == ["linux-0000e417"]
    await backend.remove("linux-0000e417")


async def test_the_jit_config_is_in_the_task_environment_only_and_hidden_in_log_tails(
    backend: SwarmBackend, swarm_cluster: SwarmCluster, swarm_fleet: str
) -> None:
    tpl = template(
        swarm_cluster.image, command=["sh", "-c", f'echo "cfg=${JIT_CONFIG_ENV}"; sleep 300']
    )
    runner = spec("linux-000010a5", tpl)
    await backend.start(runner)

    service = inspect_service(swarm_cluster, service_name(swarm_fleet, runner.name))
    container = service["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert f"{JIT_CONFIG_ENV}={runner.jit_config}" in container["Env"]
    assert runner.jit_config not in json.dumps(service["Spec"]["Labels"])
    assert runner.jit_config not in json.dumps(container.get("Command", []))
    lines = await eventually(
        lambda: backend.logs_tail(runner.name), timeout=20, message="the runner's output"
    )
    assert any(line.endswith(f"cfg={REDACTED}") for line in lines), lines
    assert not any(runner.jit_config in line for line in lines)
    await backend.remove(runner.name)


@pytest.mark.parametrize("point", ["before", "creating", "waiting"])
async def test_a_cancelled_start_strands_nothing(
    backend: SwarmBackend, swarm_cluster: SwarmCluster, swarm_fleet: str, point: str
) -> None:
    """Cancelled before the create call, during it, and while waiting for the task to run:
    the runner has not begun (it cannot hold a job), so nothing of it is left."""
    label = f"{LABEL_FLEET}={swarm_fleet}"
    runner = spec(f"cancel-{point}", template(swarm_cluster.image))
    task = asyncio.create_task(backend.start(runner))
    if point == "creating":
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    elif point == "waiting":
        await eventually(lambda: swarm_cluster.services(label), message="the service")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert swarm_cluster.services(label) == []
    assert await backend.list_owned({}) == []


@pytest.mark.parametrize("point", ["lookup", "stopping"])
async def test_a_cancelled_remove_leaves_a_runner_that_lists_as_ended_and_can_be_removed(
    backend: SwarmBackend, swarm_cluster: SwarmCluster, swarm_fleet: str, point: str
) -> None:
    """Cancelled at its first call, or while it waits for the task to stop: the service is
    either intact (still running) or told to stop (listed as not running, so adoption and
    `doctor --fix` remove it); removing again finishes the job."""
    label = f"{LABEL_FLEET}={swarm_fleet}"
    name = f"unrm-{point}"
    await backend.start(spec(name, template(swarm_cluster.image)))
    task = asyncio.create_task(backend.remove(name))
    if point == "lookup":
        await asyncio.sleep(0)
    else:

        def told_to_stop() -> bool:
            out = swarm_cluster.manager.docker(
                "service",
                "inspect",
                "--format",
                "{{json .Spec.Mode}}",
                service_name(swarm_fleet, name),
            ).stdout
            return '"TotalCompletions":0' in out

        await eventually(told_to_stop, timeout=10, interval=0.02, message="the stop update")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    [owned] = await backend.list_owned({})
    assert owned.name == name
    if point == "stopping":
        assert owned.running is False
    await backend.remove(name)
    assert swarm_cluster.services(label) == []
    assert await backend.list_owned({}) == []


async def test_a_hygiene_job_runs_once_on_every_node_and_is_removed(
    backend: SwarmBackend, swarm_cluster: SwarmCluster, swarm_fleet: str
) -> None:
    results = await run_on_every_node(
        backend, image=swarm_cluster.image, script="echo swept; exit 0", timeout=60
    )

    snapshot = await backend.snapshot()
    assert sorted(r.node for r in results) == sorted(snapshot.nodes.values())
    assert all((r.state, r.exit_code) == ("complete", 0) for r in results)
    assert swarm_cluster.services(f"{LABEL_FLEET}={swarm_fleet}") == []
