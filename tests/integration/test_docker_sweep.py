"""Housekeeping on the real engine: the shared volume's old files and buildx leftovers go,
everything else stays.

Debian has no buildx, so builders are look-alikes: busybox containers named
`buildx_buildkit_<builder><n>` with a `<name>_state` volume, exactly as buildx names them.
Their age is controlled with the sweeper's `now` (or the loop's `clock`), not by waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runscaler.backends.docker import DockerBackend
from runscaler.backends.docker_sweep import housekeeping, sweep_buildx, sweep_shared_volume
from runscaler.engine.backendpool import BackendPool
from runscaler.engine.scaler import Template
from runscaler.manifest.models import DockerTemplate, ScaleSet
from tests.integration.dockerkit import FLEET_LABEL, docker
from tests.waiting import eventually

pytestmark = pytest.mark.docker

OLD = "2020-01-01 00:00:00"


class Leftovers:
    """Look-alike containers and volumes made for one test, removed after it."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.tag = secrets.token_hex(3)
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def builder(self, builder: str, *, running: bool = True) -> str:
        name = f"buildx_buildkit_{builder}{self.tag}0"
        self.container(name, running=running, volume=f"{name}_state")
        return name

    def container(self, name: str, *, running: bool = True, volume: str | None = None) -> str:
        args = ["-v", f"{volume}:/var/lib/buildkit"] if volume else []
        if volume:
            self.volumes.append(volume)
        self.containers.append(name)
        command = ["sleep", "300"] if running else ["true"]
        docker("run", "-d", "--name", name, *args, self.image, *command)
        if not running:
            docker("wait", name)
        return name

    def volume(self, name: str) -> str:
        self.volumes.append(name)
        docker("volume", "create", name)
        return name

    def existing_containers(self) -> set[str]:
        out = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        return set(out) & set(self.containers)

    def existing_volumes(self) -> set[str]:
        return set(docker("volume", "ls", "--format", "{{.Name}}").stdout.split()) & set(
            self.volumes
        )

    def remove(self) -> None:
        if self.containers:
            docker("rm", "-fv", *self.containers, check=False)
        if self.volumes:
            docker("volume", "rm", "-f", *self.volumes, check=False)


@pytest.fixture
def leftovers(busybox_image: str) -> Iterator[Leftovers]:
    made = Leftovers(busybox_image)
    try:
        yield made
    finally:
        made.remove()


def created_at(name: str) -> float:
    text = json.loads(docker("inspect", name).stdout)[0]["Created"]
    base, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(base + "+00:00").timestamp() + float(f"0.{fraction or 0}")


def template(image: str, **fields: Any) -> DockerTemplate:
    return DockerTemplate.model_validate({"image": image, "pull": "never", **fields})


def in_shared_volume(fleet: str, image: str, *, script: str) -> str:
    volume = f"runscaler-{fleet}-shared"
    return docker("run", "--rm", "-v", f"{volume}:/s", image, "sh", "-c", script).stdout


def shared_files(fleet: str, image: str) -> list[str]:
    return sorted(in_shared_volume(fleet, image, script="find /s -mindepth 1").split())


async def test_buildx_sweep_removes_old_and_stopped_builders_and_orphaned_state_volumes(
    docker_backend: DockerBackend, leftovers: Leftovers
) -> None:
    app = leftovers.container(
        f"app-{leftovers.tag}", volume=leftovers.volume(f"app-{leftovers.tag}_state")
    )
    other_project = leftovers.container(f"myproject_buildx_buildkit_{leftovers.tag}0")
    old = leftovers.builder("old")
    young = leftovers.builder("young")
    stopped = leftovers.builder("stopped", running=False)
    orphan = leftovers.volume(f"buildx_buildkit_gone{leftovers.tag}0_state")
    unrelated = leftovers.volume(f"data-{leftovers.tag}")
    ttl = 1000.0
    now = (created_at(old) + created_at(young)) / 2 + ttl  # old is past ttl, young is not

    swept = await sweep_buildx(docker_backend, ttl=ttl, now=now)

    assert sorted(n for n in swept.containers if leftovers.tag in n) == sorted([old, stopped])
    assert {n for n in swept.volumes if leftovers.tag in n} == {
        f"{old}_state",
        f"{stopped}_state",
        orphan,
    }
    assert leftovers.existing_containers() == {app, other_project, young}
    assert leftovers.existing_volumes() == {
        f"app-{leftovers.tag}_state",
        f"{young}_state",
        unrelated,
    }


async def test_buildx_sweep_keeps_young_running_builders(
    docker_backend: DockerBackend, leftovers: Leftovers
) -> None:
    young = leftovers.builder("young")

    swept = await sweep_buildx(docker_backend, ttl=3600)

    assert young not in swept.containers
    assert leftovers.existing_containers() == {young}
    assert leftovers.existing_volumes() == {f"{young}_state"}


