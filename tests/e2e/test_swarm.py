"""The real operator on a real two-node swarm: runners spread, pinned, lost with a node, gone.

`runscaler run` manages a `backend: swarm` scale set through the swarm's manager; the runner is
the simulator's stand-in runner image, pushed to the local registry so each node pulls it. Jobs
come from the simulator; node 2's engine is stopped mid-job to fail that node.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import E2E
from tests.integration.dockerkit import LocalRegistry
from tests.integration.swarmkit import SwarmCluster, pinned
from tests.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def swarm_runner_image(runner_image: str, local_registry: LocalRegistry) -> str:
    return local_registry.push(runner_image, "runscaler-test/swarm-sim-runner:1")


@pytest.fixture
def swarm_e2e(e2e: E2E, swarm_cluster: SwarmCluster) -> Iterator[E2E]:
    try:
        yield e2e
    finally:
        swarm_cluster.start_worker()
        swarm_cluster.remove_services(f"dev.runscaler.fleet={e2e.fleet}")


def swarm_set(cluster: SwarmCluster, image: str, **fields: Any) -> dict[str, Any]:
    swarm = {
        "image": image,
        "host": cluster.host,
        "network": "host",
        "engineSocket": cluster.engine_socket,
        **fields.pop("swarm", {}),
    }
    return {"name": "linux", "backend": "swarm", "maxRunners": 4, "swarm": swarm, **fields}


def runner_containers(cluster: SwarmCluster, fleet: str) -> set[str]:
    """The fleet's containers on either node, but for its per-node hygiene jobs' (exited)."""
    ours = set(cluster.containers(f"dev.runscaler.fleet={fleet}"))
    return ours - set(cluster.containers("dev.runscaler.role=hygiene"))


@pytest.mark.timeout(240)
async def test_jobs_run_on_both_nodes_and_a_failed_node_loses_its_runners_not_the_fleet(
    swarm_e2e: E2E, swarm_cluster: SwarmCluster, swarm_runner_image: str
) -> None:
    e2e = swarm_e2e
    label = f"dev.runscaler.fleet={e2e.fleet}"
    operator = e2e.start(e2e.write(e2e.manifest([swarm_set(swarm_cluster, swarm_runner_image)])))
    await operator.wait_ready()

    jobs = e2e.sim.add_jobs(["linux"], count=4, duration=30)
    await eventually(
        lambda: all(j["state"] == "running" for j in e2e.jobs(jobs)),
        timeout=60,
        interval=0.3,
        message="four jobs running",
    )
    placed = swarm_cluster.runner_tasks(label)
    assert {node for node, _ in placed.values()} == {
        swarm_cluster.manager_id,
        swarm_cluster.worker_id,
    }, placed
    on_worker = sorted(r for r, (node, _) in placed.items() if node == swarm_cluster.worker_id)

    swarm_cluster.stop_worker()
    stopped = time.monotonic()

    def removed() -> bool:
        return not set(on_worker) & set(swarm_cluster.runner_tasks(label))

    await eventually(removed, timeout=60, interval=0.5, message="the lost runners' services gone")
    assert time.monotonic() - stopped < 60
    log = operator.log_text()
    for name in on_worker:
        assert f"runner {name} is lost: node " in log
        assert "is down; its task was running" in log
    # Status and the log say which job each lost runner took with it, and on which node.
    lost_jobs = {j["runner"]: str(uuid.UUID(int=j["id"])) for j in e2e.jobs(jobs)}
    shown = {r["name"]: r for r in (await operator.scale_set("linux"))["runners"]}
    for name in on_worker:
        assert shown[name]["state"] == "lost", shown[name]
        assert swarm_cluster.worker_id[:12] in (shown[name]["node"] or ""), shown[name]
        assert shown[name]["jobId"] == lost_jobs[name]
        assert f"was lost with job {lost_jobs[name]}" in log
    assert "runscaler_node_runners{" in await operator.metrics()

    # New work runs on the node that is left.
    more = e2e.sim.add_jobs(["linux"], count=1, duration=1)
    await eventually(
        lambda: e2e.jobs(more)[0]["state"] == "done", timeout=60, interval=0.3, message="new job"
    )
    runner = e2e.jobs(more)[0]["runner"]
    assert runner not in on_worker

    # The jobs on node 1 finish as usual; then shutting down leaves nothing behind.
    survivors = [j["id"] for j in e2e.jobs(jobs) if j["runner"] not in on_worker]
    assert len(survivors) == len(jobs) - len(on_worker)
    await eventually(
        lambda: all(j["state"] == "done" for j in e2e.jobs(survivors)),
        timeout=60,
        interval=0.5,
        message="the jobs on node 1 done",
    )
    finished = {j["runner"] for j in e2e.jobs(survivors)}
    await eventually(
        lambda: not finished & set(swarm_cluster.runner_tasks(label)),
        timeout=30,
        interval=0.3,
        message="the finished runners' services removed",
    )
    swarm_cluster.start_worker()
    operator.signal(signal.SIGTERM)  # the idle runners left go with it
    assert await operator.wait(timeout=90) == 0
    assert swarm_cluster.services(label) == []
    # Nothing is left: the finished runners ran on node 1, whose engine the operator reaches
    # (Docker 20.10 keeps a finished job's container on its node after the service is gone;
    # on the manager the backend removes it), and node 2's lost ones went when it rejoined.
    await eventually(
        lambda: not runner_containers(swarm_cluster, e2e.fleet),
        timeout=60,
        interval=0.5,
        message="no runner container left on either node",
    )


@pytest.mark.timeout(180)
async def test_a_constraint_pins_the_runners_and_the_node_clean_up_to_one_node(
    swarm_e2e: E2E, swarm_cluster: SwarmCluster, swarm_runner_image: str, hygiene_image: str
) -> None:
    e2e = swarm_e2e
    label = f"dev.runscaler.fleet={e2e.fleet}"
    # A BuildKit builder a dind job left on each node (named as buildx names them).
    builder = f"buildx_buildkit_e2e{e2e.fleet.replace('-', '')}0"
    engines = swarm_cluster.engines().values()
    for engine in engines:
        engine.docker("run", "-d", "--name", builder, swarm_cluster.image, "sleep", "300")
    pin = {
        "constraints": [pinned(swarm_cluster, swarm_cluster.worker_id)],
        "dind": True,
        "hygiene": {"image": hygiene_image, "interval": "2s", "buildxTtl": "1s"},
    }
    manifest = e2e.manifest([swarm_set(swarm_cluster, swarm_runner_image, minRunners=2, swarm=pin)])
    try:
        operator = e2e.start(e2e.write(manifest))
        await operator.wait_ready()

        def two_running() -> dict[str, tuple[str, str]] | None:
            tasks = swarm_cluster.runner_tasks(label)
            running = {r: t for r, t in tasks.items() if t[1] == "running"}
            return running if len(running) == 2 else None

        running = await eventually(two_running, timeout=60, interval=0.3, message="two runners")
        assert {node for node, _ in running.values()} == {swarm_cluster.worker_id}

        # The operator cleans the node its runners may use, and only that one.
        def builder_on(engine: Any) -> bool:
            names = engine.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
            return builder in names

        await eventually(
            lambda: not builder_on(swarm_cluster.worker),
            timeout=60,
            interval=0.5,
            message="the worker's builder removed by the operator's per-node clean-up",
        )
        assert builder_on(swarm_cluster.manager)

        operator.signal(signal.SIGTERM)
        assert await operator.wait(timeout=60) == 0
        assert swarm_cluster.services(label) == []
        assert "swarm hygiene on node" not in operator.log_text()  # no node failed it
    finally:
        for engine in engines:
            engine.docker("rm", "-fv", builder, check=False)


@pytest.mark.timeout(180)
async def test_after_kill_9_a_restart_adopts_the_busy_swarm_runners_instead_of_duplicating(
    swarm_e2e: E2E, swarm_cluster: SwarmCluster, swarm_runner_image: str
) -> None:
    e2e = swarm_e2e
    label = f"dev.runscaler.fleet={e2e.fleet}"
    path = e2e.write(e2e.manifest([swarm_set(swarm_cluster, swarm_runner_image)]))
    first = e2e.start(path)
    await first.wait_ready()
    ids = e2e.sim.add_jobs(["linux"], count=2, duration=8)
    await eventually(
        lambda: all(j["state"] == "running" for j in e2e.jobs(ids)),
        timeout=60,
        interval=0.3,
        message="two jobs running",
    )
    busy = sorted(swarm_cluster.runner_tasks(label))
    assert len(busy) == 2

    first.signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    second = e2e.start(path)
    await second.wait_ready()

    # The jobs finish on the adopted runners; no third runner was started meanwhile.
    await eventually(
        lambda: all(j["state"] == "done" for j in e2e.jobs(ids)),
        timeout=60,
        interval=0.3,
        message="both jobs done",
    )
    assert sorted(j["runner"] for j in e2e.jobs(ids)) == busy
    assert "adopted 2 running runners" in second.log_text()
    await eventually(
        lambda: not swarm_cluster.services(label),
        timeout=30,
        interval=0.3,
        message="the finished runners' services removed",
    )
    second.signal(signal.SIGTERM)
    assert await second.wait(timeout=60) == 0
