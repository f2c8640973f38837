"""Starts cut short by the engine, as the chaos suite's engine restarts cut them: nothing that
the engine created and never started is left behind, and the scale set converges.

Found by `make chaos` (short seed 4, long seed 3): the engine went away between creating a
runner's container and starting it, the backend's own clean-up could not reach it either, and
the container stayed in `created` for good.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from runscaler.backends.base import LABEL_FLEET, BackendError, BackendUnavailable, RunnerSpec
from runscaler.backends.docker import container_name
from runscaler.simulator.runner import RUNNER_IMAGE
from tests.integration.dockerkit import docker
from tests.integration.runtimekit import Runtimes, running_names, scale_set, sim_state
from tests.waiting import eventually

pytestmark = pytest.mark.docker


class EngineGoneAfterCreate:
    """The real backend, except that the first start creates its container on the real engine
    and then loses the engine (start and the immediate removal both fail), the way a start
    does while the engine restarts."""

    def __init__(self, inner: Any, fleet: str) -> None:
        self._inner = inner
        self._fleet = fleet
        self.created: list[str] = []
        self.failing_removals = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def start(self, spec: RunnerSpec) -> None:
        if self.created:
            await self._inner.start(spec)
            return
        cname = container_name(self._fleet, spec.name)
        labels = [f"--label={key}={value}" for key, value in spec.labels.items()]
        docker("create", "--name", cname, *labels, RUNNER_IMAGE)
        self.created.append(cname)
        self.failing_removals = 1  # the engine is still away when the start is undone
        raise BackendUnavailable(f"cannot start container {cname}: the engine did not answer")

    async def remove(self, name: str) -> None:
        if self.failing_removals > 0:
            self.failing_removals -= 1
            raise BackendError(f"cannot remove container {name}: the engine did not answer")
        await self._inner.remove(name)


async def test_a_container_created_by_a_start_the_engine_cut_short_is_removed_and_replaced(
    runtimes: Runtimes,
) -> None:
    backend = EngineGoneAfterCreate(runtimes.backend, runtimes.fleet)
    runtime = runtimes.make(scale_set(runtimes.sim, minRunners=1, maxRunners=2), backend=backend)  # type: ignore[arg-type]
    runtime.start()
    try:
        await eventually(lambda: backend.created, timeout=30, message="the cut-short start")
        [stranded] = backend.created

        async def converged() -> bool:
            names = await running_names(runtimes.backend, runtimes.fleet)
            owned = await runtimes.backend.list_owned({LABEL_FLEET: runtimes.fleet})
            return (
                len(names) == 1
                and len(owned) == 1
                and runtime.snapshot().idle == 1
                and not runtime.scaler.book.leftovers
            )

        await eventually(converged, timeout=30, message="one idle runner and nothing else")
        out = docker("ps", "-aq", "--filter", f"name=^{stranded}$")
        assert out.stdout.strip() == "", f"{stranded} is still on the engine"
        # Its registration went with it: GitHub knows only the runner that runs.
        registered = {r["name"] for r in (await sim_state(runtimes.sim))["runners"]}
        assert registered == await running_names(runtimes.backend, runtimes.fleet)
    finally:
        for cname in backend.created:
            with contextlib.suppress(Exception):
                docker("rm", "-f", cname, check=False)
