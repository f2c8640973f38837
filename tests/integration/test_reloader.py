"""Reloads through the real operator (controller, runtimes, Docker) against the simulator.

What a user sees after a rejected reload is what ran before it: the same session on GitHub,
the same runner container, `listening`; and the error names the line of the manifest. A
reload racing shutdown is refused without starting anything. Deleting on GitHub stops at a
403 and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runscaler.engine.running import Operator, RunSettings
from runscaler.engine.statefile import StateFile
from runscaler.errors import UserError
from runscaler.simulator.server import Simulator
from tests.integration.dockerkit import docker
from tests.integration.githubkit import add_fault, fault_hits
from tests.integration.runtimekit import RUNNER_IMAGE, TIMING, TOKEN_ENV, sim_state
from tests.waiting import eventually

pytestmark = pytest.mark.docker


def manifest_text(fleet: str, sim: Simulator, *scale_sets: dict[str, Any]) -> str:
    """One key per line, so every error has its own line."""
    lines = [
        "apiVersion: runscaler/v1",
        "kind: Fleet",
        "metadata:",
        f"  name: {fleet}",
        "defaults:",
        "  github:",
        f"    url: {json.dumps(sim.config_url('acme'))}",
        "    auth:",
        f"      token: env:{TOKEN_ENV}",
        "  drainTimeout: 5s",
        "  docker:",
        f"    image: {RUNNER_IMAGE}",
        "    pull: never",
        "    network: host",
        "scaleSets:",
    ]
    for spec in scale_sets:
        first = True
        for key, value in spec.items():
            lines.append(f"{'  - ' if first else '    '}{key}: {json.dumps(value)}")
            first = False
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def operator_on(path: Path, state_dir: Path, **settings: Any) -> AsyncIterator[Operator]:
    operator = Operator(
        RunSettings(
            manifest=path, state_dir=state_dir, timing=TIMING, owner="reload-test", **settings
        )
    )
    try:
        yield operator
    finally:
        await asyncio.wait_for(operator.shutdown(), timeout=30)


async def fleet_runners(fleet: str) -> list[str]:
    out = docker(
        "ps", "--filter", f"label=dev.runscaler.fleet={fleet}", "--format", "{{.ID}}"
    ).stdout  # fmt: skip
    return sorted(out.split())


def session_of(state: dict[str, Any], name: str) -> str | None:
    ids = [s["id"] for s in state["scaleSets"] if s["name"] == name]
    found = [s["id"] for s in state["sessions"] if ids and s["scaleSetId"] == ids[0]]
    return found[0] if found else None


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.fixture
def world(
    sim: Simulator,
    fleet_name: str,
    runner_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Simulator, str, Path]:
    monkeypatch.setenv(TOKEN_ENV, "ghp_reload_test_token_0123456789")
    monkeypatch.delenv("RUNSCALER_UNSET_TOKEN", raising=False)
    del runner_image
    return sim, fleet_name, tmp_path


async def listening(operator: Operator, sim: Simulator, name: str) -> str:
    async def session() -> str | None:
        return session_of(await sim_state(sim), name)

    found: str = await eventually(session, timeout=20, message=f"{name} listening")
    await eventually(lambda: not operator.readiness(), timeout=10, message="ready")
    return found


async def test_a_reload_with_an_unset_secret_is_rejected_located_and_stops_nothing(
    world: tuple[Simulator, str, Path],
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    good = manifest_text(fleet, sim, {"name": "linux", "minRunners": 1})
    path.write_text(good)
    async with operator_on(path, tmp / "state") as operator:
        await operator.start()
        session = await listening(operator, sim, "linux")
        runners = await eventually(lambda: fleet_runners(fleet), timeout=30, message="a runner")

        bad = good.replace(f"env:{TOKEN_ENV}", "env:RUNSCALER_UNSET_TOKEN")
        path.write_text(bad)
        outcome = await operator.reload(force=False)

        assert outcome.result == "rejected"
        line = line_of(bad, "RUNSCALER_UNSET_TOKEN")
        assert outcome.error is not None
        assert outcome.error.startswith(f"{path}:{line}:"), outcome.error
        assert "RUNSCALER_UNSET_TOKEN" in outcome.error and "not set" in outcome.error
        assert session_of(await sim_state(sim), "linux") == session
        assert await fleet_runners(fleet) == runners
        assert operator.snapshot().scale_sets[0].state == "listening"
        assert operator.readiness() == {}
        assert operator.reloader.generation == 1

        # Put back, twice in a row: nothing to apply, the session is still the first one.
        path.write_text(good)
        assert (await operator.reload(force=False)).result == "unchanged"
        assert (await operator.reload(force=True)).result == "unchanged"
        assert operator.reloader.status.ok
        assert session_of(await sim_state(sim), "linux") == session


async def test_a_rejected_reload_creates_nothing_and_the_next_good_one_creates_once(
    world: tuple[Simulator, str, Path],
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    one = manifest_text(fleet, sim, {"name": "linux"})
    path.write_text(one)
    async with operator_on(path, tmp / "state") as operator:
        await operator.start()
        await listening(operator, sim, "linux")

        bad = manifest_text(
            fleet,
            sim,
            {"name": "linux"},
            {"name": "new"},
            {"name": "broken", "docker": {"image": RUNNER_IMAGE, "env": {"X": "env:NOPE_Y"}}},
        )
        path.write_text(bad)
        assert (await operator.reload()).result == "rejected"
        names = [s["name"] for s in (await sim_state(sim))["scaleSets"]]
        assert names == ["linux"]
        assert len(operator.controller.runtimes) == 1
        assert operator.snapshot().generation == 1

        path.write_text(manifest_text(fleet, sim, {"name": "linux"}, {"name": "new"}))
        assert (await operator.reload()).result == "applied"
        assert (await operator.reload()).result == "unchanged"
        await listening(operator, sim, "new")
        names = sorted(s["name"] for s in (await sim_state(sim))["scaleSets"])
        assert names == ["linux", "new"]
        assert len(operator.controller.runtimes) == 2


async def test_a_malformed_engine_address_is_rejected_and_the_fleet_keeps_running(
    world: tuple[Simulator, str, Path],
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    good = manifest_text(fleet, sim, {"name": "linux"})
    path.write_text(good)
    async with operator_on(path, tmp / "state") as operator:
        await operator.start()
        session = await listening(operator, sim, "linux")
        bad = manifest_text(
            fleet,
            sim,
            {"name": "linux"},
            {"name": "typo", "docker": {"image": RUNNER_IMAGE, "host": "tpc//127.0.0.1:2375"}},
        )
        path.write_text(bad)
        outcome = await operator.reload()
        assert outcome.result == "rejected"
        assert outcome.error is not None
        assert outcome.error.startswith(f"{path}:{line_of(bad, 'tpc//')}:"), outcome.error
        assert "not an engine address" in outcome.error
        assert session_of(await sim_state(sim), "linux") == session


async def test_a_manifest_with_a_malformed_engine_address_is_a_user_error_at_start(
    world: tuple[Simulator, str, Path],
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    path.write_text(
        manifest_text(
            fleet, sim, {"name": "x", "docker": {"image": RUNNER_IMAGE, "host": "nonsense"}}
        )
    )
    async with operator_on(path, tmp / "state") as operator:
        with pytest.raises(UserError, match="not an engine address"):
            await operator.start()
        assert operator.controller.runtimes == {}
    assert (await sim_state(sim))["scaleSets"] == []


async def test_a_reload_racing_shutdown_is_refused_and_starts_nothing(
    world: tuple[Simulator, str, Path],
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    path.write_text(manifest_text(fleet, sim, {"name": "linux"}))
    async with operator_on(path, tmp / "state") as operator:
        await operator.start()
        await listening(operator, sim, "linux")
        path.write_text(manifest_text(fleet, sim, {"name": "linux"}, {"name": "late"}))

        stopping = asyncio.create_task(operator.controller.shutdown(cleanup=False))
        reloads = [asyncio.create_task(operator.reload()) for _ in range(3)]
        await stopping
        outcomes = await asyncio.gather(*reloads)

        assert {o.result for o in outcomes} == {"rejected"}
        assert all("shutting down" in (o.error or "") for o in outcomes)
        assert operator.controller.runtimes == {}
        names = [s["name"] for s in (await sim_state(sim))["scaleSets"]]
        assert names == ["linux"]


async def test_cleanup_on_exit_reports_a_403_at_once_and_keeps_the_scale_set_recorded(
    world: tuple[Simulator, str, Path],
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    path.write_text(manifest_text(fleet, sim, {"name": "linux"}))
    state_dir = tmp / "state"
    operator = Operator(
        RunSettings(
            manifest=path,
            state_dir=state_dir,
            timing=TIMING,
            owner="reload-test",
            cleanup_on_exit=True,
        )
    )
    await operator.start()
    await listening(operator, sim, "linux")
    await add_fault(sim, method="DELETE", path=r"runnerscalesets/\d+$", times=-1, status=403)

    began = time.monotonic()
    await asyncio.wait_for(operator.shutdown(), timeout=30)

    assert time.monotonic() - began < TIMING.delete_deadline  # no retrying a 403
    [error] = operator.controller.delete_errors
    assert "linux" in error and "403" in error
    [memo] = StateFile.for_fleet(state_dir, fleet).owned()
    assert memo.deleting_deadline is not None  # the next start or doctor --fix finishes it
    assert [s["name"] for s in (await sim_state(sim))["scaleSets"]] == ["linux"]


async def test_readyz_names_a_scale_set_whose_credentials_github_refuses(
    world: tuple[Simulator, str, Path],
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    path.write_text(manifest_text(fleet, sim, {"name": "linux"}))
    await add_fault(sim, path=r"actions/runner-registration", times=-1, status=401)
    async with operator_on(path, tmp / "state") as operator:
        await operator.start()

        def refused() -> dict[str, str] | None:
            problems = operator.readiness()
            return problems if "degraded" in problems.get("linux", "") else None

        problems = await eventually(refused, timeout=10, message="linux degraded")
        assert list(problems) == ["linux"]
        assert "401" in problems["linux"], problems
        assert await fleet_runners(fleet) == []


async def test_a_label_change_drains_deletes_and_creates_the_scale_set_again(
    world: tuple[Simulator, str, Path],
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    path.write_text(manifest_text(fleet, sim, {"name": "linux", "labels": ["a"]}))
    async with operator_on(path, tmp / "state") as operator:
        await operator.start()
        await listening(operator, sim, "linux")
        [old] = [s for s in (await sim_state(sim))["scaleSets"] if s["name"] == "linux"]
        [job] = sim.add_jobs(["linux"], duration=3)

        async def job_state() -> str:
            jobs = (await sim_state(sim))["jobs"]
            return str(next(j["state"] for j in jobs if j["id"] == job))

        await eventually(lambda: _is(job_state, "running"), timeout=20, message="job running")
        path.write_text(manifest_text(fleet, sim, {"name": "linux", "labels": ["a", "gpu"]}))
        outcome = await operator.reload()
        assert outcome.result == "applied"
        assert operator.snapshot().scale_sets[0].state == "draining"

        async def replaced() -> dict[str, Any] | None:
            state = await sim_state(sim)
            found = [s for s in state["scaleSets"] if s["name"] == "linux"]
            return found[0] if found and found[0]["id"] != old["id"] else None

        new = await eventually(replaced, timeout=30, message="linux created again")
        state = await sim_state(sim)
        assert await job_state() == "done"  # the busy runner finished first
        assert old["id"] in [s["id"] for s in state["deletedScaleSets"]]
        assert {label.lower() for label in new["labels"]} >= {"a", "gpu"}
        assert await listening(operator, sim, "linux")


async def _is(probe: Any, wanted: str) -> bool:
    return bool(await probe() == wanted)


@pytest.mark.parametrize("moment", ["draining", "deleting on GitHub"])
async def test_a_scale_set_put_back_mid_delete_is_resumed_whole(
    world: tuple[Simulator, str, Path], moment: str
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    both = manifest_text(fleet, sim, {"name": "keep"}, {"name": "linux"})
    path.write_text(both)
    async with operator_on(path, tmp / "state") as operator:
        await operator.start()
        await listening(operator, sim, "linux")
        if moment == "draining":
            [job] = sim.add_jobs(["linux"], duration=3)

            async def running() -> bool:
                jobs = (await sim_state(sim))["jobs"]
                return any(j["id"] == job and j["state"] == "running" for j in jobs)

            await eventually(running, timeout=20, message="a busy runner")
        else:
            fault = await add_fault(
                sim, method="DELETE", path=r"runnerscalesets/\d+$", times=-1, delay=30
            )
        path.write_text(manifest_text(fleet, sim, {"name": "keep"}))
        assert (await operator.reload()).result == "applied"
        [draining] = operator.controller.draining
        if moment == "deleting on GitHub":
            await eventually(lambda: fault_hits(sim, fault), timeout=20, message="DELETE sent")
        else:
            await eventually(lambda: draining.phase == "draining", message="draining")

        path.write_text(both)
        assert (await operator.reload()).result == "applied"

        assert operator.controller.draining == []
        assert operator.controller.runtimes[draining.identity] is draining  # not a second one
        await listening(operator, sim, "linux")
        state = await sim_state(sim)
        assert [s["name"] for s in state["scaleSets"]].count("linux") == 1
        assert state["deletedScaleSets"] == []
        if moment == "draining":

            async def done() -> bool:
                jobs = (await sim_state(sim))["jobs"]
                return any(j["id"] == job and j["result"] == "succeeded" for j in jobs)

            await eventually(done, timeout=20, message="the busy runner's job done")


async def test_reloads_do_not_wait_on_a_hanging_github(
    world: tuple[Simulator, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, fleet, tmp = world
    path = tmp / "fleet.yaml"
    path.write_text(manifest_text(fleet, sim, {"name": "linux"}, {"name": "other"}))
    async with operator_on(path, tmp / "state") as operator:
        await operator.start()
        await listening(operator, sim, "linux")
        await listening(operator, sim, "other")
        for method in ("GET", "POST", "PATCH", "DELETE"):
            await add_fault(sim, method=method, path="", times=-1, delay=60)

        began = time.monotonic()
        # Rotated credentials (reconnect: the old session must be closed), a label sync, a
        # removal (its drain and delete wait on GitHub): none of it happens under the lock.
        monkeypatch.setenv(TOKEN_ENV, "ghp_reload_test_token_rotated_987654")
        assert (await operator.reload(force=True)).result == "unchanged"
        path.write_text(manifest_text(fleet, sim, {"name": "linux", "runnerGroup": "default"}))
        assert (await operator.reload()).result == "applied"
        path.write_text(manifest_text(fleet, sim, {"name": "linux", "maxRunners": 3}))
        assert (await operator.reload()).result == "applied"
        took = time.monotonic() - began

        assert took < 2.0, took
        assert [r.name for r in operator.controller.draining] == ["other"]
