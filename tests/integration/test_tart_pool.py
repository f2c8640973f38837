"""The Tart warm pool against the fake `tart`: pickup speed, refill, a dying or unbootable pool.

The speed comparison uses the fake's boot delays (a clone of CLONE_DELAY seconds and a guest
agent that answers AGENT_READY_AFTER seconds after `tart run`); both numbers are printed (`-s`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runscaler.backends.base import LABEL_FLEET, LABEL_SCALE_SET_KEY, BackendError
from runscaler.backends.tart import TartBackend, TartTiming
from tests.integration import tartkit
from tests.integration.tartkit import FakeTart, tart_spec
from tests.waiting import eventually

fake_tart = tartkit.fake_tart

FLEET = "macfleet"
KEY = "aaaaaaaaaaaa"
SELECTOR = {LABEL_FLEET: FLEET, LABEL_SCALE_SET_KEY: KEY}
TIMING = TartTiming(poll=0.1, pool_take=30.0, pool_backoff=0.5)
BOOT = {"CLONE_DELAY": 1.0, "AGENT_READY_AFTER": 4.0}


@pytest.fixture
async def backend(fake_tart: FakeTart, tmp_path: Path) -> AsyncIterator[TartBackend]:
    script = tmp_path / "sleeper.sh"
    script.write_text("#!/bin/sh\nexec sleep 300\n")
    fake_tart.control(RUNNER_SCRIPT=str(script))
    made = TartBackend(fleet=FLEET, timing=TIMING)
    try:
        yield made
    finally:
        await made.close()
        for vm in list(made.vms):
            await made.booter.destroy(vm)


async def no_vm_left(backend: TartBackend, fake_tart: FakeTart) -> None:
    await eventually(
        lambda: not fake_tart.vms() and not backend.slots.in_use,
        timeout=30,
        message="pool VMs removed and their slots free",
    )


async def test_a_warm_pickup_takes_the_vm_the_pool_booted_and_the_pool_refills(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    # How much faster that is, is bench/tart_pool.py's business; here, that it is so by design:
    # the pickup hands the JIT config to the VM the pool booted before the job came.
    backend.register(KEY, tart_spec("x", poolSize=1).template)
    exits = backend.exits(SELECTOR)  # the scale set runs: its pool fills
    pool = backend._pools[KEY]
    await eventually(lambda: len(pool.ready) == 1, timeout=60, message="a warm VM")
    [warm_vm] = pool.ready
    booted = fake_tart.state()["running"][warm_vm.name]["started"]
    await backend.start(tart_spec("warm-1", poolSize=1))
    assert backend.vms[warm_vm.name].runner == "warm-1"
    assert fake_tart.state()["running"][warm_vm.name]["started"] == booted  # not booted again
    [owned] = await backend.list_owned(SELECTOR)
    assert owned.name == "warm-1" and owned.running
    # The pool boots the next VM in the host's other slot.
    await eventually(lambda: len(pool.ready) == 1, timeout=60, message="the pool refilled")
    assert backend.slots.in_use == frozenset({0, 1})
    assert len(fake_tart.running()) == 2

    await backend.remove("warm-1")
    await exits.aclose()  # the scale set stops: its pooled VM goes promptly
    await no_vm_left(backend, fake_tart)


async def test_a_pooled_vm_that_dies_is_replaced(backend: TartBackend, fake_tart: FakeTart) -> None:
    backend.register(KEY, tart_spec("x", poolSize=1).template)
    exits = backend.exits(SELECTOR)
    pool = backend._pools[KEY]
    await eventually(lambda: len(pool.ready) == 1, timeout=60, message="a warm VM")
    [first] = pool.ready
    os.kill(int(fake_tart.state()["running"][first.name]["pid"]), signal.SIGKILL)
    await eventually(
        lambda: len(pool.ready) == 1 and pool.ready[0] is not first,
        timeout=60,
        message="a replacement",
    )
    assert first.name not in fake_tart.vms()
    await exits.aclose()
    await no_vm_left(backend, fake_tart)


async def test_a_pool_that_cannot_boot_fails_starts_with_its_reason_and_backs_off(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    template = tart_spec("x", poolSize=1, image="ghcr.io/acme/broken:1").template
    backend.register(KEY, template)
    exits = backend.exits(SELECTOR)
    pool = backend._pools[KEY]
    await eventually(lambda: pool.error is not None, timeout=30, message="the pool's error")
    with pytest.raises(BackendError) as caught:
        await backend.start(tart_spec("w", poolSize=1, image="ghcr.io/acme/broken:1"))
    assert str(caught.value) == (
        "warm pool cannot boot VMs: image ghcr.io/acme/broken:1 is not available: tart pull: "
        "failed to pull ghcr.io/acme/broken:1: manifest unknown"
    )
    await asyncio.sleep(0)  # let the filler run on for a moment of backoff
    pulls_then = len([c for c in fake_tart.calls() if c[0] == "pull"])
    await eventually(
        lambda: len([c for c in fake_tart.calls() if c[0] == "pull"]) >= pulls_then + 1,
        timeout=30,
        message="a retry after backoff",
    )
    # Backing off (0.5 s, 1 s, 2 s ...), not retrying in a tight loop.
    assert len([c for c in fake_tart.calls() if c[0] == "pull"]) <= pulls_then + 3
    await exits.aclose()
    assert backend.slots.in_use == frozenset() and fake_tart.vms() == set()


async def test_a_start_cancelled_while_waiting_for_a_warm_vm_takes_nothing(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    fake_tart.control(**BOOT)
    backend.register(KEY, tart_spec("x", poolSize=1).template)
    exits = backend.exits(SELECTOR)
    pool = backend._pools[KEY]
    start = asyncio.create_task(backend.start(tart_spec("w", poolSize=1)))
    await eventually(lambda: fake_tart.vms(), timeout=30, message="a pool VM booting")
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    await eventually(lambda: len(pool.ready) == 1, timeout=60, message="the VM stays pooled")
    assert backend.slots.in_use == frozenset({0})
    assert await backend.list_owned(SELECTOR) == []  # a pooled VM is no runner
    await exits.aclose()
    await no_vm_left(backend, fake_tart)


async def test_closing_the_backend_removes_pooled_vms(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    backend.register(KEY, tart_spec("x", poolSize=2).template)
    backend.exits(SELECTOR)
    pool = backend._pools[KEY]
    await eventually(lambda: len(pool.ready) == 2, timeout=60, message="two warm VMs")
    began = time.monotonic()
    await backend.close()
    assert time.monotonic() - began < 15
    assert fake_tart.vms() == set() and fake_tart.running() == set()
    assert backend.slots.in_use == frozenset()


async def test_a_reload_that_changes_the_pool_replaces_or_removes_it(
    backend: TartBackend, fake_tart: FakeTart
) -> None:
    backend.register(KEY, tart_spec("x", poolSize=1).template)
    exits = backend.exits(SELECTOR)
    old = backend._pools[KEY]
    await eventually(lambda: len(old.ready) == 1, timeout=60, message="a warm VM")
    [first] = old.ready
    # A new template (more memory): the old pool's VM goes, a new one is booted from it.
    backend.register(KEY, tart_spec("x", poolSize=1, memory=4096).template)
    new = backend._pools[KEY]
    assert new is not old
    await eventually(lambda: len(new.ready) == 1, timeout=60, message="a new warm VM")
    assert first.name not in fake_tart.vms()
    assert fake_tart.config(new.ready[0].name)["memorySize"] == 4096 * 1024 * 1024
    # poolSize 0: no pool, its VM removed.
    backend.register(KEY, tart_spec("x", poolSize=0).template)
    assert KEY not in backend._pools
    await no_vm_left(backend, fake_tart)
    await exits.aclose()
