"""The show `runscaler demo` puts on, and how it always cleans up after itself.

The simulator and the operator run in this process, on loopback; runner containers run on the
real Docker engine. A demo fleet of two scale sets warms up, takes a burst of jobs with mixed
labels and durations, and settles back to its warm minimum. Whatever ends the show (the end, a
failure, Ctrl-C), the operator is shut down, every container of the demo's fleet is removed and
the simulator stops; the caller removes the work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runscaler.backends.base import LABEL_FLEET
from runscaler.console.demo import DemoProgress, DemoSummary, JobCounts, runners
from runscaler.engine.running import Operator, RunSettings
from runscaler.engine.status import ScaleSetStatus
from runscaler.engine.timing import scaled_timing
from runscaler.errors import UserError
from runscaler.server import serve_http
from runscaler.simulator.runner import RUNNER_IMAGE
from runscaler.simulator.server import Simulator, SimulatorOptions, serve_simulator

log = logging.getLogger(__name__)

# Job durations cycle through these multiples of --duration; one job in FAIL_EVERY fails, so
# the summary shows that results are reported as the runner gave them.
_DURATION_FACTORS = (1.0, 0.5, 1.5, 0.75, 1.25)
FAIL_EVERY = 8
BIG_EVERY = 3  # one job in three asks for `linux-big`
_WARM_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_FAILURES_TO_GIVE_UP = 3
_DEGRADED_GRACE = 10.0


class DemoFailed(UserError):
    """The demo fleet did not do what the demo expects; the message says what it saw."""


class Display(Protocol):
    def say(self, text: str) -> None: ...

    def update(self, progress: DemoProgress) -> None: ...

    def hang_up(self) -> None: ...


@dataclass(frozen=True)
class DemoSettings:
    jobs: int
    duration: float
    max_runners: int
    keep_going: bool
    token_env: str  # the demo sets it; the manifest names it as `env:`
    workdir: Path
    image: str = RUNNER_IMAGE
    poll_wait: float = 2.0
    timing_scale: float = 0.1  # the operator's internal waits, shortened for a short show
    # How long a stand-in runner keeps trying a simulator that went away (a killed demo takes
    # its simulator with it); short, so what kill -9 leaves behind stops soon.
    runner_retry: int = 15
    tick: float = 0.1

    @property
    def big_runners(self) -> int:
        return max(1, self.max_runners // 2)


@dataclass(frozen=True)
class DemoOutcome:
    summary: DemoSummary
    error: UserError | None = None
    signal: int | None = None  # SIGINT, SIGTERM or SIGHUP when one ended the show


def demo_manifest(*, fleet: str, github_url: str, token_env: str, settings: DemoSettings) -> str:
    return f"""\
# The demo fleet: written by `runscaler demo`, removed when it ends.
apiVersion: runscaler/v1
kind: Fleet
metadata:
  name: {fleet}
defaults:
  github:
    url: {github_url}
    auth:
      token: env:{token_env}
  drainTimeout: 30s
  docker:
    image: {settings.image}
    pull: never
    network: host
    env:
      RUNSCALER_SIM_RUNNER_RETRY: "{settings.runner_retry}"
scaleSets:
  - name: linux
    labels: [self-hosted, linux]
    minRunners: 1
    maxRunners: {settings.max_runners}
  - name: linux-big
    labels: [self-hosted, big]
    maxRunners: {settings.big_runners}
