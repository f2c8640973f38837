"""`doctor` and `--fix` for Tart VMs, with the fake `tart` and the simulator: only the fleet's
own VMs are listed, a runner is unregistered before its VM goes, and a busy one is kept.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runscaler.backends.base import LABEL_FLEET, LABEL_RUNNER, LABEL_SCALE_SET_KEY, RunnerSpec
from runscaler.backends.swarm import SwarmBackend
from runscaler.backends.tart_cli import TartCLI
from runscaler.backends.tart_vm import VM, vm_name, write_sidecar
from runscaler.doctoring.fixing import FixContext, fix_leftovers
from runscaler.doctoring.placed import Placed, service_leftovers, vm_leftovers
from runscaler.doctoring.report import Leftover
from runscaler.github.auth import TokenCredentials
from runscaler.github.client import ScaleSetClient
from runscaler.github.models import JobAvailable, RunnerScaleSet
from runscaler.simulator.realism import OFF, Realism
from runscaler.simulator.server import Simulator, SimulatorOptions, serve_simulator
from tests.integration.dockerkit import unique
from tests.integration.githubkit import take_job_as_runner
from tests.integration.swarmkit import SwarmCluster
from tests.integration.tartkit import IMAGE, FakeTart, fake_tart  # noqa: F401
from tests.integration.test_swarm_backend import template as swarm_template
from tests.waiting import eventually

FLEET = "macfleet"
KEY = "aaaaaaaaaaaa"
HOMES = {"TART_HOME": None}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    realism = Realism(scale=0.05, start_delay=OFF)
    async with serve_simulator(SimulatorOptions(poll_wait=0.3, realism=realism)) as simulator:
        yield simulator


def make_vm(name: str, *, runner: str | None = None, fleet: str = FLEET) -> str:
    """A stopped VM; with `runner`, labelled as that runner of `fleet`'s scale set."""
    subprocess.run(["tart", "clone", IMAGE, name], check=True, capture_output=True)
    if runner is not None:
        labels = {LABEL_FLEET: fleet, LABEL_SCALE_SET_KEY: KEY, LABEL_RUNNER: runner}
        write_sidecar(TartCLI(None), VM(name, 0, labels, runner=runner), role="runner")
    return name


def swarm_spec(name: str, tpl: Any, *, key: str) -> RunnerSpec:
    return RunnerSpec(
        name=name,
        jit_config=f"JIT-{name}-not-a-secret-of-anyone",
        labels={LABEL_SCALE_SET_KEY: key, LABEL_RUNNER: name},
        template=tpl,
    )


