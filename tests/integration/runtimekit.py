"""One scale set's runtime (listener + scaler + Docker backend) against the simulator.

Shared by the scaler tests: a fast simulator, the stand-in runner image on the real engine,
and a factory for `ScaleSetRuntime`s whose timings are scaled down so backoffs and resyncs
take a fraction of a second. Containers use host networking to reach the simulator on
127.0.0.1; everything labelled with the test's fleet is removed afterwards (`fleet_name`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from runscaler.backends.docker import DockerBackend
from runscaler.engine.scaleset import ScaleSetRuntime
from runscaler.engine.statefile import StateFile
from runscaler.engine.timing import scaled_timing
from runscaler.manifest.models import ScaleSet
from runscaler.simulator.runner import RUNNER_IMAGE, build_runner_image
from runscaler.simulator.server import Simulator, SimulatorOptions, serve_simulator
from tests.integration.simkit import QUICK

TOKEN_ENV = "RUNSCALER_TEST_TOKEN"
TIMING = scaled_timing(0.05)


@pytest.fixture(scope="session")
def runner_image(docker_engine: str) -> str:
    build_runner_image()
    return RUNNER_IMAGE


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with serve_simulator(
        SimulatorOptions(poll_wait=0.3, session_timeout=1.0, redispatch_interval=30, realism=QUICK)
    ) as simulator:
        yield simulator


def scale_set(sim: Simulator, **fields: Any) -> ScaleSet:
    """A docker scale set on the simulator; `fields` are camelCase manifest keys."""
    docker = {"image": RUNNER_IMAGE, "pull": "never", "network": "host"}
    docker.update(fields.pop("docker", {}))
    document = {
        "name": "linux",
        "github": {"url": sim.config_url("acme"), "auth": {"token": f"env:{TOKEN_ENV}"}},
        "maxRunners": 3,
        "docker": docker,
        **fields,
    }
    return ScaleSet.model_validate(document)


@dataclass
class Runtimes:
    """Makes runtimes for one test and shuts them all down after it."""

    sim: Simulator
    fleet: str
    backend: DockerBackend
    state_dir: Path
    made: list[ScaleSetRuntime] = field(default_factory=list)
    limiter: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))

    def make(self, spec: ScaleSet, *, backend: DockerBackend | None = None) -> ScaleSetRuntime:
        runtime = ScaleSetRuntime(
            fleet=self.fleet,
            scale_set=spec,
            base_dir=self.state_dir,
            backend=backend or self.backend,
            state_file=StateFile.for_fleet(self.state_dir, self.fleet),
            owner="test-host",
            start_limiter=self.limiter,
            timing=TIMING,
        )
        self.made.append(runtime)
        return runtime

    async def crash(self, runtime: ScaleSetRuntime) -> None:
        """Stop a runtime the way a crash does: its tasks die, nothing is cleaned up."""
        for task in (runtime._listener_task, runtime._scaler_task):
            if task is not None:
                runtime.listener._session = None  # a dead process closes no session
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        runtime._listener_task = runtime._scaler_task = None
        await runtime.client.aclose()
        self.made.remove(runtime)


@pytest.fixture
async def runtimes(
    sim: Simulator,
    fleet_name: str,
    docker_backend: DockerBackend,
    runner_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Runtimes]:
    monkeypatch.setenv(TOKEN_ENV, "ghp_runtime_test_token_0123456789")
    made = Runtimes(sim, fleet_name, docker_backend, tmp_path)
    try:
        yield made
    finally:
        for runtime in made.made:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runtime.shutdown(), timeout=20)


async def sim_state(sim: Simulator) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{sim.url}/_sim/state")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def sim_control(sim: Simulator, path: str, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{sim.url}/_sim/{path}", json=body)
        response.raise_for_status()


async def running_names(backend: DockerBackend, fleet: str) -> set[str]:
    from runscaler.backends.base import LABEL_FLEET

    return {r.name for r in await backend.list_owned({LABEL_FLEET: fleet}) if r.running}


Probe = Callable[[], Awaitable[Any]]
