"""The Docker API body for one runner container, from a `RunnerSpec` and its template.

A pure function, so what a runner gets (name, labels, environment, limits, mounts) is decided in
one place and reads like the manifest's `docker` table. The JIT config goes to the environment
and nowhere else.
"""

from __future__ import annotations

import re
from typing import Any

from runscaler.backends.base import JIT_CONFIG_ENV, LABEL_FLEET, BackendError, RunnerSpec
from runscaler.manifest.models import DockerTemplate

# Where `dind` puts the engine's socket inside a runner: where the docker CLI looks for it.
RUNNER_DOCKER_SOCKET = "/var/run/docker.sock"

_NOT_IN_NAMES = re.compile(r"[^a-zA-Z0-9_.-]")


def container_name(fleet: str, runner: str) -> str:
    """`runscaler-<fleet>-<runner>`, with anything Docker refuses in a name replaced by `-`."""
    return _NOT_IN_NAMES.sub("-", f"runscaler-{fleet}-{runner}")


def shared_volume_name(fleet: str) -> str:
    return f"runscaler-{fleet}-shared"


def docker_template(template: object) -> DockerTemplate:
    if not isinstance(template, DockerTemplate):
        raise BackendError(f"the Docker backend cannot run a {type(template).__name__}")
    return template


def runner_container(
    spec: RunnerSpec,
    *,
    fleet: str,
    engine_socket: str | None,
    socket_gid: int | None,
) -> dict[str, Any]:
    """The body of `POST /containers/create` for `spec`.

    `engine_socket` is the engine's Unix socket on its host (None for a `tcp://` engine, whose
    socket is assumed at the usual place); `socket_gid` its group, added to the runner's groups
    so the runner user may use the socket when `dind` is on.
    """
    template = docker_template(spec.template)
    labels = {**spec.labels, LABEL_FLEET: fleet}
    if any(spec.jit_config and spec.jit_config in f"{k}={v}" for k, v in labels.items()):
        raise BackendError(f"runner {spec.name}: refusing to put its JIT config in a label")
    env = [f"{key}={value}" for key, value in spec.env.items() if key != JIT_CONFIG_ENV]
    env.append(f"{JIT_CONFIG_ENV}={spec.jit_config}")

    binds = list(template.volumes)
    if template.shared_volume is not None and template.shared_volume.path:
        # nocopy: the volume's root keeps the open mode prepare() gave it, whatever the image
        # has at that path.
        binds.append(f"{shared_volume_name(fleet)}:{template.shared_volume.path}:nocopy")
    host_config: dict[str, Any] = {"Binds": binds}
    if template.dind:
        binds.append(f"{engine_socket or RUNNER_DOCKER_SOCKET}:{RUNNER_DOCKER_SOCKET}")
        if socket_gid is not None:
            host_config["GroupAdd"] = [str(socket_gid)]
    if template.network:
        host_config["NetworkMode"] = template.network
    if template.cpus:
        host_config["NanoCpus"] = round(template.cpus * 1e9)
    if template.memory:
        host_config["Memory"] = template.memory

    body: dict[str, Any] = {
        "Image": template.image,
        "User": template.user,
        "Env": env,
        "Labels": labels,
        "HostConfig": host_config,
    }
    if template.command:
        body["Cmd"] = list(template.command)
    return body
