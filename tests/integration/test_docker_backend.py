"""The Docker backend on the real engine: runners start, are found, exit, and go away.

Every runner here is a busybox container; `fleet_name` gives each test its own fleet and
removes whatever carries its label afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from runscaler.backends.base import (
    JIT_CONFIG_ENV,
    LABEL_FLEET,
    LABEL_RUNNER,
    LABEL_SCALE_SET,
    BackendError,
    BackendUnavailable,
    RunnerExit,
    RunnerNotFound,
    RunnerSpec,
)
from runscaler.backends.docker import DockerBackend, container_name
from runscaler.backends.docker_api import EngineError
from runscaler.manifest.models import DockerTemplate
from tests.integration.dockerkit import cleanup_fleet, docker, unique
from tests.waiting import eventually

pytestmark = pytest.mark.docker


def template(image: str, **fields: Any) -> DockerTemplate:
    """A template as the manifest spells it (camelCase keys)."""
    return DockerTemplate.model_validate(
        {"image": image, "pull": "never", "user": "0", "command": ["sleep", "300"], **fields}
    )


def spec(name: str, tpl: DockerTemplate, *, scale_set: str = "linux", **extra: Any) -> RunnerSpec:
    return RunnerSpec(
        name=name,
        jit_config=extra.pop("jit_config", f"JIT-{secrets.token_hex(16)}"),
        labels={LABEL_SCALE_SET: scale_set, LABEL_RUNNER: name},
        template=tpl,
        **extra,
    )


def inspect(name: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(docker("inspect", name).stdout)
    return data[0]


async def test_a_started_runner_is_a_running_container_named_and_labelled_for_its_fleet(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    runner = spec("linux-0a1b2c3d", template(busybox_image))

    await docker_backend.start(runner)

    info = inspect(f"runscaler-{fleet_name}-linux-0a1b2c3d")
    assert info["State"]["Running"] is True
    assert info["Config"]["Labels"] == {
        LABEL_FLEET: fleet_name,
        LABEL_SCALE_SET: "linux",
        LABEL_RUNNER: "linux-0a1b2c3d",
    }
    # The scaler reads the exit code and the log tail before removing: no auto-remove.
    assert info["HostConfig"]["AutoRemove"] is False


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A host directory with a file in it, readable by any runner user."""
    (tmp_path / "data.txt").write_text("from the host\n")
    tmp_path.chmod(0o755)
    return tmp_path


