"""The Swarm service a runner is: one replicated job (one task, one completion, no restart).

A runner must run exactly once and never come back after its job, which is what a
replicated-job service with `TotalCompletions: 1` and restart condition `none` is: Swarm places
its one task, and when the task ends (job done, crash, rejected) the service is finished, not
rescheduled. Our labels go on the service (so `GET /services` and `GET /tasks` filter by them)
and on the container spec (so each task carries the runner's name without another lookup).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from runscaler.backends.base import JIT_CONFIG_ENV, LABEL_FLEET, BackendError, RunnerSpec
from runscaler.manifest.models import SwarmTemplate

RUNNER_DOCKER_SOCKET = "/var/run/docker.sock"
# Swarm names are DNS labels: 63 characters of letters, digits and dashes.
_MAX_NAME = 63
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9-]")
# A removed runner is stopped at once (like `docker rm -f`): it has no job, or its job is lost.
STOP_GRACE_NS = 1_000_000_000


def service_name(fleet: str, runner: str) -> str:
    """`runscaler-<fleet>-<runner>`; past 63 characters, cut and suffixed with a hash."""
    name = _NOT_IN_NAMES.sub("-", f"runscaler-{fleet}-{runner}")
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11].rstrip('-')}-{digest}"


def swarm_template(template: object) -> SwarmTemplate:
    if not isinstance(template, SwarmTemplate):
        raise BackendError(f"the Swarm backend cannot run a {type(template).__name__}")
    return template


def _mount(volume: str) -> dict[str, Any]:
    parts = volume.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise BackendError(f"volume {volume!r}: write it as SRC:DST or SRC:DST:ro")
    source, target = parts[0], parts[1]
    mount: dict[str, Any] = {
        "Type": "bind" if source.startswith("/") else "volume",
        "Source": source,
        "Target": target,
    }
    if len(parts) > 2 and "ro" in parts[2].split(","):
        mount["ReadOnly"] = True
    return mount


def runner_service(spec: RunnerSpec, *, fleet: str) -> dict[str, Any]:
    """The body of `POST /services/create` for `spec` (the JIT config in its environment)."""
    template = swarm_template(spec.template)
    labels = {**spec.labels, LABEL_FLEET: fleet}
    if any(spec.jit_config and spec.jit_config in f"{k}={v}" for k, v in labels.items()):
        raise BackendError(f"runner {spec.name}: refusing to put its JIT config in a label")
    env = [f"{key}={value}" for key, value in spec.env.items() if key != JIT_CONFIG_ENV]
    env.append(f"{JIT_CONFIG_ENV}={spec.jit_config}")

    mounts = [_mount(volume) for volume in template.volumes]
    if template.dind:
        mounts.append(
            {"Type": "bind", "Source": template.engine_socket, "Target": RUNNER_DOCKER_SOCKET}
        )
    container: dict[str, Any] = {
        "Image": template.image,
        "User": template.user,
        "Env": env,
        "Labels": labels,
        "Mounts": mounts,
        "StopGracePeriod": STOP_GRACE_NS,
    }
    if template.command:
        container["Command"] = list(template.command)
    resources: dict[str, Any] = {}
    if template.cpus:
        nano = round(template.cpus * 1e9)
        resources = {"Limits": {"NanoCPUs": nano}, "Reservations": {"NanoCPUs": nano}}
    if template.memory:
        resources.setdefault("Limits", {})["MemoryBytes"] = template.memory
        resources.setdefault("Reservations", {})["MemoryBytes"] = template.memory
    task: dict[str, Any] = {
        "ContainerSpec": container,
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Resources": resources,
        "Placement": {
            "Constraints": list(template.constraints),
            "Preferences": [
                {"Spread": {"SpreadDescriptor": p.spread}} for p in template.preferences
            ],
        },
    }
    if template.network:
        task["Networks"] = [{"Target": template.network}]
    return {
        "Name": service_name(fleet, spec.name),
        "Labels": labels,
        "TaskTemplate": task,
        "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
    }
