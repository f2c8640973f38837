"""Run one housekeeping script on every node of the swarm, once, and collect what it said.

The operator reaches only a manager's engine, but leftovers (exited runner containers on Docker
20.10, BuildKit builders, a shared volume's old files) live on every node. A global-mode job
service runs exactly one task per eligible node and finishes, which is what per-node hygiene
needs: the helper creates one (labelled with the fleet and the `hygiene` role, so `doctor` can
tell it apart from runners), waits for every task to end, and removes it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runscaler.backends.base import LABEL_FLEET, BackendError
from runscaler.backends.docker_client import engine_calls
from runscaler.backends.swarm import SwarmBackend
from runscaler.backends.swarm_tasks import ENDED_STATES, get_path, node_names

LABEL_ROLE = "dev.runscaler.role"
HYGIENE_TIMEOUT = 300.0
_POLL = 0.5


@dataclass(frozen=True)
class NodeResult:
    node: str
    exit_code: int | None
    state: str
    message: str


async def run_on_every_node(
    backend: SwarmBackend,
    *,
    image: str,
    script: str,
    mounts: Sequence[dict[str, Any]] = (),
    constraints: Sequence[str] = (),
    timeout: float = HYGIENE_TIMEOUT,  # noqa: ASYNC109 (the job's deadline, enforced inside)
) -> list[NodeResult]:
    """Run `sh -c script` as root in `image` once on every node (matching `constraints`)."""
    docker: Any = backend.api()
    name = f"runscaler-{backend.fleet}-hygiene-{secrets.token_hex(3)}"
    labels = {LABEL_FLEET: backend.fleet, LABEL_ROLE: "hygiene"}
    body = {
        "Name": name,
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": image,
                "User": "0",
                "Command": ["sh", "-c", script],
                "Labels": labels,
                "Mounts": list(mounts),
            },
            "RestartPolicy": {"Condition": "none"},
            "Placement": {"Constraints": list(constraints)},
        },
        "Mode": {"GlobalJob": {}},
    }
    with engine_calls(backend.host, f"cannot create service {name}"):
        created = await docker._query_json("services/create", method="POST", data=json.dumps(body))
    service_id = str(created.get("ID", name))
    try:
        with engine_calls(backend.host, f"cannot follow service {name}"):
            return await asyncio.wait_for(_results(docker, service_id), timeout)
    except TimeoutError:
        raise BackendError(
            f"hygiene job {name} did not finish on every node within {timeout:.0f}s"
        ) from None
    finally:
        with engine_calls(backend.host, f"cannot remove service {name}"):
            await asyncio.shield(docker._query_json(f"services/{service_id}", method="DELETE"))


async def _results(docker: Any, service_id: str) -> list[NodeResult]:
    filters = json.dumps({"service": [service_id]})
    while True:
        tasks = await docker._query_json("tasks", params={"filters": filters}) or []
        nodes = await docker._query_json("nodes") or []
        names, down = node_names(nodes)
        ready = [n for n in nodes if get_path(n, "Status", "State") == "ready"]
        live = [t for t in tasks if str(t.get("NodeID")) not in down]
        states = [str(get_path(t, "Status", "State")) for t in live]
        if len(live) >= len(ready) and all(s in ENDED_STATES for s in states):
            return [
                NodeResult(
                    node=names.get(str(t.get("NodeID")), str(t.get("NodeID"))),
                    exit_code=_exit_code(t),
                    state=str(get_path(t, "Status", "State")),
                    message=str(get_path(t, "Status", "Err") or ""),
                )
                for t in live
            ]
        await asyncio.sleep(_POLL)


def _exit_code(task: dict[str, Any]) -> int | None:
    code = get_path(task, "Status", "ContainerStatus", "ExitCode")
    return code if isinstance(code, int) else None
