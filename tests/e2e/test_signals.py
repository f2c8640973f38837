"""Stopping the operator never kills a job, and a crashed one is picked up by the next start.

SIGTERM closes the sessions and removes idle runners, but a busy runner keeps running its job
to the end, and the scale set stays on GitHub (its lifetime is the manifest's). After a
`kill -9` the next start with the same state directory takes its stale session over at once,
adopts the running runners instead of starting duplicates, and cleans up when their jobs end.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.operatorkit import containers, running
from tests.waiting import eventually

pytestmark = pytest.mark.docker


async def test_sigterm_with_a_busy_runner_exits_promptly_and_the_job_finishes(e2e: E2E) -> None:
    path = e2e.write(e2e.manifest([{"name": "linux", "minRunners": 1, "maxRunners": 2}]))
    operator = e2e.start(path)
    await operator.wait_ready()
    await eventually(lambda: running(e2e.fleet), timeout=30, message="a warm runner")
    [job] = e2e.sim.add_jobs(["linux"], duration=4)
    started = await eventually(
        lambda: e2e.jobs([job])[0]["runner"] if e2e.jobs([job])[0]["state"] == "running" else None,
        timeout=20,
        message="the job running",
    )

    async def one_busy_one_idle() -> bool:
        return len(await running(e2e.fleet)) == 2

    await eventually(one_busy_one_idle, timeout=20, message="a new idle runner beside the busy")
    busy = [c for c in await running(e2e.fleet) if c.runner == started]
    assert len(busy) == 1

    signalled = time.monotonic()
    operator.signal(signal.SIGTERM)
    assert await operator.wait(timeout=10) == 0
    assert time.monotonic() - signalled < 10
    # The busy runner is still at work; the idle one is gone.
    assert [c.id for c in await running(e2e.fleet)] == [busy[0].id]
    assert e2e.jobs([job])[0]["state"] == "running"
    assert e2e.session("linux") is None
    await eventually(
        lambda: e2e.jobs([job])[0]["state"] == "done", timeout=20, message="the job done"
    )
    assert e2e.jobs([job])[0]["result"] == "succeeded"
    assert e2e.scale_set("linux") is not None
    assert not e2e.deleted("linux")
    log = operator.log_text()
    assert "SIGTERM: shutting down" in log
    assert log.rstrip().endswith("stopped")


@contextlib.asynccontextmanager
async def peak_running(fleet: str) -> AsyncIterator[list[int]]:
    """Sample the fleet's running containers until the block ends; yields [peak]."""
    peak = [0]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], len(await running(fleet)))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


async def test_after_kill_9_a_restart_takes_over_and_adopts_busy_runners(e2e: E2E) -> None:
    path = e2e.write(e2e.manifest([{"name": "linux", "minRunners": 0, "maxRunners": 4}]))
    first = e2e.start(path)
    await first.wait_ready()
    await eventually(lambda: e2e.session("linux"), timeout=10, message="listening")
    ids = e2e.sim.add_jobs(
        ["linux"], count=2, duration=12
    )  # outlasts a restart on a loaded machine

    def both_running() -> bool:
        return all(j["state"] == "running" for j in e2e.jobs(ids))

    await eventually(both_running, timeout=20, message="two jobs running")
    busy = sorted(c.name for c in await running(e2e.fleet))
    assert len(busy) == 2, (await containers(e2e.fleet), e2e.jobs(ids), e2e.state()["runners"])
    stale = e2e.session("linux")
    assert stale is not None

    async with peak_running(e2e.fleet) as peak:
        first.signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        assert e2e.session("linux") == stale  # a dead process closes nothing

        second = e2e.start(path)
        await second.wait_ready()

        def taken_over() -> bool:
            session = e2e.session("linux")
            return session is not None and session["id"] != stale["id"]

        await eventually(taken_over, timeout=5, message="a new session")
        assert both_running()  # taken over well before the jobs end
        status = await second.scale_set("linux")
        assert status["state"] == "listening"
        assert sorted(c.name for c in await running(e2e.fleet)) == busy

        await eventually(
            lambda: all(j["state"] == "done" for j in e2e.jobs(ids)),
            timeout=30,
            message="both jobs done",
        )
        assert {j["result"] for j in e2e.jobs(ids)} == {"succeeded"}

        async def nothing_left() -> bool:
            return await containers(e2e.fleet) == []

        await eventually(nothing_left, timeout=20, message="no runner container left")
    assert peak[0] == 2
    log = second.log_text()
    assert "linux: removed this operator's stale session" in log
    assert "linux: adopted 2 running runners" in log
    assert " started in " not in log  # no runner was started: the jobs had theirs
    status = await second.scale_set("linux")
    assert (status["idle"], status["busy"], status["starting"]) == (0, 0, 0)