async def test_shared_volume_sweep_deletes_old_files_and_keeps_new_ones(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    await docker_backend.prepare(template(busybox_image, sharedVolume={"path": "/cache"}))
    in_shared_volume(
        fleet_name,
        busybox_image,
        script="mkdir -p /s/dir/olddir /s/keepdir && "
        "echo a > /s/old1 && echo b > /s/dir/old2 && echo c > /s/new1 && echo d > /s/dir/new2 && "
        f"touch -d '{OLD}' /s/old1 /s/dir/old2 /s/dir/olddir",
    )

    deleted = await sweep_shared_volume(docker_backend, image=busybox_image, ttl=3600)

    assert deleted == 2
    assert shared_files(fleet_name, busybox_image) == [
        "/s/dir",
        "/s/dir/new2",
        "/s/keepdir",
        "/s/new1",
    ]
    helpers = docker("ps", "-aq", "--filter", f"label={FLEET_LABEL}={fleet_name}").stdout
    assert helpers == "", "the sweep helper container was left behind"


async def test_a_zero_ttl_keeps_everything(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    await docker_backend.prepare(template(busybox_image, sharedVolume={"path": "/cache"}))
    in_shared_volume(
        fleet_name, busybox_image, script=f"echo a > /s/old && touch -d '{OLD}' /s/old"
    )

    assert await sweep_shared_volume(docker_backend, image=busybox_image, ttl=0) == 0
    assert shared_files(fleet_name, busybox_image) == ["/s/old"]


async def test_housekeeping_runs_both_sweeps_on_their_intervals(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str, leftovers: Leftovers
) -> None:
    tpl = template(
        busybox_image,
        dind=True,
        sharedVolume={"path": "/cache", "ttl": "1h", "cleanupInterval": "200ms"},
        buildxCleanup={"ttl": "1h", "interval": "200ms"},
    )
    await docker_backend.prepare(tpl)
    builder = leftovers.builder("aged")
    task = asyncio.create_task(
        housekeeping(docker_backend, lambda: [tpl], clock=lambda: created_at(builder) + 7200)
    )
    try:
        await eventually(
            lambda: not leftovers.existing_containers(), timeout=20, message="the builder to go"
        )
        in_shared_volume(
            fleet_name, busybox_image, script=f"echo a > /s/old && touch -d '{OLD}' /s/old"
        )
        await eventually(
            lambda: shared_files(fleet_name, busybox_image) == [],
            timeout=20,
            message="the old file to be swept",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert leftovers.existing_volumes() == set()


async def test_housekeeping_leaves_buildx_builders_alone_without_dind(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str, leftovers: Leftovers
) -> None:
    tpl = template(
        busybox_image,
        sharedVolume={"path": "/cache", "ttl": "1h", "cleanupInterval": "200ms"},
        buildxCleanup={"ttl": "1ms", "interval": "200ms"},
    )
    await docker_backend.prepare(tpl)
    stopped = leftovers.builder("stopped", running=False)
    task = asyncio.create_task(housekeeping(docker_backend, lambda: [tpl]))
    try:
        for round_ in ("first", "second"):  # two rounds ran entirely while the builder existed
            in_shared_volume(
                fleet_name,
                busybox_image,
                script=f"echo a > /s/{round_} && touch -d '{OLD}' /s/{round_}",
            )
            await eventually(
                lambda: shared_files(fleet_name, busybox_image) == [],
                timeout=20,
                message=f"the {round_} sweep",
            )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert leftovers.existing_containers() == {stopped}


async def test_housekeeping_logs_a_failed_sweep_and_keeps_going(
    docker_backend: DockerBackend, caplog: pytest.LogCaptureFixture
) -> None:
    tpl = template(
        "runscaler-test/absent:nope",
        sharedVolume={"path": "/cache", "ttl": "1h", "cleanupInterval": "100ms"},
    )
    docker(
        "volume",
        "create",
        "--label",
        f"{FLEET_LABEL}={docker_backend.fleet}",
        f"runscaler-{docker_backend.fleet}-shared",
    )
    caplog.set_level(logging.WARNING)
    task = asyncio.create_task(housekeeping(docker_backend, lambda: [tpl]))
    try:
        await eventually(
            lambda: caplog.text.count("shared volume sweep skipped") >= 2,
            timeout=20,
            message="two failed rounds",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "cannot run the sweep helper from runscaler-test/absent:nope" in caplog.text


@dataclass
class _Scaler:
    backend: Any
    template: Template


@dataclass
class _Runtime:
    scaler: _Scaler


@dataclass
class _Controller:
    runtimes: dict[tuple[str, str], _Runtime] = field(default_factory=dict)


async def test_the_operators_backend_pool_sweeps_its_engines_with_the_templates_in_force(
    fleet_name: str, busybox_image: str, tmp_path: Path
) -> None:
    # The wiring the running operator uses: the pool starts one sweeper per engine and feeds it
    # the templates of the scale sets on that engine as they are now.
    scale_set = ScaleSet.model_validate(
        {
            "name": "linux",
            "github": {"url": "https://github.com/acme", "auth": {"token": "env:T"}},
            "maxRunners": 1,
            "docker": {
                "image": busybox_image,
                "pull": "never",
                "sharedVolume": {"path": "/cache", "ttl": "1h", "cleanupInterval": "200ms"},
            },
        }
    )
    pool = BackendPool()
    try:
        backend = pool.backend_for(fleet_name, scale_set, tmp_path)
        assert isinstance(backend, DockerBackend)
        await backend.prepare(scale_set.template)
        in_shared_volume(
            fleet_name, busybox_image, script=f"echo a > /s/old && touch -d '{OLD}' /s/old"
        )
        controller = _Controller()
        controller.runtimes[("acme", "linux")] = _Runtime(
            _Scaler(backend, Template(spec=scale_set.template, hash="h"))
        )
        pool.start_housekeeping(controller)
        await eventually(
            lambda: shared_files(fleet_name, busybox_image) == [],
            timeout=20,
            message="the old file to be swept by the operator's sweeper",
        )
    finally:
        await pool.close()
