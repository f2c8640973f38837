"""Per-node hygiene on a real two-node swarm: what each node's engine keeps and loses.

Leftovers are made on both nodes' engines directly (exited containers of the fleet, a running
one, someone else's, buildx builder look-alikes named as buildx names them, with their `_state`
volumes), then the operator's global-mode job runs and each engine is asked what is left.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from runscaler.backends.base import LABEL_FLEET
from runscaler.backends.swarm import SwarmBackend
from runscaler.backends.swarm_hygiene import (
    LABEL_ROLE,
    NodeSweep,
    housekeeping,
    node_sweeps,
    sweep_nodes,
)
from runscaler.doctoring.placed import Placed, remove_placed, service_leftovers
from runscaler.manifest.models import SwarmTemplate
from tests.integration.dockerkit import Dockerd, unique
from tests.integration.swarmkit import SwarmCluster, pinned
from tests.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class NodeLeftovers:
    """Containers and volumes made on every node for one test, removed after it."""

    def __init__(self, cluster: SwarmCluster, fleet: str) -> None:
        self.cluster = cluster
        self.fleet = fleet
        self.tag = secrets.token_hex(3)
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def container(
        self, engine: Dockerd, name: str, *, running: bool, ours: bool, volume: str | None = None
    ) -> str:
        args = ["--label", f"{LABEL_FLEET}={self.fleet}"] if ours else []
        if volume is not None:
            args += ["-v", f"{volume}:/var/lib/buildkit"]
            self.volumes.append(volume)
        self.containers.append(name)
        command = ["sleep", "300"] if running else ["true"]
        engine.docker("run", "-d", "--name", name, *args, self.cluster.image, *command)
        if not running:
            engine.docker("wait", name)
        return name

    def volume(self, engine: Dockerd, name: str) -> str:
        self.volumes.append(name)
        engine.docker("volume", "create", name)
        return name

    def make(self, engine: Dockerd) -> None:
        """On one node: every kind of thing the sweep must remove or keep."""
        t = self.tag
        self.container(engine, f"exited-runner-{t}", running=False, ours=True)
        self.container(engine, f"live-runner-{t}", running=True, ours=True)
        self.container(engine, f"someone-elses-{t}", running=False, ours=False)
        stopped = f"buildx_buildkit_stopped{t}0"
        young = f"buildx_buildkit_young{t}0"
        self.container(engine, stopped, running=False, ours=False, volume=f"{stopped}_state")
        self.container(engine, young, running=True, ours=False, volume=f"{young}_state")
        self.volume(engine, f"buildx_buildkit_gone{t}0_state")
        self.volume(engine, f"my-data-{t}")

    def left(self, engine: Dockerd) -> set[str]:
        """What of ours is still on `engine`, with the tag stripped."""
        names = engine.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        volumes = engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
        return {n.replace(self.tag, "") for n in {*names, *volumes} if self.tag in n}

    def remove(self) -> None:
        for engine in self.cluster.engines().values():
            if engine.process.poll() is not None:
                continue
            engine.docker("rm", "-fv", *self.containers, check=False)
            engine.docker("volume", "rm", "-f", *self.volumes, check=False)
            ours = engine.docker(
                "ps", "-aq", "--filter", f"label={LABEL_FLEET}={self.fleet}"
            ).stdout.split()
            if ours:
                engine.docker("rm", "-fv", *ours, check=False)


EVERYTHING = {
    "exited-runner-",
    "live-runner-",
    "someone-elses-",
    "buildx_buildkit_stopped0",
    "buildx_buildkit_stopped0_state",
    "buildx_buildkit_young0",
    "buildx_buildkit_young0_state",
    "buildx_buildkit_gone0_state",
    "my-data-",
}
BUILDERS_SWEPT = EVERYTHING - {
    "exited-runner-",
    "buildx_buildkit_stopped0",
    "buildx_buildkit_stopped0_state",
    "buildx_buildkit_gone0_state",
}


@pytest.fixture
def fleet(swarm_cluster: SwarmCluster) -> Iterator[str]:
    name = unique("hy")
    try:
        yield name
    finally:
        swarm_cluster.remove_services(f"{LABEL_FLEET}={name}")


@pytest.fixture
def leftovers(swarm_cluster: SwarmCluster, fleet: str) -> Iterator[NodeLeftovers]:
    made = NodeLeftovers(swarm_cluster, fleet)
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
async def backend(swarm_cluster: SwarmCluster, fleet: str) -> AsyncIterator[SwarmBackend]:
    made = SwarmBackend(fleet=fleet, host=swarm_cluster.host, poll_interval=0.3)
    try:
        yield made
    finally:
        await made.close()


def sweep(cluster: SwarmCluster, image: str, **fields: Any) -> NodeSweep:
    values: dict[str, Any] = {
        "constraints": (),
        "image": image,
        "engine_socket": cluster.engine_socket,
        "interval": 3600.0,
        "buildx_ttl": 3600.0,
    }
    return NodeSweep(**{**values, **fields})


def hygiene_services(cluster: SwarmCluster, fleet: str) -> list[str]:
    return [
        s
        for s in cluster.services(f"{LABEL_ROLE}=hygiene")
        if s in cluster.services(f"{LABEL_FLEET}={fleet}")
    ]


async def test_every_node_loses_the_fleets_exited_containers_and_builder_leftovers(
    backend: SwarmBackend,
    swarm_cluster: SwarmCluster,
    hygiene_image: str,
    leftovers: NodeLeftovers,
    fleet: str,
) -> None:
    engines = swarm_cluster.engines()
    for engine in engines.values():
        leftovers.make(engine)

    results = await sweep_nodes(backend, sweep(swarm_cluster, hygiene_image), prune_after="0s")

    snapshot = await backend.snapshot()
    assert sorted(r.node for r in results) == sorted(snapshot.nodes.values())
    assert {(r.state, r.exit_code) for r in results} == {("complete", 0)}
    for engine in engines.values():
        assert leftovers.left(engine) == BUILDERS_SWEPT
    assert hygiene_services(swarm_cluster, fleet) == []

    # A running builder older than the TTL goes too, with its volume (ages are whole seconds:
    # it is older than 1 s after a job or two).
    aged = sweep(swarm_cluster, hygiene_image, buildx_ttl=1.0)

    async def young_builder_swept() -> bool:
        await sweep_nodes(backend, aged, prune_after="0s")
        return all("buildx_buildkit_young0" not in leftovers.left(e) for e in engines.values())

    await eventually(young_builder_swept, timeout=60, message="the aged builder to go")
    for engine in engines.values():
        assert leftovers.left(engine) == {"live-runner-", "someone-elses-", "my-data-"}


async def test_without_dind_builders_stay_and_a_constraint_keeps_the_job_to_its_nodes(
    backend: SwarmBackend,
    swarm_cluster: SwarmCluster,
    hygiene_image: str,
    leftovers: NodeLeftovers,
) -> None:
    for engine in swarm_cluster.engines().values():
        leftovers.make(engine)
    only_worker = sweep(
        swarm_cluster,
        hygiene_image,
        constraints=(pinned(swarm_cluster, swarm_cluster.worker_id),),
        buildx_ttl=None,
    )

    results = await sweep_nodes(backend, only_worker, prune_after="0s")

    assert [(r.state, r.exit_code) for r in results] == [("complete", 0)]
    assert leftovers.left(swarm_cluster.worker) == EVERYTHING - {"exited-runner-"}
    assert leftovers.left(swarm_cluster.manager) == EVERYTHING


async def test_an_image_without_the_docker_cli_is_reported_for_each_node(
    backend: SwarmBackend,
    swarm_cluster: SwarmCluster,
    leftovers: NodeLeftovers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    leftovers.make(swarm_cluster.worker)
    caplog.set_level(logging.WARNING, logger="runscaler.backends.swarm_hygiene")

    results = await sweep_nodes(backend, sweep(swarm_cluster, swarm_cluster.image))

    assert {r.exit_code for r in results} == {127} and len(results) == 2
    lines = [r.getMessage() for r in caplog.records]
    for node in (r.node for r in results):
        assert (
            f"swarm hygiene on node {node} failed (exit code 127): image "
            f"{swarm_cluster.image} has no docker CLI (set swarm.hygiene.image)"
        ) in lines
    assert leftovers.left(swarm_cluster.worker) == EVERYTHING


async def test_the_loop_sweeps_with_the_templates_in_force_and_stops_cleanly(
    backend: SwarmBackend,
    swarm_cluster: SwarmCluster,
    hygiene_image: str,
    leftovers: NodeLeftovers,
    fleet: str,
) -> None:
    template = SwarmTemplate.model_validate(
        {
            "image": swarm_cluster.image,
            "engineSocket": swarm_cluster.engine_socket,
            "hygiene": {"image": hygiene_image, "interval": "300ms"},
        }
    )
    templates: list[object] = [template]
    loop = asyncio.create_task(housekeeping(backend, lambda: templates, tick=0.1, prune_after="0s"))
    try:
        name = leftovers.container(
            swarm_cluster.worker, f"exited-runner-{leftovers.tag}", running=False, ours=True
        )
        assert name.replace(leftovers.tag, "") in leftovers.left(swarm_cluster.worker)
        await eventually(
            lambda: "exited-runner-" not in leftovers.left(swarm_cluster.worker),
            timeout=60,
            message="the loop to sweep the worker",
        )
        # Cancelled while a job runs (the operator stopping), it leaves no job behind.
        await eventually(
            lambda: bool(hygiene_services(swarm_cluster, fleet)),
            timeout=30,
            interval=0.05,
            message="a job under way",
        )
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert hygiene_services(swarm_cluster, fleet) == []
    assert node_sweeps(templates)[0].buildx_ttl is None  # no dind: builders are not its business


class GatedDocker:
    """The engine client, with the k-th await point of the job's calls blocked once."""

    def __init__(self, real: Any, k: int) -> None:
        self._real = real
        self.k = k
        self.count = 0
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.where = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def _point(self, call: str, when: str) -> None:
        if self.count == self.k and not self.reached.is_set():
            self.where = f"{when} {call}"
            self.reached.set()
            # Released once the job is cancelled: a call in flight then completes, the way the
            # manager answers a request it already received.
            await self.release.wait()
        self.count += 1

    async def query_json(self, path: str, **kwargs: Any) -> Any:
        call = "create" if path == "services/create" else kwargs.get("method", "GET")
        watched = call in ("create", "DELETE") or (path == "tasks" and self.count < 4)
        if watched:
            await self._point(call, "before")
        result = await self._real.query_json(path, **kwargs)
        if watched:
            await self._point(call, "after")
        return result


