"""Finding what a fleet left behind: containers, volumes, sessions and buildx builders.

Only things carrying `dev.runscaler.fleet=<fleet>` are looked at, and only the fleets asked
about. A running runner container is a leftover only when GitHub no longer knows its
registration (so it can run no job), or when no operator of its fleet runs (killed: nothing
watches it); `--fix` removes one of those only after unregistering it, so never a busy one.
buildx builders carry no label of ours: they are judged by the sweeper's own rules, and only
on engines where the manifest lets jobs reach the engine (`dind`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from runscaler.backends.base import LABEL_FLEET, LABEL_RUNNER, LABEL_SCALE_SET_KEY
from runscaler.backends.docker import DockerBackend
from runscaler.backends.docker_client import engine_calls
from runscaler.backends.docker_containers import LABEL_ROLE
from runscaler.backends.docker_sweep import BUILDX_CONTAINER, BUILDX_STATE_VOLUME
from runscaler.doctoring.report import Leftover, LeftoverKind
from runscaler.github.client import ScaleSetClient
from runscaler.github.errors import GitHubError, ScaleSetNotFoundError
from runscaler.github.models import RunnerReference, SessionInfo
from runscaler.github.session import MessageSession

_RUNNING = frozenset({"running", "restarting", "paused"})
_BUILDX_LIVE = frozenset({"running", "created", "restarting", "paused", "removing"})


class RunnerLookup(Protocol):
    async def get_runner_by_name(self, name: str) -> RunnerReference | None: ...


@dataclass(frozen=True)
class FleetView:
    """What the search knows about one fleet."""

    name: str
    operator_running: bool = False
    # Scale-set key → a GitHub client for it (scale sets whose GitHub check passed).
    lookups: Mapping[str, RunnerLookup] = field(default_factory=dict)


async def fleet_containers(backend: DockerBackend, *, fleet: str | None) -> list[dict[str, Any]]:
    """Summaries of the containers labelled with `fleet` (with any fleet when None)."""
    label = LABEL_FLEET if fleet is None else f"{LABEL_FLEET}={fleet}"
    with engine_calls(backend.host, "cannot list containers"):
        return await backend.api().list_containers(label=[label])


def fleets_of(summaries: list[dict[str, Any]]) -> set[str]:
    return {str(_labels(s).get(LABEL_FLEET)) for s in summaries if _labels(s).get(LABEL_FLEET)}


def _labels(summary: Mapping[str, Any]) -> dict[str, str]:
    labels = summary.get("Labels")
    return dict(labels) if isinstance(labels, dict) else {}


def _name(summary: Mapping[str, Any]) -> str:
    names = summary.get("Names") or [str(summary.get("Id", ""))[:12]]
    return str(names[0]).lstrip("/")


def _status(summary: Mapping[str, Any]) -> str:
    state = str(summary.get("State", ""))
    if state == "created":
        return "created, never started"
    return str(summary.get("Status") or state).lower()


def _found(
    kind: LeftoverKind,
    summary: Mapping[str, Any],
    *,
    fleet: str,
    host: str,
    reason: str,
    runner: str = "",
    key: str = "",
) -> Leftover:
    return Leftover(
        fleet=fleet,
        kind=kind,
        name=_name(summary),
        where=host,
        reason=reason,
        engine=host,
        ref=str(summary.get("Id", "")),
        runner=runner,
        scale_set_key=key,
    )


async def container_leftovers(
    backend: DockerBackend,
    summaries: list[dict[str, Any]],
    *,
    view_for: Callable[[str], FleetView],
    notes: list[str],
) -> list[Leftover]:
    """Exited runners, runners GitHub forgot, and helpers, among `summaries`."""
    found: list[Leftover] = []
    unjudged: dict[str, int] = {}
    for summary in summaries:
        labels = _labels(summary)
        view = view_for(labels.get(LABEL_FLEET, ""))
        state = str(summary.get("State", ""))
        where = {"fleet": view.name, "host": backend.host}
        runner = labels.get(LABEL_RUNNER, "")
        key = labels.get(LABEL_SCALE_SET_KEY, "")
        if _busy_with_operator(view, labels, state):
            continue
        if LABEL_ROLE in labels:
            reason = f"{labels[LABEL_ROLE]} helper, {_status(summary)}"
            found.append(_found("helper container", summary, reason=reason, **where))
        elif not runner:
            continue  # labelled with the fleet, but neither a runner nor a helper of ours
        elif state not in _RUNNING:
            found.append(
                _found(
                    "exited runner",
                    summary,
                    reason=_status(summary),
                    runner=runner,
                    key=key,
                    **where,
                )
            )
        elif key not in view.lookups:
            unjudged[view.name] = unjudged.get(view.name, 0) + 1
        elif await _forgotten(view.lookups[key], runner, fleet=view.name, notes=notes):
            found.append(
                _found(
                    "unregistered runner",
                    summary,
                    reason="running, but GitHub no longer knows its registration: "
                    "it can run no job",
                    runner=runner,
                    key=key,
                    **where,
                )
            )
        elif not view.operator_running:
            found.append(
                _found(
                    "orphaned runner",
                    summary,
                    reason="running with no operator of its fleet (killed?); the next start "
                    "adopts it, --fix removes it unless it is running a job",
                    runner=runner,
                    key=key,
                    **where,
                )
            )
    for fleet, count in sorted(unjudged.items()):
        notes.append(
            f"fleet {fleet}: {count} running runner container{'s' if count != 1 else ''} "
            "not judged: only the manifest's scale sets (with working credentials) can ask "
            "GitHub whether a runner is still registered"
        )
    return found


def _busy_with_operator(view: FleetView, labels: Mapping[str, str], state: str) -> bool:
    """A running operator is starting runners and running helpers right now."""
    if not view.operator_running:
        return False
    return state == "created" or (LABEL_ROLE in labels and state in _RUNNING)


async def _forgotten(lookup: RunnerLookup, runner: str, *, fleet: str, notes: list[str]) -> bool:
    try:
        return await lookup.get_runner_by_name(runner) is None
    except GitHubError as exc:
        notes.append(f"fleet {fleet}: runner {runner}: cannot ask GitHub: {exc}")
        return False


async def shared_volume_leftovers(
    backend: DockerBackend, *, fleet: str, in_use: bool
) -> list[Leftover]:
    """The fleet's shared volume on this engine, when no scale set on it mounts one."""
    if in_use:
        return []
    labels = [f"{LABEL_FLEET}={fleet}", f"{LABEL_ROLE}=shared"]
    with engine_calls(backend.host, "cannot list volumes"):
        listed = await backend.api().list_volumes(label=labels)
    return [
        Leftover(
            fleet=fleet,
            kind="shared volume",
            name=str(volume.get("Name", "")),
            where=backend.host,
            reason="no scale set on this engine uses sharedVolume any more",
            engine=backend.host,
        )
        for volume in listed
    ]


