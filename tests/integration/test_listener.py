"""The listener against the simulator over real loopback HTTP.

The scaler side is a recorder of what the listener tells it; everything GitHub-side is the
simulator, so these tests see the session, the capacity header and the scale set exactly as
GitHub would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runscaler.engine.listener import Listener, ListenerSettings, ListenerTiming
from runscaler.engine.statefile import StateFile
from runscaler.github.auth import TokenCredentials
from runscaler.github.client import ScaleSetClient
from runscaler.github.models import JobCompleted, JobStarted
from runscaler.github.retrying import RetryPolicy
from runscaler.simulator.server import Simulator, SimulatorOptions, serve_simulator
from tests.integration.runtimekit import sim_control, sim_state
from tests.waiting import eventually

FAST = ListenerTiming(backoff_initial=0.05, backoff_max=0.2, standby_initial=0.05, standby_max=0.2)
RETRY = RetryPolicy(attempts=5, wait_min=0.01, wait_max=0.05)


@dataclass
class Recorder:
    """Stands where the scaler plugs in: records what the listener says."""

    desired: list[int] = field(default_factory=list)
    started: list[JobStarted] = field(default_factory=list)
    completed: list[JobCompleted] = field(default_factory=list)

    def desired_runners(self, count: int) -> None:
        if not self.desired or self.desired[-1] != count:
            self.desired.append(count)

    def job_started(self, job: JobStarted) -> None:
        self.started.append(job)

    def job_completed(self, job: JobCompleted) -> None:
        self.completed.append(job)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with serve_simulator(
        SimulatorOptions(poll_wait=0.3, session_timeout=0.5, redispatch_interval=60)
    ) as simulator:
        yield simulator


def settings(
    name: str = "linux", *, min_runners: int = 0, max_runners: int = 5
) -> ListenerSettings:
    return ListenerSettings(
        name=name,
        runner_group="default",
        labels=(name, "self-hosted"),
        min_runners=min_runners,
        max_runners=max_runners,
    )


@dataclass
class Harness:
    sim: Simulator
    state_file: StateFile
    client: ScaleSetClient
    recorder: Recorder
    listener: Listener
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.listener.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@pytest.fixture
async def make(sim: Simulator, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    made: list[Harness] = []

    async def factory(
        listener_settings: ListenerSettings | None = None, *, owner: str = "host-a"
    ) -> Harness:
        state_file = StateFile(tmp_path / f"{owner}.json")
        client = ScaleSetClient(
            config_url=sim.config_url("acme"),
            credentials=lambda: TokenCredentials(token="ghp_listener_test_token"),
            retry=RETRY,
        )
        recorder = Recorder()
        listener = Listener(
            client=client,
            settings=listener_settings or settings(),
            hooks=recorder,
            owner=owner,
            state_file=state_file,
            key="k-linux",
            timing=FAST,
        )
        harness = Harness(sim, state_file, client, recorder, listener)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.stop()
        await harness.client.aclose()


def listening(harness: Harness) -> Callable[[], bool]:
    return lambda: harness.listener.state == "listening"


async def test_creates_the_scale_set_with_its_labels_and_opens_a_session(make: Any) -> None:
    harness = await make()
    harness.start()
    await eventually(listening(harness), message="listening")

    snapshot = await sim_state(harness.sim)
    assert [(s["name"], sorted(s["labels"])) for s in snapshot["scaleSets"]] == [
        ("linux", ["linux", "self-hosted"])
    ]
    assert [(s["owner"], s["scaleSetId"]) for s in snapshot["sessions"]] == [
        ("host-a", harness.listener.scale_set_id)
    ]
    memo = harness.state_file.get("k-linux")
    assert memo.scale_set_id == harness.listener.scale_set_id
    assert memo.session_id == snapshot["sessions"][0]["id"]


async def test_desired_runners_follow_statistics_within_min_and_max(make: Any) -> None:
    harness = await make(settings(min_runners=1, max_runners=4))
    harness.start()
    await eventually(lambda: harness.recorder.desired == [1], message="the warm minimum")

    harness.sim.add_jobs(["linux"], count=6, duration=30)
    # min + assigned = 7, capped at max.
    await eventually(lambda: harness.recorder.desired[-1] == 4, message="desired capped at 4")
    assert 7 not in harness.recorder.desired


async def test_a_live_max_change_is_sent_as_the_capacity_header_without_reconnecting(
    make: Any,
) -> None:
    harness = await make(settings(max_runners=5))
    harness.start()

    async def capacity() -> int | None:
        sessions = (await sim_state(harness.sim))["sessions"]
        return sessions[0]["maxCapacity"] if sessions else None

    await eventually(lambda: capacity(), message="a first poll")
    assert await capacity() == 5
    session_before = (await sim_state(harness.sim))["sessions"][0]["id"]

    harness.listener.update_settings(settings(max_runners=2))

    async def changed() -> bool:
        return await capacity() == 2

    await eventually(changed, timeout=2, message="the new capacity header")
    assert (await sim_state(harness.sim))["sessions"][0]["id"] == session_before


async def test_acquires_available_jobs_and_reports_started_and_completed(make: Any) -> None:
    harness = await make()
    harness.start()
    await eventually(listening(harness), message="listening")
    [job_id] = harness.sim.add_jobs(["linux"], count=1, duration=0.1)

    async def acquired() -> bool:
        jobs = {j["id"]: j for j in (await sim_state(harness.sim))["jobs"]}
        return jobs[job_id]["state"] == "acquired"

    await eventually(acquired, message="the job acquired")
    assert harness.recorder.desired[-1] == 1


async def test_standby_on_a_held_session_then_takes_over_when_it_frees(make: Any) -> None:
    first = await make()
    first.start()
    await eventually(listening(first), message="first listening")
    await first.stop()
    await sim_control(first.sim, "hold-session", {"name": "linux"})

    second = await make(owner="host-b")
    second.start()
    await eventually(lambda: second.listener.state == "standby", message="standby")
    assert "active session" in (second.listener.last_error or "")

    await sim_control(second.sim, "release-session", {"name": "linux"})
    await eventually(listening(second), message="took over")
    owners = [s["owner"] for s in (await sim_state(second.sim))["sessions"]]
    assert owners == ["host-b"]


async def test_standby_takes_over_when_the_other_session_expires(make: Any) -> None:
    other = await make(owner="host-b")
    other.start()
    await eventually(listening(other), message="other listening")
    # The other operator "crashes": its task dies without closing the session.
    other.task.cancel()  # type: ignore[union-attr]
    other.listener._session = None  # the close in `finally` finds nothing to close
    with contextlib.suppress(asyncio.CancelledError):
        await other.task  # type: ignore[misc]
    other.task = None

    mine = await make(owner="host-a")
    mine.start()
    # The stale session conflicts until the simulator expires it (poll wait + timeout).
    await eventually(listening(mine), timeout=5, message="takeover after expiry")
    assert [s["owner"] for s in (await sim_state(mine.sim))["sessions"]] == ["host-a"]


async def test_a_restart_after_a_crash_takes_over_its_own_stale_session_at_once(
    make: Any, sim: Simulator
) -> None:
    # A long session timeout: only deleting the stale session can free it in time.
    crashed = await make()
    crashed.start()
    await eventually(listening(crashed), message="listening")
    stale = crashed.state_file.get("k-linux").session_id
    crashed.task.cancel()  # type: ignore[union-attr]
    crashed.listener._session = None  # a crash closes nothing
    with contextlib.suppress(asyncio.CancelledError):
        await crashed.task  # type: ignore[misc]
    crashed.task = None
    assert stale in [s["id"] for s in (await sim_state(sim))["sessions"]]

    restarted = await make()  # same owner, same state file
    restarted.start()
    await eventually(listening(restarted), timeout=1, message="immediate takeover")
    assert restarted.listener.last_error is None  # never stood by
    sessions = [s["id"] for s in (await sim_state(sim))["sessions"]]
    assert stale not in sessions and len(sessions) == 1


async def test_a_scale_set_deleted_on_githubs_side_is_recreated(make: Any) -> None:
    harness = await make()
    harness.start()
    await eventually(listening(harness), message="listening")
    old_id = harness.listener.scale_set_id

    await sim_control(harness.sim, "delete-scale-set", {"name": "linux"})

    await eventually(
        lambda: (
            harness.listener.scale_set_id not in (None, old_id)
            and harness.listener.state == "listening"
        ),
        message="re-created and listening",
    )
    names = [s["name"] for s in (await sim_state(harness.sim))["scaleSets"]]
    assert names == ["linux"]
    assert harness.state_file.get("k-linux").scale_set_id == harness.listener.scale_set_id


async def test_finds_its_scale_set_by_remembered_id_and_reports_labels_it_cannot_change(
    make: Any, sim: Simulator
) -> None:
    first = await make()
    first.start()
    await eventually(listening(first), message="listening")
    scale_set_id = first.listener.scale_set_id
    await first.stop()

    second = await make(
        ListenerSettings(
            name="linux",
            runner_group="default",
            labels=("linux", "gpu"),
            min_runners=0,
            max_runners=5,
        )
    )
    second.start()
    await eventually(listening(second), message="listening again")
    assert second.listener.scale_set_id == scale_set_id
    # GitHub ignores label PATCHes: no PATCH is sent, and the mismatch is reported once.
    [scale_set] = (await sim_state(sim))["scaleSets"]
    assert sorted(scale_set["labels"]) == ["linux", "self-hosted"]
    assert second.listener.label_mismatch is not None
    assert "DistributedTask.AllowRunnerScaleSetCustomLabels" in second.listener.label_mismatch


async def test_stopping_closes_the_session(make: Any, sim: Simulator) -> None:
    harness = await make()
    harness.start()
    await eventually(listening(harness), message="listening")
    await harness.stop()
    assert (await sim_state(sim))["sessions"] == []
    assert harness.state_file.get("k-linux").session_id is None


async def run_stand_in_runner(jit_config: str) -> asyncio.subprocess.Process:
    import os

    from runscaler.simulator.runner import runner_script

    env = {**os.environ, "ACTIONS_RUNNER_INPUT_JITCONFIG": jit_config}
    return await asyncio.create_subprocess_exec(
        "sh",
        str(runner_script()),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_an_unacknowledged_message_is_redelivered_and_handled_once(make: Any) -> None:
    harness = await make()
    harness.start()
    await eventually(listening(harness), message="listening")
    scale_set_id = harness.listener.scale_set_id
    jit = await harness.client.generate_jit_config(scale_set_id, runner_name="linux-a1b2c3d4")
    # Every acknowledgement fails for a while: the messages stay queued and come back.
    await sim_control(
        harness.sim,
        "faults",
        {"method": "DELETE", "path": "/_broker/scalesets/message", "times": 8, "status": 500},
    )
    runner = await run_stand_in_runner(jit.encoded)
    try:
        harness.sim.add_jobs(["linux"], count=1, duration=0.2)
        await eventually(
            lambda: len(harness.recorder.completed) >= 1, timeout=15, message="job completed"
        )
        assert await asyncio.wait_for(runner.wait(), timeout=10) == 0
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
    assert [j.runner_name for j in harness.recorder.started] == ["linux-a1b2c3d4"]
    assert [(j.runner_name, j.result) for j in harness.recorder.completed] == [
        ("linux-a1b2c3d4", "succeeded")
    ]
