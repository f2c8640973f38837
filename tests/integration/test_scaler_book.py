"""The scaler's book against the real engine and the simulator: what status shows per runner,
adopted runners' real state, the resync's own timer, retried removals, and job completions
that no longer start a spare runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runscaler import __version__
from runscaler.backends.base import LABEL_FLEET, BackendError, RunnerExit
from runscaler.backends.docker import container_name
from tests.integration.dockerkit import docker
from tests.integration.runtimekit import Runtimes, running_names, scale_set, sim_control, sim_state
from tests.waiting import eventually

pytestmark = pytest.mark.docker


async def job_state(runtimes: Runtimes, job: int) -> dict[str, Any]:
    jobs = {j["id"]: j for j in (await sim_state(runtimes.sim))["jobs"]}
    return dict(jobs[job])


async def test_status_lists_every_runner_with_its_state_since_job_and_template(
    runtimes: Runtimes,
) -> None:
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=2, maxRunners=3))
    runtime.start()
    await eventually(lambda: runtime.snapshot().idle == 2, timeout=30, message="two idle")
    [job] = runtimes.sim.add_jobs(["linux"], count=1, duration=30)
    await eventually(
        lambda: (runtime.snapshot().busy, runtime.snapshot().idle) == (1, 2),
        timeout=30,
        message="one busy and two idle (min 2 plus the job)",
    )
    listed = runtime.snapshot().to_json()["runners"]
    template = runtime.scaler.template.hash
    assert {r["name"] for r in listed} == {r.name for r in runtime.scaler.records()}
    busy = [r for r in listed if r["state"] == "busy"]
    assert len(busy) == 1
    assert isinstance(busy[0]["jobId"], str) and busy[0]["jobId"]
    assert (await job_state(runtimes, job))["state"] == "running"
    for runner in listed:
        assert set(runner) == {
            "name",
            "state",
            "since",
            "jobId",
            "templateHash",
            "exitCode",
            "reason",
            "node",
        }
        assert runner["templateHash"] == template
        assert isinstance(runner["since"], float) and runner["since"] > 1.7e9
        assert (runner["exitCode"], runner["reason"], runner["node"]) == (None, None, None)
    assert sorted(r["state"] for r in listed) == ["busy", "idle", "idle"]


async def test_an_adopted_runner_holding_a_job_is_busy_right_after_a_restart(
    runtimes: Runtimes,
) -> None:
    spec = scale_set(runtimes.sim, minRunners=0, maxRunners=2)
    first = runtimes.make(spec)
    first.start()
    [job] = runtimes.sim.add_jobs(["linux"], count=1, duration=30)
    await eventually(lambda: first.snapshot().busy == 1, timeout=30, message="the job running")
    await runtimes.crash(first)

    second = runtimes.make(spec)
    second.start()

    def adopted() -> bool:
        return bool(second.scaler.records())

    await eventually(adopted, timeout=20, message="the runner adopted")
    snapshot = second.snapshot()
    assert (snapshot.busy, snapshot.idle, snapshot.starting) == (1, 0, 0)
    [runner] = snapshot.to_json()["runners"]
    assert runner["state"] == "busy"
    assert (await job_state(runtimes, job))["state"] == "running"


async def test_a_completed_job_starts_no_spare_runner_that_is_removed_at_once(
    runtimes: Runtimes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runscaler.engine.scaler")
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=0, maxRunners=2))
    runtime.start()
    await eventually(lambda: runtime.state == "listening", message="listening")
    # Messages arrive late, as from the live service: the runner's container exits well
    # before its JobCompleted message is seen.
    await sim_control(
        runtimes.sim,
        "faults",
        {"method": "GET", "path": "/_broker/scalesets/message", "times": -1, "delay": 1.0},
    )
    [job] = runtimes.sim.add_jobs(["linux"], count=1, duration=0.3)

    async def done_and_quiet() -> bool:
        state = await job_state(runtimes, job)
        return state["result"] == "succeeded" and not runtime.scaler.records()

    await eventually(done_and_quiet, timeout=30, message="the job done and no runner left")
    starts = [r for r in caplog.records if "started in" in r.getMessage()]
    removals = [r for r in caplog.records if "removed idle runner" in r.getMessage()]
    assert (len(starts), len(removals)) == (1, 0)
    ended = [r for r in caplog.records if "ended on runner" in r.getMessage()]
    assert len(ended) == 1 and "(succeeded)" in ended[0].getMessage()


class Hiccups:
    """The real backend, whose exit stream misses every event and whose first removal fails
    (an engine that did not answer at that moment)."""

    def __init__(self, inner: Any, *, failing_removals: int = 0, deaf: bool = False) -> None:
        self._inner = inner
        self.failing_removals = failing_removals
        self.deaf = deaf

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def remove(self, name: str) -> None:
        if self.failing_removals > 0:
            self.failing_removals -= 1
            raise BackendError(f"cannot remove container {name}: the engine did not answer")
        await self._inner.remove(name)

    def exits(self, selector: Any) -> Any:
        inner = self._inner.exits(selector)
        if not self.deaf:
            return inner
        return _Deaf(inner)


class _Deaf:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __aiter__(self) -> AsyncIterator[RunnerExit]:
        return self._events()

    async def _events(self) -> AsyncIterator[RunnerExit]:
        async for _ in self._inner:
            pass
        return
        yield  # pragma: no cover (makes this an async generator)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_the_resync_runs_on_its_own_timer_and_replaces_a_runner_whose_exit_was_missed(
    runtimes: Runtimes,
) -> None:
    backend = Hiccups(runtimes.backend, deaf=True)
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=1, maxRunners=2), backend=backend)  # type: ignore[arg-type]
    runtime.start()

    async def one_running() -> set[str]:
        names = await running_names(runtimes.backend, runtimes.fleet)
        return names if len(names) == 1 and runtime.snapshot().idle == 1 else set()

    [first] = await eventually(one_running, timeout=30, message="one warm runner")
    # The listener polls every 0.3 s (each poll wakes the scaler), faster than the 1.5 s
    # resync interval: only a resync on its own timer sees the missed exit.
    docker("kill", container_name(runtimes.fleet, first))

    async def replaced() -> bool:
        names = await running_names(runtimes.backend, runtimes.fleet)
        records = {r.name for r in runtime.scaler.records()}
        return len(names) == 1 and first not in names and first not in records

    await eventually(replaced, timeout=20, message="the dead runner replaced")
    failure = await eventually(
        lambda: runtime.snapshot().last_failure, timeout=10, message="the failure judged"
    )
    assert failure.exit_code == 137
    out = docker("ps", "-aq", "--filter", f"name=^{container_name(runtimes.fleet, first)}$")
    assert out.stdout.strip() == ""


async def test_a_removal_the_engine_did_not_answer_is_retried_until_the_container_is_gone(
    runtimes: Runtimes,
) -> None:
    backend = Hiccups(runtimes.backend, failing_removals=1)
    spec = scale_set(runtimes.sim, minRunners=1, maxRunners=2)
    runtime = runtimes.make(spec, backend=backend)  # type: ignore[arg-type]
    runtime.start()
    await eventually(lambda: runtime.snapshot().idle == 1, timeout=30, message="one idle")
    [name] = await running_names(runtimes.backend, runtimes.fleet)
    await runtime.update(spec.model_copy(update={"min_runners": 0}), reconnect=False)

    async def gone() -> bool:
        owned = await runtimes.backend.list_owned({LABEL_FLEET: runtimes.fleet})
        return not owned and not runtime.scaler.records()

    await eventually(gone, timeout=20, message="the container removed on a retry")
    assert backend.failing_removals == 0
    assert name not in runtime.scaler.book.leftovers
    registered = {r["name"] for r in (await sim_state(runtimes.sim))["runners"]}
    assert name not in registered
    with contextlib.suppress(Exception):
        docker("rm", "-f", container_name(runtimes.fleet, name), check=False)


async def test_every_runner_is_told_to_exit_7_when_outdated_and_who_started_it(
    runtimes: Runtimes,
) -> None:
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=1, docker={"env": {"A": "1"}}))
    runtime.start()

    async def one_running() -> set[str]:
        return await running_names(runtimes.backend, runtimes.fleet)

    [name] = await eventually(one_running, timeout=30, message="a runner")
    env = json.loads(
        docker("inspect", "-f", "{{json .Config.Env}}", container_name(runtimes.fleet, name)).stdout
    )
    assert "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1" in env
    assert f"GITHUB_ACTIONS_RUNNER_EXTRA_USER_AGENT=runscaler/{__version__}" in env
    assert "A=1" in env


async def test_a_runner_that_exits_7_is_reported_outdated_not_as_a_crash_loop(
    runtimes: Runtimes, busybox_image: str
) -> None:
    spec = scale_set(
        runtimes.sim,
        minRunners=1,
        docker={"image": busybox_image, "user": "0", "command": ["sh", "-c", "exit 7"]},
    )
    runtime = runtimes.make(spec)
    runtime.start()

    def reported() -> bool:
        failure = runtime.snapshot().last_failure
        return failure is not None and failure.reason == "runner_outdated"

    await eventually(reported, timeout=30, message="the runner reported outdated")
    snapshot = runtime.snapshot()
    assert snapshot.failures_in_row == 0  # not a crash loop
    assert snapshot.last_error is not None
    assert f"the runner in image {busybox_image} is too old for GitHub (exit code 7)" in (
        snapshot.last_error
    )
    assert "pulled again before the next start" in snapshot.last_error
    # The backend marks the tag to be pulled again before the next start.
    assert busybox_image in runtimes.backend._puller._stale


async def test_surplus_idle_runners_go_only_after_demand_stayed_low_for_scale_down_delay(
    runtimes: Runtimes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runscaler.engine.scaler")
    # 60 s in the manifest is 3 s at the tests' timing scale (0.05).
    spec = scale_set(runtimes.sim, minRunners=2, maxRunners=3, scaleDownDelay="60s")
    runtime = runtimes.make(spec)
    runtime.start()
    await eventually(lambda: runtime.snapshot().idle == 2, timeout=30, message="two idle")
    # A dip shorter than the delay removes nothing.
    await runtime.update(spec.model_copy(update={"min_runners": 0}), reconnect=False)
    await eventually(lambda: runtime.scaler.desired == 0, message="demand dropped")
    await runtime.update(spec, reconnect=False)
    await eventually(lambda: runtime.scaler.desired == 2, message="demand back")
    began = time.monotonic()
    await runtime.update(spec.model_copy(update={"min_runners": 0}), reconnect=False)

    async def none_left() -> bool:
        return not await running_names(runtimes.backend, runtimes.fleet)

    await eventually(none_left, timeout=20, message="the surplus removed after the delay")
    assert time.monotonic() - began >= 0.8 * 3.0
    removals = [r for r in caplog.records if "removed idle runner" in r.getMessage()]
    assert len(removals) == 2


async def test_a_registration_follows_the_listener_that_replaced_the_one_it_waited_for(
    runtimes: Runtimes,
) -> None:
    spec = scale_set(runtimes.sim, minRunners=0)
    first = runtimes.make(spec)
    first.start()
    await eventually(lambda: first.state == "listening", message="listening")
    scale_set_id = first.listener.scale_set_id
    second = runtimes.make(spec)  # never started: its listener never learns the scale set
    registering = asyncio.create_task(second.scaler.registry.register("linux-0000feed"))
    await eventually(lambda: not registering.done() and second.listener.scale_set_id is None)
    # A reconnect replaces the listener; this one knows the scale set.
    second.listener = second._new_listener()
    second.listener.scale_set_id = scale_set_id
    second.listener.scale_set_known.set()
    jit = await asyncio.wait_for(registering, timeout=5)
    assert jit.runner_name == "linux-0000feed"
    await second.scaler.registry.unregister(jit.runner_id)
    assert not (await sim_state(runtimes.sim))["runners"]
