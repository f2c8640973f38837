"""What the simulator shows of its state: job messages as the wire carries them, and the whole
state as `GET /_sim/state` returns it for assertions.

Pure renderings of the records; `state.py` decides when a message is emitted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runscaler.simulator.records import Job, rfc3339

if TYPE_CHECKING:
    from runscaler.simulator.state import SimState


def owner_and_repository(repository: str | None, scope: str) -> tuple[str, str]:
    """The `ownerName` and `repositoryName` of a job: its own repository, else its scope's."""
    if repository and "/" in repository:
        owner, name = repository.split("/", 1)
        return owner, name
    parts = scope.split("/")
    if parts[0] == "enterprises":
        return (parts[1] if len(parts) > 1 else "enterprise"), repository or "app"
    if len(parts) == 2:
        return parts[0], parts[1]
    return parts[0] or "acme", repository or "app"


def job_message(
    job: Job,
    kind: str,
    *,
    scope: str,
    acquire_url: str,
    result: str | None = None,
    finished: float | None = None,
) -> dict[str, Any]:
    """One inner job message (`JobAvailable`, `JobAssigned`, `JobStarted`, `JobCompleted`)."""
    owner, repository = owner_and_repository(job.repository, scope)
    message: dict[str, Any] = {
        "messageType": kind,
        "runnerRequestId": job.id,
        "repositoryName": repository,
        "ownerName": owner,
        "jobId": job.job_id,
        "jobWorkflowRef": f"{owner}/{repository}/.github/workflows/ci.yml@refs/heads/main",
        "jobDisplayName": job.display_name or f"job {job.id}",
        "workflowRunId": 100_000 + job.id,
        "eventName": job.event_name,
        "requestLabels": list(job.labels),
        "queueTime": rfc3339(job.queued_at),
        "scaleSetAssignTime": rfc3339(job.assigned_at),
        "runnerAssignTime": rfc3339(job.started_at),
        "finishTime": rfc3339(finished),
    }
    if kind == "JobAvailable":
        message["acquireJobUrl"] = acquire_url
    if kind in ("JobStarted", "JobCompleted"):
        message["runnerId"] = job.runner_id or 0
        message["runnerName"] = job.runner_name or ""
    if kind == "JobCompleted":
        message["result"] = result
    return message


def _job_view(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "labels": list(job.labels),
        "state": job.state,
        "scaleSetId": job.scale_set_id,
        "runner": job.runner_name,
        "runnerId": job.runner_id,
        "result": job.result,
        "redispatches": job.redispatches,
        "queuedAt": rfc3339(job.queued_at),
        "acquiredAt": rfc3339(job.acquired_at),
        "startedAt": rfc3339(job.started_at),
        "finishedAt": rfc3339(job.finished_at),
    }


def state_view(state: SimState) -> dict[str, Any]:
    """`GET /_sim/state`: scale sets, sessions, runners, jobs and deleted scale sets."""
    return {
        "scaleSets": [
            {
                "id": s.id,
                "name": s.name,
                "labels": list(s.labels),
                "runnerGroupId": s.runner_group_id,
                "scope": state.tenants.get(s.tenant, ""),
                "statistics": state.statistics(s.id).wire(),
                "queuedMessages": len(s.messages) + (1 if s.events else 0),
            }
            for s in state.scale_sets.values()
        ],
        "sessions": [
            {
                "id": s.id,
                "scaleSetId": s.scale_set_id,
                "owner": s.owner,
                "maxCapacity": s.max_capacity,
                "polls": s.polls,
                "held": s.held,
                "userAgent": s.user_agent,
            }
            for s in state.sessions.values()
        ],
        "runners": [
            {
                "id": x.id,
                "name": x.name,
                "scaleSetId": x.scale_set_id,
                "job": x.job,
                "reservedJob": x.reserved,  # assigned, not started yet
                "status": (
                    "busy"
                    if x.job
                    else "finished"  # its job is done; the registration lingers
                    if x.finished
                    else "idle"
                    if x.last_seen
                    else "offline"
                ),
            }
            for x in state.runners.values()
        ],
        "jobs": [_job_view(job) for job in state.jobs.values()],
        "deletedScaleSets": [{"id": i, "name": n} for i, n in state.deleted_scale_sets.items()],
    }
