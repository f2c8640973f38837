"""The Docker backend's start, cancelled at each await point, on the real engine.

A start is two engine calls. Cancelled while the engine creates the container (the engine did
it, the answer has not arrived), the container never started and must not be left `created`.
Cancelled while the engine starts it, the runner may be running and may already hold a job: it
is kept, never removed by the cancellation (SIGTERM during a start killed a job that way in a
chaos run, issue 9 item 10). The engine's answer is held back by waiting, after the real call
returned, for the test to cancel.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from runscaler.backends import docker as docker_module
from runscaler.backends.base import LABEL_RUNNER, LABEL_SCALE_SET, RunnerSpec
from runscaler.backends.docker import DockerBackend, container_name
from runscaler.backends.docker_api import DockerAPI
from runscaler.manifest.models import DockerTemplate
from tests.integration.dockerkit import docker
from tests.waiting import eventually

pytestmark = pytest.mark.docker


def runner_spec(name: str, image: str) -> RunnerSpec:
    tpl = DockerTemplate.model_validate(
        {"image": image, "pull": "never", "user": "0", "command": ["sleep", "300"]}
    )
    return RunnerSpec(
        name=name,
        jit_config="JIT-cancel-test-0123456789abcdef",
        labels={LABEL_SCALE_SET: "linux", LABEL_RUNNER: name},
        template=tpl,
    )


def answer_held(real: Callable[..., Awaitable[Any]], done: asyncio.Event) -> Any:
    """`real`, whose answer never arrives once the engine has done the call."""

    async def held(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)
        done.set()
        await asyncio.Event().wait()  # the answer is lost: only a cancellation ends this

    return held


def state_of(cname: str) -> str | None:
    out = docker("inspect", cname, check=False)
    if out.returncode != 0:
        return None
    return str(json.loads(out.stdout)[0]["State"]["Status"])


async def cancel_when(task: asyncio.Task[None], done: asyncio.Event) -> None:
    await eventually(done.is_set, timeout=30, message="the engine call done")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_start_cancelled_after_the_engine_created_the_container_leaves_none(
    docker_backend: DockerBackend,
    busybox_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done = asyncio.Event()
    monkeypatch.setattr(
        docker_module, "create_container", answer_held(docker_module.create_container, done)
    )
    name = "linux-cancel-create"
    task = asyncio.create_task(docker_backend.start(runner_spec(name, busybox_image)))
    await cancel_when(task, done)
    assert state_of(container_name(docker_backend.fleet, name)) is None
    assert await docker_backend.list_owned({}) == []


async def test_a_start_cancelled_after_the_engine_started_the_container_keeps_it_running(
    docker_backend: DockerBackend,
    busybox_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done = asyncio.Event()
    real_query = DockerAPI.query

    async def query(api: DockerAPI, path: str, **kwargs: Any) -> bytes:
        if not path.endswith("/start"):
            return await real_query(api, path, **kwargs)
        return await answer_held(real_query, done)(api, path, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(DockerAPI, "query", query)
    name = "linux-cancel-start"
    task = asyncio.create_task(docker_backend.start(runner_spec(name, busybox_image)))
    await cancel_when(task, done)
    cname = container_name(docker_backend.fleet, name)
    assert state_of(cname) == "running"
    [owned] = await docker_backend.list_owned({})
    assert owned.name == name and owned.running
    await docker_backend.remove(name)
    assert state_of(cname) is None
