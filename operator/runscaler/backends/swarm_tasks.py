"""What the manager's task and node lists say about our runners, read as runner states.

The manager's event stream carries no task events (Docker 20.10 and later), so the backend lists
tasks: one `GET /tasks` filtered by the fleet label (the filter matches the service's labels)
and one `GET /nodes` per pass cover every runner of the fleet. Two facts shape the reading:
a task on a node that went `down` keeps saying `running` for as long as the node is away (so a
runner is lost when its node is down, whatever its task says), and a task Swarm cannot place
stays `pending` with "no suitable node (...)" as its error, forever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from runscaler.backends.base import LABEL_RUNNER

# States after which a task never runs again (swarmkit's api.TaskState, lowercased).
ENDED_STATES = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})
# Reported for a task that ended without a container exit code (rejected, never started).
NO_EXIT_CODE = -1
_NOT_PLACED = "no suitable node"


class Phase(Enum):
    STARTING = "starting"  # not yet running: scheduled, pulling, starting
    UNPLACEABLE = "unplaceable"  # pending: no node satisfies the constraints or has room
    RUNNING = "running"
    ENDED = "ended"
    LOST = "lost"  # its node is down


@dataclass(frozen=True)
class RunnerTask:
    """The latest task of one runner's service, with what its node says."""

    name: str
    labels: Mapping[str, str]
    phase: Phase
    state: str
    node: str | None = None
    exit_code: int | None = None
    message: str = ""
    created_at: float | None = None
    service_id: str = ""

    @property
    def detail(self) -> str:
        """The manager's words for what happened, for logs and status."""
        where = f" on node {self.node}" if self.node else ""
        if self.phase is Phase.LOST:
            return f"node {self.node} is down; its task was {self.state}"
        if self.phase is Phase.UNPLACEABLE:
            return f"pending: {self.message}"
        return f"{self.state}{where}" + (f": {self.message}" if self.message else "")


@dataclass
class Snapshot:
    """One pass over the manager's lists: every runner of the fleet that has a task."""

    runners: dict[str, RunnerTask] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)  # node id -> display name
    down: frozenset[str] = frozenset()  # ids of nodes that are down


def epoch(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    # The engine writes nanoseconds; Python parses microseconds.
    text = value.rstrip("Z")
    if "." in text:
        whole, fraction = text.split(".", 1)
        text = f"{whole}.{fraction[:6]}"
    try:
        return datetime.fromisoformat(text + "+00:00").timestamp()
    except ValueError:
        return None


def node_names(nodes: Iterable[Mapping[str, Any]]) -> tuple[dict[str, str], frozenset[str]]:
    """Node id -> hostname (with the id when hostnames repeat), and the ids of down nodes."""
    listed = list(nodes)
    hostnames = [str(get_path(node, "Description", "Hostname") or "") for node in listed]
    names: dict[str, str] = {}
    down: set[str] = set()
    for node, hostname in zip(listed, hostnames, strict=True):
        node_id = str(node.get("ID", ""))
        unique = hostname and hostnames.count(hostname) == 1
        names[node_id] = hostname if unique else f"{hostname or 'node'}/{node_id[:12]}"
        if get_path(node, "Status", "State") in ("down", "disconnected", "unknown"):
            down.add(node_id)
    return names, frozenset(down)


def read_tasks(tasks: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]) -> Snapshot:
    names, down = node_names(nodes)
    latest: dict[str, tuple[float, RunnerTask]] = {}
    for task in tasks:
        runner = read_task(task, names, down)
        if runner is None:
            continue
        order = runner.created_at or 0.0
        if runner.name not in latest or order >= latest[runner.name][0]:
            latest[runner.name] = (order, runner)
    return Snapshot(runners={k: v for k, (_, v) in latest.items()}, nodes=names, down=down)


def read_task(
    task: Mapping[str, Any], names: Mapping[str, str], down: frozenset[str]
) -> RunnerTask | None:
    labels = get_path(task, "Spec", "ContainerSpec", "Labels")
    if not isinstance(labels, dict) or LABEL_RUNNER not in labels:
        return None
    state = str(get_path(task, "Status", "State") or "new")
    node_id = str(task.get("NodeID") or "")
    message = str(get_path(task, "Status", "Err") or "")
    exit_code = get_path(task, "Status", "ContainerStatus", "ExitCode")
    if state in ENDED_STATES:
        phase = Phase.ENDED
        if not isinstance(exit_code, int) or (exit_code == 0 and state != "complete"):
            exit_code = 0 if state == "complete" else NO_EXIT_CODE
    else:
        exit_code = None
        if node_id and node_id in down:
            phase = Phase.LOST
        elif state == "running":
            phase = Phase.RUNNING
        elif state == "pending" and _NOT_PLACED in message:
            phase = Phase.UNPLACEABLE
        else:
            phase = Phase.STARTING
    return RunnerTask(
        name=str(labels[LABEL_RUNNER]),
        labels=dict(labels),
        phase=phase,
        state=state,
        node=names.get(node_id, node_id[:12]) if node_id else None,
        exit_code=exit_code,
        message=message,
        created_at=epoch(task.get("CreatedAt")),
        service_id=str(task.get("ServiceID", "")),
    )


def get_path(node: object, *path: str) -> object:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
