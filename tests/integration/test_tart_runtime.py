"""A Tart scale set's whole path against the simulator: listener, scaler, Tart backend, a fake
VM, the stand-in runner inside it taking a real job, and the VM's removal.

Two Tart scale sets share one backend (one TART_HOME), as the operator wires them, and together
never run more VMs than the host's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runscaler.backends.tart import TartBackend, TartTiming
from runscaler.engine.scaleset import ScaleSetRuntime
from runscaler.engine.statefile import StateFile
from runscaler.manifest.models import ScaleSet
from runscaler.simulator.server import Simulator
from tests.integration import tartkit
from tests.integration.runtimekit import TIMING, TOKEN_ENV, sim_state
from tests.integration.tartkit import IMAGE, FakeTart
from tests.waiting import eventually

fake_tart = tartkit.fake_tart
FLEET = "macfleet"


def tart_scale_set(sim: Simulator, name: str, **tart: Any) -> ScaleSet:
    return ScaleSet.model_validate(
        {
            "name": name,
            "github": {"url": sim.config_url("acme"), "auth": {"token": f"env:{TOKEN_ENV}"}},
            "maxRunners": 2,
            "backend": "tart",
            "tart": {"image": IMAGE, **tart},
        }
    )


@pytest.fixture
async def tart_backend(fake_tart: FakeTart) -> AsyncIterator[TartBackend]:
    backend = TartBackend(fleet=FLEET, timing=TartTiming(poll=0.1, pool_backoff=0.2))
    housekeeping = asyncio.create_task(backend.serve())
    try:
        yield backend
    finally:
        housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await housekeeping
        for vm in list(backend.vms):
            await backend.booter.destroy(vm)


@pytest.fixture
async def make(
    sim: Simulator, tart_backend: TartBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    monkeypatch.setenv(TOKEN_ENV, "ghp_runtime_test_token_0123456789")
    made: list[ScaleSetRuntime] = []
    limiter = asyncio.Semaphore(8)

    def factory(spec: ScaleSet) -> ScaleSetRuntime:
        tart_backend.register(spec.key, spec.tart)
        runtime = ScaleSetRuntime(
            fleet=FLEET,
            scale_set=spec,
            base_dir=tmp_path,
            backend=tart_backend,
            state_file=StateFile.for_fleet(tmp_path, FLEET),
            owner="test-host",
            start_limiter=limiter,
            timing=TIMING,
        )
        made.append(runtime)
        return runtime

    try:
        yield factory
    finally:
        for runtime in made:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runtime.shutdown(), timeout=60)


async def done_jobs(sim: Simulator) -> list[dict[str, Any]]:
    return [j for j in (await sim_state(sim))["jobs"] if j["state"] == "done"]


async def test_jobs_of_two_tart_scale_sets_run_in_vms_within_the_hosts_limit(
    sim: Simulator, make: Any, fake_tart: FakeTart, tart_backend: TartBackend
) -> None:
    runtimes = [make(tart_scale_set(sim, "mac-a")), make(tart_scale_set(sim, "mac-b"))]
    for runtime in runtimes:
        runtime.start()
    for runtime in runtimes:
        await eventually(lambda r=runtime: r.state == "listening", timeout=30, message="up")
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(fake_tart.running()))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        sim.add_jobs(["mac-a"], count=2, duration=0.3)
        sim.add_jobs(["mac-b"], count=2, duration=0.3)

        async def all_done() -> bool:
            return len(await done_jobs(sim)) == 4

        await eventually(all_done, timeout=240, interval=0.2, message="four jobs done")
    finally:
        sampler.cancel()
    jobs = (await sim_state(sim))["jobs"]
    assert {j["result"] for j in jobs} == {"succeeded"}
    assert len({j["runner"] for j in jobs}) == 4  # one ephemeral runner, one VM, per job
    assert peak <= 2
    # Every VM powered off after its job and was removed; no slot is held.
    await eventually(
        lambda: not fake_tart.vms() and not tart_backend.slots.in_use,
        timeout=60,
        message="no VM left",
    )


async def test_a_warm_pool_scale_set_runs_a_job_and_shutdown_removes_the_pool(
    sim: Simulator, make: Any, fake_tart: FakeTart, tart_backend: TartBackend
) -> None:
    runtime = make(tart_scale_set(sim, "mac-warm", poolSize=1))
    runtime.start()
    await eventually(lambda: runtime.state == "listening", timeout=30, message="up")
    await eventually(lambda: len(fake_tart.running()) == 1, timeout=60, message="a warm VM")
    sim.add_jobs(["mac-warm"], count=1, duration=0.3)

    async def one_done() -> bool:
        return len(await done_jobs(sim)) == 1

    await eventually(one_done, timeout=120, interval=0.2, message="the job done")
    # The job's VM powers off and is removed; the pool boots a fresh warm one in its place.
    await eventually(
        lambda: not any(vm.runner_started for vm in tart_backend.vms.values()),
        timeout=60,
        message="the job's VM removed",
    )
    await runtime.shutdown()
    try:
        await eventually(
            lambda: not fake_tart.vms() and not tart_backend.slots.in_use,
            timeout=60,
            message="pool VMs removed at shutdown",
        )
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: VMs {fake_tart.vms()}, slots {tart_backend.slots.in_use}, "
            f"pools {list(tart_backend._pools)}, vms {tart_backend.vms}"
        ) from None