def _created(info: Mapping[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(str(info.get("Created") or "")).timestamp()
    except ValueError:
        return None


async def buildx_leftovers(
    backend: DockerBackend, *, fleet: str, ttl: float, now: float
) -> list[Leftover]:
    """What `docker_sweep.sweep_buildx` would remove now: builders stopped or older than `ttl`,
    their `_state` volumes, and `_state` volumes no container uses."""
    docker = backend.api()
    found: list[Leftover] = []
    host = backend.host
    with engine_calls(backend.host, "cannot list buildx builders"):
        for summary in await docker.list_containers(name=["buildx_buildkit_"]):
            name = _name(summary)
            if not BUILDX_CONTAINER.match(name):
                continue
            info = await docker.query_json(f"containers/{summary['Id']}/json")
            state = str((info.get("State") or {}).get("Status", ""))
            created = _created(info)
            age = now - created if created is not None else None
            if state in _BUILDX_LIVE and (age is None or age <= ttl):
                continue
            why = state if state not in _BUILDX_LIVE else f"older than {ttl:.0f}s"
            why += f"; its {name}_state volume goes with it"
            found.append(
                Leftover(
                    fleet=fleet,
                    kind="buildx builder",
                    name=name,
                    where=host,
                    reason=why,
                    engine=host,
                    ref=str(summary["Id"]),
                )
            )
        dangling = await docker.list_volumes(dangling=["true"])
    for volume in dangling:
        name = str(volume.get("Name", ""))
        if BUILDX_STATE_VOLUME.match(name):
            found.append(
                Leftover(
                    fleet=fleet,
                    kind="buildx volume",
                    name=name,
                    where=host,
                    reason="no builder uses it",
                    engine=host,
                )
            )
    return found


async def session_is_open(client: ScaleSetClient, scale_set_id: int, session_id: str) -> bool:
    """Whether GitHub still has this message session.

    The API has no read for a session: a refresh (A8) is the one call that names it, answering
    404 once it is gone. It gives the session a new queue token and renews its lease, which
    `--fix` (or the next operator start) ends by deleting it.
    """
    probe = MessageSession(
        client=client,
        scale_set_id=scale_set_id,
        info=SessionInfo(
            session_id=session_id,
            owner_name="",
            message_queue_url="",
            message_queue_access_token="",
            statistics=None,
            runner_scale_set=None,
        ),
    )
    try:
        await probe.refresh()
    except ScaleSetNotFoundError:
        return False
    except GitHubError as exc:
        expired = re.search(r"SessionExpired|SessionNotFound", exc.type_name or "")
        if exc.status == 404 or (exc.status == 400 and expired):
            return False
        raise
    return True
