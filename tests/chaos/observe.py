"""What the chaos harness watches while it runs, from sources independent of the operator.

- `ContainerEvents`: the chaos engine's container events (`docker events`), so the moment a
  runner's container died or was removed is known exactly; restarted when the engine restarts.
- `Sampler`: every half second, the simulator's job records (which runners ran each job), the
  runner credentials it issued (secrets to look for in logs), and the operator's peak RSS.
- `Ledger`: what the harness itself did that explains a job's fate: drains (a scale set
  suspended or removed, with the drain timeout in effect) and deletions on GitHub's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runscaler.simulator.server import Simulator
    from tests.chaos.engine import ChaosEngine

RUNNER_LABEL = "dev.runscaler.runner"


@dataclass
class RunnerContainer:
    """One runner's containers as the engine reported them."""

    ids: set[str] = field(default_factory=set)
    created_at: float | None = None
    died_at: float | None = None
    exit_code: str | None = None
    destroyed_at: float | None = None


class ContainerEvents:
    """`docker events` for the fleet's containers, reconnecting across engine restarts."""

    def __init__(self, engine: ChaosEngine, fleet: str) -> None:
        self.engine = engine
        self.fleet = fleet
        self.runners: dict[str, RunnerContainer] = defaultdict(RunnerContainer)
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chaos-container-events")

    async def _run(self) -> None:
        since = time.time()
        while True:
            self._process = await asyncio.create_subprocess_exec(
                "docker", "-H", self.engine.host, "events", "--since", f"{since:.3f}",
                "--filter", "type=container",
                "--filter", f"label=dev.runscaler.fleet={self.fleet}",
                "--format", "{{json .}}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            assert self._process.stdout is not None
            async for line in self._process.stdout:
                since = max(since, self._take(line))
            await self._process.wait()
            await asyncio.sleep(0.2)  # the engine is restarting: ask again shortly

    def _take(self, line: bytes) -> float:
        try:
            event = json.loads(line)
        except ValueError:
            return 0.0
        moment = int(event.get("timeNano", 0)) / 1e9
        attributes = event.get("Actor", {}).get("Attributes", {})
        runner = attributes.get(RUNNER_LABEL)
        if not runner:
            return moment
        record = self.runners[runner]
        action = event.get("Action") or event.get("status")
        if action == "create":
            record.ids.add(str(event.get("id", "")))
            if record.created_at is None:
                record.created_at = moment
        elif action == "die" and record.died_at is None:
            record.died_at = moment
            record.exit_code = attributes.get("exitCode")
        elif action == "destroy" and record.destroyed_at is None:
            record.destroyed_at = moment
        return moment

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def peak_rss_kib(pid: int) -> int | None:
    """The process's peak resident set (VmHWM), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Sampler:
    """Half-second samples of the simulator's records and the operator's memory."""

    sim: Simulator
    runners_of_job: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    credentials: set[str] = field(default_factory=set)
    peak_rss: dict[int, int] = field(default_factory=dict)  # pid → KiB
    pids: list[int] = field(default_factory=list)

    def sample(self) -> None:
        for job in self.sim.state.jobs.values():
            if job.state == "running" and job.runner_name:
                self.runners_of_job[job.id].add(job.runner_name)
        for runner in self.sim.state.runners.values():
            self.credentials.add(runner.client_id)
        for pid in self.pids:
            rss = peak_rss_kib(pid)
            if rss is not None:
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.5)  # the sampling period


@dataclass(frozen=True)
class Drain:
    scale_set: str
    started: float
    timeout: float
    ended: float | None = None


@dataclass
class Ledger:
    """The harness's own acts that explain what happened to jobs."""

    drains: list[Drain] = field(default_factory=list)
    # scale set name → moments it was deleted on GitHub's side, and the jobs running then.
    deleted_while_running: set[int] = field(default_factory=set)

    def open_drain(self, scale_set: str, *, at: float, timeout: float) -> None:
        if not any(d.scale_set == scale_set and d.ended is None for d in self.drains):
            self.drains.append(Drain(scale_set, at, timeout))

    def close_drain(self, scale_set: str, *, at: float) -> None:
        self.drains = [
            Drain(d.scale_set, d.started, d.timeout, at)
            if d.scale_set == scale_set and d.ended is None
            else d
            for d in self.drains
        ]

    def explains_removal(self, scale_set: str, removed_at: float, *, slack: float = 1.0) -> bool:
        """A drain of `scale_set` whose timeout had run out when the runner was removed."""
        for drain in self.drains:
            if drain.scale_set != scale_set:
                continue
            late_enough = removed_at >= drain.started + drain.timeout - slack
            still_draining = drain.ended is None or removed_at <= drain.ended + slack
            if late_enough and still_draining:
                return True
        return False
