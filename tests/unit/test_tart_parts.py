"""The Tart backend's small parts: host slots, slot MACs, VM names, prune arguments."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from runscaler.backends.tart_cli import Result, TartCLI
from runscaler.backends.tart_images import ImageStore, mutable, prune_args
from runscaler.backends.tart_slots import SlotManager, slot_mac
from runscaler.backends.tart_vm import fleet_tag, set_mac, slot_of, vm_name


async def test_slots_are_handed_out_lowest_first_and_waiters_in_order() -> None:
    slots = SlotManager(2)
    assert [await slots.acquire(), await slots.acquire()] == [0, 1]
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert slots.waiting == 2
    slots.release(1)
    assert await first == 1
    slots.release(0)
    assert await second == 0
    slots.release(0)
    slots.release(0)  # twice is harmless
    assert slots.in_use == frozenset({1})


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_gives_it_back() -> None:
    slots = SlotManager(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release(0)  # handed to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.in_use == frozenset() and slots.waiting == 0
    assert await slots.acquire() == 0


def test_adopted_vms_claim_their_slots() -> None:
    slots = SlotManager(2)
    assert slots.claim(1) and not slots.claim(1) and not slots.claim(5)
    assert slots.in_use == frozenset({1})


def test_slot_macs_are_locally_administered_and_offset() -> None:
    assert [slot_mac(0), slot_mac(1), slot_mac(0, offset=10)] == [
        "02:00:00:00:00:01",
        "02:00:00:00:00:02",
        "02:00:00:00:00:0b",
    ]


def test_vm_names_carry_the_fleet_the_scale_set_and_the_slot() -> None:
    name = vm_name("macfleet", "0123456789ab", 1)
    assert name.startswith(f"rs-{fleet_tag('macfleet')}-01234567-1-")
    assert slot_of(name) == 1 and "/" not in name
    assert slot_of("runner-1") is None and slot_of("rs-x-y-1-z") is None


def test_prune_arguments_need_a_criterion_and_never_touch_vms() -> None:
    assert prune_args(7 * 86400, 0) == ["prune", "--entries", "caches", "--older-than", "7"]
    assert prune_args(3600, 50) == [
        "prune", "--entries", "caches", "--older-than", "1", "--space-budget", "50",
    ]  # fmt: skip
    assert prune_args(0, 0) is None


def test_only_tags_are_refreshed_never_digests() -> None:
    store = ImageStore(TartCLI(Path("/nonexistent")))
    store.pulled_at["a:latest"] = store.pulled_at["b@sha256:00"] = -1e9
    assert mutable("a:latest") and not mutable("b@sha256:00")
    assert store.due_for_refresh("a:latest", 3600)
    assert not store.due_for_refresh("b@sha256:00", 3600)
    assert not store.due_for_refresh("a:latest", 0)


def test_the_mac_is_written_atomically_keeping_the_other_keys_in_order(tmp_path: Path) -> None:
    cli = TartCLI(tmp_path)
    vm = tmp_path / "vms" / "vm1"
    vm.mkdir(parents=True)
    (vm / "config.json").write_text(json.dumps({"version": 1, "macAddress": "7e:00", "cpu": 4}))
    set_mac(cli, "vm1", "02:00:00:00:00:01")
    config = json.loads((vm / "config.json").read_text())
    assert list(config) == ["version", "macAddress", "cpu"]
    assert config["macAddress"] == "02:00:00:00:00:01"
    assert sorted(p.name for p in vm.iterdir()) == ["config.json"]  # no temp file left


def test_tart_errors_are_quoted_without_their_prefix() -> None:
    result = Result(2, "", 'Error: VM "x" is not running\n')
    assert result.message == 'VM "x" is not running'
    assert Result(1, "", "").message == "exit status 1"