"""


async def remove_fleet_containers(fleet: str, *, docker: str = "docker") -> None:
    """Force-remove every container labelled with `fleet`, whatever its state."""

    async def run(*argv: str) -> str:
        process = await asyncio.create_subprocess_exec(
            docker,
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await process.communicate()
        return out.decode()

    ids = (await run("ps", "-aq", "--filter", f"label={LABEL_FLEET}={fleet}")).split()
    if ids:
        await run("rm", "-f", *ids)


async def play(settings: DemoSettings, *, display: Display) -> DemoOutcome:
    """Run the show until it ends or a signal stops it; clean up either way."""
    loop = asyncio.get_running_loop()
    show = Show(settings, display)
    task = asyncio.create_task(show.run(), name="demo")
    received: list[int] = []

    def on_signal(sig: int) -> None:
        first = not received
        received.append(sig)
        task.cancel()
        if sig == signal.SIGHUP:
            display.hang_up()  # the terminal closed: clean up without a word
        elif first:
            display.say("stopping: removing the demo's runners and the simulator…")

    # SIGHUP too: closing the demo's terminal must not leave its runners behind.
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in stops:
        loop.add_signal_handler(sig, on_signal, sig)
    error: UserError | None = None
    try:
        try:
            await task
        except asyncio.CancelledError:
            if not received:
                raise
        except UserError as exc:
            error = exc
        finally:
            await show.close()
    finally:
        for sig in stops:
            loop.remove_signal_handler(sig)
    # With --keep-going a signal is how the show normally ends, not an interruption.
    summary = show.summary(interrupted=bool(received) and not settings.keep_going)
    return DemoOutcome(summary, error=error, signal=received[0] if received else None)


class Show:
    """One demo: what it started (in an exit stack, undone by `close()`) and what it saw."""

    def __init__(self, settings: DemoSettings, display: Display) -> None:
        self.settings = settings
        self.display = display
        self.fleet = f"demo-{secrets.token_hex(4)}"
        self._stack = contextlib.AsyncExitStack()
        self._sim: Simulator | None = None
        self._operator: Operator | None = None
        self._started = time.monotonic()
        self._job_ids: list[int] = []
        self._peak = 0
        self._peaks: dict[str, int] = {}
        self._degraded_since: dict[str, float] = {}

    async def run(self) -> None:
        s = self.settings
        sim = await self._stack.enter_async_context(
            serve_simulator(
                SimulatorOptions(
                    poll_wait=s.poll_wait, session_timeout=10.0, redispatch_interval=60.0
                )
            )
        )
        self._sim = sim
        manifest = s.workdir / "fleet.yaml"
        manifest.write_text(
            demo_manifest(
                fleet=self.fleet,
                github_url=sim.config_url("demo-org"),
                token_env=s.token_env,
                settings=s,
            )
        )
        operator = Operator(
            RunSettings(
                manifest=manifest,
                listen="127.0.0.1:0",
                state_dir=s.workdir / "state",
                owner="runscaler-demo",
                timing=scaled_timing(s.timing_scale),
                resync_interval=60.0 * s.timing_scale,
            )
        )
        status_url = await self._stack.enter_async_context(
            serve_http(operator, listen="127.0.0.1:0", registry=operator.metrics.registry)
        )
        self._operator = operator
        self._stack.push_async_callback(self._stop_operator, operator)
        self.display.say(
            f"demo fleet {self.fleet}: linux (1 to {s.max_runners} runners) and linux-big "
            f"(0 to {s.big_runners}), on the GitHub simulator at {sim.url}"
        )
        self.display.say(f"watch it from another shell: runscaler status --server {status_url}")
        self.display.say(
            f"it cleans up after itself; if it is killed (kill -9): runscaler doctor --fix "
            f"--fleet {self.fleet}"
        )
        await operator.start()
        await self._until(self._warm, within=_WARM_TIMEOUT)
        while True:
            self._enqueue(sim)
            await self._until(self._settled, within=self._burst_timeout())
            if not s.keep_going:
                return

    def _burst_timeout(self) -> float:
        s = self.settings
        waves = math.ceil(s.jobs / (s.max_runners + s.big_runners))
        return 60.0 + 4 * waves * s.duration * max(_DURATION_FACTORS)

    def _enqueue(self, sim: Simulator) -> None:
        s = self.settings
        labels: Counter[str] = Counter()
        for i in range(s.jobs):
            label = "linux-big" if i % BIG_EVERY == BIG_EVERY - 1 else "linux"
            labels[label] += 1
            self._job_ids += sim.add_jobs(
                [label],
                count=1,
                duration=s.duration * _DURATION_FACTORS[i % len(_DURATION_FACTORS)],
                result="failed" if i % FAIL_EVERY == FAIL_EVERY - 1 else "succeeded",
            )
        failing = s.jobs // FAIL_EVERY
        self.display.say(
            f"enqueued {s.jobs} jobs: {labels['linux']} for linux, {labels['linux-big']} for "
            f"linux-big" + (f" ({failing} fail on purpose)" if failing else "")
        )

    def _warm(self, scale_sets: tuple[ScaleSetStatus, ...]) -> bool:
        return bool(scale_sets) and all(
            s.state == "listening" and s.idle >= s.min_runners for s in scale_sets
        )

    def _settled(self, scale_sets: tuple[ScaleSetStatus, ...]) -> bool:
        jobs = self._jobs()
        return (
            jobs.waiting == 0
            and jobs.running == 0
            and all(s.busy == 0 and s.starting == 0 and s.idle == s.min_runners for s in scale_sets)
        )

    def _phase(self) -> str:
        if not self._job_ids:
            return "warming up"
        jobs = self._jobs()
        return "running jobs" if jobs.waiting or jobs.running else "scaling down"

    async def _until(
        self, done: Callable[[tuple[ScaleSetStatus, ...]], bool], *, within: float
    ) -> None:
        deadline = time.monotonic() + within
        while True:
            scale_sets = self._sample()
            if done(scale_sets):
                return
            self._check(scale_sets)
            if time.monotonic() > deadline:
                jobs = self._jobs()
                raise DemoFailed(
                    f"the demo fleet did not settle within {within:.0f} s while "
                    f"{self._phase()} ({jobs.waiting} jobs waiting, {jobs.running} running): "
                    "see the warnings above"
                )
            await asyncio.sleep(self.settings.tick)

    def _sample(self) -> tuple[ScaleSetStatus, ...]:
        assert self._operator is not None
        scale_sets = self._operator.snapshot().scale_sets
        for s in scale_sets:
            self._peaks[s.name] = max(self._peaks.get(s.name, 0), runners(s))
        self._peak = max(self._peak, sum(runners(s) for s in scale_sets))
        self.display.update(
            DemoProgress(
                elapsed=time.monotonic() - self._started,
                phase=self._phase(),
                scale_sets=scale_sets,
                jobs=self._jobs(),
                peak_runners=self._peak,
            )
        )
        return scale_sets

    def _check(self, scale_sets: tuple[ScaleSetStatus, ...]) -> None:
        """Give up early on a fleet that cannot work, rather than at the deadline."""
        now = time.monotonic()
        for s in scale_sets:
            failure = s.last_failure.message if s.last_failure else None
            why = s.last_error or failure or "no reason given"
            if s.failures_in_row >= _FAILURES_TO_GIVE_UP:
                raise DemoFailed(f"runners of {s.name} keep failing: {why}")
            if s.state != "degraded":
                self._degraded_since.pop(s.name, None)
            elif now - self._degraded_since.setdefault(s.name, now) > _DEGRADED_GRACE:
                raise DemoFailed(f"scale set {s.name} is degraded: {why}")

    def _jobs(self) -> JobCounts:
        if self._sim is None:
            return JobCounts()
        states: Counter[str] = Counter()
        results: Counter[str] = Counter()
        for job_id in self._job_ids:
            job = self._sim.state.jobs[job_id]
            states[job.state] += 1
            if job.state == "done":
                results[job.result or "unknown"] += 1
        return JobCounts(
            waiting=len(self._job_ids) - states["running"] - states["done"],
            running=states["running"],
            done=states["done"],
            results=dict(results),
        )

    def summary(self, *, interrupted: bool) -> DemoSummary:
        pickup: list[float] = []
        jobs = self._jobs()
        if self._sim is not None:
            for job_id in self._job_ids:
                job = self._sim.state.jobs[job_id]
                if job.started_at is not None:
                    pickup.append(job.started_at - job.queued_at)
        return DemoSummary(
            results=jobs.results,
            pickup=pickup,
            peak_runners=self._peak,
            peak_by_scale_set=dict(self._peaks),
            total=time.monotonic() - self._started,
            unfinished=len(self._job_ids) - jobs.done,
            interrupted=interrupted,
        )

    async def _stop_operator(self, operator: Operator) -> None:
        try:
            await asyncio.wait_for(operator.shutdown(), timeout=_STOP_TIMEOUT)
        except TimeoutError:
            log.warning(
                "the operator did not stop within %.0f s; removing its runners", _STOP_TIMEOUT
            )

    async def close(self) -> None:
        """Stop the operator and the simulator, then remove what is left of the fleet."""
        try:
            await self._stack.aclose()
        finally:
            await remove_fleet_containers(self.fleet)
