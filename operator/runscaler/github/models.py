"""The scale set API's data, as frozen values, read as leniently as the Go client reads them.

Go's `encoding/json` matches a field name exactly first, then case-insensitively, and ignores
unknown fields; the service has changed casing before (the capitalised `RunnerSetting`), so
these parsers do the same. A value of the wrong type is an error (`ParseError`): the client
reports it as the service answering something unexpected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runscaler import __version__

log = logging.getLogger("runscaler.github")

JOB_MESSAGES_TYPE = "RunnerScaleSetJobMessages"
GO_ZERO_TIME = "0001-01-01T00:00:00Z"


class ParseError(ValueError):
    """A response field has the wrong type or shape."""


def field_value(data: Mapping[str, Any], key: str) -> Any:
    """`data[key]`, else the first key equal to it ignoring case, else None."""
    if key in data:
        return data[key]
    folded = key.lower()
    for name, value in data.items():
        if name.lower() == folded:
            return value
    return None


def as_object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ParseError(f"{what} is not a JSON object")
    return value


def _int(data: Mapping[str, Any], key: str) -> int:
    value = field_value(data, key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ParseError(f"{key} is not an integer: {value!r}")
    return int(value)


def _str(data: Mapping[str, Any], key: str) -> str:
    value = field_value(data, key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParseError(f"{key} is not a string: {value!r}")
    return value


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = field_value(data, key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ParseError(f"{key} is not a boolean: {value!r}")
    return value


def _strings(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = field_value(data, key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ParseError(f"{key} is not a list of strings")
    return tuple(value)


def parse_time(value: Any, key: str = "time") -> datetime | None:
    """An RFC 3339 timestamp; None for null, absent, or Go's zero time."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ParseError(f"{key} is not an RFC 3339 timestamp: {value!r}")
    text = value.strip()
    if text.startswith("0001-01-01T00:00:00"):
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # .NET writes 7 fractional digits; Python reads at most 6.
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ParseError(f"{key} is not an RFC 3339 timestamp: {value!r}") from exc


@dataclass(frozen=True)
class Statistics:
    """The scale set's job and runner counts; `total_assigned_jobs` drives scaling."""

    total_available_jobs: int = 0
    total_acquired_jobs: int = 0
    total_assigned_jobs: int = 0
    total_running_jobs: int = 0
    total_registered_runners: int = 0
    total_busy_runners: int = 0
    total_idle_runners: int = 0

    @classmethod
    def from_json(cls, value: Any) -> Statistics:
        data = as_object(value, "statistics")
        return cls(
            total_available_jobs=_int(data, "totalAvailableJobs"),
            total_acquired_jobs=_int(data, "totalAcquiredJobs"),
            total_assigned_jobs=_int(data, "totalAssignedJobs"),
            total_running_jobs=_int(data, "totalRunningJobs"),
            total_registered_runners=_int(data, "totalRegisteredRunners"),
            total_busy_runners=_int(data, "totalBusyRunners"),
            total_idle_runners=_int(data, "totalIdleRunners"),
        )


def optional_statistics(data: Mapping[str, Any]) -> Statistics | None:
    value = field_value(data, "statistics")
    return None if value is None else Statistics.from_json(value)


@dataclass(frozen=True)
class RunnerScaleSet:
    """A runner scale set. Build one with a name (and group, labels) to create it."""

    id: int = 0
    name: str = ""
    runner_group_id: int = 0
    runner_group_name: str = ""
    labels: tuple[str, ...] = ()
    # Ephemeral runners must not update themselves mid-job; ARC and the Go example set this.
    disable_update: bool = True
    statistics: Statistics | None = None

    @classmethod
    def from_json(cls, value: Any) -> RunnerScaleSet:
        data = as_object(value, "runner scale set")
        labels_value = field_value(data, "labels") or []
        if not isinstance(labels_value, list):
            raise ParseError("labels is not a list")
        labels = tuple(_str(as_object(label, "label"), "name") for label in labels_value)
        setting = field_value(data, "RunnerSetting")
        disable_update = (
            _bool(as_object(setting, "RunnerSetting"), "disableUpdate") if setting else False
        )
        return cls(
            id=_int(data, "id"),
            name=_str(data, "name"),
            runner_group_id=_int(data, "runnerGroupId"),
            runner_group_name=_str(data, "runnerGroupName"),
            labels=labels,
            disable_update=disable_update,
            statistics=optional_statistics(data),
        )

    def to_create_json(self) -> dict[str, Any]:
        """The A4 body, as the Go client writes it (an empty label list means the name)."""
        body: dict[str, Any] = {}
        if self.id:
            body["id"] = self.id
        body["name"] = self.name
        if self.runner_group_id:
            body["runnerGroupId"] = self.runner_group_id
        if self.runner_group_name:
            body["runnerGroupName"] = self.runner_group_name
        body["labels"] = system_labels(self.labels or (self.name,))
        body["RunnerSetting"] = {"disableUpdate": True} if self.disable_update else {}
        body["createdOn"] = GO_ZERO_TIME
        return body