async def test_the_template_shapes_the_container(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str, host_dir: Path
) -> None:
    tpl = template(
        busybox_image,
        user="1234:1234",
        command=["sh", "-c", "id; cat /data/data.txt; echo FOO=$FOO; sleep 300"],
        cpus=0.5,
        memory="64MiB",
        network="host",
        env={"FOO": "bar"},
        volumes=[f"{host_dir}:/data:ro"],
        dind=True,
        sharedVolume={"path": "/cache"},
    )
    await docker_backend.prepare(tpl)
    runner = spec("linux-shape", tpl, env={"FOO": "bar"})

    await docker_backend.start(runner)

    name = f"runscaler-{fleet_name}-linux-shape"
    info = inspect(name)
    host = info["HostConfig"]
    assert info["Config"]["User"] == "1234:1234"
    assert info["Config"]["Cmd"] == list(tpl.command)
    assert "FOO=bar" in info["Config"]["Env"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 64 * 1024**2
    assert host["NetworkMode"] == "host"
    assert host["Binds"] == [
        f"{host_dir}:/data:ro",
        f"runscaler-{fleet_name}-shared:/cache:nocopy",
        "/var/run/docker.sock:/var/run/docker.sock",
    ]
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    assert host["GroupAdd"] == [str(socket_gid)]
    output = await eventually(
        lambda: "FOO=bar" in docker("logs", name).stdout and docker("logs", name).stdout,
        message="the runner's first output",
    )
    groups = re.search(r"groups=([0-9,]+)", output)
    assert groups is not None and str(socket_gid) in groups.group(1).split(",")
    assert "from the host" in output


async def test_the_shared_volume_is_the_fleets_and_writable_by_any_runner_user(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    tpl = template(
        busybox_image,
        user="1234:1234",
        command=["sh", "-c", "echo hi > /cache/by-1234 && echo wrote; sleep 300"],
        sharedVolume={"path": "/cache"},
    )
    await docker_backend.prepare(tpl)
    await docker_backend.prepare(tpl)  # idempotent

    volume = json.loads(docker("volume", "inspect", f"runscaler-{fleet_name}-shared").stdout)
    assert volume[0]["Labels"][LABEL_FLEET] == fleet_name
    await docker_backend.start(spec("linux-writer", tpl))
    name = f"runscaler-{fleet_name}-linux-writer"
    await eventually(lambda: "wrote" in docker("logs", name).stdout, message="the write")


async def test_the_jit_config_is_in_the_environment_only(
    docker_backend: DockerBackend,
    busybox_image: str,
    fleet_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    jit = f"eyJSECRET{secrets.token_hex(20)}"
    runner = spec("linux-secret", template(busybox_image), jit_config=jit)

    await docker_backend.start(runner)
    await docker_backend.list_owned({})
    await docker_backend.remove("linux-secret")

    assert jit not in caplog.text
    assert caplog.records, "the backend logged nothing at DEBUG: the check above proves nothing"


async def test_the_jit_config_reaches_the_runner_and_never_a_label(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    jit = f"eyJSECRET{secrets.token_hex(20)}"
    await docker_backend.start(spec("linux-env", template(busybox_image), jit_config=jit))

    info = inspect(f"runscaler-{fleet_name}-linux-env")
    assert f"{JIT_CONFIG_ENV}={jit}" in info["Config"]["Env"]
    assert not any(jit in f"{key}={value}" for key, value in info["Config"]["Labels"].items())


async def test_a_label_carrying_the_jit_config_is_refused(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    jit = f"eyJSECRET{secrets.token_hex(20)}"
    runner = RunnerSpec(
        name="linux-leak",
        jit_config=jit,
        labels={LABEL_RUNNER: "linux-leak", "oops": jit},
        template=template(busybox_image),
    )

    with pytest.raises(BackendError, match="refusing to put its JIT config in a label"):
        await docker_backend.start(runner)
    assert docker("ps", "-aq", "--filter", f"label={LABEL_FLEET}={fleet_name}").stdout == ""


async def test_exits_arrive_from_the_event_stream_with_their_exit_code(
    docker_backend: DockerBackend, busybox_image: str
) -> None:
    exits = docker_backend.exits({LABEL_SCALE_SET: "linux"})
    quick = template(busybox_image, command=["sh", "-c", "exit 3"])

    await docker_backend.start(spec("other-exit", quick, scale_set="other"))
    await docker_backend.start(spec("linux-exit", quick))

    got = await asyncio.wait_for(anext(exits), timeout=20)
    assert isinstance(got, RunnerExit)
    assert (got.name, got.exit_code) == ("linux-exit", 3)
    assert abs(got.at - time.time()) < 30
    await exits.aclose()


async def test_an_exit_between_subscribing_and_iterating_is_not_lost(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    exits = docker_backend.exits({})
    await docker_backend.start(spec("linux-early", template(busybox_image, command=["true"])))
    await eventually(
        lambda: inspect(f"runscaler-{fleet_name}-linux-early")["State"]["Status"] == "exited",
        message="the runner to exit before anyone iterates",
    )

    got = await asyncio.wait_for(anext(exits), timeout=20)
    assert (got.name, got.exit_code) == ("linux-early", 0)
    await exits.aclose()


async def test_list_owned_finds_running_and_exited_runners_and_never_another_fleets(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    other_fleet = unique("t")
    other = DockerBackend(fleet=other_fleet)
    try:
        before = time.time()
        await docker_backend.start(spec("linux-run", template(busybox_image)))
        await docker_backend.start(
            spec("linux-dead", template(busybox_image, command=["sh", "-c", "exit 7"]))
        )
        await docker_backend.start(spec("arm-run", template(busybox_image), scale_set="arm"))
        await other.start(spec("linux-foreign", template(busybox_image)))
        await eventually(
            lambda: inspect(f"runscaler-{fleet_name}-linux-dead")["State"]["Status"] == "exited",
            message="linux-dead to exit",
        )

        owned = {r.name: r for r in await docker_backend.list_owned({LABEL_SCALE_SET: "linux"})}
        everything = {r.name for r in await docker_backend.list_owned({})}
    finally:
        await other.close()
        cleanup_fleet(other_fleet)

    assert set(owned) == {"linux-run", "linux-dead"}
    assert everything == {"linux-run", "linux-dead", "arm-run"}
    assert (owned["linux-run"].running, owned["linux-run"].exit_code) == (True, None)
    assert (owned["linux-dead"].running, owned["linux-dead"].exit_code) == (False, 7)
    assert owned["linux-run"].labels[LABEL_FLEET] == fleet_name
    created = owned["linux-run"].created_at
    assert created is not None and before - 2 <= created <= time.time() + 2


async def test_remove_kills_and_removes_and_then_reports_not_found(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    await docker_backend.start(spec("linux-gone", template(busybox_image)))

    await docker_backend.remove("linux-gone")

    assert docker("ps", "-aq", "--filter", f"name=runscaler-{fleet_name}-linux-gone").stdout == ""
    with pytest.raises(RunnerNotFound, match="linux-gone"):
        await docker_backend.remove("linux-gone")


async def test_logs_tail_returns_the_last_lines_with_the_jit_config_scrubbed(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    jit = f"eyJSECRET{secrets.token_hex(20)}"
    script = (
        "echo starting >&2; sleep 0.2; for i in 1 2 3 4 5; do echo line $i; done; "
        f'echo "config: ${JIT_CONFIG_ENV}"; echo done'
    )
    tpl = template(busybox_image, command=["sh", "-c", script])
    await docker_backend.start(spec("linux-logs", tpl, jit_config=jit))
    await eventually(
        lambda: inspect(f"runscaler-{fleet_name}-linux-logs")["State"]["Status"] == "exited",
        message="the runner to finish",
    )

    tail = await docker_backend.logs_tail("linux-logs", lines=3)
    everything = await docker_backend.logs_tail("linux-logs", lines=100)

    assert tail == ["line 5", "config: ***", "done"]
    assert everything[0] == "starting"  # stderr too
    assert not any(jit in line for line in everything)


async def test_logs_tail_of_a_missing_runner_is_not_found(docker_backend: DockerBackend) -> None:
    with pytest.raises(RunnerNotFound):
        await docker_backend.logs_tail("linux-never")


async def test_thirty_runners_start_concurrently(
    docker_backend: DockerBackend, busybox_image: str
) -> None:
    tpl = template(busybox_image)
    names = [f"linux-{i:02d}{secrets.token_hex(3)}" for i in range(30)]

    async def timed_start(name: str) -> float:
        begun = time.perf_counter()
        await docker_backend.start(spec(name, tpl))
        return time.perf_counter() - begun

    begun = time.perf_counter()
    latencies = await asyncio.gather(*(timed_start(name) for name in names))
    wall = time.perf_counter() - begun

    owned = await docker_backend.list_owned({})
    assert {r.name for r in owned} == set(names)
    assert all(r.running for r in owned)
    print(
        f"\n30 concurrent starts: wall {wall:.2f}s, per start median "
        f"{sorted(latencies)[15]:.2f}s, max {max(latencies):.2f}s"
    )
    await asyncio.gather(*(docker_backend.remove(name) for name in names))
    assert await docker_backend.list_owned({}) == []


async def test_one_start_is_quick(docker_backend: DockerBackend, busybox_image: str) -> None:
    tpl = template(busybox_image)
    await docker_backend.start(spec("linux-warm", tpl))  # first call also negotiates the API
    timings = []
    for i in range(5):
        begun = time.perf_counter()
        await docker_backend.start(spec(f"linux-seq{i}", tpl))
        timings.append(time.perf_counter() - begun)
    print(f"\nsequential create+start: {', '.join(f'{t * 1000:.0f}ms' for t in timings)}")
    assert min(timings) < 5


async def test_a_start_that_fails_leaves_no_container_behind(
    docker_backend: DockerBackend, busybox_image: str, fleet_name: str
) -> None:
    tpl = template(busybox_image, command=["/no/such/program"])

    with pytest.raises(
        BackendError, match=f"cannot start container runscaler-{fleet_name}-linux-bad"
    ):
        await docker_backend.start(spec("linux-bad", tpl))

    assert docker("ps", "-aq", "--filter", f"label={LABEL_FLEET}={fleet_name}").stdout == ""


async def test_starting_an_absent_image_says_which_image(
    docker_backend: DockerBackend, fleet_name: str
) -> None:
    tpl = template("runscaler-test/absent:nope")

    with pytest.raises(BackendError) as caught:
        await docker_backend.start(spec("linux-noimage", tpl))

    assert str(caught.value).startswith(
        f"cannot create container runscaler-{fleet_name}-linux-noimage on Docker at "
        "unix:///var/run/docker.sock: No such image: runscaler-test/absent:nope"
    )


async def test_an_engine_that_is_not_there_is_unavailable_with_a_one_line_hint(
    busybox_image: str, tmp_path: Path
) -> None:
    host = f"unix://{tmp_path}/docker.sock"
    backend = DockerBackend(fleet=unique("t"), host=host)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await backend.check(template(busybox_image))
        with pytest.raises(BackendUnavailable):
            await backend.start(spec("linux-x", template(busybox_image)))
        with pytest.raises(BackendUnavailable):
            await backend.list_owned({})
    finally:
        await backend.close()

    assert str(caught.value) == (
        f"cannot reach Docker at {host}: is the engine running? try runscaler doctor"
    )


async def test_check_says_what_it_found(docker_backend: DockerBackend, busybox_image: str) -> None:
    summary = await docker_backend.check(template(busybox_image))

    assert summary.startswith("Docker ")
    assert summary.endswith(
        f"at unix:///var/run/docker.sock: image {busybox_image} present (pull: never)"
    )


async def test_check_refuses_an_absent_image_under_pull_never(
    docker_backend: DockerBackend,
) -> None:
    with pytest.raises(BackendError) as caught:
        await docker_backend.check(template("runscaler-test/absent:nope"))

    assert str(caught.value) == (
        "image runscaler-test/absent:nope is not on Docker at unix:///var/run/docker.sock and "
        "docker.pull is never: load it there (docker pull or docker load) or set "
        "docker.pull: missing"
    )


async def test_a_bad_host_is_refused_with_the_forms_that_work() -> None:
    with pytest.raises(BackendError, match=r"use unix:///var/run/docker.sock or tcp://HOST:PORT"):
        DockerBackend(fleet="f", host="ssh://somewhere")


async def test_exits_fail_when_the_engine_stops_and_other_calls_are_unavailable(
    spare_engine: Any, busybox_image: str
) -> None:
    spare_engine.load(busybox_image)
    fleet = unique("t")
    backend = DockerBackend(fleet=fleet, host=spare_engine.host)
    try:
        exits = backend.exits({})
        await backend.start(spec("linux-first", template(busybox_image, command=["true"])))
        first = await asyncio.wait_for(anext(exits), timeout=20)
        assert first.name == "linux-first"  # the stream is live

        await asyncio.to_thread(spare_engine.stop)

        with pytest.raises(BackendUnavailable) as broken:
            await asyncio.wait_for(anext(exits), timeout=20)
        with pytest.raises(BackendUnavailable) as listing:
            await backend.list_owned({})
    finally:
        await backend.close()

    assert str(broken.value) == (
        f"Docker at {spare_engine.host} closed its event stream: is the engine restarting? "
        "try runscaler doctor"
    )
    assert str(listing.value) == (
        f"cannot reach Docker at {spare_engine.host}: is the engine running? try runscaler doctor"
    )


def test_container_names_are_sanitised_for_docker() -> None:
    assert container_name("acme-ci", "linux-x64-0a1b2c3d") == "runscaler-acme-ci-linux-x64-0a1b2c3d"
    assert container_name("acme", "odd name/with:chars") == "runscaler-acme-odd-name-with-chars"


async def test_an_engine_error_carries_the_engines_status_and_words(
    docker_backend: DockerBackend,
) -> None:
    missing = f"runscaler-absent-{secrets.token_hex(4)}"
    with pytest.raises(EngineError) as caught:
        await docker_backend.api().query_json(f"containers/{missing}/json")
    assert caught.value.status == 404
    assert caught.value.message == f"No such container: {missing}"
