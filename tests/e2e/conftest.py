"""Fixtures for the end-to-end tests: a simulator, the fleet's name, and operator processes.

The simulator runs in the test's process (its state is read directly for assertions); the
operator is always a real separate `runscaler run` process, started through `E2E.start()` and
stopped by PID when the test ends, whatever happened. Containers of the test's fleet are
removed afterwards (`fleet_name`), after the operators and the simulator have stopped.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runscaler.simulator.server import Simulator, SimulatorOptions, serve_simulator
from tests.e2e.operatorkit import TOKEN_ENV, OperatorProcess, manifest
from tests.integration.simkit import QUICK

# Short waits everywhere: long polls of half a second, every internal wait of the operator
# scaled by 0.05. Sessions outlive the tests, so a restart must really take its session over.
# The live service's habits, all on, shortened by the operator's own timing scale.
SIM_OPTIONS = SimulatorOptions(
    poll_wait=0.5, session_timeout=60.0, redispatch_interval=60.0, realism=QUICK
)
TIMING_SCALE = "0.05"


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with serve_simulator(SIM_OPTIONS) as sim:
        yield sim


@dataclass
class E2E:
    """One test's world: the simulator, a fleet name, a temp dir and the operators started."""

    sim: Simulator
    fleet: str
    root: Path
    token: str = field(default_factory=lambda: f"ghp_e2e{secrets.token_hex(16)}")
    operators: list[OperatorProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.sim.config_url("acme")

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def env(self, **extra: str) -> dict[str, str]:
        return {TOKEN_ENV: self.token, "RUNSCALER_OWNER": "e2e-host", **extra}

    def manifest(self, scale_sets: Sequence[Mapping[str, Any]], **kwargs: Any) -> str:
        return manifest(self.fleet, url=self.url, scale_sets=scale_sets, **kwargs)

    def write(self, text: str, name: str = "fleet.yaml") -> Path:
        """Write a file into the manifest's directory (`fleet/`); its path."""
        path = self.root / "fleet" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return path

    def start(
        self,
        manifest_path: Path,
        *args: str,
        state_dir: Path | None = None,
        log_level: str = "info",
        timing_scale: str = TIMING_SCALE,
        env: Mapping[str, str] | None = None,
    ) -> OperatorProcess:
        """Start `runscaler run` on `manifest_path` (127.0.0.1:0, short timings)."""
        # Not beside the manifest: the watcher would see every line written as a change.
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"operator-{len(self.operators) + 1}.log"
        process = OperatorProcess.start(
            [
                str(manifest_path),
                "--listen", "127.0.0.1:0",
                "--state-dir", str(state_dir or self.state_dir),
                "--timing-scale", timing_scale,
                "--log-level", log_level,
                *args,
            ],
            log_path=log_path,
            env=env if env is not None else self.env(),
        )  # fmt: skip
        self.operators.append(process)
        return process

    # -- what GitHub (the simulator) shows --------------------------------------------------

    def state(self) -> dict[str, Any]:
        return self.sim.state.snapshot()

    def scale_set(self, name: str) -> dict[str, Any] | None:
        """The scale set named `name` on GitHub, or None."""
        found = [s for s in self.state()["scaleSets"] if s["name"] == name]
        return found[0] if found else None

    def deleted(self, name: str) -> bool:
        return any(s["name"] == name for s in self.state()["deletedScaleSets"])

    def session(self, name: str) -> dict[str, Any] | None:
        """The open message session of scale set `name`, or None."""
        scale_set = self.scale_set(name)
        if scale_set is None:
            return None
        found = [s for s in self.state()["sessions"] if s["scaleSetId"] == scale_set["id"]]
        return found[0] if found else None

    def jobs(self, ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        jobs = self.state()["jobs"]
        return [j for j in jobs if ids is None or j["id"] in ids]


@pytest.fixture
async def e2e(
    simulator: Simulator, fleet_name: str, runner_image: str, tmp_path: Path
) -> AsyncIterator[E2E]:
    world = E2E(sim=simulator, fleet=fleet_name, root=tmp_path)
    try:
        yield world
    finally:
        for process in world.operators:
            # In a thread: the simulator must keep answering while the operator shuts down.
            await asyncio.to_thread(process.stop)
