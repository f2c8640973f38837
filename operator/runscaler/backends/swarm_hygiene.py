"""Hygiene on every node of a swarm: a script run once per node, and the loop that schedules it.

The operator reaches only a manager's engine, but leftovers live on every node: exited runner
containers (on Docker 20.10 a finished task's container stays on its node, JIT config in its
environment), and with `dind` the BuildKit builders jobs made. A global-mode job service runs
exactly one task per eligible node and finishes, which is what per-node hygiene needs:
`run_on_every_node` creates one (labelled with the fleet and the `hygiene` role, so `doctor` can
tell it apart from runners), waits for every task to end, and removes it.

`housekeeping` is the loop the operator runs per manager: for each placement the fleet's
templates use (their constraints), it runs `node_sweep_script` with the node's engine socket
mounted, on the templates' `hygiene.interval`. The script removes only the fleet's exited
containers and, where `dind` is on, `buildx_buildkit_*` builders that are stopped or older than
`hygiene.buildxTtl` with their `_state` volumes, the same rules as the Docker backend's sweep.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from runscaler.backends.base import LABEL_FLEET, BackendError
from runscaler.backends.docker_api import EngineError, json_filters
from runscaler.backends.docker_client import engine_calls
from runscaler.backends.swarm import SwarmBackend
from runscaler.backends.swarm_spec import RUNNER_DOCKER_SOCKET
from runscaler.backends.swarm_tasks import ENDED_STATES, epoch, get_path, node_names
from runscaler.manifest.models import SwarmTemplate

log = logging.getLogger(__name__)
T = TypeVar("T")

LABEL_ROLE = "dev.runscaler.role"
HYGIENE_TIMEOUT = 300.0
_POLL = 0.5
# An exited container of the fleet this old is garbage: its task ended and was judged long ago.
PRUNE_AFTER = "10m"
# How often the loop looks at the templates again when no sweep is due sooner.
HOUSEKEEPING_TICK = 60.0


@dataclass(frozen=True)
class NodeResult:
    node: str
    exit_code: int | None
    state: str
    message: str


async def run_on_every_node(
    backend: SwarmBackend,
    *,
    image: str,
    script: str,
    mounts: Sequence[dict[str, Any]] = (),
    constraints: Sequence[str] = (),
    timeout: float = HYGIENE_TIMEOUT,  # noqa: ASYNC109 (the job's deadline, enforced inside)
) -> list[NodeResult]:
    """Run `sh -c script` as root in `image` once on every node (matching `constraints`)."""
    docker: Any = backend.api()
    name = f"runscaler-{backend.fleet}-hygiene-{secrets.token_hex(3)}"
    labels = {LABEL_FLEET: backend.fleet, LABEL_ROLE: "hygiene"}
    body = {
        "Name": name,
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "User": "0",
                "Command": ["sh", "-c", script],
                "Labels": labels,
                "Mounts": list(mounts),
            },
            "RestartPolicy": {"Condition": "none"},
            "Placement": {"Constraints": list(constraints)},
        },
        "Mode": {"GlobalJob": {}},
    }
    # A cancelled create may still make the service: it is awaited to its end, then removed.
    with engine_calls(backend.host, f"cannot create service {name}"):
        created, cancelled = await _to_the_end(
            docker.query_json("services/create", method="POST", body=body)
        )
    service_id = str(created.get("ID", name))
    try:
        if cancelled:
            raise asyncio.CancelledError
        with engine_calls(backend.host, f"cannot follow service {name}"):
            return await asyncio.wait_for(
                _results(docker, service_id, every_node=not constraints), timeout
            )
    except TimeoutError:
        raise BackendError(
            f"hygiene job {name} did not finish on every node within {timeout:.0f}s"
        ) from None
    finally:
        await _remove(backend, docker, name, service_id)


async def stale_jobs(backend: SwarmBackend, *, older_than: float = HYGIENE_TIMEOUT) -> list[str]:
    """The fleet's hygiene services created more than `older_than` seconds ago: a job under
    way ends or is removed within its deadline, so these were left by an operator killed
    mid-run (for `doctor`)."""
    labels = [f"{LABEL_FLEET}={backend.fleet}", f"{LABEL_ROLE}=hygiene"]
    with engine_calls(backend.host, "cannot list services"):
        found = await backend.api().query_json(
            "services", params={"filters": json_filters(label=labels)}
        )
    now = time.time()
    return sorted(
        str(get_path(service, "Spec", "Name"))
        for service in found or []
        if now - (epoch(service.get("CreatedAt")) or now) > older_than
    )


async def remove_job(backend: SwarmBackend, name: str) -> bool:
    """Remove a hygiene service by name; False when it was already gone."""
    with engine_calls(backend.host, f"cannot remove service {name}"):
        try:
            await backend.api().query_json(f"services/{name}", method="DELETE")
        except EngineError as exc:
            if exc.status == 404:
                return False
            raise
    return True


async def _remove(backend: SwarmBackend, docker: Any, name: str, service_id: str) -> None:
    """Delete the job's service, to its end even when cancelled meanwhile (then re-raised)."""
    with engine_calls(backend.host, f"cannot remove service {name}"):
        _, cancelled = await _to_the_end(
            docker.query_json(f"services/{service_id}", method="DELETE")
        )
    if cancelled:
        raise asyncio.CancelledError


