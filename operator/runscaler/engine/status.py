"""Read-only snapshots of the running fleet, for `/status`, `/metrics` and the status command.

The engine's objects change under their own tasks; the HTTP server and the metrics collector
only ever see these frozen copies, taken in one synchronous step on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FailureStatus:
    reason: str
    message: str
    exit_code: int | None
    log_tail: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class RunnerStatus:
    """One runner as the book last saw it."""

    name: str
    state: str  # starting | idle | busy | finishing | removing | failed | lost
    since: float  # epoch seconds of its last transition
    job_id: str | None
    template_hash: str
    exit_code: int | None = None
    reason: str | None = None
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "since": self.since,
            "jobId": self.job_id,
            "templateHash": self.template_hash,
            "exitCode": self.exit_code,
            "reason": self.reason,
            "node": self.node,
        }


@dataclass(frozen=True)
class ScaleSetStatus:
    name: str
    url: str
    key: str
    state: str  # starting | listening | standby | draining | suspended | degraded
    desired: int
    idle: int
    busy: int
    starting: int
    assigned_jobs: int
    running_jobs: int
    registered_runners: int
    min_runners: int
    max_runners: int
    organization: str
    repository: str
    enterprise: str
    last_error: str | None = None
    last_failure: FailureStatus | None = None
    failures_in_row: int = 0
    runners: tuple[RunnerStatus, ...] = ()
    messages_unparseable: int = 0
    # GitHub's labels are not the manifest's (a discarded PATCH, or GHES without custom labels).
    label_mismatch: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "state": self.state,
            "desired": self.desired,
            "idle": self.idle,
            "busy": self.busy,
            "starting": self.starting,
            "assignedJobs": self.assigned_jobs,
            "runningJobs": self.running_jobs,
            "minRunners": self.min_runners,
            "maxRunners": self.max_runners,
            "lastError": self.last_error,
            "labelMismatch": self.label_mismatch,
            "lastFailure": None
            if self.last_failure is None
            else {
                "reason": self.last_failure.reason,
                "message": self.last_failure.message,
                "exitCode": self.last_failure.exit_code,
                "logTail": list(self.last_failure.log_tail),
                "at": self.last_failure.at,
            },
            "runners": [r.to_json() for r in self.runners],
        }


@dataclass(frozen=True)
class ReloadStatus:
    ok: bool
    at: float | None
    error: str | None  # the located `FILE:LINE:COL: …` line of the last rejection
    success_at: float | None = None


@dataclass(frozen=True)
class FleetStatus:
    fleet: str
    generation: int
    manifest_path: str
    manifest_sha256: str
    manifest_revision: str | None
    reload: ReloadStatus
    ready: bool
    scale_sets: tuple[ScaleSetStatus, ...] = field(default_factory=tuple)
    reloads: dict[str, int] = field(default_factory=dict)  # result -> count

    def to_json(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet,
            "generation": self.generation,
            "manifest": {
                "path": self.manifest_path,
                "sha256": self.manifest_sha256,
                "revision": self.manifest_revision,
            },
            "reload": {"ok": self.reload.ok, "at": self.reload.at, "error": self.reload.error},
            "scaleSets": [s.to_json() for s in self.scale_sets],
        }
