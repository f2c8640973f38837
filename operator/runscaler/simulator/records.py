"""The simulator's records (scale sets, sessions, runners, jobs) and their wire shapes.

Kept apart from the transitions in `state.py` so each file stays readable: this one says what
the simulator remembers and how GitHub spells it on the wire; `state.py` says how it changes.
"""

from __future__ import annotations

import datetime
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

# Job states, in the order a job lives them.
QUEUED = "queued"  # matches no scale set yet
AVAILABLE = "available"  # assigned to a scale set, JobAvailable sent, not acquired
ACQUIRED = "acquired"  # the listener acquired it; a runner of the scale set may take it
RUNNING = "running"  # a runner took it
DONE = "done"
JOB_STATES = (QUEUED, AVAILABLE, ACQUIRED, RUNNING, DONE)

# A job result as runners report it (succeeded, failed, canceled, ...).
RESULT = re.compile(r"^[a-z_]{1,32}$")
MESSAGE_TYPE = "RunnerScaleSetJobMessages"
MAX_JOBS_PER_MESSAGE = 50
DEFAULT_GROUP_ID = 1
DEFAULT_GROUP_NAME = "default"

_RUNTIME = "GitHub.Actions.Runtime.WebApi"
_TASKS = "GitHub.DistributedTask.WebApi"
_SERVICES = "GitHub.Services.WebApi"
# Where each exception lives, so `typeName` carries the namespace and assembly as the real
# service's does (clients match on a substring).
_NAMESPACES = {
    "AgentExistsException": _TASKS,
    "AgentNotFoundException": _TASKS,
    "JobStillRunningException": _TASKS,
}


def type_name(short: str) -> str:
    """`RunnerScaleSetNotFoundException` → its namespace-qualified, assembly-qualified name."""
    namespace = _NAMESPACES.get(short, _SERVICES if short.startswith("Vss") else _RUNTIME)
    return f"{namespace}.{short}, {namespace}"


class ApiError(Exception):
    """A request the service refuses: the HTTP status and the exception GitHub would send."""

    def __init__(self, status: int, exception: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.exception = exception
        self.message = message

    def body(self) -> dict[str, str]:
        return {"typeName": type_name(self.exception), "message": self.message}


def rfc3339(moment: float | None) -> str | None:
    if moment is None:
        return None
    stamp = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class ScaleSet:
    id: int
    tenant: str
    name: str
    runner_group_id: int
    runner_group_name: str
    labels: list[str]
    disable_update: bool
    created_at: float
    # Inner job messages not yet packed into a queue message, and the packed ones not deleted.
    events: list[dict[str, Any]] = field(default_factory=list)
    messages: list[QueueMessage] = field(default_factory=list)
    # Job events held back until their moment (the live service delivers them late).
    late: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def label_set(self) -> set[str]:
        """What jobs match against: the labels and the name, compared case-insensitively."""
        return {label.lower() for label in self.labels} | {self.name.lower()}


@dataclass
class QueueMessage:
    id: int
    body: str  # a JSON string holding the array of inner job messages
    jobs: int
    available: set[int]  # the jobs it offers (JobAvailable), so a new session is not told twice


@dataclass
class Session:
    id: str
    scale_set_id: int
    owner: str
    created_at: float
    last_activity: float
    held: bool = False  # a phantom owner (POST /_sim/hold-session): never expires
    polls: int = 0
    max_capacity: int | None = None
    user_agent: str | None = None  # of the latest poll, for tests of the client's headers
    last_message_id: int = 0  # the id of the last message numbered in this session


@dataclass
class Runner:
    id: int
    name: str
    scale_set_id: int
    tenant: str
    client_id: str  # the runner's credential on the broker endpoints (inside its JIT config)
    work_folder: str
    registered_at: float
    job: int | None = None
    last_seen: float | None = None
    # A job assigned to it that has not started yet (GitHub already reports the runner busy).
    reserved: int | None = None
    # An ephemeral runner whose job ended: still registered until `remove_at`, never reused.
    finished: bool = False
    remove_at: float | None = None


@dataclass
class Job:
    id: int  # also the runnerRequestId
    labels: list[str]
    duration: float
    planned_result: str
    repository: str | None
    display_name: str | None
    event_name: str
    queued_at: float
    state: str = QUEUED
    scale_set_id: int | None = None
    assigned_at: float | None = None
    acquired_at: float | None = None
    runner_id: int | None = None
    runner_name: str | None = None
    started_at: float | None = None
    due_at: float | None = None  # when the runner's work is done and its report is due
    cancel_requested: bool = False
    work_done_seen: bool = False
    finished_at: float | None = None
    result: str | None = None
    redispatches: int = 0
    # Handed to a runner that has not started it yet (the window before JobStarted).
    reserved_for: int | None = None
    start_at: float | None = None
    start_due_seen: bool = False

    @property
    def job_id(self) -> str:
        """The string `jobId` of the wire messages (a GUID, as the service's)."""
        return str(uuid.UUID(int=self.id))


@dataclass
class Statistics:
    total_available_jobs: int = 0
    total_acquired_jobs: int = 0
    total_assigned_jobs: int = 0
    total_running_jobs: int = 0
    total_registered_runners: int = 0
    total_busy_runners: int = 0
    total_idle_runners: int = 0

    def wire(self) -> dict[str, int]:
        return {
            "totalAvailableJobs": self.total_available_jobs,
            "totalAcquiredJobs": self.total_acquired_jobs,
            "totalAssignedJobs": self.total_assigned_jobs,
            "totalRunningJobs": self.total_running_jobs,
            "totalRegisteredRunners": self.total_registered_runners,
            "totalBusyRunners": self.total_busy_runners,
            "totalIdleRunners": self.total_idle_runners,
        }


def scale_set_wire(scale_set: ScaleSet, statistics: Statistics, *, jit_url: str) -> dict[str, Any]:
    return {
        "id": scale_set.id,
        "name": scale_set.name,
        "runnerGroupId": scale_set.runner_group_id,
        "runnerGroupName": scale_set.runner_group_name,
        "labels": [{"type": "System", "name": label} for label in scale_set.labels],
        "RunnerSetting": {"disableUpdate": scale_set.disable_update},
        "createdOn": rfc3339(scale_set.created_at),
        "runnerJitConfigUrl": jit_url,
        "statistics": statistics.wire(),
    }


def runner_wire(runner: Runner) -> dict[str, Any]:
    return {
        "id": runner.id,
        "name": runner.name,
        "runnerScaleSetId": runner.scale_set_id,
        "status": "online" if runner.last_seen is not None and not runner.finished else "offline",
        "busy": runner.job is not None or runner.reserved is not None,
    }


def message_wire(message: QueueMessage, statistics: Statistics) -> dict[str, Any]:
    return {
        "messageId": message.id,
        "messageType": MESSAGE_TYPE,
        "body": message.body,
        "statistics": statistics.wire(),
    }


def pack_events(events: list[dict[str, Any]]) -> str:
    return json.dumps(events, separators=(",", ":"))