async def _to_the_end(call: Awaitable[T]) -> tuple[T, bool]:
    """Await `call` to its end even if cancelled meanwhile: (its result, whether we were)."""
    future = asyncio.ensure_future(call)
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = cancelled or not future.done()
    return future.result(), cancelled


async def _results(docker: Any, service_id: str, *, every_node: bool) -> list[NodeResult]:
    """Each node's first ended task, once every node has one: without constraints every ready,
    active node; with them, the nodes Swarm gave a task (the global orchestrator makes them
    all in one pass). A task that failed is not waited for again: Swarm retries a global
    job's failed task whatever its restart policy, and removing the service stops that."""
    filters = json_filters(service=[service_id])
    while True:
        tasks = await docker.query_json("tasks", params={"filters": filters}) or []
        nodes = await docker.query_json("nodes") or []
        names, down = node_names(nodes)
        eligible = {
            str(n.get("ID"))
            for n in nodes
            if get_path(n, "Status", "State") == "ready"
            and get_path(n, "Spec", "Availability") == "active"
        }
        tasked: set[str] = set()
        ended: dict[str, dict[str, Any]] = {}
        for task in sorted(tasks, key=lambda t: str(get_path(t, "Meta", "CreatedAt") or "")):
            node = str(task.get("NodeID") or "")
            if not node or node in down:
                continue
            tasked.add(node)
            if str(get_path(task, "Status", "State")) in ENDED_STATES:
                ended.setdefault(node, task)
        wanted = (eligible | tasked) if every_node else tasked
        if wanted and wanted <= ended.keys():
            return [
                NodeResult(
                    node=names.get(node, node),
                    exit_code=_exit_code(task),
                    state=str(get_path(task, "Status", "State")),
                    message=str(get_path(task, "Status", "Err") or ""),
                )
                for node, task in ended.items()
            ]
        await asyncio.sleep(_POLL)


def _exit_code(task: dict[str, Any]) -> int | None:
    code = get_path(task, "Status", "ContainerStatus", "ExitCode")
    return code if isinstance(code, int) else None


# Builders that are stopped, or older than TTL seconds, go with their `_state` volume; then
# dangling `_state` volumes. A creation time that cannot be read counts as young.
_BUILDX_SWEEP = """\
now=$(date +%s)
for id in $(docker ps -aq --filter name=buildx_buildkit_); do
  info=$(docker inspect -f '{{.Name}} {{.State.Status}} {{.Created}}' "$id") || continue
  set -- $info
  name=${1#/}; state=$2
  case "$name" in buildx_buildkit_*) ;; *) continue ;; esac
  stamp=$(echo "$3" | sed 's/T/ /; s/[.Z].*$//')
  born=$(date -u -d "$stamp" +%s 2>/dev/null) || born=$now
  case "$state" in
    running|created|restarting|paused|removing) [ $((now - born)) -gt TTL ] || continue ;;
  esac
  docker rm -f "$id" >/dev/null && echo "removed builder $name"
  docker volume rm "${name}_state" >/dev/null 2>&1 && echo "removed volume ${name}_state"
done
for volume in $(docker volume ls -q --filter dangling=true); do
  case "$volume" in
    buildx_buildkit_*_state) docker volume rm "$volume" >/dev/null && echo "removed $volume" ;;
  esac
done
"""