def system_labels(names: tuple[str, ...] | list[str]) -> list[dict[str, str]]:
    return [{"type": "System", "name": name} for name in names]


@dataclass(frozen=True)
class RunnerReference:
    """A registered runner, as the agents endpoints list it."""

    id: int
    name: str
    runner_scale_set_id: int
    busy: bool = False  # holds a job right now
    status: str = ""  # "online" once the runner has connected, else "offline"

    @property
    def online(self) -> bool:
        return self.status.lower() == "online"

    @classmethod
    def from_json(cls, value: Any) -> RunnerReference:
        data = as_object(value, "runner")
        busy = field_value(data, "busy")
        status = field_value(data, "status")
        return cls(
            id=_int(data, "id"),
            name=_str(data, "name"),
            runner_scale_set_id=_int(data, "runnerScaleSetId"),
            busy=busy is True,
            status=status if isinstance(status, str) else "",
        )


@dataclass(frozen=True)
class JitConfig:
    """A just-in-time runner registration; `encoded` is a secret for the runner's env only."""

    runner_id: int
    runner_name: str
    scale_set_id: int
    encoded: str = field(repr=False)

    @classmethod
    def from_json(cls, value: Any, *, scale_set_id: int) -> JitConfig:
        data = as_object(value, "JIT config")
        runner = RunnerReference.from_json(field_value(data, "runner") or {})
        encoded = _str(data, "encodedJITConfig")
        if not encoded:
            raise ParseError("encodedJITConfig is empty")
        return cls(
            runner_id=runner.id,
            runner_name=runner.name,
            scale_set_id=runner.runner_scale_set_id or scale_set_id,
            encoded=encoded,
        )


@dataclass(frozen=True)
class SessionInfo:
    """A RunnerScaleSetSession as A7/A8 return it (the token is a secret)."""

    session_id: str
    owner_name: str
    message_queue_url: str
    message_queue_access_token: str = field(repr=False)
    statistics: Statistics | None
    runner_scale_set: RunnerScaleSet | None

    @classmethod
    def from_json(cls, value: Any) -> SessionInfo:
        data = as_object(value, "session")
        scale_set = field_value(data, "runnerScaleSet")
        info = cls(
            session_id=_str(data, "sessionId"),
            owner_name=_str(data, "ownerName"),
            message_queue_url=_str(data, "messageQueueUrl"),
            message_queue_access_token=_str(data, "messageQueueAccessToken"),
            statistics=optional_statistics(data),
            runner_scale_set=None if scale_set is None else RunnerScaleSet.from_json(scale_set),
        )
        missing = [
            name
            for name, present in (
                ("sessionId", info.session_id),
                ("messageQueueUrl", info.message_queue_url),
                ("messageQueueAccessToken", info.message_queue_access_token),
            )
            if not present
        ]
        if missing:
            raise ParseError(f"the session has no {', '.join(missing)}")
        return info


@dataclass(frozen=True)
class UserAgent:
    """Who is calling, truthfully: `runscaler/<version> (<subsystem>) ScaleSetID/<id|NA>`.

    Shaped like the plain-text User-Agent ARC sent for years. The Go library's JSON form is
    not borrowed: its `build_*` fields and `kind:"scaleset"` describe that library's build,
    which runscaler is not (protocol-notes.md).
    """

    system: str = "runscaler"
    version: str = __version__
    subsystem: str = "listener"
    scale_set_id: int = 0  # 0 until the client opens a session for its scale set

    def __str__(self) -> str:
        scale_set = str(self.scale_set_id) if self.scale_set_id > 0 else "NA"
        return f"{self.system}/{self.version} ({self.subsystem}) ScaleSetID/{scale_set}"


