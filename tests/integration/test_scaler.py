"""The scaler on the real engine, wired to the listener and the simulator.

Each test runs one scale set's runtime (listener + scaler + Docker backend) with the stand-in
runner image in real containers on host networking, and asserts what a user sees: containers
on the engine, jobs' results in the simulator, and the scale set's status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from runscaler.backends.base import JIT_CONFIG_ENV, LABEL_FLEET
from runscaler.backends.docker import container_name
from tests.integration.dockerkit import docker
from tests.integration.runtimekit import (
    Runtimes,
    running_names,
    scale_set,
    sim_control,
    sim_state,
)
from tests.waiting import eventually

pytestmark = pytest.mark.docker


async def jobs_done(runtimes: Runtimes) -> list[dict[str, object]]:
    jobs = (await sim_state(runtimes.sim))["jobs"]
    return [j for j in jobs if j["state"] == "done"]


async def test_queued_jobs_run_in_containers_capped_at_max_and_nothing_is_left(
    runtimes: Runtimes,
) -> None:
    runtime = runtimes.make(scale_set(runtimes.sim, maxRunners=3))
    runtime.start()
    await eventually(lambda: runtime.state == "listening", message="listening")
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(await running_names(runtimes.backend, runtimes.fleet)))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        runtimes.sim.add_jobs(["linux"], count=6, duration=0.5)

        async def all_done() -> bool:
            return len(await jobs_done(runtimes)) == 6

        await eventually(all_done, timeout=60, message="six jobs done")
    finally:
        sampler.cancel()
    jobs = (await sim_state(runtimes.sim))["jobs"]
    assert {j["result"] for j in jobs} == {"succeeded"}
    assert len({j["runner"] for j in jobs}) == 6  # one ephemeral runner per job
    assert 1 <= peak <= 3

    async def none_left() -> bool:
        return not await runtimes.backend.list_owned({LABEL_FLEET: runtimes.fleet})

    await eventually(none_left, timeout=20, message="every runner container removed")
    assert runtime.snapshot().last_failure is None


async def test_min_runners_keeps_warm_idle_runners_registered(runtimes: Runtimes) -> None:
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=2, maxRunners=4))
    runtime.start()

    async def two_idle() -> bool:
        runners = (await sim_state(runtimes.sim))["runners"]
        idle = [r for r in runners if r["status"] == "idle"]
        running = await running_names(runtimes.backend, runtimes.fleet)
        return len(idle) == 2 and len(running) == 2

    await eventually(two_idle, timeout=30, message="two warm idle runners")

    runtimes.sim.add_jobs(["linux"], count=1, duration=0.2)

    async def one_done_and_warm_again() -> bool:
        # Desired follows GitHub's statistics, which count the job until its late completion
        # event has been delivered; status then settles at two warm runners.
        snapshot = runtime.snapshot()
        shown = (snapshot.desired, snapshot.idle, snapshot.busy)
        return len(await jobs_done(runtimes)) == 1 and await two_idle() and shown == (2, 2, 0)

    await eventually(one_done_and_warm_again, timeout=30, message="warm again after a job")


async def test_a_runner_killed_before_taking_a_job_is_replaced_and_counted(
    runtimes: Runtimes,
) -> None:
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=1, maxRunners=2))
    runtime.start()

    async def one_running() -> set[str]:
        names = await running_names(runtimes.backend, runtimes.fleet)
        return names if len(names) == 1 else set()

    [first] = await eventually(one_running, timeout=30, message="one warm runner")
    docker("kill", container_name(runtimes.fleet, first))

    async def replaced() -> set[str]:
        names = await running_names(runtimes.backend, runtimes.fleet)
        return names if names and first not in names else set()

    await eventually(replaced, timeout=30, message="a replacement runner")
    # Judged once the grace for late job events has passed.
    failure = await eventually(
        lambda: runtime.snapshot().last_failure, timeout=10, message="the failure judged"
    )
    assert failure.reason == "exited_early"
    assert failure.exit_code == 137
    # The dead runner's registration is gone from GitHub: no offline runner lingers.
    registered = {r["name"] for r in (await sim_state(runtimes.sim))["runners"]}
    assert first not in registered


async def test_an_image_that_fails_at_once_backs_off_and_shows_exit_code_and_log_tail(
    runtimes: Runtimes, busybox_image: str
) -> None:
    spec = scale_set(
        runtimes.sim,
        minRunners=1,
        docker={
            "image": busybox_image,
            "user": "0",
            "command": ["sh", "-c", "echo cannot configure the runner >&2; exit 3"],
        },
    )
    runtime = runtimes.make(spec)
    began = time.monotonic()
    runtime.start()
    await eventually(
        lambda: runtime.scaler.failures_in_row >= 4, timeout=30, message="repeated failures"
    )
    elapsed = time.monotonic() - began
    failure = runtime.snapshot().last_failure
    assert failure is not None
    assert (failure.reason, failure.exit_code) == ("exited_early", 3)
    assert "cannot configure the runner" in "\n".join(failure.log_tail)
    # Backoff between failures (0.1 s, 0.2 s, 0.4 s scaled, jittered down to 80 %): a tight
    # loop would fail four times in a fraction of that.
    assert elapsed >= 0.8 * (0.1 + 0.2 + 0.4)
    snapshot = runtime.snapshot()
    assert snapshot.failures_in_row >= 4
    assert snapshot.last_error is not None and "exited with code 3" in snapshot.last_error


async def test_lowering_max_removes_only_idle_runners(runtimes: Runtimes) -> None:
    spec = scale_set(runtimes.sim, minRunners=3, maxRunners=3)
    runtime = runtimes.make(spec)
    runtime.start()

    async def three_idle() -> bool:
        return runtime.snapshot().idle == 3

    await eventually(three_idle, timeout=30, message="three idle runners")
    [job] = runtimes.sim.add_jobs(["linux"], count=1, duration=2.0)

    async def running_job() -> str:
        jobs = {j["id"]: j for j in (await sim_state(runtimes.sim))["jobs"]}
        return str(jobs[job]["runner"] or "") if jobs[job]["state"] == "running" else ""

    busy = await eventually(running_job, timeout=30, message="the job running")
    await eventually(lambda: runtime.snapshot().busy == 1, message="the scaler sees it busy")

    await runtime.update(scale_set(runtimes.sim, minRunners=0, maxRunners=1), reconnect=False)

    async def only_busy_left() -> bool:
        return await running_names(runtimes.backend, runtimes.fleet) == {busy}

    await eventually(only_busy_left, timeout=20, message="idle surplus removed")

    async def job_succeeded() -> bool:
        jobs = {j["id"]: j for j in (await sim_state(runtimes.sim))["jobs"]}
        return jobs[job]["result"] == "succeeded"

    await eventually(job_succeeded, timeout=30, message="the busy runner's job succeeded")


async def test_a_runner_that_took_a_job_while_being_removed_is_kept(
    runtimes: Runtimes,
) -> None:
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=2, maxRunners=2))
    runtime.start()
    await eventually(lambda: runtime.snapshot().idle == 2, timeout=30, message="two idle")
    # Hold back the listener's next messages, so the scaler still believes every runner is
    # idle when one of them takes a job: GitHub's JobStillRunning is all that saves it.
    # (Held back less than the simulator's 1 s session timeout, or the session expires.)
    await sim_control(
        runtimes.sim,
        "faults",
        {"method": "GET", "path": "/_broker/scalesets/message", "times": -1, "delay": 0.6},
    )
    [job] = runtimes.sim.add_jobs(["linux"], count=1, duration=1.0)

    async def job_running() -> bool:
        jobs = {j["id"]: j for j in (await sim_state(runtimes.sim))["jobs"]}
        return jobs[job]["state"] == "running"

    await eventually(job_running, timeout=30, message="a runner took the job")
    assert runtime.snapshot().idle == 2  # the scaler has not heard of it yet

    await runtime.scaler.remove_idle_runners()

    async def job_succeeded() -> bool:
        jobs = {j["id"]: j for j in (await sim_state(runtimes.sim))["jobs"]}
        return jobs[job]["result"] == "succeeded"

    await eventually(job_succeeded, timeout=30, message="the kept runner finished its job")
    assert runtime.snapshot().last_failure is None


async def test_a_restarted_scaler_adopts_running_runners_and_removes_exited_ones(
    runtimes: Runtimes, busybox_image: str
) -> None:
    spec = scale_set(runtimes.sim, minRunners=2, maxRunners=3)
    first = runtimes.make(spec)
    first.start()
    await eventually(lambda: first.snapshot().idle == 2, timeout=30, message="two idle")
    adopted = await running_names(runtimes.backend, runtimes.fleet)
    await runtimes.crash(first)

    # An exited runner of ours (its job ended while no operator ran) and a running container
    # of another fleet.
    ours = {
        LABEL_FLEET: runtimes.fleet,
        "dev.runscaler.scale-set-key": spec.key,
        "dev.runscaler.runner": "linux-deadbeef",
        "dev.runscaler.scale-set": "linux",
    }
    exited = container_name(runtimes.fleet, "linux-deadbeef")
    docker(
        "run",
        "--name",
        exited,
        *[f"--label={k}={v}" for k, v in ours.items()],
        busybox_image,
        "true",
    )
    other_fleet = f"{runtimes.fleet}-other"
    other = container_name(other_fleet, "linux-cafebabe")
    docker(
        "run",
        "-d",
        "--name",
        other,
        f"--label={LABEL_FLEET}={other_fleet}",
        "--label=dev.runscaler.runner=linux-cafebabe",
        busybox_image,
        "sleep",
        "300",
    )
    try:
        second = runtimes.make(spec)
        second.start()
        await eventually(lambda: second.state == "listening", timeout=30, message="listening")

        async def exited_removed() -> bool:
            out = docker("ps", "-aq", "--filter", f"name=^{exited}$").stdout.strip()
            return out == ""

        await eventually(exited_removed, timeout=20, message="the exited runner removed")
        await eventually(lambda: second.snapshot().idle == 2, timeout=20, message="two adopted")
        assert await running_names(runtimes.backend, runtimes.fleet) == adopted
        assert docker("inspect", "-f", "{{.State.Running}}", other).stdout.strip() == "true"
    finally:
        docker("rm", "-f", other, check=False)


async def test_the_jit_config_is_only_in_the_runner_environment(
    runtimes: Runtimes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=1))
    runtime.start()

    async def one_running() -> set[str]:
        return await running_names(runtimes.backend, runtimes.fleet)

    [name] = await eventually(one_running, timeout=30, message="a runner")
    inspect = docker(
        "inspect",
        "-f",
        "{{json .Config.Env}}|{{json .Config.Labels}}",
        container_name(runtimes.fleet, name),
    ).stdout
    env, labels = inspect.split("|")
    jit = next(e for e in json.loads(env) if e.startswith(f"{JIT_CONFIG_ENV}=")).split("=", 1)[1]
    assert len(jit) > 100
    assert jit not in labels
    assert jit not in caplog.text
    assert name in labels


async def test_a_template_change_rolls_idle_runners_make_before_break(
    runtimes: Runtimes,
) -> None:
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=2, maxRunners=4))
    runtime.start()
    await eventually(lambda: runtime.snapshot().idle == 2, timeout=30, message="two idle")
    old = await running_names(runtimes.backend, runtimes.fleet)
    lowest = len(old)

    async def sample() -> None:
        nonlocal lowest
        while True:
            lowest = min(lowest, len(await running_names(runtimes.backend, runtimes.fleet)))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        changed = scale_set(runtimes.sim, minRunners=2, maxRunners=4, docker={"env": {"A": "1"}})
        await runtime.update(changed, reconnect=False)

        async def rolled() -> set[str]:
            names = await running_names(runtimes.backend, runtimes.fleet)
            return names if len(names) == 2 and not names & old else set()

        new = await eventually(rolled, timeout=30, message="both idle runners replaced")
    finally:
        sampler.cancel()
    assert lowest >= 2  # never fewer warm runners than asked for while rolling
    for name in new:
        env = docker(
            "inspect", "-f", "{{json .Config.Env}}", container_name(runtimes.fleet, name)
        ).stdout
        assert "A=1" in json.loads(env)