def node_sweep_script(fleet: str, *, buildx_ttl: float | None, prune_after: str) -> str:
    """The shell script one node runs: the fleet's exited containers created more than
    `prune_after` ago are removed; with `buildx_ttl` (seconds), builder leftovers too. Exit 3:
    the node's engine could not be reached (no docker CLI exits 127)."""
    selector = shlex.quote(f"label={LABEL_FLEET}={fleet}")
    script = (
        "set -u\n"
        "command -v docker >/dev/null || exit 127\n"
        f"docker container prune -f --filter {selector} "
        f"--filter until={shlex.quote(prune_after)} >/dev/null || exit 3\n"
    )
    if buildx_ttl is not None:
        script += _BUILDX_SWEEP.replace("TTL", str(max(1, math.floor(buildx_ttl))))
    return script


@dataclass(frozen=True)
class NodeSweep:
    """One placement's clean-up: where it runs and how."""

    constraints: tuple[str, ...]
    image: str
    engine_socket: str
    interval: float
    buildx_ttl: float | None  # None: no template placed there uses dind

    @property
    def key(self) -> tuple[tuple[str, ...], str]:
        return self.constraints, self.engine_socket


def node_sweeps(templates: Iterable[object]) -> list[NodeSweep]:
    """One sweep per placement (constraints and engine socket) the enabled templates use; the
    shortest interval and builder TTL of the templates sharing it, the first one's image."""
    groups: dict[tuple[tuple[str, ...], str], list[SwarmTemplate]] = {}
    for template in templates:
        if isinstance(template, SwarmTemplate) and template.hygiene.enabled:
            key = (tuple(sorted(template.constraints)), template.engine_socket)
            groups.setdefault(key, []).append(template)
    sweeps = []
    for (constraints, socket), members in groups.items():
        dind = [t.hygiene.buildx_ttl for t in members if t.dind]
        first = members[0]
        sweeps.append(
            NodeSweep(
                constraints=constraints,
                image=first.hygiene.image or first.image,
                engine_socket=socket,
                interval=min(t.hygiene.interval for t in members),
                buildx_ttl=min(dind) if dind else None,
            )
        )
    return sweeps


async def sweep_nodes(
    backend: SwarmBackend, sweep: NodeSweep, *, prune_after: str = PRUNE_AFTER
) -> list[NodeResult]:
    """Run one placement's clean-up on its nodes; a node that failed is logged by name."""
    script = node_sweep_script(backend.fleet, buildx_ttl=sweep.buildx_ttl, prune_after=prune_after)
    mount = {"Type": "bind", "Source": sweep.engine_socket, "Target": RUNNER_DOCKER_SOCKET}
    results = await run_on_every_node(
        backend, image=sweep.image, script=script, mounts=[mount], constraints=sweep.constraints
    )
    for result in results:
        if result.state == "complete" and result.exit_code == 0:
            continue
        why = {
            3: f"the engine socket {sweep.engine_socket} did not answer (swarm.engineSocket)",
            127: f"image {sweep.image} has no docker CLI (set swarm.hygiene.image)",
        }.get(result.exit_code or 0, result.message or f"task {result.state}")
        log.warning(
            "swarm hygiene on node %s failed (exit code %s): %s", result.node, result.exit_code, why
        )
    log.debug("swarm hygiene ran on %d nodes via %s", len(results), backend.host)
    return results


async def housekeeping(
    backend: SwarmBackend,
    templates: Callable[[], Iterable[object]],
    *,
    tick: float = HOUSEKEEPING_TICK,
    prune_after: str = PRUNE_AFTER,
) -> None:
    """Run every placement's clean-up forever, each on its interval (first at once).

    `templates` returns the current templates of the scale sets on this swarm (read again every
    round, so a reload applies); others are ignored. A failure is logged and retried on the
    next interval; cancel the task to stop (a job under way is removed)."""
    last: dict[tuple[tuple[str, ...], str], float] = {}
    while True:
        due = [tick]
        for sweep in node_sweeps(templates()):
            if time.monotonic() - last.get(sweep.key, -math.inf) >= sweep.interval:
                last[sweep.key] = time.monotonic()
                try:
                    await sweep_nodes(backend, sweep, prune_after=prune_after)
                except BackendError as exc:
                    log.warning("swarm hygiene skipped: %s", exc)
            due.append(last[sweep.key] + sweep.interval - time.monotonic())
        await asyncio.sleep(max(min(due), 0.01))
