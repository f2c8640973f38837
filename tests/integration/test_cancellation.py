"""Every per-runner operation, cancelled at every await point, leaves nothing behind.

A gate wraps the real Docker backend and the scaler's GitHub registry and blocks the k-th
await point (just before a call, or just after it returned, which is "the engine did it but
the answer has not arrived") of the calls an operation makes. The test waits until the
operation is parked there, cancels it the way the operator does (a shutdown, a resumed
suspension), and checks that the book, the engine and the simulator's registrations agree:
no record in a transient state, no container without a record, no registration without a
running runner, no record without a container.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from runscaler.backends.base import LABEL_FLEET, RunnerSpec
from runscaler.engine.book import TRANSIENT, RunnerState
from runscaler.engine.scaleset import ScaleSetRuntime
from tests.integration.runtimekit import Runtimes, scale_set, sim_state
from tests.waiting import eventually

pytestmark = pytest.mark.docker


class Gate:
    """Blocks the k-th await point among the watched calls, once, until released."""

    def __init__(self, k: int, watched: Iterable[str]) -> None:
        self.k = k
        self.watched = set(watched)
        self.count = 0
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.where = ""
        # Whether the operation parked here is being cancelled: a call in flight then
        # completes, the way the engine or GitHub answers a request it already received.
        self.cancelled: Any = lambda: False

    async def point(self, call: str, when: str) -> None:
        if call not in self.watched or self.reached.is_set():
            return
        if self.count == self.k:
            self.where = f"{when} {call}"
            self.reached.set()
            await eventually(
                lambda: self.release.is_set() or self.cancelled(),
                timeout=60,
                interval=0.01,
                message="the gate released",
            )
        self.count += 1

    async def around(self, call: str, make: Any) -> Any:
        await self.point(call, "before")
        result = await make()
        await self.point(call, "after")
        return result


class GatedBackend:
    def __init__(self, inner: Any, gate: Gate) -> None:
        self._inner = inner
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def prepare(self, template: Any) -> None:
        await self._gate.around("prepare", lambda: self._inner.prepare(template))

    async def start(self, spec: RunnerSpec) -> None:
        await self._gate.around("start", lambda: self._inner.start(spec))

    async def remove(self, name: str) -> None:
        await self._gate.around("remove", lambda: self._inner.remove(name))


class GatedRegistry:
    def __init__(self, inner: Any, gate: Gate) -> None:
        self._inner = inner
        self._gate = gate

    async def register(self, runner_name: str) -> Any:
        return await self._gate.around("register", lambda: self._inner.register(runner_name))

    async def unregister(self, runner_id: int) -> None:
        await self._gate.around("unregister", lambda: self._inner.unregister(runner_id))

    async def lookup(self, runner_name: str) -> Any:
        return await self._gate.around("lookup", lambda: self._inner.lookup(runner_name))


def gated(runtimes: Runtimes, spec: Any, gate: Gate) -> ScaleSetRuntime:
    runtime = runtimes.make(spec, backend=GatedBackend(runtimes.backend, gate))  # type: ignore[arg-type]
    runtime.scaler.registry = GatedRegistry(runtime.scaler.registry, gate)
    gate.cancelled = lambda: any(t.cancelling() for t in runtime.scaler._tasks)
    return runtime


async def assert_book_and_engine_agree(runtimes: Runtimes, runtime: ScaleSetRuntime) -> None:
    records = {r.name: r for r in runtime.scaler.records()}
    for record in records.values():
        assert record.op is None, f"{record.name} still owned by {record.op}: {record}"
        assert record.state not in TRANSIENT, f"{record.name} left {record.state.value}"
    containers = {
        c.name: c for c in await runtimes.backend.list_owned({LABEL_FLEET: runtimes.fleet})
    }
    for name, container in containers.items():
        assert container.running, f"container {name} was created but never started"
        assert name in records, f"container {name} has no record"
    for name in records:
        assert name in containers, f"record {name} has no container"
    registered = {r["name"] for r in (await sim_state(runtimes.sim))["runners"]}
    assert registered <= set(containers), f"registrations without a runner: {registered}"


async def clean_up(runtimes: Runtimes, spec: Any) -> None:
    """A second operator adopts what the first kept, then shuts down: nothing is left."""
    second = runtimes.make(spec.model_copy(update={"min_runners": 0}))
    second.start()

    async def adopted() -> bool:
        owned = await runtimes.backend.list_owned({LABEL_FLEET: runtimes.fleet})
        return {o.name for o in owned} <= {r.name for r in second.scaler.records()}

    await eventually(adopted, timeout=20, message="leftovers adopted")
    await second.shutdown()

    async def empty() -> bool:
        owned = await runtimes.backend.list_owned({LABEL_FLEET: runtimes.fleet})
        return not owned and not (await sim_state(runtimes.sim))["runners"]

    await eventually(empty, timeout=20, message="no container and no registration left")


# prepare, register and start, each before and after the call.
START_POINTS = range(6)


@pytest.mark.parametrize("k", START_POINTS)
async def test_a_shutdown_during_a_start_strands_nothing_and_kills_no_live_runner(
    runtimes: Runtimes, k: int
) -> None:
    gate = Gate(k, {"prepare", "register", "start"})
    spec = scale_set(runtimes.sim, minRunners=1, maxRunners=1)
    runtime = gated(runtimes, spec, gate)
    runtime.start()
    await eventually(gate.reached.is_set, timeout=30, message=f"the start parked at point {k}")
    where = gate.where
    await runtime.shutdown()
    runtimes.made.remove(runtime)
    await assert_book_and_engine_agree(runtimes, runtime)
    records = runtime.scaler.records()
    if where == "after start":
        # The engine started it before the shutdown: a live runner that may hold a job is
        # kept (tracked, for the next start to adopt), never force-removed.
        assert [r.state for r in records] == [RunnerState.IDLE]
    else:
        assert records == []
    await clean_up(runtimes, spec)


# The lookup (is it busy?), unregister and remove, each before and after the call.
REMOVE_POINTS = range(6)


async def one_idle(runtimes: Runtimes, gate: Gate) -> tuple[ScaleSetRuntime, Any]:
    spec = scale_set(runtimes.sim, minRunners=1, maxRunners=2)
    runtime = gated(runtimes, spec, gate)
    runtime.start()
    await eventually(lambda: runtime.snapshot().idle == 1, timeout=30, message="one idle")
    gate.watched = {"lookup", "unregister", "remove"}
    return runtime, spec


@pytest.mark.parametrize("k", REMOVE_POINTS)
async def test_a_shutdown_during_a_scale_down_removal_strands_nothing(
    runtimes: Runtimes, k: int
) -> None:
    gate = Gate(k, ())
    runtime, spec = await one_idle(runtimes, gate)
    await runtime.update(spec.model_copy(update={"min_runners": 0}), reconnect=False)
    await eventually(gate.reached.is_set, timeout=30, message=f"the removal parked at {k}")
    await runtime.shutdown()
    runtimes.made.remove(runtime)
    await assert_book_and_engine_agree(runtimes, runtime)
    await clean_up(runtimes, spec)


@pytest.mark.parametrize("k", REMOVE_POINTS)
async def test_resuming_during_a_drain_strands_no_removing_runner(
    runtimes: Runtimes, k: int, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gate(k, ())
    runtime, spec = await one_idle(runtimes, gate)
    runtime.suspend()
    await eventually(gate.reached.is_set, timeout=30, message=f"the drain parked at {k}")
    await runtime.resume()
    gate.release.set()

    async def settled() -> bool:
        records = runtime.scaler.records()
        return runtime.snapshot().idle == 1 and all(r.op is None for r in records)

    await eventually(settled, timeout=30, message="one idle runner again, nothing owned")
    await assert_book_and_engine_agree(runtimes, runtime)
    # The next drain removes the idle runner at once instead of waiting out drainTimeout
    # for a runner stranded in `removing`.
    suspended = spec.model_copy(update={"suspended": True, "drain_timeout": 60.0})
    await runtime.update(suspended, reconnect=False)
    await eventually(lambda: runtime.phase == "suspended", timeout=15, message="drained")
    assert "force-removing" not in caplog.text
    assert runtime.scaler.records() == []
