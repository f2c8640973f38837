"""The listener against the strict simulator: the live service's habits that lose jobs when a
client assumes an ideal service (per-session message ids, empty 200s, discarded labels).

The scaler side is a recorder; GitHub's side is the simulator over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from runscaler.engine.listener import Listener, ListenerSettings, ListenerTiming
from runscaler.engine.statefile import StateFile
from runscaler.github.client import ScaleSetClient
from runscaler.github.models import JobCompleted, JobStarted
from runscaler.simulator import records as r
from runscaler.simulator.realism import Realism
from runscaler.simulator.server import Simulator
from tests.integration.githubkit import (
    RecordingTransport,
    add_fault,
    fault_hits,
    make_client,
    simulator,
)
from tests.integration.simkit import QUICK
from tests.waiting import eventually

FAST = ListenerTiming(backoff_initial=0.05, backoff_max=0.2, standby_initial=0.05, standby_max=0.2)
QUEUE = r"^/_broker/scalesets/message"
FLAG = "DistributedTask.AllowRunnerScaleSetCustomLabels"


@dataclass
class Recorder:
    desired: list[int] = field(default_factory=list)
    started: list[JobStarted] = field(default_factory=list)

    def desired_runners(self, count: int) -> None:
        if not self.desired or self.desired[-1] != count:
            self.desired.append(count)

    def job_started(self, job: JobStarted) -> None:
        self.started.append(job)

    def job_completed(self, job: JobCompleted) -> None:
        pass


@dataclass
class Running:
    sim: Simulator
    client: ScaleSetClient
    wire: RecordingTransport
    recorder: Recorder
    listener: Listener
    task: asyncio.Task[None]


def settings(*labels: str) -> ListenerSettings:
    return ListenerSettings(
        name="linux",
        runner_group="default",
        labels=("linux", *labels),
        min_runners=0,
        max_runners=10,
    )


@contextlib.asynccontextmanager
async def listening(
    sim: Simulator, tmp_path: Path, listener_settings: ListenerSettings
) -> AsyncIterator[Running]:
    wire = RecordingTransport()
    recorder = Recorder()
    async with make_client(sim, transport=wire) as client:
        listener = Listener(
            client=client,
            settings=listener_settings,
            hooks=recorder,
            owner="host-a",
            state_file=StateFile(tmp_path / "state.json"),
            key="k-linux",
            timing=FAST,
        )
        task = asyncio.create_task(listener.run())
        try:
            await eventually(lambda: listener.state == "listening", message="listening")
            yield Running(sim, client, wire, recorder, listener, task)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def session_ids(sim: Simulator) -> list[str]:
    return [s["id"] for s in sim.state.snapshot()["sessions"]]


async def test_after_a_session_rebuild_the_new_sessions_messages_are_handled(
    tmp_path: Path,
) -> None:
    # The first session's ids start higher than the second's, as on GitHub (ARC #4470).
    realism = Realism(scale=QUICK.scale, message_id_offsets=[900, 0])
    async with simulator(realism=realism) as sim, listening(sim, tmp_path, settings()) as run:
        [first] = sim.add_jobs(["linux"])
        await eventually(lambda: sim.state.jobs[first].state == r.ACQUIRED, message="acquired")
        await eventually(lambda: run.recorder.desired[-1] == 1, message="desired 1")
        before = session_ids(sim)
        await add_fault(sim, method="GET", path=QUEUE, status=400)  # the session is rebuilt
        await eventually(lambda: session_ids(sim) not in ([], before), message="a new session")

        later = sim.add_jobs(["linux"], count=2)
        await eventually(
            lambda: all(sim.state.jobs[j].state == r.ACQUIRED for j in later),
            message="the new session's jobs acquired",
        )
        await eventually(lambda: run.recorder.desired[-1] == 3, message="desired 3")
        polls = run.wire.matching("GET", QUEUE)
        assert all(int(p.query.split("=")[1]) < 100_000_900 for p in polls[-3:] if p.query)


async def test_an_empty_200_from_the_long_poll_keeps_the_session(tmp_path: Path) -> None:
    async with simulator() as sim, listening(sim, tmp_path, settings()) as run:
        [opened] = session_ids(sim)
        fault = await add_fault(sim, method="GET", path=QUEUE, times=3, empty=True)
        [job] = sim.add_jobs(["linux"])
        await eventually(lambda: sim.state.jobs[job].state == r.ACQUIRED, message="acquired")
        assert session_ids(sim) == [opened]
        assert run.wire.count("DELETE", r"/sessions/") == 0
        assert (run.listener.state, run.listener.last_error) == ("listening", None)
        assert await fault_hits(sim, fault) == 3


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="runscaler.engine.listener"):
        yield caplog


def mismatch_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m.getMessage() for m in caplog.records if FLAG in m.getMessage()]


async def test_a_label_change_is_not_patched_but_reported_once(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    async with simulator() as sim:
        async with listening(sim, tmp_path, settings("self-hosted")) as run:
            assert run.listener.label_mismatch is None
        async with listening(sim, tmp_path, settings("self-hosted", "gpu")) as run:
            mismatch = run.listener.label_mismatch
            assert mismatch is not None and FLAG in mismatch
            assert "GitHub has the labels linux, self-hosted" in mismatch
            assert "wants gpu, linux, self-hosted" in mismatch
            await run.listener.sync_scale_set()
            await run.listener.sync_scale_set()
            assert run.wire.count("PATCH", r"/runnerscalesets/\d+$") == 0
            assert len(mismatch_warnings(warnings)) == 1
        [scale_set] = sim.state.snapshot()["scaleSets"]
        assert sorted(scale_set["labels"]) == ["linux", "self-hosted"]


async def test_a_ghes_that_keeps_only_the_name_is_reported_naming_the_feature_flag(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    realism = Realism(scale=QUICK.scale, custom_labels=False)
    async with simulator(realism=realism) as sim:
        async with listening(sim, tmp_path, settings("self-hosted")) as run:
            mismatch = run.listener.label_mismatch
            assert mismatch is not None
            assert "GitHub has the labels linux but" in mismatch and FLAG in mismatch
            assert run.wire.count("PATCH", r"/runnerscalesets/\d+$") == 0
        assert len(mismatch_warnings(warnings)) == 1


class WithoutRunnerSetting(RecordingTransport):
    """Answers as a service that does not echo `RunnerSetting` would (audit D9: unverified
    live, and the simulator always echoes it, so only a rewritten answer can show it)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if "/runnerscalesets" not in request.url.path or request.method == "DELETE":
            return response
        body = json.loads(await response.aread() or b"null")
        for item in body.get("value", [body]) if isinstance(body, dict) else []:
            if isinstance(item, dict):
                item.pop("RunnerSetting", None)
        return httpx.Response(response.status_code, json=body, request=request)


async def test_a_field_the_service_ignores_is_patched_once_not_in_a_loop(tmp_path: Path) -> None:
    async with simulator() as sim:
        wire = WithoutRunnerSetting()
        async with make_client(sim, transport=wire) as client:
            listener = Listener(
                client=client,
                settings=settings(),
                hooks=Recorder(),
                owner="host-a",
                state_file=StateFile(tmp_path / "state.json"),
                key="k-linux",
                timing=FAST,
            )
            task = asyncio.create_task(listener.run())
            try:
                await eventually(lambda: listener.state == "listening", message="listening")
                for _ in range(3):
                    await listener.sync_scale_set()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    assert wire.count("PATCH", r"/runnerscalesets/\d+$") == 1
