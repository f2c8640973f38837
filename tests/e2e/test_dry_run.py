"""`runscaler run --dry-run` as a user runs it: a verdict per scale set, and nothing created."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from runscaler.simulator.runner import RUNNER_IMAGE
from runscaler.simulator.server import serve_simulator
from tests.e2e.conftest import E2E, SIM_OPTIONS
from tests.e2e.operatorkit import TOKEN_ENV, containers, manifest, run, runscaler_command

pytestmark = pytest.mark.docker


async def dry_run(path: Path, *, token: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        runscaler_command("run", str(path), "--dry-run", "--timing-scale", "0.05"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, TOKEN_ENV: token},
        check=False,
    )


async def engine_version() -> str:
    return (await run("docker", "version", "--format", "{{.Server.Version}}")).strip()


async def test_dry_run_proves_the_fleet_and_creates_nothing(e2e: E2E) -> None:
    path = e2e.write(e2e.manifest([{"name": "linux", "maxRunners": 2}]))

    done = await dry_run(path, token=e2e.token)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "nothing was created" in done.stdout
    [row] = [line for line in done.stdout.splitlines() if "linux" in line and "ok" in line]
    assert "would be created" in row
    assert "default (id 1)" in row
    assert f"Docker {await engine_version()} at unix://" in row
    assert f"image {RUNNER_IMAGE} present" in row
    assert "(pull: never)" in done.stdout  # the backend cell may wrap
    state = e2e.state()
    assert state["scaleSets"] == []
    assert state["sessions"] == []
    assert state["runners"] == []
    assert state["deletedScaleSets"] == []
    assert await containers(e2e.fleet) == []


async def test_dry_run_with_a_wrong_token_names_the_scale_set_and_the_401(
    fleet_name: str, runner_image: str, tmp_path: Path
) -> None:
    options = dataclasses.replace(SIM_OPTIONS, token="ghp_the_only_good_token_0123456789")
    async with serve_simulator(options) as sim:
        path = tmp_path / "fleet.yaml"
        path.write_text(
            manifest(
                fleet_name,
                url=sim.config_url("acme"),
                scale_sets=[{"name": "linux"}, {"name": "arm64", "labels": ["arm"]}],
            )
        )

        done = await dry_run(path, token="ghp_a_wrong_token_000000000000000")

        assert done.returncode == 1
        lines = done.stderr.splitlines()
        assert len(lines) == 2, done.stderr
        for name, line in zip(("arm64", "linux"), sorted(lines), strict=True):
            assert line.startswith(f"{name} ({sim.config_url('acme')}): "), line
            assert "401" in line
            assert "check the token" in line
        assert "ghp_a_wrong_token" not in done.stdout + done.stderr
        assert sim.state.snapshot()["scaleSets"] == []
    assert await containers(fleet_name) == []