@dataclass(frozen=True, kw_only=True)
class JobMessage:
    """What every job event carries (protocol.md §2.2). `job_id` is a string on the wire."""

    runner_request_id: int = 0
    repository_name: str = ""
    owner_name: str = ""
    job_id: str = ""
    job_workflow_ref: str = ""
    job_display_name: str = ""
    workflow_run_id: int = 0
    event_name: str = ""
    request_labels: tuple[str, ...] = ()
    queue_time: datetime | None = None
    scale_set_assign_time: datetime | None = None
    runner_assign_time: datetime | None = None
    finish_time: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class JobAvailable(JobMessage):
    """A job the scale set may acquire (acquire it by `runner_request_id`)."""

    acquire_job_url: str = ""


@dataclass(frozen=True, kw_only=True)
class JobAssigned(JobMessage):
    """A job assigned to this scale set, waiting for one of its runners."""


@dataclass(frozen=True, kw_only=True)
class JobStarted(JobMessage):
    """A runner of this scale set took the job."""

    runner_id: int = 0
    runner_name: str = ""


@dataclass(frozen=True, kw_only=True)
class JobCompleted(JobMessage):
    """The job ended (`result`: succeeded, failed, canceled, …)."""

    result: str = ""
    runner_id: int = 0
    runner_name: str = ""


@dataclass(frozen=True)
class Message:
    """One message from the queue: statistics plus at most 50 job events."""

    message_id: int
    message_type: str
    statistics: Statistics
    jobs: tuple[JobMessage, ...] = ()


def _base_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "runner_request_id": _int(data, "runnerRequestId"),
        "repository_name": _str(data, "repositoryName"),
        "owner_name": _str(data, "ownerName"),
        "job_id": _str(data, "jobId"),
        "job_workflow_ref": _str(data, "jobWorkflowRef"),
        "job_display_name": _str(data, "jobDisplayName"),
        "workflow_run_id": _int(data, "workflowRunId"),
        "event_name": _str(data, "eventName"),
        "request_labels": _strings(data, "requestLabels"),
        "queue_time": parse_time(field_value(data, "queueTime"), "queueTime"),
        "scale_set_assign_time": parse_time(
            field_value(data, "scaleSetAssignTime"), "scaleSetAssignTime"
        ),
        "runner_assign_time": parse_time(field_value(data, "runnerAssignTime"), "runnerAssignTime"),
        "finish_time": parse_time(field_value(data, "finishTime"), "finishTime"),
    }


def parse_job_message(value: Any) -> JobMessage | None:
    """One inner job event; None for a type this client does not know (skipped)."""
    data = as_object(value, "job message")
    kind = _str(data, "messageType")
    base = _base_fields(data)
    if kind == "JobAvailable":
        return JobAvailable(acquire_job_url=_str(data, "acquireJobUrl"), **base)
    if kind == "JobAssigned":
        return JobAssigned(**base)
    if kind == "JobStarted":
        return JobStarted(
            runner_id=_int(data, "runnerId"), runner_name=_str(data, "runnerName"), **base
        )
    if kind == "JobCompleted":
        return JobCompleted(
            result=_str(data, "result"),
            runner_id=_int(data, "runnerId"),
            runner_name=_str(data, "runnerName"),
            **base,
        )
    log.debug("skipping a job message of unknown type %r", kind)
    return None


def parse_job_messages(body: str) -> tuple[JobMessage, ...]:
    """The message `body`: a JSON string holding an array of job events (empty → none)."""
    if not body.strip():
        return ()
    try:
        items = json.loads(body)
    except ValueError as exc:
        raise ParseError("the message body is not JSON") from exc
    if not isinstance(items, list):
        raise ParseError("the message body is not a JSON array")
    jobs = (parse_job_message(item) for item in items)
    return tuple(job for job in jobs if job is not None)


def parse_message(value: Any, *, fallback_statistics: Statistics) -> Message:
    """A Q1 message. Without `statistics` (never seen, but the Go listener would crash on it)
    the last known statistics stand, so demand is not mistaken for zero."""
    data = as_object(value, "message")
    message_type = _str(data, "messageType")
    if message_type != JOB_MESSAGES_TYPE:
        raise ParseError(f"unsupported message type {message_type!r}")
    statistics = optional_statistics(data)
    if statistics is None:
        log.warning("message %s has no statistics; keeping the last known", data.get("messageId"))
        statistics = fallback_statistics
    body = field_value(data, "body")
    if body is not None and not isinstance(body, str):
        raise ParseError("the message body is not a string")
    return Message(
        message_id=_int(data, "messageId"),
        message_type=message_type,
        statistics=statistics,
        jobs=parse_job_messages(body or ""),
    )
