"""Runners the backend lost (a failed Swarm node), and runners GitHub assigned a job that has
not started yet, against the real engine and the simulator.

A lost runner is modelled by a backend that places runners on a named node and then reports
one of them lost (as the Swarm backend does when its node goes down): its container keeps
running, exactly as a task on a down node keeps saying `running`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from runscaler.backends.base import LABEL_FLEET, OwnedRunner
from runscaler.simulator.realism import OFF, Realism
from runscaler.simulator.server import Simulator, SimulatorOptions, serve_simulator
from tests.integration.runtimekit import Runtimes, scale_set, sim_state
from tests.waiting import eventually

pytestmark = pytest.mark.docker

NODE = "node-2"


class OnANode:
    """The real Docker backend, as a backend that places every runner on `NODE`; the runners
    named in `lost` are reported lost (their node is down) while their containers run on."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.lost: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def node_of(self, name: str) -> str | None:
        return NODE

    async def list_owned(self, selector: Mapping[str, str]) -> list[OwnedRunner]:
        return [
            dataclasses.replace(
                r,
                node=NODE,
                lost=r.name in self.lost,
                running=r.running and r.name not in self.lost,
            )
            for r in await self._inner.list_owned(selector)
        ]


async def test_a_busy_runner_on_a_failed_node_is_lost_with_its_job_and_not_a_crash(
    runtimes: Runtimes, caplog: pytest.LogCaptureFixture
) -> None:
    backend = OnANode(runtimes.backend)
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=1, maxRunners=2), backend=backend)  # type: ignore[arg-type]
    runtime.start()
    await eventually(lambda: runtime.snapshot().idle == 1, timeout=30, message="one idle")
    [idle] = runtime.snapshot().to_json()["runners"]
    assert idle["node"] == NODE  # recorded from the backend when the start returned
    [job] = runtimes.sim.add_jobs(["linux"], count=1, duration=2.0)

    def busy() -> dict[str, Any] | None:
        found = [r for r in runtime.snapshot().to_json()["runners"] if r["state"] == "busy"]
        return found[0] if found and found[0]["jobId"] else None

    doomed = await eventually(busy, timeout=30, message="a runner running the job")
    caplog.set_level(logging.WARNING, logger="runscaler")
    backend.lost.add(doomed["name"])

    def shown_lost() -> dict[str, Any] | None:
        listed = runtime.snapshot().to_json()["runners"]
        return next((r for r in listed if r["name"] == doomed["name"]), None)

    await eventually(
        lambda: (r := shown_lost()) is not None and r["state"] == "lost",
        timeout=20,
        message="status showing the runner lost",
    )
    lost = shown_lost()
    assert lost is not None
    assert (lost["node"], lost["jobId"]) == (NODE, doomed["jobId"])
    snapshot = runtime.snapshot()
    assert snapshot.failures_in_row == 0  # a node failure is not a crash loop
    assert snapshot.last_failure is not None and snapshot.last_failure.reason == "lost"
    assert doomed["jobId"] in snapshot.last_failure.message
    assert NODE in snapshot.last_failure.message
    said = [r for r in caplog.records if r.levelno >= logging.ERROR and "lost" in r.getMessage()]
    assert len(said) == 1
    assert doomed["jobId"] in said[0].getMessage() and NODE in said[0].getMessage()

    # Not capacity: demand (min 1) is served by another runner.
    await eventually(
        lambda: runtime.snapshot().idle >= 1, timeout=30, message="a replacement runner idle"
    )

    async def cleaned() -> bool:
        registered = {r["name"] for r in (await sim_state(runtimes.sim))["runners"]}
        owned = {r.name for r in await runtimes.backend.list_owned({LABEL_FLEET: runtimes.fleet})}
        return doomed["name"] not in registered | owned and not runtime.scaler.book.leftovers

    await eventually(cleaned, timeout=40, message="its registration and container removed")
    jobs = {j["id"]: j for j in (await sim_state(runtimes.sim))["jobs"]}
    assert jobs[job]["runner"] == doomed["name"]


async def test_a_lost_runner_found_at_start_is_unregistered_and_removed(
    runtimes: Runtimes,
) -> None:
    spec = scale_set(runtimes.sim, minRunners=1, maxRunners=1)
    first = runtimes.make(spec)
    first.start()
    await eventually(lambda: first.snapshot().idle == 1, timeout=30, message="one idle")
    [name] = [r.name for r in first.scaler.records()]
    await runtimes.crash(first)

    backend = OnANode(runtimes.backend)
    backend.lost.add(name)
    second = runtimes.make(spec, backend=backend)  # type: ignore[arg-type]
    second.start()

    async def replaced() -> bool:
        registered = {r["name"] for r in (await sim_state(runtimes.sim))["runners"]}
        return name not in registered and second.snapshot().idle == 1

    await eventually(replaced, timeout=30, message="the lost runner unregistered and replaced")
    listed = {r["name"]: r for r in second.snapshot().to_json()["runners"]}
    assert (listed[name]["state"], listed[name]["node"]) == ("lost", NODE)
    assert second.snapshot().failures_in_row == 0


# -- a scale-down racing an assignment ------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator whose jobs start 3 s after GitHub assigns them to a runner."""
    realism = Realism(start_delay=(3.0, 3.0), event_delay=OFF, registration_linger=OFF)
    options = SimulatorOptions(
        poll_wait=0.3, session_timeout=1.0, redispatch_interval=30, realism=realism
    )
    async with serve_simulator(options) as simulator:
        yield simulator


async def test_a_scale_down_never_removes_a_runner_assigned_a_job_it_has_not_started(
    runtimes: Runtimes,
) -> None:
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=1, maxRunners=1))
    runtime.start()
    await eventually(lambda: runtime.snapshot().idle == 1, timeout=30, message="one idle")
    [job] = runtimes.sim.add_jobs(["linux"], count=1, duration=0.5)

    async def assigned() -> bool:
        runners = (await sim_state(runtimes.sim))["runners"]
        return any(r["reservedJob"] == job for r in runners)

    await eventually(assigned, timeout=20, message="the job assigned, not started")
    await runtime.scaler.remove_idle_runners()  # a scale-down in the assignment window

    async def succeeded() -> dict[str, Any] | None:
        jobs = {j["id"]: j for j in (await sim_state(runtimes.sim))["jobs"]}
        return jobs[job] if jobs[job]["result"] == "succeeded" else None

    done = await eventually(succeeded, timeout=30, message="the job run by the kept runner")
    assert done["redispatches"] == 0
