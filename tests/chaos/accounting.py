"""Exact accounting of a chaos run from the simulator's job records and the engine's events.

A job is *completed* when its runner reported success. It was *killed* when it ended without
that report, which the simulator records after its runner was lost (the container stopped or
was removed before the job finished); the kill is *explained* only when a drain of its scale
set had run past its `drainTimeout` at the moment the engine reported the runner's container
dead. A job never started is *never picked up*; one started and not done is *stuck*. A job run
by two runners is a *duplicate*, unless GitHub's side deleted its scale set while it ran (the
service then queues it again, and the operator deletes a drained scale set once its drain
timeout has force-removed the busy runners), and so is a runner name that got two containers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from runscaler.simulator.server import Simulator
from tests.chaos.observe import ContainerEvents, Ledger, Sampler

# A JWT (an admin or queue token) or a base64 JSON blob as long as a JIT config.
TOKEN_LIKE = re.compile(r"eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}|eyJ[A-Za-z0-9+/=]{120,}")
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Figures:
    enqueued: int = 0
    completed: int = 0
    killed: int = 0  # without a drain timeout explaining it
    killed_by_drain: int = 0
    never_picked_up: int = 0
    stuck: int = 0
    duplicates: int = 0
    tracebacks: int = 0
    secrets: int = 0
    unconverged: int = 0  # scenarios after which the fleet did not converge in time
    converge: float | None = None  # seconds after the faults cleared; None: never converged
    peak_rss_mib: float = 0.0
    details: list[str] = field(default_factory=list)

    @property
    def losses(self) -> int:
        return (
            self.killed
            + self.never_picked_up
            + self.stuck
            + self.duplicates
            + self.tracebacks
            + self.secrets
            + self.unconverged
        )


def job_figures(
    ids: list[int],
    *,
    sim: Simulator,
    events: ContainerEvents,
    ledger: Ledger,
    sampler: Sampler,
    scale_set_of: dict[int, str],
) -> Figures:
    """The job-level figures of the jobs `ids`, from the records as they are now."""
    figures = Figures(enqueued=len(ids))
    for job_id in ids:
        job = sim.state.jobs[job_id]
        scale_set = scale_set_of[job_id]
        earlier = sampler.runners_of_job.get(job_id, set()) - {job.runner_name}
        if earlier and job_id not in ledger.deleted_while_running:
            # GitHub runs a job again when its scale set is deleted while it runs, which the
            # operator does after a drain timed out: explained when every earlier runner was
            # force-removed past a drain timeout.
            removed = [_removed_at(events, name) for name in sorted(earlier)]
            if all(t is not None and ledger.explains_removal(scale_set, t) for t in removed):
                figures.killed_by_drain += 1
            else:
                figures.duplicates += 1
                figures.details.append(
                    f"job {job_id} ({scale_set}) ran on {sorted(earlier)} before {job.runner_name}"
                )
        if job.state == "done" and job.result == "succeeded":
            figures.completed += 1
        elif job.state == "done":
            runner = job.runner_name or "?"
            seen = events.runners.get(runner)
            removed = _removed_at(events, runner)
            if removed is not None and ledger.explains_removal(scale_set, removed):
                figures.killed_by_drain += 1
                continue
            figures.killed += 1
            exit_code = seen.exit_code if seen is not None else None
            when = (
                f"{removed - (job.started_at or removed):.1f}s into the job"
                if removed
                else "no container event"
            )
            figures.details.append(
                f"killed: job {job_id} ({scale_set}, {job.duration:.0f}s) on {runner}: "
                f"result {job.result}, container exit {exit_code}, {when}"
            )
        elif job.started_at is None:
            figures.never_picked_up += 1
            figures.details.append(f"never picked up: job {job_id} ({scale_set}) {job.state}")
        else:
            figures.stuck += 1
            figures.details.append(
                f"stuck: job {job_id} ({scale_set}) running on {job.runner_name}"
            )
    return figures


def _removed_at(events: ContainerEvents, runner: str) -> float | None:
    """When the engine reported the runner's container dead (or removed), if it did."""
    seen = events.runners.get(runner)
    return None if seen is None else (seen.died_at or seen.destroyed_at)


def churn(events: ContainerEvents, sampler: Sampler, *, within: float = 3.0) -> tuple[int, int]:
    """(runner containers created, those removed within `within` s without running a job):
    the spare starts a completion should never cause."""
    busy = {name for names in sampler.runners_of_job.values() for name in names}
    wasted = 0
    for name, seen in events.runners.items():
        if seen.created_at is None or seen.destroyed_at is None or name in busy:
            continue
        wasted += seen.destroyed_at - seen.created_at < within
    return len(events.runners), wasted


def duplicate_containers(events: ContainerEvents) -> list[str]:
    return [
        f"runner {name} had {len(seen.ids)} containers"
        for name, seen in sorted(events.runners.items())
        if len(seen.ids) > 1
    ]


def log_findings(text: str, secrets: set[str]) -> tuple[int, int, list[str]]:
    """(tracebacks, secrets) found in the operator's logs, with a line about each secret."""
    tracebacks = text.count(TRACEBACK)
    found = []
    for secret in sorted(secrets):
        if secret and secret in text:
            found.append(f"secret in the log: {secret[:6]}… ({text.count(secret)} times)")
    for match in sorted(set(TOKEN_LIKE.findall(text))):
        found.append(f"a token or JIT config in the log: {match[:12]}…")
    return tracebacks, len(found), found
