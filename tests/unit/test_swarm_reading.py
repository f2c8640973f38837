"""The Swarm backend's pure parts: the service a runner becomes, and reading task lists.

The task and node documents are shaped like the manager's `GET /tasks` and `GET /nodes`
answers recorded on Docker 20.10 (trimmed to the fields read); the integration tests check the
same readings against a real swarm.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from runscaler.backends.base import (
    JIT_CONFIG_ENV,
    LABEL_FLEET,
    LABEL_RUNNER,
    BackendError,
    RunnerSpec,
)
from runscaler.backends.swarm_spec import runner_service, service_name
from runscaler.backends.swarm_tasks import NO_EXIT_CODE, Phase, read_tasks
from runscaler.manifest.models import DockerTemplate, SwarmTemplate

JIT = "eyJzZWNyZXQiOiJ0b3AifQ=="


def runner_spec(**fields: Any) -> RunnerSpec:
    return RunnerSpec(
        name="linux-0a1b2c3d",
        jit_config=JIT,
        labels={LABEL_RUNNER: "linux-0a1b2c3d"},
        template=SwarmTemplate.model_validate(fields),
        env={"EXTRA": "1"},
    )


def test_a_runner_is_a_one_shot_replicated_job_with_the_jit_config_only_in_its_env() -> None:
    body = runner_service(
        runner_spec(
            memory="1GiB",
            cpus=2,
            volumes=["/srv/cache:/cache:ro", "tools:/tools"],
            dind=True,
            constraints=["node.labels.pool==big"],
            preferences=[{"spread": "node.labels.zone"}],
        ),
        fleet="acme",
    )

    assert body["Name"] == "runscaler-acme-linux-0a1b2c3d"
    assert body["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    task = body["TaskTemplate"]
    assert task["RestartPolicy"]["Condition"] == "none"
    container = task["ContainerSpec"]
    assert container["Env"] == ["EXTRA=1", f"{JIT_CONFIG_ENV}={JIT}"]
    assert (
        container["Labels"]
        == body["Labels"]
        == {LABEL_RUNNER: "linux-0a1b2c3d", LABEL_FLEET: "acme"}
    )
    outside_env = json.dumps(
        {**body, "TaskTemplate": {**task, "ContainerSpec": {**container, "Env": []}}}
    )
    assert JIT not in outside_env
    assert task["Resources"] == {
        "Limits": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 1024**3},
        "Reservations": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 1024**3},
    }
    assert task["Placement"] == {
        "Constraints": ["node.labels.pool==big"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
    }
    assert container["Mounts"] == [
        {"Type": "bind", "Source": "/srv/cache", "Target": "/cache", "ReadOnly": True},
        {"Type": "volume", "Source": "tools", "Target": "/tools"},
        {"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock"},
    ]


def test_long_service_names_are_cut_to_63_characters_and_stay_distinct() -> None:
    a = service_name("f" * 40, "x" * 55 + "-00000001")
    b = service_name("f" * 40, "x" * 55 + "-00000002")

    assert len(a) <= 63 and len(b) <= 63 and a != b
    assert service_name("acme", "mac.os_1") == "runscaler-acme-mac-os-1"


def test_a_docker_template_is_refused() -> None:
    spec = RunnerSpec(name="r", jit_config=JIT, labels={}, template=DockerTemplate())
    with pytest.raises(BackendError, match="cannot run a DockerTemplate"):
        runner_service(spec, fleet="acme")


def task(
    runner: str,
    state: str,
    *,
    node: str = "n1",
    created: str = "2026-12-01T09:00:00.1Z",
    **status: Any,
) -> dict[str, Any]:
    return {
        "ID": f"t-{runner}-{state}",
        "ServiceID": f"s-{runner}",
        "NodeID": node,
        "CreatedAt": created,
        "Spec": {"ContainerSpec": {"Labels": {LABEL_RUNNER: runner, LABEL_FLEET: "acme"}}},
        "Status": {"State": state, **status},
    }


def node(node_id: str, hostname: str, state: str = "ready") -> dict[str, Any]:
    return {"ID": node_id, "Description": {"Hostname": hostname}, "Status": {"State": state}}


def test_task_states_become_runner_phases_and_a_down_node_makes_its_runners_lost() -> None:
    snapshot = read_tasks(
        [
            task("up", "running"),
            task("away", "running", node="n2"),
            task("done", "complete", ContainerStatus={"ExitCode": 0}),
            task(
                "crashed", "failed", Err="task: non-zero exit (3)", ContainerStatus={"ExitCode": 3}
            ),
            task("nopull", "rejected", Err="No such image: x:1"),
            task(
                "stuck",
                "pending",
                node="",
                Err="no suitable node (scheduling constraints not satisfied on 2 nodes)",
            ),
            task("pulling", "preparing"),
            {"Spec": {"ContainerSpec": {"Labels": {}}}, "Status": {"State": "running"}},
        ],
        [node("n1", "a"), node("n2", "b", state="down")],
    )

    phases = {name: (r.phase, r.exit_code) for name, r in snapshot.runners.items()}
    assert phases == {
        "up": (Phase.RUNNING, None),
        "away": (Phase.LOST, None),
        "done": (Phase.ENDED, 0),
        "crashed": (Phase.ENDED, 3),
        "nopull": (Phase.ENDED, NO_EXIT_CODE),
        "stuck": (Phase.UNPLACEABLE, None),
        "pulling": (Phase.STARTING, None),
    }
    assert snapshot.runners["away"].detail == "node b is down; its task was running"
    assert snapshot.runners["stuck"].detail == (
        "pending: no suitable node (scheduling constraints not satisfied on 2 nodes)"
    )
    assert snapshot.runners["crashed"].detail == "failed on node a: task: non-zero exit (3)"
    assert snapshot.down == frozenset({"n2"})


def test_nodes_sharing_a_hostname_are_told_apart_by_id_and_the_latest_task_wins() -> None:
    snapshot = read_tasks(
        [
            task("r", "failed", node="node-one-id-xyz", created="2026-12-01T09:00:00Z"),
            task("r", "running", node="node-two-id-xyz", created="2026-12-01T09:00:05.123456789Z"),
        ],
        [node("node-one-id-xyz", "vm"), node("node-two-id-xyz", "vm")],
    )

    assert snapshot.runners["r"].phase is Phase.RUNNING
    assert snapshot.runners["r"].node == "vm/node-two-id-"  # the id's first 12 characters