async def test_a_job_cancelled_at_each_await_point_leaves_no_service(
    backend: SwarmBackend,
    swarm_cluster: SwarmCluster,
    hygiene_image: str,
    fleet: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = backend.api()
    parked: list[str] = []
    for k in range(8):
        gated = GatedDocker(real, k)
        monkeypatch.setattr(backend, "api", lambda g=gated: g)
        job = asyncio.create_task(
            sweep_nodes(backend, sweep(swarm_cluster, hygiene_image), prune_after="0s")
        )
        reached = asyncio.ensure_future(gated.reached.wait())
        done, _ = await asyncio.wait([job, reached], return_when=asyncio.FIRST_COMPLETED)
        reached.cancel()
        await asyncio.gather(reached, return_exceptions=True)
        if job in done:
            break  # every await point was tried
        parked.append(gated.where)
        job.cancel()
        gated.release.set()
        await asyncio.gather(job, return_exceptions=True)
        assert job.cancelled(), f"cancelled {gated.where}: {job}"
        assert hygiene_services(swarm_cluster, fleet) == [], f"cancelled {gated.where}"
    assert parked == [
        "before create",
        "after create",
        "before GET",
        "after GET",
        "before DELETE",
        "after DELETE",
    ]


async def test_doctor_lists_a_job_a_killed_operator_left_and_fix_removes_it(
    backend: SwarmBackend, swarm_cluster: SwarmCluster, fleet: str
) -> None:
    # What an operator killed mid-run leaves: its job's service, ended on every node.
    swarm_cluster.manager.docker(
        "service", "create", "--detach", "--mode", "global-job",
        "--name", f"runscaler-{fleet}-hygiene-abcdef",
        "--label", f"{LABEL_FLEET}={fleet}", "--label", f"{LABEL_ROLE}=hygiene",
        swarm_cluster.image, "true",
    )  # fmt: skip
    notes: list[str] = []
    swarms = {swarm_cluster.host: backend}

    assert await service_leftovers(fleet, swarms, notes=notes) == []  # a job may be under way
    await eventually(
        # The CLI gives whole seconds: 2 of them are more than 1 s.
        lambda: time.time() - created_at(swarm_cluster, fleet) > 2,
        message="a second to pass",
    )
    [leftover] = await service_leftovers(fleet, swarms, notes=notes, hygiene_age=1)

    assert (leftover.kind, leftover.name, leftover.runner) == (
        "swarm hygiene job",
        f"runscaler-{fleet}-hygiene-abcdef",
        "",
    )
    assert await remove_placed(leftover, Placed(swarms=swarms)) == "removed"
    assert hygiene_services(swarm_cluster, fleet) == [] and notes == []
    assert await remove_placed(leftover, Placed(swarms=swarms)) == "already gone"


def created_at(cluster: SwarmCluster, fleet: str) -> float:
    [service] = hygiene_services(cluster, fleet)
    stamp = cluster.manager.docker("service", "inspect", "-f", "{{.CreatedAt.Unix}}", service)
    return float(stamp.stdout.strip())
