"""The scaler: keeps one scale set's runners at the count the listener asks for.

Runners are ephemeral: each is registered with a just-in-time config, started on the backend,
takes at most one job and exits. The scaler keeps one record per runner and acts on three
inputs: the desired count (from the listener), job events (from the listener) and runner exits
(watched on the backend, not polled). What the original tool got wrong, this gets right:

- missing runners start concurrently (bounded by a limiter shared across the fleet);
- a runner that exits without having taken a job is a failure: it is unregistered on GitHub,
  removed, replaced with crash-loop backoff, and its exit code and log tail kept for status;
- surplus idle runners are removed when demand drops, unregistering first, so a runner that
  took a job in the meantime (`JobStillRunning`) is kept as busy;
- after a template change idle runners are replaced make-before-break; busy ones finish;
- on start, this scale set's running containers are adopted and exited ones removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_RUNNER,
    LABEL_SCALE_SET,
    LABEL_SCALE_SET_KEY,
    LABEL_TEMPLATE,
    Backend,
    BackendError,
    BackendUnavailable,
    OwnedRunner,
    RunnerExit,
    RunnerNotFound,
    RunnerSpec,
)
from runscaler.engine.listener import Backoff
from runscaler.engine.runners import (
    RunnerRecord,
    RunnerState,
    new_runner_name,
    plan_pass,
)
from runscaler.engine.tasks import stop_task, wait_event
from runscaler.github.errors import GitHubError, JobStillRunningError
from runscaler.github.models import JitConfig, JobCompleted, JobStarted
from runscaler.logs import secrets
from runscaler.manifest.models import DockerTemplate, TartTemplate

log = logging.getLogger(__name__)


class RunnerRegistry(Protocol):
    """The GitHub side of a runner's life, for one scale set."""

    async def register(self, runner_name: str) -> JitConfig: ...

    async def unregister(self, runner_id: int) -> None:
        """Remove the registration; `JobStillRunningError` when the runner has a job."""
        ...

    async def lookup(self, runner_name: str) -> int | None:
        """The runner's id, or None when it is not registered (any more)."""
        ...


class ScalerMetrics(Protocol):
    def runner_started(self, seconds: float) -> None: ...

    def runner_failed(self, reason: str) -> None: ...


class _NoMetrics:
    def runner_started(self, seconds: float) -> None:
        del seconds

    def runner_failed(self, reason: str) -> None:
        del reason


@dataclass(frozen=True)
class ScalerTiming:
    crash_backoff_initial: float = 2.0
    crash_backoff_max: float = 120.0
    finished_grace: float = 60.0  # a runner whose job completed should exit by then
    resync_interval: float = 30.0  # re-list the backend as a safety net under the event stream
    backend_retry: float = 5.0


@dataclass(frozen=True)
class Template:
    """The runner template in force, with its hash and resolved environment."""

    spec: DockerTemplate | TartTemplate
    hash: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Failure:
    """The last runner failure, for status."""

    reason: str  # start_failed | exited_early | drain_timeout
    message: str
    exit_code: int | None = None
    log_tail: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)


