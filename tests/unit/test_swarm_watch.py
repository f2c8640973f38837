"""The shared task watch: one listing pass feeds every subscriber, each exit once, and a
listing failure ends every subscription with the backend's error.

The listing is a plain function handed to the watch; here it replays snapshots made by
`read_tasks` from manager-shaped documents (the real listing is tested against a swarm).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runscaler.backends.base import LABEL_FLEET, LABEL_RUNNER, LABEL_SCALE_SET, BackendUnavailable
from runscaler.backends.swarm_tasks import Snapshot, read_tasks
from runscaler.backends.swarm_watch import TaskWatch


def task(runner: str, state: str, scale_set: str = "linux", **status: Any) -> dict[str, Any]:
    labels = {LABEL_RUNNER: runner, LABEL_FLEET: "acme", LABEL_SCALE_SET: scale_set}
    return {
        "NodeID": "n1",
        "CreatedAt": "2026-12-01T09:00:00Z",
        "Spec": {"ContainerSpec": {"Labels": labels}},
        "Status": {"State": state, **status},
    }


NODES = [{"ID": "n1", "Description": {"Hostname": "a"}, "Status": {"State": "ready"}}]
DOWN = [{"ID": "n1", "Description": {"Hostname": "a"}, "Status": {"State": "down"}}]


class Replay:
    """Hands out the given passes in order, then repeats the last one."""

    def __init__(self, *passes: Snapshot | Exception) -> None:
        self.passes = list(passes)
        self.calls = 0

    async def __call__(self) -> Snapshot:
        self.calls += 1
        item = self.passes[0] if len(self.passes) == 1 else self.passes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


async def test_each_subscriber_gets_each_exit_once_and_only_for_its_selector() -> None:
    replay = Replay(
        read_tasks([task("r1", "running"), task("m1", "running", "mac")], NODES),
        read_tasks(
            [task("r1", "failed", ContainerStatus={"ExitCode": 3}), task("m1", "running", "mac")],
            NODES,
        ),
        read_tasks(
            [task("r1", "failed", ContainerStatus={"ExitCode": 3}), task("m1", "running", "mac")],
            DOWN,
        ),
    )
    watch = TaskWatch(replay, interval=0.01)
    linux = watch.subscribe({LABEL_SCALE_SET: "linux"})
    mac = watch.subscribe({LABEL_SCALE_SET: "mac"})
    try:
        first = await asyncio.wait_for(linux.__anext__(), 5)
        lost = await asyncio.wait_for(mac.__anext__(), 5)
        await watch.next_snapshot()
        await watch.next_snapshot()
        again = linux._queue.qsize()  # r1 is not reported again on later passes
    finally:
        await linux.aclose()
        await mac.aclose()
        await watch.close()

    assert (first.name, first.exit_code, first.lost) == ("r1", 3, False)
    assert (lost.name, lost.lost, lost.detail) == (
        "m1",
        True,
        "node a is down; its task was running",
    )
    assert again == 0


async def test_a_listing_failure_ends_every_subscription_with_the_error() -> None:
    watch = TaskWatch(Replay(BackendUnavailable("cannot reach the manager")), interval=0.01)
    exits = watch.subscribe({})
    try:
        with pytest.raises(BackendUnavailable, match="cannot reach the manager"):
            await asyncio.wait_for(exits.__anext__(), 5)
        with pytest.raises(BackendUnavailable):
            await watch.next_snapshot()
    finally:
        await exits.aclose()
        await watch.close()


async def test_the_loop_stops_when_nobody_listens() -> None:
    replay = Replay(read_tasks([], NODES))
    watch = TaskWatch(replay, interval=0.01)
    exits = watch.subscribe({})
    await watch.next_snapshot()
    await exits.aclose()
    loop_task = watch._loop_task
    assert loop_task is not None
    await asyncio.wait_for(loop_task, 5)  # it ends by itself: no listing while nobody listens
    assert loop_task.exception() is None
    await watch.close()
