"""`runscaler doctor --fix`: remove the leftovers found, one outcome line each.

Runners are unregistered on GitHub before their container goes, and a runner GitHub says is
running a job is kept. A scale set the fleet owned and the manifest dropped is deleted on
GitHub only once none of its runners is running a job (its idle ones are unregistered and
removed first); otherwise it is kept, to finish later. buildx leftovers are removed by the
sweeper itself, so `--fix` removes exactly what the running operator's housekeeping would.
The caller holds the fleet's lock, so no operator starts underneath.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from runscaler.backends.base import LABEL_RUNNER, LABEL_SCALE_SET_KEY, BackendError
from runscaler.backends.docker import DockerBackend
from runscaler.backends.docker_api import EngineError
from runscaler.backends.docker_client import engine_calls
from runscaler.backends.docker_containers import force_remove
from runscaler.backends.docker_sweep import BuildxSweep, sweep_buildx
from runscaler.doctoring.placed import HYGIENE_JOB, Placed, remove_placed
from runscaler.doctoring.report import Leftover, Outcome
from runscaler.engine.statefile import StateFile
from runscaler.github.client import ScaleSetClient
from runscaler.github.errors import GitHubError, JobStillRunningError, ScaleSetNotFoundError


@dataclass
class FixContext:
    backends: Mapping[str, DockerBackend]  # engine address → backend
    clients: Mapping[str, ScaleSetClient]  # scale-set key → client
    placed: Placed = field(default_factory=Placed)  # Tart homes and Swarm managers
    state_file: StateFile | None = None
    buildx_ttl: Mapping[str, float] = field(default_factory=dict)  # engine address → ttl
    now: float = 0.0


async def fix_leftovers(leftovers: list[Leftover], context: FixContext) -> list[Outcome]:
    swept: dict[str, BuildxSweep | str] = {}
    for engine in sorted({x.engine for x in leftovers if x.kind.startswith("buildx")}):
        try:
            swept[engine] = await sweep_buildx(
                context.backends[engine], ttl=context.buildx_ttl[engine], now=context.now
            )
        except BackendError as exc:
            swept[engine] = str(exc)
    outcomes = []
    for leftover in leftovers:
        try:
            outcomes.append(await _fix(leftover, context, swept))
        except (BackendError, GitHubError) as exc:
            outcomes.append(Outcome(leftover, False, str(exc)))
    return outcomes


async def _fix(
    leftover: Leftover, context: FixContext, swept: Mapping[str, BuildxSweep | str]
) -> Outcome:
    kind = leftover.kind
    if kind == "stale session":
        return await _close_session(leftover, context)
    if kind == "shared volume":
        return await _remove_volume(leftover, context.backends[leftover.engine])
    if kind.startswith("buildx"):
        return _swept(leftover, swept[leftover.engine])
    if kind == "removed scale set":
        return await _finish_deletion(leftover, context)
    if kind == HYGIENE_JOB:  # no runner in it: nothing to unregister
        how = await remove_placed(leftover, context.placed)
        return Outcome(leftover, True, how)
    if kind in ("tart VM", "swarm service"):
        return await _remove_placed(leftover, context)
    done = "removed"
    client = context.clients.get(leftover.scale_set_key)
    if kind == "orphaned runner" and client is None:
        return Outcome(leftover, False, "kept: no working credentials to ask GitHub if it is busy")
    if kind in ("exited runner", "unregistered runner", "orphaned runner"):
        kept, done = await _unregister(leftover, client)
        if kept:
            return Outcome(leftover, False, kept)
    backend = context.backends[leftover.engine]
    with engine_calls(backend.host, f"cannot remove container {leftover.name}"):
        gone = await force_remove(backend.api(), leftover.ref)
    return Outcome(leftover, True, done if gone else "already gone")


async def _remove_placed(leftover: Leftover, context: FixContext) -> Outcome:
    """A VM or service: its runner unregistered first, so one running a job is kept."""
    kept, done = await _unregister(leftover, context.clients.get(leftover.scale_set_key))
    if kept:
        return Outcome(leftover, False, f"kept: {kept}")
    how = await remove_placed(leftover, context.placed)
    return Outcome(leftover, True, done if how == "removed" else how)


async def _unregister(leftover: Leftover, client: ScaleSetClient | None) -> tuple[str, str]:
    """(why it is kept, or "") and what was done."""
    if client is None:
        return "", "removed (its GitHub registration was not checked: no working credentials)"
    registered = await client.get_runner_by_name(leftover.runner)
    if registered is None:
        return "", "removed (it was not registered on GitHub)"
    if registered.busy:
        # Also a job assigned and not started yet: removing it would bounce that job.
        return "GitHub says it is running a job", ""
    try:
        await client.remove_runner(registered.id)
    except JobStillRunningError:
        return "GitHub says it is running a job", ""
    return "", "unregistered on GitHub and removed"


async def _finish_deletion(leftover: Leftover, context: FixContext) -> Outcome:
    """Remove the scale set's runners (never a busy one), then delete it on GitHub."""
    client = context.clients.get(leftover.scale_set_key)
    if client is None or leftover.scale_set_id is None:
        return Outcome(leftover, False, "no working credentials for its scale set")
    for backend in context.backends.values():
        label = f"{LABEL_SCALE_SET_KEY}={leftover.scale_set_key}"
        with engine_calls(backend.host, "cannot list containers"):
            found = await backend.api().list_containers(label=[label])
        for container in found:
            runner = (container.get("Labels") or {}).get(LABEL_RUNNER, "")
            registered = await client.get_runner_by_name(runner) if runner else None
            if registered is not None:
                try:
                    await client.remove_runner(registered.id)
                except JobStillRunningError:
                    return Outcome(
                        leftover, False, f"kept: runner {runner} is running a job; fix again later"
                    )
            with engine_calls(backend.host, f"cannot remove container {runner}"):
                await force_remove(backend.api(), str(container["Id"]))
    try:
        await client.delete_scale_set(leftover.scale_set_id)
    except ScaleSetNotFoundError:
        pass
    if context.state_file is not None:
        context.state_file.forget(leftover.scale_set_key)
    return Outcome(leftover, True, "its runners removed, deleted on GitHub and forgotten")


async def _close_session(leftover: Leftover, context: FixContext) -> Outcome:
    client = context.clients.get(leftover.scale_set_key)
    if client is None or leftover.scale_set_id is None:
        return Outcome(leftover, False, "no working credentials for its scale set")
    await client.delete_session(leftover.scale_set_id, leftover.name)
    if context.state_file is not None:
        context.state_file.update(
            leftover.scale_set_key, scale_set_id=leftover.scale_set_id, session_id=None
        )
    return Outcome(leftover, True, "closed on GitHub and forgotten")


async def _remove_volume(leftover: Leftover, backend: DockerBackend) -> Outcome:
    with engine_calls(backend.host, f"cannot remove volume {leftover.name}"):
        try:
            await backend.api().query(f"volumes/{leftover.name}", method="DELETE")
        except EngineError as exc:
            if exc.status == 404:
                return Outcome(leftover, True, "already gone")
            if exc.status == 409:
                return Outcome(leftover, False, "a container still uses it")
            raise
    return Outcome(leftover, True, "removed")


def _swept(leftover: Leftover, sweep: BuildxSweep | str) -> Outcome:
    if isinstance(sweep, str):
        return Outcome(leftover, False, sweep)
    names = sweep.containers if leftover.kind == "buildx builder" else sweep.volumes
    if leftover.name in names:
        return Outcome(leftover, True, "removed")
    return Outcome(leftover, False, "the sweeper found it in use")