class Scaler:
    def __init__(
        self,
        *,
        fleet: str,
        scale_set_name: str,
        scale_set_key: str,
        template: Template,
        max_runners: int,
        backend: Backend,
        registry: RunnerRegistry,
        start_limiter: asyncio.Semaphore,
        timing: ScalerTiming = ScalerTiming(),
        metrics: ScalerMetrics | None = None,
    ) -> None:
        self.fleet = fleet
        self.scale_set_name = scale_set_name
        self.key = scale_set_key
        self.template = template
        self.max_runners = max_runners
        self.backend = backend
        self.registry = registry
        self._limiter = start_limiter
        self._timing = timing
        self._metrics = metrics or _NoMetrics()
        self.runners: dict[str, RunnerRecord] = {}
        self.desired = 0
        self._have_desired = False  # nothing is started or removed before the listener speaks
        self.last_failure: Failure | None = None
        self.failures_in_row = 0
        self.degraded: str | None = None  # why the backend is unusable, if it is
        self._not_before = 0.0
        self._crash_backoff = Backoff(timing.crash_backoff_initial, timing.crash_backoff_max)
        self._accepting = True  # False once draining or shutting down: start nothing new
        self._wake = asyncio.Event()
        self._gone = asyncio.Event()  # a runner was forgotten (a drain waits on it)
        self._tasks: set[asyncio.Task[None]] = set()
        self._jit: dict[str, str] = {}

    # -- inputs ----------------------------------------------------------------------------

    @property
    def selector(self) -> dict[str, str]:
        return {LABEL_FLEET: self.fleet, LABEL_SCALE_SET_KEY: self.key}

    def desired_runners(self, count: int) -> None:
        if count != self.desired:
            log.debug("%s: desired runners %d -> %d", self.scale_set_name, self.desired, count)
        self.desired = count
        self._have_desired = True
        self._wake.set()

    def job_started(self, job: JobStarted) -> None:
        record = self.runners.get(job.runner_name)
        if record is None:
            return
        record.took_job = True
        if record.state is not RunnerState.FINISHED:
            record.state = RunnerState.BUSY
        if job.runner_id:
            record.runner_id = job.runner_id
        self.failures_in_row = 0
        self._crash_backoff.reset()

    def job_completed(self, job: JobCompleted) -> None:
        record = self.runners.get(job.runner_name)
        if record is None:
            return
        record.took_job = True
        record.state = RunnerState.FINISHED
        self._spawn(self._reap_if_stuck(record.name), "reap")
        self._wake.set()

    def set_max_runners(self, max_runners: int) -> None:
        self.max_runners = max_runners
        self._wake.set()

    def set_template(self, template: Template) -> None:
        """New runners use it at once; idle ones with the old hash are rolled."""
        if template.hash != self.template.hash:
            log.info("%s: runner template changed; rolling idle runners", self.scale_set_name)
        self.template = template
        self._wake.set()

    # -- counts for status and metrics -----------------------------------------------------

    def count(self, state: RunnerState) -> int:
        return sum(1 for r in self.runners.values() if r.state is state)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Adopt what runs, then reconcile on every input until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch_exits(), name=f"exits:{self.scale_set_name}")
                group.create_task(self._reconcile_loop(), name=f"scaler:{self.scale_set_name}")
        finally:
            for task in list(self._tasks):
                await stop_task(task)

    async def _reconcile_loop(self) -> None:
        await self._adopt()
        while True:
            self._wake.clear()
            await self._reconcile_once()
            timeout = self._timing.resync_interval
            if self._not_before > time.monotonic():
                timeout = min(timeout, self._not_before - time.monotonic())
            if not await wait_event(self._wake, max(0.01, timeout)):
                await self._resync()

    async def _reconcile_once(self) -> None:
        if not self._have_desired and self._accepting:
            return
        may_start = (
            self._accepting and self.degraded is None and time.monotonic() >= self._not_before
        )
        decision = plan_pass(
            self.runners.values(),
            desired=self.desired if self._accepting else 0,
            max_runners=self.max_runners,
            template_hash=self.template.hash,
            may_start=may_start,
        )
        for name in decision.remove:
            record = self.runners.get(name)
            if record is not None and record.state is RunnerState.IDLE:
                record.state = RunnerState.REMOVING
                self._spawn(self._remove_idle(record), f"remove:{name}")
        for _ in range(decision.start):
            record = RunnerRecord(
                name=new_runner_name(self.scale_set_name), template_hash=self.template.hash
            )
            self.runners[record.name] = record
            self._spawn(self._start(record, self.template), f"start:{record.name}")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"{self.scale_set_name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- starting --------------------------------------------------------------------------

    async def _start(self, record: RunnerRecord, template: Template) -> None:
        began = time.monotonic()
        try:
            # Pulls happen here, outside the limiter, so a slow pull does not hold up other
            # scale sets' starts; it is shared and cheap once done.
            await self.backend.prepare(template.spec)
            async with self._limiter:
                if not self._accepting:
                    self._forget(record.name)
                    return
                jit = await self.registry.register(record.name)
                record.runner_id = jit.runner_id
                # The client registered it as a secret; forgetting the runner discards it.
                self._jit[record.name] = jit.encoded
                await self.backend.start(
                    RunnerSpec(
                        name=record.name,
                        jit_config=jit.encoded,
                        labels=self._labels(record),
                        template=template.spec,
                        env=template.env,
                    )
                )
        except (GitHubError, BackendError) as exc:
            await self._start_failed(record, exc)
            return
        if record.state is RunnerState.STARTING:
            record.state = RunnerState.IDLE
        elapsed = time.monotonic() - began
        self._metrics.runner_started(elapsed)
        log.info("%s: runner %s started in %.2fs", self.scale_set_name, record.name, elapsed)
        self._wake.set()

    def _labels(self, record: RunnerRecord) -> dict[str, str]:
        return {
            LABEL_FLEET: self.fleet,
            LABEL_SCALE_SET: self.scale_set_name,
            LABEL_SCALE_SET_KEY: self.key,
            LABEL_RUNNER: record.name,
            LABEL_TEMPLATE: record.template_hash,
        }

    async def _start_failed(self, record: RunnerRecord, exc: Exception) -> None:
        if isinstance(exc, BackendUnavailable):
            self.degraded = str(exc)
        log.error("%s: could not start runner %s: %s", self.scale_set_name, record.name, exc)
        await self._discard(record)
        self._failed(Failure(reason="start_failed", message=str(exc)))

    # -- exits -----------------------------------------------------------------------------

    async def _watch_exits(self) -> None:
        while True:
            try:
                async with contextlib.aclosing(self.backend.exits(self.selector)) as exits:
                    async for event in exits:
                        if self.degraded is not None:
                            self._recovered()
                        await self._on_exit(event)
            except BackendUnavailable as exc:
                if self.degraded is None:
                    log.error("%s: %s; retrying", self.scale_set_name, exc)
                self.degraded = str(exc)
            await asyncio.sleep(self._timing.backend_retry)
            await self._resync()

    def _recovered(self) -> None:
        log.info("%s: the backend is reachable again", self.scale_set_name)
        self.degraded = None
        self._wake.set()

    async def _on_exit(self, event: RunnerExit) -> None:
        record = self.runners.get(event.name)
        if record is None or record.state is RunnerState.REMOVING:
            return  # someone is already removing it (or it was never ours to track)
        if record.state is RunnerState.BUSY or record.took_job:
            await self._finished(record)
            return
        if await self._registration_gone(record):
            # It took a job and GitHub already removed its registration: a normal end whose
            # JobStarted message we had not seen yet.
            await self._finished(record)
            return
        await self._exited_early(record, event.exit_code)

    async def _registration_gone(self, record: RunnerRecord) -> bool:
        try:
            return await self.registry.lookup(record.name) is None
        except GitHubError:
            return False

    async def _finished(self, record: RunnerRecord) -> None:
        self._forget(record.name)
        await self._remove_container(record.name)
        self._wake.set()

    async def _exited_early(self, record: RunnerRecord, exit_code: int) -> None:
        tail: list[str] = []
        with contextlib.suppress(BackendError):
            tail = await self.backend.logs_tail(record.name, lines=20)
        log.error(
            "%s: runner %s exited with code %d before taking a job",
            self.scale_set_name,
            record.name,
            exit_code,
        )
        await self._discard(record)
        self._failed(
            Failure(
                reason="exited_early",
                message=f"runner exited with code {exit_code} before taking a job",
                exit_code=exit_code,
                log_tail=tuple(tail),
            )
        )

    def _failed(self, failure: Failure) -> None:
        self.last_failure = failure
        self.failures_in_row += 1
        self._metrics.runner_failed(failure.reason)
        delay = self._crash_backoff.next()
        self._not_before = time.monotonic() + delay
        if self.failures_in_row >= 3:
            self._metrics.runner_failed("crash_loop")
            log.warning(
                "%s: %d runner failures in a row; next start in %.0fs",
                self.scale_set_name,
                self.failures_in_row,
                delay,
            )
        self._wake.set()

    async def _reap_if_stuck(self, name: str) -> None:
        await asyncio.sleep(self._timing.finished_grace)
        record = self.runners.get(name)
        if record is not None and record.state is RunnerState.FINISHED:
            log.warning(
                "%s: runner %s did not exit after its job; removing", self.scale_set_name, name
            )
            await self._finished(record)

    # -- removing --------------------------------------------------------------------------

    async def _remove_idle(self, record: RunnerRecord) -> None:
        """Unregister first: if GitHub says it has a job, it is busy and stays."""
        try:
            if record.runner_id is None:
                record.runner_id = await self.registry.lookup(record.name)
            if record.runner_id is not None:
                await self.registry.unregister(record.runner_id)
        except JobStillRunningError:
            log.info("%s: runner %s took a job; keeping it", self.scale_set_name, record.name)
            record.state = RunnerState.BUSY
            record.took_job = True
            return
        except GitHubError as exc:
            log.warning("%s: cannot unregister %s yet: %s", self.scale_set_name, record.name, exc)
            record.state = RunnerState.IDLE
            self._wake.set()
            return
        self._forget(record.name)
        await self._remove_container(record.name)
        log.info("%s: removed idle runner %s", self.scale_set_name, record.name)
        self._wake.set()

    async def _discard(self, record: RunnerRecord) -> None:
        """Unregister (best effort) and remove a runner that failed."""
        self._forget(record.name)
        if record.runner_id is not None:
            with contextlib.suppress(GitHubError):
                await self.registry.unregister(record.runner_id)
        await self._remove_container(record.name)

    async def _remove_container(self, name: str) -> None:
        try:
            await self.backend.remove(name)
        except RunnerNotFound:
            pass
        except BackendError as exc:
            log.warning("%s: cannot remove %s: %s", self.scale_set_name, name, exc)

    def _forget(self, name: str) -> None:
        self.runners.pop(name, None)
        self._gone.set()
        jit = self._jit.pop(name, None)
        if jit is not None:
            secrets.discard(jit)

    # -- adoption and resync ---------------------------------------------------------------

    async def _adopt(self) -> None:
        """Count and watch this scale set's running runners; remove exited ones."""
        while True:
            try:
                owned = await self.backend.list_owned(self.selector)
                break
            except BackendUnavailable as exc:
                self.degraded = str(exc)
                log.error("%s: %s; retrying", self.scale_set_name, exc)
                await asyncio.sleep(self._timing.backend_retry)
        if self.degraded is not None:
            self._recovered()
        for runner in owned:
            if runner.name in self.runners:
                continue
            if not runner.running:
                await self._remove_container(runner.name)
                continue
            self.runners[runner.name] = self._adopted_record(runner)
        if self.runners:
            log.info("%s: adopted %d running runners", self.scale_set_name, len(self.runners))

    def _adopted_record(self, runner: OwnedRunner) -> RunnerRecord:
        # Whether it is busy is unknown: it counts as idle capacity, and removing it
        # unregisters first, which keeps it if it has a job.
        return RunnerRecord(
            name=runner.name,
            template_hash=runner.labels.get(LABEL_TEMPLATE, ""),
            state=RunnerState.IDLE,
            created_at=runner.created_at or time.time(),
            adopted=True,
        )

    async def _resync(self) -> None:
        """Safety net under the event stream: exits it missed, containers that vanished."""
        try:
            owned = {r.name: r for r in await self.backend.list_owned(self.selector)}
        except BackendError as exc:
            self.degraded = str(exc)
            return
        if self.degraded is not None:
            self._recovered()
        for name, record in list(self.runners.items()):
            if record.state in (RunnerState.STARTING, RunnerState.REMOVING):
                continue
            found = owned.get(name)
            if found is None:
                self._forget(name)
            elif not found.running:
                await self._on_exit(RunnerExit(name, found.exit_code or 0, time.time()))
        self._wake.set()

    # -- drain and shutdown ----------------------------------------------------------------

    async def remove_idle_runners(self) -> None:
        """Stop starting runners and remove the idle ones (unregistering first)."""
        self._accepting = False
        self._wake.set()
        removals = []
        for record in list(self.runners.values()):
            if record.state is RunnerState.IDLE:
                record.state = RunnerState.REMOVING
                removals.append(self._remove_idle(record))
        await asyncio.gather(*removals)

    async def drain(self, limit: float) -> int:
        """Remove idle runners, wait for busy ones up to `limit` seconds, then force-remove the
        stragglers (loudly). Returns how many were force-removed."""
        await self.remove_idle_runners()
        deadline = time.monotonic() + limit
        while self.runners and time.monotonic() < deadline:
            self._gone.clear()
            await wait_event(self._gone, min(1.0, deadline - time.monotonic()))
            # Idle runners can appear late (a start that was in flight): remove them too.
            await self.remove_idle_runners()
        stragglers = list(self.runners.values())
        for record in stragglers:
            log.error(
                "%s: runner %s still busy after the drain timeout (%.0fs); force-removing it",
                self.scale_set_name,
                record.name,
                limit,
            )
            self._metrics.runner_failed("drain_timeout")
            await self._discard(record)
        if stragglers:
            self.last_failure = Failure(
                reason="drain_timeout",
                message=f"{len(stragglers)} busy runners force-removed after {limit:.0f}s",
            )
        return len(stragglers)

    def resume(self) -> None:
        self._accepting = True
        self._wake.set()
