"""What the fleet owns survives the operator: drains resume, owners do not collide.

A scale set removed from the manifest is recorded as `deleting` before it drains, so a
`kill -9` in the middle of the drain is resumed by the next start (to the original deadline)
and the scale set is deleted once its busy runner has finished its job. A scale set dropped
from the manifest while the operator is down is drained and deleted at the next start. The
message session is the lease: a second operator (another state directory, the same engine)
stands by and touches nothing of the first one's runners. Stopping is bounded whatever
GitHub does.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.e2e.conftest import E2E
from tests.e2e.operatorkit import SERVING, OperatorProcess, containers, running
from tests.waiting import eventually

pytestmark = pytest.mark.docker


async def serving(operator: OperatorProcess) -> None:
    """Wait until the operator serves HTTP (it may not be ready: standby, degraded)."""

    def found() -> str | None:
        assert operator.process.poll() is None, operator.log_text()
        match = SERVING.search(operator.log_text())
        return match.group(1) if match else None

    operator.url = await eventually(found, timeout=30, message="the operator to serve")


async def scale_set_state(operator: OperatorProcess, name: str) -> str | None:
    for entry in (await operator.status())["scaleSets"]:
        if entry["name"] == name:
            return str(entry["state"])
    return None


async def test_kill_9_during_a_drain_resumes_it_and_deletes_after_the_busy_runner(
    e2e: E2E,
) -> None:
    both = e2e.manifest([{"name": "keep"}, {"name": "linux", "maxRunners": 2}])
    path = e2e.write(both)
    first = e2e.start(path)
    await first.wait_ready()
    [job] = e2e.sim.add_jobs(["linux"], duration=8)
    await eventually(
        lambda: e2e.jobs([job])[0]["state"] == "running", timeout=20, message="the job running"
    )
    path.write_text(e2e.manifest([{"name": "keep"}]))
    await eventually(lambda: scale_set_state(first, "linux"), timeout=10, message="linux in status")

    async def draining() -> bool:
        return await scale_set_state(first, "linux") == "draining"

    await eventually(draining, timeout=10, message="linux draining")
    first.signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL

    second = e2e.start(path)
    await second.wait_ready()
    assert e2e.jobs([job])[0]["state"] == "running"
    assert not e2e.deleted("linux")  # never before its busy runner is done
    assert await scale_set_state(second, "linux") == "draining"
    assert "linux: resuming its interrupted drain" in second.log_text()

    await eventually(lambda: e2e.deleted("linux"), timeout=40, message="linux deleted")
    assert e2e.jobs([job])[0]["state"] == "done"
    assert e2e.jobs([job])[0]["result"] == "succeeded"

    async def no_linux_containers() -> bool:
        return [c for c in await containers(e2e.fleet) if c.scale_set == "linux"] == []

    await eventually(no_linux_containers, timeout=20, message="linux's containers removed")
    assert e2e.scale_set("keep") is not None

    async def gone_from_status() -> bool:
        return await scale_set_state(second, "linux") is None

    await eventually(gone_from_status, timeout=10, message="linux gone from status")


async def test_a_scale_set_dropped_while_the_operator_is_down_is_deleted_at_start(
    e2e: E2E,
) -> None:
    path = e2e.write(e2e.manifest([{"name": "keep"}, {"name": "linux", "minRunners": 1}]))
    first = e2e.start(path)
    await first.wait_ready()
    await eventually(lambda: running(e2e.fleet, "linux"), timeout=30, message="a warm runner")
    first.signal(signal.SIGKILL)  # its warm runner keeps running
    assert await first.wait() == -signal.SIGKILL

    path.write_text(e2e.manifest([{"name": "keep"}]))
    second = e2e.start(path)
    await second.wait_ready()

    await eventually(lambda: e2e.deleted("linux"), timeout=30, message="linux deleted")

    async def no_linux_runner() -> bool:
        return [c for c in await containers(e2e.fleet) if c.scale_set == "linux"] == []

    await eventually(no_linux_runner, timeout=20, message="linux's idle runner removed")
    assert "linux: no longer in the manifest; draining and deleting it" in second.log_text()
    assert e2e.session("keep") is not None


async def test_a_second_operator_with_another_state_dir_stands_by_and_touches_nothing(
    e2e: E2E,
) -> None:
    path = e2e.write(e2e.manifest([{"name": "linux", "minRunners": 1, "maxRunners": 2}]))
    first = e2e.start(path)
    await first.wait_ready()
    [warm] = await eventually(
        lambda: running(e2e.fleet, "linux"), timeout=30, message="a warm runner"
    )
    session = e2e.session("linux")
    assert session is not None

    other_state = e2e.root / "other-state"
    second = e2e.start(path, state_dir=other_state)
    await serving(second)

    async def standby() -> bool:
        return await scale_set_state(second, "linux") == "standby"

    await eventually(standby, timeout=20, message="the second operator in standby")
    readyz = await second.get("/readyz")
    assert readyz.status_code == 503
    assert "linux" in readyz.json()["notServing"]
    entry = next(s for s in (await second.status())["scaleSets"] if s["name"] == "linux")
    assert (entry["idle"], entry["busy"], entry["starting"]) == (0, 0, 0)  # adopted nothing

    second.signal(signal.SIGTERM)
    assert await second.wait(timeout=20) == 0
    assert [c.id for c in await running(e2e.fleet, "linux")] == [warm.id]
    still = e2e.session("linux")
    assert still is not None and still["id"] == session["id"]
    assert await scale_set_state(first, "linux") == "listening"


async def test_sigterm_finishes_in_bounded_time_when_github_hangs(e2e: E2E) -> None:
    path = e2e.write(e2e.manifest([{"name": "linux", "minRunners": 1}]))
    operator = e2e.start(path)
    await operator.wait_ready()
    await eventually(lambda: running(e2e.fleet, "linux"), timeout=30, message="a warm runner")
    async with httpx.AsyncClient(base_url=e2e.sim.url) as http:
        for method in ("DELETE", "PATCH", "GET", "POST"):
            response = await http.post(
                "/_sim/faults", json={"method": method, "path": "", "times": -1, "delay": 300}
            )
            response.raise_for_status()

    signalled = time.monotonic()
    operator.signal(signal.SIGTERM)
    assert await operator.wait(timeout=30) == 0
    took = time.monotonic() - signalled
    assert took < 15, took
    assert "did not answer within" in operator.log_text()


async def test_a_suspended_scale_set_removes_its_adopted_idle_runners_at_start(e2e: E2E) -> None:
    path = e2e.write(e2e.manifest([{"name": "linux", "minRunners": 1}]))
    first = e2e.start(path)
    await first.wait_ready()
    await eventually(lambda: running(e2e.fleet, "linux"), timeout=30, message="a warm runner")
    first.signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL

    path.write_text(e2e.manifest([{"name": "linux", "minRunners": 1, "suspended": True}]))
    second = e2e.start(path)
    await second.wait_ready()

    async def none_running() -> bool:
        return await running(e2e.fleet, "linux") == []

    await eventually(none_running, timeout=20, message="the idle runner removed")
    entry = next(s for s in (await second.status())["scaleSets"] if s["name"] == "linux")
    assert (entry["state"], entry["idle"]) == ("suspended", 0)


async def test_a_tart_scale_set_without_tart_registers_nothing_and_is_not_ready(e2e: E2E) -> None:
    text = e2e.manifest([{"name": "linux"}, {"name": "mac", "backend": "tart", "maxRunners": 2}])
    path = e2e.write(text)
    operator = e2e.start(path)  # this host has no `tart`
    await serving(operator)
    await eventually(lambda: e2e.session("linux"), timeout=20, message="linux listening")

    async def degraded() -> bool:
        return await scale_set_state(operator, "mac") == "degraded"

    await eventually(degraded, timeout=10, message="mac degraded")
    readyz = await operator.get("/readyz")
    assert readyz.status_code == 503
    assert "tart" in readyz.json()["notServing"]["mac"]
    assert list(readyz.json()["notServing"]) == ["mac"]
    assert e2e.scale_set("mac") is None  # never registered: it would take jobs no one runs