def listed() -> set[str]:
    out = subprocess.run(["tart", "list", "-q"], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


async def test_doctor_fixes_only_our_stopped_vms_unregistering_first_and_keeps_a_busy_one(
    fake_tart: FakeTart,  # noqa: F811
    sim: Simulator,
) -> None:
    client = ScaleSetClient(
        config_url=sim.config_url("acme"),
        credentials=lambda: TokenCredentials("ghp_doctor_tart_token_0123456789"),
    )
    async with client:
        scale_set = await client.create_scale_set(
            RunnerScaleSet(name="mac", runner_group_id=1, labels=("mac",))
        )
        session = await client.create_session(scale_set.id, owner="gone-host")
        sim.add_jobs(["mac"], duration=300)
        message = await session.get_message(last_message_id=0, max_capacity=1)
        assert message is not None
        (available,) = [j for j in message.jobs if isinstance(j, JobAvailable)]
        await session.acquire_jobs([available.runner_request_id])
        jit = await client.generate_jit_config(scale_set.id, runner_name="mac-busy0001")
        await take_job_as_runner(sim, jit.encoded)
        await client.generate_jit_config(scale_set.id, runner_name="mac-idle0001")
        busy_ref = await client.get_runner_by_name("mac-busy0001")
        assert busy_ref is not None and busy_ref.busy

        busy = make_vm(vm_name(FLEET, KEY, 0), runner="mac-busy0001")
        idle = make_vm(vm_name(FLEET, KEY, 1), runner="mac-idle0001")
        mine = make_vm("my-own-macos")  # the user's own VM
        theirs = make_vm(vm_name("otherfleet", KEY, 0), runner="x", fleet="otherfleet")

        notes: list[str] = []
        found = await vm_leftovers(FLEET, HOMES, operator_running=False, notes=notes)
        assert notes == []
        assert {x.name for x in found} == {busy, idle}
        assert all(x.kind == "tart VM" and "stopped" in x.reason for x in found)

        context = FixContext(
            backends={}, clients={KEY: client}, placed=Placed(tart_homes=dict(HOMES))
        )
        outcomes = {o.leftover.name: o for o in await fix_leftovers(found, context)}
        assert (outcomes[busy].removed, outcomes[busy].detail) == (
            False,
            "kept: GitHub says it is running a job",
        )
        assert (outcomes[idle].removed, outcomes[idle].detail) == (
            True,
            "unregistered on GitHub and removed",
        )
        assert listed() >= {busy, mine, theirs} and idle not in listed()
        assert await client.get_runner_by_name("mac-idle0001") is None
        assert await client.get_runner_by_name("mac-busy0001") is not None
        await session.close()


# -- Swarm services ----------------------------------------------------------------------


async def registered_pair(sim: Simulator, client: ScaleSetClient, busy: str, idle: str) -> None:
    """`busy` registered and running a job, `idle` registered without one."""
    scale_set = await client.create_scale_set(
        RunnerScaleSet(name="linux", runner_group_id=1, labels=("linux",))
    )
    session = await client.create_session(scale_set.id, owner="gone-host")
    sim.add_jobs(["linux"], duration=300)
    message = await session.get_message(last_message_id=0, max_capacity=1)
    assert message is not None
    (available,) = [j for j in message.jobs if isinstance(j, JobAvailable)]
    await session.acquire_jobs([available.runner_request_id])
    jit = await client.generate_jit_config(scale_set.id, runner_name=busy)
    await take_job_as_runner(sim, jit.encoded)
    await client.generate_jit_config(scale_set.id, runner_name=idle)
    await session.close()


@pytest.mark.docker
@pytest.mark.slow
async def test_doctor_fixes_our_ended_swarm_services_and_keeps_one_whose_runner_is_busy(
    swarm_cluster: SwarmCluster, sim: Simulator
) -> None:
    fleet = unique("swd")
    backend = SwarmBackend(fleet=fleet, host=swarm_cluster.host, poll_interval=0.3)
    client = ScaleSetClient(
        config_url=sim.config_url("acme"),
        credentials=lambda: TokenCredentials("ghp_doctor_swarm_token_0123456789"),
    )
    busy, idle, live = "linux-0000b001", "linux-0000i001", "linux-0000r001"
    try:
        async with client:
            await registered_pair(sim, client, busy, idle)
            ended = swarm_template(swarm_cluster.image, command=["true"])
            for name in (busy, idle):
                await backend.start(swarm_spec(name, ended, key=KEY))
            await backend.start(swarm_spec(live, swarm_template(swarm_cluster.image), key=KEY))

            async def both_ended() -> list[Leftover]:
                found = await service_leftovers(fleet, {backend.host: backend}, notes=[])
                return found if len(found) == 2 else []

            found = await eventually(both_ended, timeout=60, message="two services ended")
            assert {x.runner for x in found} == {busy, idle}  # never the running one
            assert all(x.kind == "swarm service" and x.scale_set_key == KEY for x in found)

            context = FixContext(
                backends={}, clients={KEY: client}, placed=Placed(swarms={backend.host: backend})
            )
            outcomes = {o.leftover.runner: o for o in await fix_leftovers(found, context)}
            assert not outcomes[busy].removed
            assert outcomes[idle].removed
            assert outcomes[idle].detail == "unregistered on GitHub and removed"
            left = {r.name for r in await backend.list_owned({})}
            assert left == {busy, live}
            assert await client.get_runner_by_name(idle) is None
    finally:
        await backend.close()
        swarm_cluster.remove_services(f"{LABEL_FLEET}={fleet}")
