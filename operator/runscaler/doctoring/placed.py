"""`doctor` for the runners that are not containers on an engine we talk to: Tart VMs (one
search per `TART_HOME` the manifest uses) and Swarm services (one per manager).

Only the fleet's own VMs (their names carry its tag) and services (its labels) are listed. A
stopped VM, a service whose task ended, was lost with its node or cannot be placed, and a
per-node hygiene job past its deadline are leftovers; a running VM is one only when no
operator of the fleet runs (nothing watches it).
`--fix` unregisters a runner on GitHub before its VM or service goes, and keeps one GitHub
says is running a job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from runscaler.backends import tart
from runscaler.backends.base import BackendError, RunnerNotFound
from runscaler.backends.swarm import SwarmBackend, leftover_services
from runscaler.backends.swarm_hygiene import HYGIENE_TIMEOUT, remove_job, stale_jobs
from runscaler.doctoring.report import Leftover
from runscaler.manifest.models import ScaleSet

HYGIENE_JOB: Final = "swarm hygiene job"


@dataclass
class Placed:
    """Where the manifest's Tart and Swarm scale sets run: homes and managers."""

    tart_homes: dict[str, Path | None] = field(default_factory=dict)  # shown name -> home
    swarms: dict[str, SwarmBackend] = field(default_factory=dict)  # manager address -> backend


def homes_of(scale_sets: Iterable[ScaleSet], base_dir: Path) -> dict[str, Path | None]:
    homes: dict[str, Path | None] = {}
    for scale_set in scale_sets:
        if scale_set.backend == "tart":
            home = tart.tart_home(scale_set.tart.home, base_dir)
            homes[str(home) if home is not None else "TART_HOME"] = home
    return homes


async def vm_leftovers(
    fleet: str, homes: Mapping[str, Path | None], *, operator_running: bool, notes: list[str]
) -> list[Leftover]:
    found: list[Leftover] = []
    for where, home in homes.items():
        try:
            vms = await tart.leftovers(fleet, home)
        except BackendError as exc:
            notes.append(f"Tart VMs on {where} not searched: {exc}")
            continue
        for vm in vms:
            if vm.running and operator_running:
                continue  # the operator's own runner
            reason = (
                "running with no operator of its fleet (killed?); the next start would adopt it"
                if vm.running
                else "stopped: its runner ended and the VM was never deleted"
            )
            found.append(
                Leftover(
                    fleet=fleet,
                    kind="tart VM",
                    name=vm.name,
                    where=where,
                    reason=reason,
                    engine=where,
                    runner=vm.runner or "",
                    scale_set_key=vm.scale_set_key or "",
                )
            )
    return found


async def service_leftovers(
    fleet: str,
    swarms: Mapping[str, SwarmBackend],
    *,
    notes: list[str],
    hygiene_age: float = HYGIENE_TIMEOUT,
) -> list[Leftover]:
    found: list[Leftover] = []
    for host, backend in swarms.items():
        try:
            services = await leftover_services(backend)
            jobs = await stale_jobs(backend, older_than=hygiene_age)
        except BackendError as exc:
            notes.append(f"Swarm services on {host} not searched: {exc}")
            continue
        found += [
            Leftover(
                fleet=fleet,
                kind=HYGIENE_JOB,
                name=job,
                where=host,
                reason="a per-node hygiene job its operator never removed (killed mid-run?)",
                engine=host,
            )
            for job in jobs
        ]
        found += [
            Leftover(
                fleet=fleet,
                kind="swarm service",
                name=service.service,
                where=host,
                reason=f"its runner no longer runs: {service.detail}",
                engine=host,
                runner=service.runner,
                scale_set_key=service.scale_set_key or "",
            )
            for service in services
        ]
    return found


async def remove_placed(leftover: Leftover, placed: Placed) -> str:
    """Remove a Tart VM or a Swarm service (the caller unregistered its runner first)."""
    if leftover.kind == HYGIENE_JOB:
        gone = await remove_job(placed.swarms[leftover.engine], leftover.name)
        return "removed" if gone else "already gone"
    if leftover.kind == "tart VM":
        home = placed.tart_homes.get(leftover.engine)
        gone = await tart.remove_leftover(leftover.fleet, leftover.name, home)
        return "removed" if gone else "already gone"
    try:
        await placed.swarms[leftover.engine].remove(leftover.runner)
    except RunnerNotFound:
        return "already gone"
    return "removed"
