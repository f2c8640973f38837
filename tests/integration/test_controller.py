"""The controller on its own: all-or-nothing applies, the closed state, durable intent.

The runtimes here are recording fakes (the controller's contract with them is a handful of
calls); what a real runtime does with those calls against the simulator is in
test_reloader.py. The state file is real.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from runscaler.engine.backendpool import BackendPool
from runscaler.engine.controller import ApplyRefused, Controller
from runscaler.engine.resolving import credentials_fingerprint
from runscaler.engine.scaleset import ScaleSetRuntime
from runscaler.engine.statefile import StateFile
from runscaler.manifest.loading import LoadedManifest, load_manifest_text
from runscaler.manifest.models import ScaleSet
from tests.waiting import eventually

TOKEN = "RUNSCALER_CONTROLLER_TOKEN"


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(eq=False)
class FakeRuntime:
    """Records what the controller asks; `delete` waits until the test lets it finish."""

    fleet: str
    scale_set: ScaleSet
    base_dir: Path
    calls: list[str] = field(default_factory=list)
    deadline: float | None = None
    may_finish_delete: asyncio.Event = field(default_factory=asyncio.Event)
    may_resume: asyncio.Event = field(default_factory=_set_event)
    credentials_fingerprint: str = ""

    def __post_init__(self) -> None:
        self.credentials_fingerprint = credentials_fingerprint(self.scale_set, self.base_dir)

    @property
    def name(self) -> str:
        return self.scale_set.name

    @property
    def identity(self) -> tuple[str, str]:
        return self.scale_set.identity

    def start(self) -> None:
        self.calls.append("start")

    def discard(self) -> None:
        self.calls.append("discard")

    async def update(self, new: ScaleSet, *, reconnect: bool, **_: Any) -> None:
        self.calls.append(f"update(reconnect={reconnect})")
        self.scale_set = new

    async def resume(self) -> None:
        self.calls.append("resume")
        await self.may_resume.wait()

    async def delete(self, *, deadline: float | None = None) -> None:
        self.calls.append("delete")
        self.deadline = deadline
        await self.may_finish_delete.wait()
        self.calls.append("deleted")

    async def shutdown(self) -> None:
        self.calls.append("shutdown")


@dataclass
class World:
    tmp: Path
    made: list[FakeRuntime] = field(default_factory=list)
    fail_factory: bool = False
    state: StateFile | None = None

    def factory(self, fleet: str, scale_set: ScaleSet, base_dir: Path) -> ScaleSetRuntime:
        if self.fail_factory:
            raise RuntimeError("cannot build the backend")
        runtime = FakeRuntime(fleet, scale_set, base_dir)
        self.made.append(runtime)
        return cast(ScaleSetRuntime, runtime)

    def intent(self, fleet: str) -> StateFile:
        if self.state is None:
            self.state = StateFile.for_fleet(self.tmp / "state", fleet)
        return self.state

    def controller(self, **kwargs: Any) -> Controller:
        return Controller(
            runtime_factory=self.factory,
            check_backend=BackendPool().check,
            intent=self.intent,
            **kwargs,
        )

    def named(self, name: str) -> list[FakeRuntime]:
        return [r for r in self.made if r.name == name]


def manifest(tmp: Path, *scale_sets: dict[str, Any], text: str | None = None) -> LoadedManifest:
    lines = ["apiVersion: runscaler/v1", "kind: Fleet", "metadata: {name: ctl}"]
    lines.append("scaleSets:" if scale_sets else "scaleSets: []")
    for spec in scale_sets:
        document = {
            "github": {"url": "http://127.0.0.1:9/acme", "auth": {"token": f"env:{TOKEN}"}},
            "maxRunners": 2,
            "drainTimeout": "30s",
            **spec,
        }
        lines.append(f"  - {json.dumps(document)}")
    return load_manifest_text(
        text or "\n".join(lines) + "\n",
        source=str(tmp / "fleet.yaml"),
        fmt="yaml",
        base_dir=tmp,
    )


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv(TOKEN, "ghp_controller_token_0123456789")
    monkeypatch.delenv("UNSET_FOR_CONTROLLER", raising=False)
    return World(tmp_path)


BAD_STEPS = {
    "secret": {"github": {"url": "http://127.0.0.1:9/acme", "auth": {"token": "env:NOPE_X"}}},
    "docker-env": {"docker": {"env": {"A": "env:UNSET_FOR_CONTROLLER"}}},
    "engine-tls": {"docker": {"host": "tcp://127.0.0.1:2376", "tls": {"ca": "missing-ca.pem"}}},
}


@pytest.mark.parametrize("step", [*BAD_STEPS, "factory"])
async def test_a_reload_failing_at_any_step_of_resolution_changes_nothing(
    world: World, step: str
) -> None:
    controller = world.controller()
    await controller.start(manifest(world.tmp, {"name": "a"}))
    [a] = world.made
    first = controller.manifest

    # A new scale set (fine) and a change to `a` that cannot be resolved: neither happens.
    bad = BAD_STEPS.get(step, {})
    desired = manifest(world.tmp, {"name": "a", "maxRunners": 3, **bad}, {"name": "b"})
    world.fail_factory = step == "factory"
    if step == "factory":
        desired = manifest(world.tmp, {"name": "a", "maxRunners": 3}, {"name": "b"})
    with pytest.raises(ApplyRefused) as refused:
        await controller.apply(desired)

    assert "\n" not in str(refused.value)
    assert controller.manifest is first
    assert [r.name for r in world.made if "start" in r.calls] == ["a"]
    assert a.calls == ["start"] and a.scale_set.max_runners == 2
    assert list(controller.runtimes.values()) == [a]
    owned = {o.spec["name"] for o in world.intent("ctl").owned()}
    assert owned == {"a"}


async def test_two_reloads_in_a_row_after_a_failure_apply_once(world: World) -> None:
    controller = world.controller()
    await controller.start(manifest(world.tmp, {"name": "a"}))
    bad = manifest(world.tmp, {"name": "a"}, {"name": "b", **BAD_STEPS["secret"]})
    with pytest.raises(ApplyRefused):
        await controller.apply(bad)

    good = manifest(world.tmp, {"name": "a"}, {"name": "b"})
    await controller.apply(good)
    await controller.apply(good)

    [b] = world.named("b")  # created once, never twice (nor orphaned)
    assert b.calls == ["start"]
    assert controller.manifest is good
    assert sorted(r.name for r in controller.runtimes.values()) == ["a", "b"]


async def test_an_unset_secret_is_refused_with_the_scale_set_named(world: World) -> None:
    controller = world.controller()
    await controller.start(manifest(world.tmp, {"name": "a"}))
    with pytest.raises(ApplyRefused) as refused:
        await controller.apply(manifest(world.tmp, {"name": "a", **BAD_STEPS["secret"]}))
    assert "scale set a" in str(refused.value) and "NOPE_X" in str(refused.value)


async def test_reloads_are_refused_once_shutdown_begins_even_when_queued(world: World) -> None:
    controller = world.controller()
    await controller.start(manifest(world.tmp, {"name": "a"}))
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def hold_the_lock() -> None:
        async with controller._lock:
            entered.set()
            await gate.wait()

    holder = asyncio.create_task(hold_the_lock())
    await entered.wait()
    queued = asyncio.create_task(
        controller.apply(manifest(world.tmp, {"name": "a"}, {"name": "b"}))
    )
    stopping = asyncio.create_task(controller.shutdown(cleanup=False))
    await eventually(lambda: controller.closed, message="closed")
    gate.set()
    await holder
    await stopping

    with pytest.raises(ApplyRefused, match="shutting down"):
        await queued
    with pytest.raises(ApplyRefused, match="shutting down"):
        await controller.apply(manifest(world.tmp, {"name": "c"}))
    assert [r.name for r in world.made] == ["a"]
    assert world.made[0].calls == ["start", "shutdown"]


async def test_a_removed_scale_set_is_marked_deleting_before_it_drains(world: World) -> None:
    controller = world.controller()
    await controller.start(manifest(world.tmp, {"name": "a"}, {"name": "b"}))
    before = time.time()
    await controller.apply(manifest(world.tmp, {"name": "a"}))
    [b] = world.named("b")
    await eventually(lambda: "delete" in b.calls, message="b draining")

    [memo] = [o for o in StateFile(world.intent("ctl").path).owned() if o.spec["name"] == "b"]
    assert memo.deleting_deadline is not None
    assert before + 30 <= memo.deleting_deadline <= time.time() + 30
    assert b.deadline == memo.deleting_deadline
    assert controller.draining == [cast(ScaleSetRuntime, b)]

    # Shutdown cuts the drain short; the intent survives it for the next start.
    await controller.shutdown(cleanup=False)
    again = [o for o in StateFile(world.intent("ctl").path).owned() if o.spec["name"] == "b"]
    assert again[0].deleting_deadline == memo.deleting_deadline


async def test_at_start_what_the_fleet_owned_and_the_manifest_dropped_is_deleted(
    world: World,
) -> None:
    first = world.controller()
    await first.start(manifest(world.tmp, {"name": "a"}, {"name": "gone"}, {"name": "cut"}))
    await first.apply(manifest(world.tmp, {"name": "a"}, {"name": "gone"}))  # `cut` drains
    cut_deadline = next(
        o.deleting_deadline for o in world.intent("ctl").owned() if o.spec["name"] == "cut"
    )
    await first.shutdown(cleanup=False)  # the drain of `cut` is interrupted

    # While the operator is down, the manifest drops `gone` too.
    world.made.clear()
    restarted = Controller(
        runtime_factory=world.factory,
        intent=lambda fleet: StateFile.for_fleet(world.tmp / "state", fleet),
    )
    state = StateFile.for_fleet(world.tmp / "state", "ctl")
    await restarted.start(manifest(world.tmp, {"name": "a"}), state.owned())

    [gone], [cut] = world.named("gone"), world.named("cut")
    await eventually(lambda: "delete" in gone.calls and "delete" in cut.calls, message="drains")
    assert cut.deadline == cut_deadline  # the original deadline, not a fresh one
    assert gone.deadline is not None and gone.deadline > time.time() + 25
    assert sorted(r.name for r in restarted.draining) == ["cut", "gone"]
    assert "start" not in gone.calls + cut.calls  # drained, never listening again
    await restarted.shutdown(cleanup=False)


async def test_a_scale_set_back_while_draining_is_resumed_not_created_twice(world: World) -> None:
    controller = world.controller()
    await controller.start(manifest(world.tmp, {"name": "a"}))
    await controller.apply(manifest(world.tmp, {"name": "b"}))
    [a] = world.named("a")
    await eventually(lambda: "delete" in a.calls, message="a draining")

    await controller.apply(manifest(world.tmp, {"name": "a"}, {"name": "b"}))

    assert len(world.named("a")) == 1
    assert a.calls[:3] == ["start", "delete", "resume"]
    owned = {o.spec["name"]: o for o in world.intent("ctl").owned()}
    assert owned["a"].deleting_deadline is None  # no longer going
    await controller.shutdown(cleanup=False)


async def test_a_label_change_drains_and_deletes_then_creates_again(world: World) -> None:
    controller = world.controller()
    await controller.start(manifest(world.tmp, {"name": "a", "labels": ["x"]}))
    [old] = world.made

    await controller.apply(manifest(world.tmp, {"name": "a", "labels": ["x", "gpu"]}))

    [_, new] = world.named("a")
    await eventually(lambda: "delete" in old.calls, message="old drains")
    assert new.calls == []  # not before the old one is gone from GitHub
    old.may_finish_delete.set()
    await eventually(lambda: new.calls == ["start"], message="new started")
    assert new.scale_set.labels == ("x", "gpu") or list(new.scale_set.labels) == ["x", "gpu"]
    assert list(controller.runtimes.values()) == [cast(ScaleSetRuntime, new)]
    await controller.shutdown(cleanup=False)


async def test_an_empty_manifest_is_refused_without_allow_empty(world: World) -> None:
    controller = world.controller()
    await controller.start(manifest(world.tmp, {"name": "a"}))
    with pytest.raises(ApplyRefused, match="--allow-empty"):
        await controller.apply(manifest(world.tmp))
    assert world.made[0].calls == ["start"]
    await controller.shutdown(cleanup=False)


async def test_an_apply_cancelled_while_committing_still_commits_whole(world: World) -> None:
    controller = world.controller()
    await controller.start(manifest(world.tmp, {"name": "a"}))
    await controller.apply(manifest(world.tmp, {"name": "b"}))
    [a] = world.named("a")
    await eventually(lambda: "delete" in a.calls, message="a draining")
    a.may_resume.clear()  # the commit blocks inside the revival of `a`

    desired = manifest(world.tmp, {"name": "a"}, {"name": "b"}, {"name": "c"})
    applying = asyncio.create_task(controller.apply(desired))
    await eventually(lambda: "resume" in a.calls, message="reviving a")
    applying.cancel()
    a.may_resume.set()
    with pytest.raises(asyncio.CancelledError):
        await applying

    assert controller.manifest is desired
    assert sorted(r.name for r in controller.runtimes.values()) == ["a", "b", "c"]
    assert world.named("c")[0].calls == ["start"]
    await controller.shutdown(cleanup=False)
