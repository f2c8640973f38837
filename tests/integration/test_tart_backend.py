"""The Tart backend against the fake `tart` CLI: a VM's life, its failures, and the host's slots.

The fake keeps real VM directories and `config.json` files under the test's TART_HOME, runs
`tart run` as a real process and the guest's commands for real, so what is asserted here is
what a user would see with `tart list` and in the VM's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_SCALE_SET_KEY,
    BackendError,
    RunnerNotFound,
)
from runscaler.backends.tart import TartBackend, TartTiming, leftovers, remove_leftover
from runscaler.backends.tart_vm import HostVMLimit, fleet_tag, vm_name
from tests.integration import tartkit
from tests.integration.tartkit import ArgvWatch, FakeTart, tart_spec
from tests.waiting import eventually

fake_tart = tartkit.fake_tart

FLEET = "macfleet"
TIMING = TartTiming(poll=0.1, pool_take=30.0, pool_backoff=0.2)


@pytest.fixture
async def backend(fake_tart: FakeTart) -> AsyncIterator[TartBackend]:
    made = TartBackend(fleet=FLEET, timing=TIMING)
    try:
        yield made
    finally:
        await made.close()
        for vm in list(made.vms):
            await made.booter.destroy(vm)


def sleeper(tmp_path: Path) -> str:
    """A guest runner that stays up until the VM is stopped (a runner waiting for a job)."""
    script = tmp_path / "sleeper.sh"
    script.write_text("#!/bin/sh\necho sleeper up\nexec sleep 300\n")
    return str(script)


async def test_a_cold_start_boots_a_vm_hands_over_the_jit_on_stdin_and_removes_it(
    backend: TartBackend, fake_tart: FakeTart, tmp_path: Path
) -> None:
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path))
    spec = tart_spec("mac-r1", cpu=2, memory=4096)
    with ArgvWatch(spec.jit_config) as watch:
        await backend.start(spec)
    assert watch.samples > 10 and watch.leaks == []
    assert not any(spec.jit_config in " ".join(call) for call in fake_tart.calls())

    [vm] = fake_tart.running()
    assert vm.startswith(f"rs-{fleet_tag(FLEET)}-aaaaaaaa-0-")
    config = fake_tart.config(vm)
    assert config["macAddress"] == "02:00:00:00:00:01"  # slot 0's deterministic MAC
    assert (config["cpuCount"], config["memorySize"]) == (2, 4096 * 1024 * 1024)
    # The runner read its JIT from the 0600 file and deleted it.
    guest_dir = fake_tart.home / "vms" / vm / "guest/Users/admin/.runscaler"
    await eventually(lambda: not (guest_dir / "jit").exists(), message="jit file consumed")
    assert oct((guest_dir).stat().st_mode & 0o777) == "0o700"

    [owned] = await backend.list_owned({LABEL_FLEET: FLEET})
    assert (owned.name, owned.running, owned.node) == ("mac-r1", True, vm)
    await backend.remove("mac-r1")
    assert fake_tart.vms() == set() and backend.slots.in_use == frozenset()
    with pytest.raises(RunnerNotFound):
        await backend.remove("mac-r1")


async def test_the_runner_ending_powers_the_vm_off_and_is_reported_as_its_exit(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    # The stand-in runner with a JIT that is not one exits 1 at once; the guest powers off.
    exits = backend.exits({LABEL_FLEET: FLEET})
    await backend.start(tart_spec("mac-r2"))
    event = await asyncio.wait_for(exits.__anext__(), 20)
    assert (event.name, event.exit_code, event.detail) == ("mac-r2", 0, "the VM powered off")
    [owned] = await backend.list_owned({LABEL_FLEET: FLEET})
    assert (owned.running, owned.exit_code) == (False, 0)
    tail = await backend.logs_tail("mac-r2")
    assert any("guest powered off" in line for line in tail)
    await backend.remove("mac-r2")
    await exits.aclose()
    assert fake_tart.vms() == set()


async def test_a_vm_that_dies_at_boot_fails_within_one_readiness_poll(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    fake_tart.control(CRASH_AFTER=0.3, AGENT_READY_AFTER=600)
    began = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await backend.start(tart_spec("mac-r3", readyTimeout="2m"))
    elapsed = time.monotonic() - began
    # Seen while the first readiness probe (or the pause after it) runs, not at the 2-minute
    # deadline: at most two probes were made (one may have been in flight as the VM died).
    probes = [c for c in fake_tart.calls() if c[0] == "exec" and c[-1] == "true"]
    assert len(probes) <= 2, probes
    assert elapsed < 20, elapsed
    assert "stopped while booting (exit 1)" in str(caught.value)
    assert "the virtual machine crashed" in str(caught.value)
    assert fake_tart.vms() == set() and backend.slots.in_use == frozenset()


async def test_an_agent_that_never_answers_fails_at_the_ready_timeout(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    fake_tart.control(NO_AGENT=1)
    with pytest.raises(BackendError) as caught:
        await backend.start(tart_spec("mac-r4", readyTimeout="2s"))
    assert "did not answer within 2s" in str(caught.value)
    assert "is the Tart Guest Agent running?" in str(caught.value)
    assert fake_tart.vms() == set() and backend.slots.in_use == frozenset()


async def test_a_missing_runner_and_a_full_disk_are_one_actionable_line(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    fake_tart.control(NO_RUNNER=1)
    with pytest.raises(BackendError) as caught:
        await backend.start(tart_spec("mac-r5"))
    assert "no runner at /Users/admin/actions-runner/run.sh" in str(caught.value)
    assert "set tart.runnerDir" in str(caught.value)
    fake_tart.control(NO_RUNNER=None, FAIL="clone", FAIL_MESSAGE="No space left on device")
    with pytest.raises(BackendError) as caught:
        await backend.start(tart_spec("mac-r6"))
    assert str(caught.value).endswith(
        "No space left on device: free disk space under TART_HOME (tart prune --entries caches)"
    )
    assert fake_tart.vms() == set() and backend.slots.in_use == frozenset()


async def test_the_hosts_limit_held_by_other_vms_is_reported_and_theirs_are_untouched(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    fake_tart.tart("clone", "ghcr.io/cirruslabs/macos-sequoia-base:latest", "my-own-vm")
    mine = fake_tart.run_vm("my-own-vm")
    try:
        fake_tart.control(VM_LIMIT=1)
        with pytest.raises(HostVMLimit) as caught:
            await backend.start(tart_spec("mac-r7"))
        assert "exceeds the system limit (other running VMs: my-own-vm)" in str(caught.value)
        assert fake_tart.running() == {"my-own-vm"} and fake_tart.vms() == {"my-own-vm"}
        assert backend.slots.in_use == frozenset()
    finally:
        mine.send_signal(signal.SIGTERM)
        mine.wait(10)


async def test_a_failed_delete_still_frees_the_slot_and_is_retried(
    backend: TartBackend, fake_tart: FakeTart, tmp_path: Path
) -> None:
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path))
    await backend.start(tart_spec("mac-r8"))
    [vm] = fake_tart.vms()
    fake_tart.control(FAIL="delete")
    await backend.remove("mac-r8")
    assert backend.slots.in_use == frozenset() and backend.zombies == {vm}
    assert fake_tart.vms() == {vm}  # stopped, not deleted
    fake_tart.control(FAIL=None)
    await backend.housekeeping()
    assert backend.zombies == set() and fake_tart.vms() == set()


async def test_two_scale_sets_share_the_hosts_two_slots_and_never_run_three_vms(
    backend: TartBackend, fake_tart: FakeTart, tmp_path: Path
) -> None:
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path), CLONE_DELAY=0.2)
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, len(fake_tart.running()), len(backend.slots.in_use))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    starts = [
        asyncio.create_task(backend.start(tart_spec(f"a-{i}", key="aaaaaaaaaaaa")))
        for i in range(2)
    ] + [
        asyncio.create_task(backend.start(tart_spec(f"b-{i}", key="bbbbbbbbbbbb")))
        for i in range(2)
    ]
    try:
        await eventually(lambda: sum(t.done() for t in starts) == 2, timeout=20, message="two up")
        assert [t.exception() for t in starts if t.done()] == [None, None]
        assert backend.slots.waiting == 2 and len(fake_tart.running()) == 2
        # Each runner that goes frees its slot for a waiting start of either scale set.
        for name in [n for n in ("a-0", "a-1", "b-0", "b-1") if n in _runners(backend)]:
            await backend.remove(name)
        await asyncio.wait_for(asyncio.gather(*starts), 30)
        macs = {fake_tart.config(vm)["macAddress"] for vm in fake_tart.running()}
        assert macs == {"02:00:00:00:00:01", "02:00:00:00:00:02"}
        for name in list(_runners(backend)):
            await backend.remove(name)
    finally:
        for task in [watcher, *starts]:
            task.cancel()
        await asyncio.gather(watcher, *starts, return_exceptions=True)
    assert most == 2
    assert fake_tart.vms() == set() and backend.slots.in_use == frozenset()


def _runners(backend: TartBackend) -> set[str]:
    return {vm.runner for vm in backend.vms.values() if vm.runner}


STAGES = [
    # (what the fake hangs on, whether the VM may already run a runner when cancelled there)
    ("clone ", False),
    ("set rs-", False),
    (" true", False),
    ("test -x", False),
    ("exec -i", False),
    ("nohup", True),
]


@pytest.mark.parametrize(("hang", "kept"), STAGES)
async def test_a_start_cancelled_at_each_step_leaks_nothing(
    backend: TartBackend, fake_tart: FakeTart, tmp_path: Path, hang: str, kept: bool
) -> None:
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path), HANG=hang)
    start = asyncio.create_task(backend.start(tart_spec("mac-c", cpu=2)))
    await eventually(
        lambda: any(hang in " ".join(call) for call in fake_tart.calls()),
        timeout=20,
        message=f"the start to reach {hang!r}",
    )
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    fake_tart.control(HANG=None)
    if kept:
        # It may run a runner that took a job: it stays, listed as ours, and removes cleanly.
        [owned] = await backend.list_owned({LABEL_FLEET: FLEET})
        assert owned.name == "mac-c" and len(backend.slots.in_use) == 1
        await backend.remove("mac-c")
    await eventually(lambda: not fake_tart.vms(), timeout=20, message="no VM left")
    assert backend.slots.in_use == frozenset() and backend.vms == {}
    assert fake_tart.running() == set()


async def test_a_start_cancelled_while_waiting_for_a_slot_takes_none(
    backend: TartBackend, fake_tart: FakeTart, tmp_path: Path
) -> None:
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path))
    await asyncio.gather(*(backend.start(tart_spec(f"s-{i}")) for i in range(2)))
    third = asyncio.create_task(backend.start(tart_spec("s-2")))
    await eventually(lambda: backend.slots.waiting == 1, message="the third start waits")
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    await backend.remove("s-0")
    assert len(backend.slots.in_use) == 1 and backend.slots.waiting == 0
    await backend.remove("s-1")
    assert fake_tart.vms() == set() and backend.slots.in_use == frozenset()


async def test_other_vms_are_never_touched_and_doctor_lists_only_ours(
    backend: TartBackend, fake_tart: FakeTart, tmp_path: Path
) -> None:
    image = "ghcr.io/cirruslabs/macos-sequoia-base:latest"
    other_fleet = f"rs-{fleet_tag('someone-else')}-aaaaaaaa-0-abc"
    for name in ("my-own-vm", "runner-1", "pool-1-123", other_fleet):
        fake_tart.tart("clone", image, name)
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path))
    await backend.start(tart_spec("mine-1"))
    found = await leftovers(FLEET)
    assert [(f.runner, f.running) for f in found] == [("mine-1", True)]
    assert await leftovers("someone-else") == [
        type(found[0])(name=other_fleet, running=False, runner=None, scale_set_key=None)
    ]
    with pytest.raises(BackendError, match="not one of fleet macfleet's"):
        await remove_leftover(FLEET, "my-own-vm")
    assert await remove_leftover(FLEET, found[0].name)
    # A second backend of the fleet adopts nothing foreign either.
    second = TartBackend(fleet=FLEET, timing=TIMING)
    assert await second.list_owned({LABEL_FLEET: FLEET}) == []
    await second.close()
    assert fake_tart.vms() == {"my-own-vm", "runner-1", "pool-1-123", other_fleet}


async def test_a_new_operator_adopts_running_vms_and_sees_them_end(
    fake_tart: FakeTart, tmp_path: Path
) -> None:
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path))
    first = TartBackend(fleet=FLEET, timing=TIMING)
    await first.start(tart_spec("old-1"))
    [vm] = fake_tart.running()
    await first.close()  # an operator restart: the VM keeps running
    assert fake_tart.running() == {vm}

    second = TartBackend(fleet=FLEET, timing=TIMING)
    try:
        exits = second.exits({LABEL_SCALE_SET_KEY: "aaaaaaaaaaaa"})
        [owned] = await second.list_owned({LABEL_FLEET: FLEET})
        assert (owned.name, owned.running) == ("old-1", True)
        assert second.slots.in_use == frozenset({0})
        # The guest powering off may take the exec down with it (as a real VM drops the
        # agent's connection): its exit code says nothing.
        fake_tart.tart("exec", vm, "sh", "-c", "sudo shutdown -h now", check=False)
        housekeeping = asyncio.create_task(second.serve())
        event = await asyncio.wait_for(exits.__anext__(), 10)
        assert event.name == "old-1"
        await second.remove("old-1")
        assert second.slots.in_use == frozenset() and fake_tart.vms() == set()
        housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await housekeeping
    finally:
        await second.close()


async def test_closing_removes_powered_off_runner_vms_and_keeps_running_ones(
    fake_tart: FakeTart, tmp_path: Path
) -> None:
    # A runner that ended just before a shutdown: its exit was never judged, but nothing of a
    # job is left in its VM, so the VM's disk goes; a running one may hold a job and stays.
    made = TartBackend(fleet=FLEET, timing=TIMING)
    exits = made.exits({LABEL_FLEET: FLEET})
    await made.start(tart_spec("ended-1"))  # the stand-in exits at once with a bad JIT
    await asyncio.wait_for(exits.__anext__(), 20)
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path))
    await made.start(tart_spec("busy-1"))
    [running] = fake_tart.running()
    await made.close()
    assert fake_tart.vms() == {running}
    second = TartBackend(fleet=FLEET, timing=TIMING)
    try:
        assert [r.name for r in await second.list_owned({LABEL_FLEET: FLEET})] == ["busy-1"]
        await second.remove("busy-1")
    finally:
        await second.close()
    assert fake_tart.vms() == set()


async def test_a_missing_image_is_pulled_once_and_a_bad_one_is_a_clear_error(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    image = "ghcr.io/cirruslabs/macos-sequoia-base:latest"
    assert "not present" in await backend.check(tart_spec("x").template)
    await asyncio.gather(*(backend.prepare(tart_spec("x").template) for _ in range(3)))
    assert [c for c in fake_tart.calls() if c[0] == "pull"] == [["pull", image]]
    assert await backend.check(tart_spec("x").template) == (
        f"Tart at {fake_tart.home}: image {image} present"
    )
    with pytest.raises(BackendError) as caught:
        await backend.prepare(tart_spec("x", image="ghcr.io/acme/nope:1").template)
    assert str(caught.value) == (
        "image ghcr.io/acme/nope:1 is not available: tart pull: "
        "failed to pull ghcr.io/acme/nope:1: manifest unknown"
    )


async def test_housekeeping_prunes_caches_only_never_vms(
    backend: TartBackend, fake_tart: FakeTart, tmp_path: Path
) -> None:
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path))
    backend.register("aaaaaaaaaaaa", tart_spec("x", cacheBudgetGB=80).template)
    await backend.housekeeping()
    await backend.housekeeping()  # not due again for a day
    assert fake_tart.state()["prune"] == [
        ["--entries", "caches", "--older-than", "7", "--space-budget", "80"]
    ]


async def test_random_mac_mode_asks_tart_for_one(
    backend: TartBackend, fake_tart: FakeTart, tmp_path: Path
) -> None:
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path))
    await backend.start(tart_spec("rnd", macAddress="random"))
    [vm] = fake_tart.vms()
    assert ["set", vm, "--random-mac"] in fake_tart.calls()
    assert not fake_tart.config(vm)["macAddress"].startswith("02:00:00:00:00:")
    await backend.remove("rnd")


def test_the_fake_runs_no_vm_after_a_test(fake_tart: FakeTart) -> None:
    assert fake_tart.running() == set()
    assert os.environ["TART_HOME"] == str(fake_tart.home)


async def test_the_sweep_removes_our_stopped_leftovers_only(
    backend: TartBackend, fake_tart: FakeTart, tmp_path: Path
) -> None:
    image = "ghcr.io/cirruslabs/macos-sequoia-base:latest"
    half_made = vm_name(FLEET, "aaaaaaaaaaaa", 1)
    others = {"my-own-vm", f"rs-{fleet_tag('someone-else')}-aaaaaaaa-0-abc"}
    for name in others:
        fake_tart.tart("clone", image, name)
    fake_tart.control(RUNNER_SCRIPT=sleeper(tmp_path))
    await backend.start(tart_spec("live-1"))
    fake_tart.tart("clone", image, half_made)  # as if a clone had been cut short
    assert await backend.sweep_stopped() == [half_made]
    assert fake_tart.vms() - others == {backend.vms[next(iter(backend.vms))].name}
    await backend.remove("live-1")
    assert fake_tart.vms() == others
