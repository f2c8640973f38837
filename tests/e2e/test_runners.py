"""What users see of runners that fail, and of a scale set they suspend and resume."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.operatorkit import metric_value, running
from tests.waiting import eventually

pytestmark = pytest.mark.docker

BROKEN = ["/bin/sh", "-c", "echo 'runner: cannot read .runner: no such file' >&2; exit 3"]


async def test_a_runner_that_fails_at_once_shows_its_exit_code_and_log_tail(e2e: E2E) -> None:
    path = e2e.write(
        e2e.manifest(
            [
                {"name": "broken", "minRunners": 1, "docker": {"command": BROKEN}},
                {"name": "healthy", "minRunners": 1},
            ]
        )
    )
    operator = e2e.start(path)
    await operator.wait_ready()

    async def failure() -> dict[str, object] | None:
        found: dict[str, object] | None = (await operator.scale_set("broken"))["lastFailure"]
        return found

    last = await eventually(failure, timeout=30, message="the broken scale set's last failure")
    assert last["reason"] == "exited_early"
    assert last["exitCode"] == 3
    assert last["message"] == "runner exited with code 3 before taking a job"
    assert "runner: cannot read .runner: no such file" in last["logTail"]  # type: ignore[operator]

    async def counted() -> float | None:
        text = await operator.metrics()
        return metric_value(
            text, "runscaler_runner_failures_total", scale_set="broken", reason="exited_early"
        )

    assert await eventually(counted, timeout=10, message="the failure counted") >= 1
    # The other scale set is not affected: it listens with its warm runner.
    healthy = await operator.scale_set("healthy")
    assert (healthy["state"], healthy["lastFailure"]) == ("listening", None)
    await eventually(lambda: running(e2e.fleet, "healthy"), timeout=20, message="warm runner")
    assert "broken: runner broken-" in operator.log_text()


async def test_suspending_drains_and_keeps_the_scale_set_resuming_listens_again(
    e2e: E2E,
) -> None:
    linux = {"name": "linux", "minRunners": 1, "maxRunners": 3}
    path = e2e.write(e2e.manifest([linux]))
    operator = e2e.start(path)
    await operator.wait_ready()
    await eventually(lambda: running(e2e.fleet), timeout=30, message="a warm runner")
    [job] = e2e.sim.add_jobs(["linux"], duration=3)
    await eventually(
        lambda: e2e.jobs([job])[0]["state"] == "running", timeout=20, message="the job running"
    )
    busy_runner = e2e.jobs([job])[0]["runner"]

    async def idle_beside_busy() -> bool:
        return len(await running(e2e.fleet)) == 2

    await eventually(idle_beside_busy, timeout=20, message="a warm runner beside the busy one")

    path.write_text(e2e.manifest([{**linux, "suspended": True}]))

    async def only_busy_left() -> bool:
        return [c.runner for c in await running(e2e.fleet)] == [busy_runner]

    await eventually(only_busy_left, timeout=10, message="the idle runner removed")
    assert e2e.session("linux") is None
    assert e2e.jobs([job])[0]["state"] == "running"
    await eventually(
        lambda: e2e.jobs([job])[0]["state"] == "done", timeout=20, message="the job done"
    )
    assert e2e.jobs([job])[0]["result"] == "succeeded"

    async def suspended() -> bool:
        return (await operator.scale_set("linux"))["state"] == "suspended"

    await eventually(suspended, timeout=10, message="state suspended")

    async def none_running() -> bool:
        return not await running(e2e.fleet)

    await eventually(none_running, timeout=10, message="no runner left")
    assert e2e.scale_set("linux") is not None
    assert not e2e.deleted("linux")

    path.write_text(e2e.manifest([linux]))
    await eventually(lambda: e2e.session("linux"), timeout=10, message="listening again")
    await eventually(lambda: running(e2e.fleet), timeout=20, message="a warm runner again")
    [again] = e2e.sim.add_jobs(["linux"], duration=0.2)
    await eventually(
        lambda: e2e.jobs([again])[0]["result"] == "succeeded", timeout=20, message="a new job"
    )
    assert (await operator.scale_set("linux"))["state"] == "listening"
