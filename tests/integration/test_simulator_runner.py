"""The stand-in runner's life against the simulator: as a local `sh run.sh` process, and in
its FROM-scratch image in a real container with host networking."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from runscaler.simulator.runner import RUNNER_IMAGE, build_runner_image, runner_script
from runscaler.simulator.server import Simulator, serve_simulator
from tests.integration.simkit import QueueSession, Service, connect, sim_options
from tests.waiting import eventually

FLEET_LABEL = "dev.runscaler.fleet"


@dataclass
class Exited:
    code: int
    out: str
    err: str


@dataclass
class Fleet:
    """A simulator with one scale set `linux` whose listener side the test drives."""

    sim: Simulator
    service: Service
    session: QueueSession
    last: int = 0

    async def assigned_job(self, *, duration: float = 0.2, result: str = "succeeded") -> int:
        """Enqueue a job and acquire it, as a listener would."""
        [job] = self.sim.add_jobs(["linux"], duration=duration, result=result)
        message, jobs = await self.session.next_jobs(last=self.last)
        self.last = message["messageId"]
        assert [j["runnerRequestId"] for j in jobs] == [job]
        assert (await self.session.acquire([job])).json()["value"] == [job]
        return job

    async def jit(self, name: str) -> str:
        return str(
            (await self.service.jit_config(self.session.scale_set_id, name))["encodedJITConfig"]
        )

    async def events(self) -> list[dict[str, Any]]:
        found = []
        while (response := await self.session.poll(last=self.last)).status_code == 200:
            message = response.json()
            self.last = message["messageId"]
            found += json.loads(message["body"])
        return found


async def open_fleet(http: httpx.AsyncClient, sim: Simulator) -> Fleet:
    service = await connect(http, sim)
    scale_set = await service.create_scale_set("linux")
    return Fleet(sim, service, await service.open_session(scale_set["id"]))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def fleet(http: httpx.AsyncClient) -> AsyncIterator[Fleet]:
    options = sim_options(poll_wait=0.2, runner_lost_timeout=0.5)
    async with serve_simulator(options) as sim:
        yield await open_fleet(http, sim)


Start = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def start_runner() -> AsyncIterator[Start]:
    """Start `sh run.sh` processes; whatever is left of them is killed after the test."""
    started: list[asyncio.subprocess.Process] = []

    async def start(jit: str | None, **env: str) -> asyncio.subprocess.Process:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("ACTIONS_")}
        environment.update({"RUNSCALER_SIM_RUNNER_POLL": "2", **env})
        if jit is not None:
            environment["ACTIONS_RUNNER_INPUT_JITCONFIG"] = jit
        process = await asyncio.create_subprocess_exec(
            "sh",
            str(runner_script()),
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            # The whole group: a killed runner's wget would otherwise finish its long poll.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def finished(process: asyncio.subprocess.Process, timeout: float = 30) -> Exited:  # noqa: ASYNC109
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Exited(process.returncode, out.decode(), err.decode())


# -- as a local process ---------------------------------------------------------------------------


async def test_the_runner_takes_one_job_runs_it_reports_and_exits_0(
    fleet: Fleet, start_runner: Start
) -> None:
    job = await fleet.assigned_job(duration=0.4, result="failed")
    jit = await fleet.jit("linux-1")
    started = time.monotonic()
    exited = await finished(await start_runner(jit))
    assert exited.code == 0, exited.err
    assert time.monotonic() - started >= 0.4
    assert exited.out.splitlines()[-1] == f"runner: job {job} finished: failed"
    assert jit not in exited.out + exited.err
    events = [
        (e["messageType"], e.get("runnerName"), e.get("result")) for e in await fleet.events()
    ]
    assert events == [
        ("JobAssigned", None, None),
        ("JobStarted", "linux-1", None),
        ("JobCompleted", "linux-1", "failed"),
    ]
    # Like any ended ephemeral runner's, its registration lingers a moment, then goes.
    await eventually(lambda: fleet.sim.state.runners == {}, message="the registration to go")
    state = fleet.sim.state.snapshot()
    assert [(j["state"], j["result"], j["runner"]) for j in state["jobs"]] == [
        ("done", "failed", "linux-1")
    ]


def _jit_without_runner_id() -> str:
    files = {".runner": base64.b64encode(b'{"AgentName":"x"}').decode()}
    return base64.b64encode(json.dumps(files).encode()).decode()


@pytest.mark.parametrize(
    ("jit", "message"),
    [
        (
            None,
            "runner: ACTIONS_RUNNER_INPUT_JITCONFIG is not set: give the runner the "
            "encodedJITConfig from generatejitconfig",
        ),
        (
            "not base64 at all",
            "runner: ACTIONS_RUNNER_INPUT_JITCONFIG is not a valid JIT config (no AgentId, "
            "ServerUrlV2 or clientId in it): pass encodedJITConfig unchanged",
        ),
        (
            _jit_without_runner_id(),
            "runner: ACTIONS_RUNNER_INPUT_JITCONFIG is not a valid JIT config (no AgentId, "
            "ServerUrlV2 or clientId in it): pass encodedJITConfig unchanged",
        ),
    ],
)
async def test_the_runner_refuses_a_missing_or_invalid_config(
    start_runner: Start, jit: str | None, message: str
) -> None:
    exited = await finished(await start_runner(jit))
    assert (exited.code, exited.err.strip(), exited.out) == (1, message, "")


async def test_a_runner_removed_before_it_gets_a_job_exits_2(
    fleet: Fleet, start_runner: Start
) -> None:
    jit = await fleet.jit("linux-1")
    process = await start_runner(jit)
    await eventually(
        lambda: fleet.sim.state.snapshot()["runners"][0]["status"] == "idle",
        message="the runner to connect",
    )
    [runner] = fleet.sim.state.snapshot()["runners"]
    removed = await fleet.service.request(
        "DELETE", f"_apis/distributedtask/pools/0/agents/{runner['id']}"
    )
    assert removed.status_code == 204
    exited = await finished(process)
    assert exited.code == 2
    assert exited.err.strip() == (
        f"runner: linux-1 ({runner['id']}) is not registered with the simulator "
        "(removed, or the simulator restarted)"
    )


async def test_a_cancelled_job_ends_the_runner_cleanly(
    http: httpx.AsyncClient, fleet: Fleet, start_runner: Start
) -> None:
    job = await fleet.assigned_job(duration=60)
    process = await start_runner(await fleet.jit("linux-1"))
    await eventually(lambda: fleet.sim.state.jobs[job].state == "running", message="job taken")
    cancelled = await http.post(f"{fleet.sim.url}/_sim/cancel-jobs", json={"ids": [job]})
    assert cancelled.json() == {"canceled": [job]}
    exited = await finished(process)
    assert exited.code == 0 and f"job {job} finished: canceled" in exited.out
    assert fleet.sim.state.jobs[job].result == "canceled"


async def test_a_killed_runner_is_lost_and_its_job_fails(fleet: Fleet, start_runner: Start) -> None:
    job = await fleet.assigned_job(duration=0.2)
    process = await start_runner(await fleet.jit("linux-1"))
    await eventually(lambda: fleet.sim.state.jobs[job].state == "running", message="job taken")
    os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
    await eventually(
        lambda: fleet.sim.state.jobs[job].result == "failed", message="the job to fail"
    )
    completed = [e for e in await fleet.events() if e["messageType"] == "JobCompleted"]
    assert [(e["result"], e["runnerName"]) for e in completed] == [("failed", "linux-1")]
    # Like any ended ephemeral runner's, its registration lingers a moment, then goes.
    await eventually(lambda: fleet.sim.state.runners == {}, message="the registration to go")


async def test_a_redispatched_job_is_still_taken_by_a_runner(
    http: httpx.AsyncClient, start_runner: Start
) -> None:
    async with serve_simulator(sim_options(poll_wait=0.2, redispatch_interval=0.2)) as sim:
        fleet = await open_fleet(http, sim)
        job = await fleet.assigned_job(duration=0)
        await eventually(lambda: sim.state.jobs[job].redispatches >= 1, message="re-dispatch")
        exited = await finished(await start_runner(await fleet.jit("linux-1")))
        assert exited.code == 0, exited.err
        assert sim.state.jobs[job].result == "succeeded"


async def test_a_stopped_runner_exits_at_once_on_sigterm(fleet: Fleet, start_runner: Start) -> None:
    process = await start_runner(await fleet.jit("linux-1"), RUNSCALER_SIM_RUNNER_POLL="30")
    await eventually(
        lambda: fleet.sim.state.snapshot()["runners"][0]["status"] == "idle",
        message="the runner to connect",
    )
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    exited = await finished(process, timeout=10)
    assert exited.code == 143 and exited.out.splitlines()[-1] == "runner: stopped by a signal"
    assert time.monotonic() - started < 5  # not after its 30 s long poll


async def test_the_runner_retries_an_unreachable_simulator_for_a_bounded_time(
    http: httpx.AsyncClient, start_runner: Start
) -> None:
    async with serve_simulator(sim_options(poll_wait=0.2)) as sim:
        fleet = await open_fleet(http, sim)
        jit = await fleet.jit("linux-1")
        process = await start_runner(jit, RUNSCALER_SIM_RUNNER_RETRY="2")
        await eventually(lambda: sim.state.runners[1].last_seen is not None, message="connect")
    exited = await finished(process)
    assert exited.code == 3
    assert f"runner: cannot reach the simulator at {sim.url}/_broker/: retrying for 2s" in (
        exited.out
    )
    assert exited.err.strip() == (
        f"runner: the simulator at {sim.url}/_broker/ did not answer for 2s: giving up"
    )


async def test_a_runner_outliving_a_simulator_restart_learns_it_is_unknown(
    http: httpx.AsyncClient, start_runner: Start
) -> None:
    async with serve_simulator(sim_options(poll_wait=0.2)) as sim:
        port = int(sim.url.rsplit(":", 1)[1])
        fleet = await open_fleet(http, sim)
        process = await start_runner(await fleet.jit("linux-1"), RUNSCALER_SIM_RUNNER_RETRY="30")
        await eventually(lambda: sim.state.runners[1].last_seen is not None, message="connect")
    async with serve_simulator(sim_options(poll_wait=0.2), port=port):
        exited = await finished(process)
    assert exited.code == 2 and "is not registered with the simulator" in exited.err


# -- in its image, in a real container -------------------------------------------------------------


@pytest.fixture(scope="session")
def runner_image(docker_engine: str) -> str:
    build_runner_image()
    return RUNNER_IMAGE


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"runscaler-sim-runner-test-{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


async def docker(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.docker
async def test_the_runner_image_runs_one_job_in_a_container_with_host_networking(
    fleet: Fleet, runner_image: str, container_name: str
) -> None:
    job = await fleet.assigned_job(duration=0.3)
    jit = await fleet.jit("linux-container")
    code, _, err = await _docker_run(container_name, runner_image, jit)
    assert code == 0, err
    code, out, _ = await docker("wait", container_name)
    assert out.strip() == "0"
    _, logs, log_errors = await docker("logs", container_name)
    assert logs.splitlines()[-1] == f"runner: job {job} finished: succeeded", log_errors
    assert jit not in logs + log_errors
    _, user, _ = await docker(
        "inspect", "--format", "{{.Config.User}} {{.Config.WorkingDir}}", container_name
    )
    assert user.split() == ["runner", "/home/runner"]
    assert fleet.sim.state.jobs[job].runner_name == "linux-container"
    assert fleet.sim.state.jobs[job].result == "succeeded"


async def _docker_run(name: str, image: str, jit: str) -> tuple[int, str, str]:
    # The JIT config goes through the environment, never the command line.
    process = await asyncio.create_subprocess_exec(
        "docker",
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        "host",
        "--label",
        f"{FLEET_LABEL}=simulator-runner-test",
        "--env",
        "ACTIONS_RUNNER_INPUT_JITCONFIG",
        image,
        env={**os.environ, "ACTIONS_RUNNER_INPUT_JITCONFIG": jit},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
