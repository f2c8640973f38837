"""Runners as Docker Swarm services: the `Backend` protocol on one swarm, through one manager.

A scale set routes jobs and a JIT config is not tied to a host, so spreading runners over many
machines is only a placement problem, and Swarm (the engine's own clustering) already solves it:
constraints, spread preferences, reservations, node failure. Each runner is one replicated-job
service (`swarm_spec`); Swarm places its task and we record the node. Task states come from one
shared listing loop (`swarm_watch`), because the manager publishes no task events. A runner
whose node goes down is reported `lost`. Removing a service first sets its job to zero
completions: on Moby before 24 deleting a job service leaves its container running
(moby/moby#44312), the zero-completion update stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_RUNNER,
    LABEL_SCALE_SET_KEY,
    BackendError,
    OwnedRunner,
    RunnerNotFound,
    RunnerSpec,
)
from runscaler.backends.docker_api import DockerAPI, EngineError, json_filters
from runscaler.backends.docker_client import (
    DockerTLSPaths,
    LazyClient,
    default_host,
    default_tls,
    engine_calls,
    engine_message,
    parse_host,
)
from runscaler.backends.swarm_spec import runner_service, service_name, swarm_template
from runscaler.backends.swarm_tasks import (
    ENDED_STATES,
    NO_EXIT_CODE,
    Phase,
    RunnerTask,
    Snapshot,
    epoch,
    get_path,
    read_tasks,
)
from runscaler.backends.swarm_watch import POLL_INTERVAL, SwarmExits, TaskWatch
from runscaler.logs import REDACTED, secrets

__all__ = ["Leftover", "SwarmBackend", "leftover_services", "service_name"]

log = logging.getLogger(__name__)

# How long a task may take to run (placement, the pull on its node, container start).
START_TIMEOUT = 600.0
LOGS_TIMEOUT = 15.0
# Removing waits this long at most for the task to stop (its grace period is one second).
STOP_TIMEOUT = 20.0
STOP_POLL = 0.2


class SwarmBackend:
    """Runs one fleet's runners on one Docker Swarm, talking to one of its managers.

    `host` defaults like the docker CLI's (`$DOCKER_HOST`, else the local socket); it must be a
    manager. `poll_interval` is how often task states are listed while anyone watches."""

    def __init__(
        self,
        *,
        fleet: str,
        host: str | None = None,
        tls: DockerTLSPaths | None = None,
        poll_interval: float = POLL_INTERVAL,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.fleet = fleet
        self.host = host or default_host()
        self._tls = tls if tls is not None or host is not None else default_tls(self.host)
        self._endpoint = parse_host(self.host, tls=self._tls)
        self._client = LazyClient(self._endpoint, self._tls)
        self._watch = TaskWatch(self._snapshot, interval=poll_interval)
        self._start_timeout = start_timeout
        self._jit_configs: dict[str, str] = {}
        self._nodes: dict[str, str] = {}  # runner -> the node its task was placed on
        self._manager_checked = False
        self._own_node: str | None = None

    def api(self) -> DockerAPI:
        return self._client.get()

    async def close(self) -> None:
        await self._watch.close()
        await self._client.close()

    # -- Backend ---------------------------------------------------------------------------

    async def check(self, template: object) -> str:
        swarm = swarm_template(template)
        nodes = await self._manager_nodes()
        ready = [n for n in nodes if _node_state(n) == "ready"]
        summary = f"Docker Swarm via manager {self.host}: {len(ready)}/{len(nodes)} nodes ready"
        image = swarm.image
        with engine_calls(self.host, f"cannot look up image {image}"):
            try:
                info = await self.api().query_json(f"distribution/{image}/json")
            except EngineError as exc:
                raise BackendError(
                    f"image {image} cannot be pulled from its registry ({engine_message(exc)}); "
                    "every node pulls it when a runner lands there"
                ) from exc
        digest = info.get("Descriptor", {}).get("digest") if isinstance(info, dict) else None
        return f"{summary}; image {image} pullable ({digest or 'no digest'})"

    async def prepare(self, template: object) -> None:
        swarm_template(template)
        if not self._manager_checked:
            await self._manager_nodes()
            self._manager_checked = True

    async def start(self, spec: RunnerSpec) -> None:
        body = runner_service(spec, fleet=self.fleet)
        name = body["Name"]
        secrets.add(spec.jit_config)
        self._jit_configs[spec.name] = spec.jit_config
        log.debug(
            "creating service %s from %s", name, body["TaskTemplate"]["ContainerSpec"]["Image"]
        )
        # Until start() returns, the runner has at most just begun to boot (it cannot hold a
        # job yet): a failure or a cancellation removes the service, as the Docker backend
        # removes a container whose start call was interrupted.
        try:
            with engine_calls(self.host, f"cannot create service {name}"):
                await self.api().query_json("services/create", method="POST", body=body)
            await asyncio.wait_for(self._until_running(spec.name), self._start_timeout)
        except TimeoutError:
            await self._discard(spec.name)
            raise BackendError(
                f"runner {spec.name}: its task did not run within {self._start_timeout:.0f}s "
                f"(service {name}; see `docker service ps {name}`)"
            ) from None
        except BaseException:
            await asyncio.shield(self._discard(spec.name))
            raise

    def node_of(self, name: str) -> str | None:
        """The node Swarm placed the runner on, once its start returned."""
        return self._nodes.get(name)

    async def remove(self, name: str) -> None:
        sname = service_name(self.fleet, name)
        with engine_calls(self.host, f"cannot remove service {sname}"):
            removed = await self._remove_service(sname)
        self._forget(name)
        if not removed:
            raise RunnerNotFound(f"runner {name}: no service {sname} on the swarm at {self.host}")

    async def list_owned(self, selector: Mapping[str, str]) -> list[OwnedRunner]:
        services = await self._services(selector)
        snapshot = await self._snapshot()
        return [_owned(service, snapshot) for service in services]

    def exits(self, selector: Mapping[str, str]) -> SwarmExits:
        """Exits (and losses) of our runners matching `selector`, from the shared task watch;
        subscribed at once, even before iteration starts."""
        return self._watch.subscribe(selector)

    async def logs_tail(self, name: str, lines: int = 20) -> list[str]:
        sname = service_name(self.fleet, name)
        docker = self.api()
        with engine_calls(self.host, f"cannot read the output of service {sname}"):
            try:
                params: dict[str, str | int] = {"stdout": "1", "stderr": "1", "tail": lines}
                text = await asyncio.wait_for(
                    docker.logs(f"services/{sname}/logs", params), LOGS_TIMEOUT
                )
            except EngineError as exc:
                if exc.status == 404:
                    raise RunnerNotFound(f"runner {name}: no service {sname}") from exc
                raise
            except TimeoutError:
                return []  # the task's node does not answer (it may be down)
        hidden = self._jit_configs.get(name)
        return [_scrub(line, hidden) for line in text.splitlines()[-lines:]]

    # -- for doctor and the tests ---------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """One listing pass: every runner task of the fleet and the nodes' state."""
        return await self._snapshot()

    # -- internals -------------------------------------------------------------------------

    async def _until_running(self, runner: str) -> None:
        while True:
            snapshot = await self._watch.next_snapshot()
            task = snapshot.runners.get(runner)
            if task is None or task.phase is Phase.STARTING:
                continue
            if task.phase is Phase.UNPLACEABLE:
                raise BackendError(f"runner {runner}: {task.detail}")
            if task.phase is Phase.ENDED and (
                task.state == "rejected" or task.exit_code == NO_EXIT_CODE
            ):
                raise BackendError(f"runner {runner}: task {task.detail}")
            if task.node:
                log.debug("runner %s runs on node %s", runner, task.node)
                self._nodes[runner] = task.node
            return  # running, or it already ran (its exit comes through the watch)

    async def _discard(self, runner: str) -> None:
        """Remove the service of a runner that could not start; never raise."""
        sname = service_name(self.fleet, runner)
        try:
            with engine_calls(self.host, f"cannot remove service {sname}"):
                await asyncio.shield(self._remove_service(sname))
        except BackendError as exc:
            log.debug("could not remove %s after a failed start: %s", sname, exc)
        self._forget(runner)

    async def _remove_service(self, sname: str) -> bool:
        docker = self.api()
        try:
            service = await docker.query_json(f"services/{sname}")
        except EngineError as exc:
            if exc.status == 404:
                return False
            raise
        job = service.get("Spec", {}).get("Mode", {}).get("ReplicatedJob")
        if isinstance(job, dict) and (job.get("TotalCompletions") or job.get("MaxConcurrent")):
            spec = dict(service["Spec"])
            spec["Mode"] = {"ReplicatedJob": {"MaxConcurrent": 0, "TotalCompletions": 0}}
            version = service.get("Version", {}).get("Index")
            with contextlib.suppress(EngineError):  # out of sequence: delete anyway
                await docker.query_json(
                    f"services/{service['ID']}/update",
                    method="POST",
                    params={"version": version},
                    body=spec,
                )
        tasks = await self._until_stopped(service["ID"])
        try:
            await docker.query_json(f"services/{service['ID']}", method="DELETE")
        except EngineError as exc:
            if exc.status == 404:
                return False
            raise
        await self._remove_local_containers(tasks)
        return True

    async def _remove_local_containers(self, tasks: list[dict[str, Any]]) -> None:
        """Remove the exited containers of the service's tasks that ran on the manager we talk
        to: Docker 20.10 leaves a finished job's container (its environment holds the JIT
        config) on its node after the service is deleted. Other nodes' engines are not ours
        to reach; the README says how to clean them."""
        if self._own_node is None:
            info = await self.api().query_json("info")
            swarm = info.get("Swarm") if isinstance(info, dict) else None
            self._own_node = str(swarm.get("NodeID", "")) if isinstance(swarm, dict) else ""
        for task in tasks:
            container = get_path(task, "Status", "ContainerStatus", "ContainerID")
            if container and self._own_node and task.get("NodeID") == self._own_node:
                with contextlib.suppress(EngineError):
                    await self.api().query_json(
                        f"containers/{container}", method="DELETE", params={"force": "true"}
                    )

    async def _until_stopped(self, service_id: str) -> list[dict[str, Any]]:
        """Wait (briefly) until the service's task has stopped: deleted before that, a job's
        container may run on (moby/moby#44312). A task on a down node cannot stop: skip it."""
        docker = self.api()
        down = {
            str(node.get("ID"))
            for node in await docker.query_json("nodes") or []
            if _node_state(node) != "ready"
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT
        filters = json_filters(service=[service_id])
        while True:
            tasks: list[dict[str, Any]] = (
                await docker.query_json("tasks", params={"filters": filters}) or []
            )
            if all(
                _task_state(task) in ENDED_STATES or str(task.get("NodeID")) in down
                for task in tasks
            ):
                return tasks
            if loop.time() >= deadline:
                break
            await asyncio.sleep(STOP_POLL)
        log.warning(
            "service %s: its task did not stop in %.0fs; removing it", service_id, STOP_TIMEOUT
        )
        return tasks

    async def _services(self, selector: Mapping[str, str]) -> list[dict[str, Any]]:
        labels = [f"{LABEL_FLEET}={self.fleet}", LABEL_RUNNER]
        labels += [f"{key}={value}" for key, value in selector.items()]
        with engine_calls(self.host, "cannot list services"):
            found = await self.api().query_json(
                "services", params={"filters": json_filters(label=labels)}
            )
        return list(found or [])

    async def _snapshot(self) -> Snapshot:
        docker = self.api()
        label = json.dumps({"label": [f"{LABEL_FLEET}={self.fleet}"]})
        with engine_calls(self.host, "cannot list the swarm's tasks"):
            tasks = await docker.query_json("tasks", params={"filters": label})
            nodes = await docker.query_json("nodes")
        return read_tasks(tasks or [], nodes or [])

    async def _manager_nodes(self) -> list[dict[str, Any]]:
        with engine_calls(self.host, "cannot query the swarm"):
            try:
                return list(await self.api().query_json("nodes") or [])
            except EngineError as exc:
                if exc.status == 503:
                    raise BackendError(
                        f"Docker at {self.host} is not a swarm manager ({engine_message(exc)}): "
                        "point swarm.host at a manager (docker node ls there lists the nodes)"
                    ) from exc
                raise

    def _forget(self, name: str) -> None:
        secrets.discard(self._jit_configs.pop(name, None))
        self._nodes.pop(name, None)


@dataclass(frozen=True)
class Leftover:
    """A service of ours that no longer runs a runner (for `doctor`)."""

    service: str
    runner: str
    detail: str
    scale_set_key: str | None = None


async def leftover_services(backend: SwarmBackend) -> list[Leftover]:
    """Our runner services whose task ended, was lost, cannot be placed, or never came: what
    `doctor` reports and `--fix` removes (with `backend.remove(runner)`)."""
    services = await backend._services({})
    snapshot = await backend.snapshot()
    found = []
    for service in services:
        owned = _owned(service, snapshot)
        if owned.running:
            continue
        task = snapshot.runners.get(owned.name)
        detail = task.detail if task is not None else "no task"
        found.append(
            Leftover(
                str(service.get("Spec", {}).get("Name", "")),
                owned.name,
                detail,
                scale_set_key=owned.labels.get(LABEL_SCALE_SET_KEY),
            )
        )
    return found


def _owned(service: Mapping[str, Any], snapshot: Snapshot) -> OwnedRunner:
    spec = service.get("Spec", {})
    labels = dict(spec.get("Labels") or {})
    name = labels.get(LABEL_RUNNER, "")
    task: RunnerTask | None = snapshot.runners.get(name)
    job = spec.get("Mode", {}).get("ReplicatedJob") or {}
    created = epoch(service.get("CreatedAt"))
    if task is None:
        # Not scheduled yet (just created), or already told to stop (zero completions).
        running = bool(job.get("TotalCompletions"))
        return OwnedRunner(name=name, labels=labels, running=running, created_at=created)
    running = task.phase in (Phase.RUNNING, Phase.STARTING) and bool(job.get("TotalCompletions"))
    return OwnedRunner(
        name=name,
        labels=labels,
        running=running,
        exit_code=task.exit_code if task.phase is Phase.ENDED else None,
        created_at=created,
        node=task.node,
        lost=task.phase is Phase.LOST,
    )


def _task_state(task: Mapping[str, Any]) -> str:
    status = task.get("Status")
    return str(status.get("State", "")) if isinstance(status, dict) else ""


def _node_state(node: Mapping[str, Any]) -> str:
    status = node.get("Status")
    return str(status.get("State", "")) if isinstance(status, dict) else ""


def _scrub(line: str, hidden: str | None) -> str:
    if hidden:
        line = line.replace(hidden, REDACTED)
    return secrets.redact(line)
