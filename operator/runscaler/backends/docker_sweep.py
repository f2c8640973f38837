"""Disk hygiene on a Docker host shared by many jobs: the shared volume and buildx leftovers.

Two sweepers, each a one-shot function, and `housekeeping`, the loop a controller runs per
engine that calls them on their manifest intervals:

- the fleet's shared volume keeps files younger than `sharedVolume.ttl`; a short-lived helper
  container from the runner image (no network, labelled as ours, always removed) deletes the
  rest, with minute precision (`find -mmin`);
- BuildKit builders that jobs created through `dind` (`buildx_buildkit_*` containers) and their
  `_state` volumes are removed once older than `buildxCleanup.ttl`, or when they have stopped;
  orphaned `_state` volumes go too. Nothing that is not named like a buildx builder is touched,
  and without `dind` no job can have made one, so the sweep runs only for engines whose
  templates turn `dind` on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runscaler.backends.base import BackendError
from runscaler.backends.docker import HELPER_MOUNT, DockerBackend
from runscaler.backends.docker_api import DockerAPI, EngineError
from runscaler.backends.docker_client import engine_calls
from runscaler.backends.docker_containers import force_remove, run_helper
from runscaler.backends.docker_spec import shared_volume_name
from runscaler.manifest.models import DockerTemplate

log = logging.getLogger(__name__)

BUILDX_CONTAINER = re.compile(r"^buildx_buildkit_[A-Za-z0-9_.-]+$")
BUILDX_STATE_VOLUME = re.compile(r"^buildx_buildkit_[A-Za-z0-9_.-]+_state$")
_RUNNING = frozenset({"running", "created", "restarting", "paused", "removing"})
# How often the loop looks at the templates again when no sweep is due sooner.
HOUSEKEEPING_TICK = 60.0


@dataclass
class BuildxSweep:
    """What one buildx sweep removed (names), for logs and tests."""

    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)


def _sweep_script(minutes: int) -> str:
    # Files (and links) first, then directories left empty; both only when old enough, so a
    # directory a job just made is not pulled from under it. Vanishing files are not errors.
    root = HELPER_MOUNT
    return (
        f"find {root} -mindepth 1 ! -type d -mmin +{minutes} -print -exec rm -f {{}} + "
        "2>/dev/null; "
        f"find {root} -mindepth 1 -depth -type d -empty -mmin +{minutes} "
        "-exec rmdir {} \\; 2>/dev/null; true"
    )


async def sweep_shared_volume(
    backend: DockerBackend, *, image: str, ttl: float, platform: str | None = None
) -> int:
    """Delete files older than `ttl` seconds from the fleet's shared volume; return how many.

    `image` must be on the engine already (the runner image is: `prepare` pulled it) and have
    `sh` and `find`. A `ttl` of 0 keeps everything.
    """
    if ttl <= 0:
        return 0
    name = shared_volume_name(backend.fleet)
    with engine_calls(backend.host, f"cannot inspect volume {name}"):
        try:
            await backend.api().query_json(f"volumes/{name}")
        except EngineError as exc:
            if exc.status == 404:
                return 0
            raise
    result = await run_helper(
        backend.api(),
        host=backend.host,
        fleet=backend.fleet,
        role="sweep",
        image=image,
        script=_sweep_script(max(0, math.floor(ttl / 60))),
        binds=[f"{name}:{HELPER_MOUNT}:nocopy"],
        platform=platform,
    )
    deleted = sum(1 for line in result.output if line.startswith(f"{HELPER_MOUNT}/"))
    if deleted:
        log.info("shared volume %s: deleted %d files older than %ds", name, deleted, ttl)
    return deleted


def _created(info: dict[str, Any]) -> float | None:
    text = str(info.get("Created") or "")
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    if not match:
        return None
    base, fraction, zone = match.groups()
    stamp = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + (float(f"0.{fraction}") if fraction else 0.0)


async def sweep_buildx(
    backend: DockerBackend, *, ttl: float, now: float | None = None
) -> BuildxSweep:
    """Remove buildx builder containers older than `ttl` (or stopped) with their `_state`
    volumes, then orphaned `_state` volumes. `now` is wall-clock seconds (a parameter so tests
    can age things without waiting)."""
    now = time.time() if now is None else now
    docker = backend.api()
    swept = BuildxSweep()
    with engine_calls(backend.host, "cannot sweep buildx builders"):
        for summary in await docker.list_containers(name=["buildx_buildkit_"]):
            names = [str(n).lstrip("/") for n in summary.get("Names") or ()]
            name = next((n for n in names if BUILDX_CONTAINER.match(n)), None)
            if name is None:
                continue
            try:
                info = await docker.query_json(f"containers/{summary['Id']}/json")
            except EngineError as exc:
                if exc.status == 404:
                    continue
                raise
            state = str((info.get("State") or {}).get("Status", ""))
            created = _created(info)
            old = created is not None and now - created > ttl
            if state in _RUNNING and not old:
                continue
            if await force_remove(docker, summary["Id"]):
                swept.containers.append(name)
            if await _remove_volume(docker, f"{name}_state"):
                swept.volumes.append(f"{name}_state")
        for volume in await docker.list_volumes(dangling=["true"]):
            name = str(volume.get("Name", ""))
            if BUILDX_STATE_VOLUME.match(name) and await _remove_volume(docker, name):
                swept.volumes.append(name)
    if swept.containers or swept.volumes:
        log.info(
            "removed buildx leftovers on %s: containers %s, volumes %s",
            backend.host,
            ", ".join(swept.containers) or "none",
            ", ".join(swept.volumes) or "none",
        )
    return swept


async def _remove_volume(docker: DockerAPI, name: str) -> bool:
    try:
        await docker.query(f"volumes/{name}", method="DELETE")
    except EngineError as exc:
        if exc.status == 404:
            return False
        if exc.status == 409:  # still in use: a builder we did not remove
            log.info("volume %s is in use; kept", name)
            return False
        raise
    return True


@dataclass(frozen=True)
class _SharedPolicy:
    image: str
    platform: str | None
    ttl: float
    interval: float


@dataclass(frozen=True)
class _BuildxPolicy:
    ttl: float
    interval: float


def _shared_policy(templates: list[DockerTemplate]) -> _SharedPolicy | None:
    # One volume per fleet: the strictest ttl and interval among the templates that mount it.
    using = [
        t
        for t in templates
        if t.shared_volume is not None and t.shared_volume.path and t.shared_volume.ttl > 0
    ]
    if not using:
        return None
    first = using[0]
    return _SharedPolicy(
        image=first.image,
        platform=first.platform,
        ttl=min(t.shared_volume.ttl for t in using if t.shared_volume),
        interval=min(t.shared_volume.cleanup_interval for t in using if t.shared_volume),
    )


def _buildx_policy(templates: list[DockerTemplate]) -> _BuildxPolicy | None:
    using = [t for t in templates if t.dind and t.buildx_cleanup.enabled]
    if not using:
        return None
    return _BuildxPolicy(
        ttl=min(t.buildx_cleanup.ttl for t in using),
        interval=min(t.buildx_cleanup.interval for t in using),
    )


async def housekeeping(
    backend: DockerBackend,
    templates: Callable[[], Iterable[object]],
    *,
    clock: Callable[[], float] = time.time,
    tick: float = HOUSEKEEPING_TICK,
) -> None:
    """Run both sweepers on `backend`'s engine forever, each on its interval (first at once).

    `templates` returns the current templates of the scale sets on this engine (read again
    every round, so a reload applies); non-Docker templates are ignored. An engine error is
    logged and retried next round; cancel the task to stop.
    """
    last_shared = last_buildx = -math.inf
    while True:
        current = [t for t in templates() if isinstance(t, DockerTemplate)]
        shared, buildx = _shared_policy(current), _buildx_policy(current)
        moment = time.monotonic()
        if shared is not None and moment - last_shared >= shared.interval:
            last_shared = moment
            await _guarded(
                "shared volume sweep",
                sweep_shared_volume(
                    backend, image=shared.image, ttl=shared.ttl, platform=shared.platform
                ),
            )
        if buildx is not None and moment - last_buildx >= buildx.interval:
            last_buildx = moment
            await _guarded("buildx sweep", sweep_buildx(backend, ttl=buildx.ttl, now=clock()))
        due = [tick]
        if shared is not None:
            due.append(last_shared + shared.interval - time.monotonic())
        if buildx is not None:
            due.append(last_buildx + buildx.interval - time.monotonic())
        await asyncio.sleep(max(min(due), 0.01))


async def _guarded(what: str, sweep: Any) -> None:
    try:
        await sweep
    except BackendError as exc:
        log.warning("%s skipped: %s", what, exc)
